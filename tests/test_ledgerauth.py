"""Ledger authentication (rpcbackfill.ledgerauth, native auth_spans): every ledger checked against
its own header hash, tx-set hash and result-set hash, and linked to its predecessor.

stellar-sdk is the oracle: it decodes each ledger and re-encodes the header, the transaction set
and the TransactionResultSet independently of our scanner; its verdict must equal ours on every
real fixture ledger.  Tampering is done at byte positions found through the SDK's encodings, so
the XDR stays valid and only the authentication can notice.
"""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
from pathlib import Path

import pytest
from stellar_sdk import xdr

from rpcbackfill import _lcm, lcm
from rpcbackfill.config import ConfigError, load_config
from rpcbackfill.errors import LedgerAuthError, XdrError
from rpcbackfill.ledgerauth import HashChain, verify_ledger
from tests.lib import REPO
from tests.lib.fixtures import load_fixture_ledgers
from tests.lib.lake import lake_ledgers
from tests.lib.ledgers import chain, generator, iter_chain
from tests.lib.orchestration import (
    RS,
    backfill_command,
    check_backfill_result,
    cli_env,
    make_config,
    make_lake,
    write_backfill_config,
)

# --- the oracle ------------------------------------------------------------------------------


def _body(buf: bytes):
    m = xdr.LedgerCloseMeta.from_xdr_bytes(buf)
    return m.v, {0: m.v0, 1: m.v1, 2: m.v2}[m.v]


def _sdk_txset_bytes(version: int, body) -> bytes:
    """What header.scpValue.txSetHash hashes, built from the SDK's objects."""
    if version == 0:
        ts = body.tx_set
        return ts.previous_ledger_hash.hash + b"".join(e.to_xdr_bytes() for e in ts.txs)
    return body.tx_set.to_xdr_bytes()


def sdk_verdict(buf: bytes) -> list[str]:
    """The hashes stellar-sdk's re-encodings say fail: subset of header, txSetHash, txSetResultHash."""
    version, body = _body(buf)
    e = body.ledger_header
    h = e.header
    bad = []
    if hashlib.sha256(h.to_xdr_bytes()).digest() != e.hash.hash:
        bad.append("header")
    if hashlib.sha256(_sdk_txset_bytes(version, body)).digest() != h.scp_value.tx_set_hash.hash:
        bad.append("txSetHash")
    rs = xdr.TransactionResultSet([t.result for t in body.tx_processing]).to_xdr_bytes()
    if hashlib.sha256(rs).digest() != h.tx_set_result_hash.hash:
        bad.append("txSetResultHash")
    return bad


def our_verdict(buf: bytes) -> list[str]:
    try:
        verify_ledger(buf)
    except LedgerAuthError as e:
        msg = str(e)
        for key, name in (
            ("header hash", "header"),
            ("txSetHash", "txSetHash"),
            ("txSetResultHash", "txSetResultHash"),
        ):
            if key in msg:
                return [name]
        raise
    return []


# --- real ledgers ----------------------------------------------------------------------------------

# The galexie load-test ledgers are synthetic: stellar/go's load-test generator merged extra
# transactions' results into them (their GeneralizedTransactionSet has 4 or 6 phases, where a
# closed ledger always has 2, all empty, while txProcessing holds 100 results) without
# re-hashing.  Their header hash and hash chain are genuine; txSetHash cannot be.
SYNTHETIC = "galexie-load-test"


@pytest.fixture(scope="module")
def fixtures():
    return load_fixture_ledgers()


def test_spans_match_stellar_sdk_on_every_fixture(fixtures):
    for f in fixtures:
        seq, version, stored, prev, txh, rh, h0, h1, t0, t1, results, hashes = _lcm.auth_spans(f.lcm)
        v, body = _body(f.lcm)
        hdr = body.ledger_header.header
        assert (seq, version) == (hdr.ledger_seq.uint32, v), f.source
        assert f.lcm[h0:h1] == hdr.to_xdr_bytes(), f.source
        assert f.lcm[t0:t1] == body.tx_set.to_xdr_bytes(), f.source
        assert results == xdr.TransactionResultSet([t.result for t in body.tx_processing]).to_xdr_bytes()
        assert stored == body.ledger_header.hash.hash and prev == hdr.previous_ledger_hash.hash
        assert txh == hdr.scp_value.tx_set_hash.hash and rh == hdr.tx_set_result_hash.hash
        assert hashes == lcm.tx_hashes(f.lcm)[1], f.source


def test_every_real_ledger_authenticates(fixtures):
    versions = set()
    for f in fixtures:
        expected = sdk_verdict(f.lcm)
        assert our_verdict(f.lcm) == expected[:1], f.source  # we stop at the first failure
        if SYNTHETIC in f.source:
            continue
        assert expected == [], f.source  # every ledger a real network closed verifies
        versions.add(_body(f.lcm)[0])
    assert versions == {0, 1, 2}
    synthetic = [f for f in fixtures if SYNTHETIC in f.source and sdk_verdict(f.lcm)]
    assert {f.seq for f in synthetic} == {85, 88}
    with pytest.raises(LedgerAuthError, match=r"^ledger 85: transaction set does not match the header's txSetHash"):
        verify_ledger(synthetic[0].lcm)


def test_real_chains_link_across_files(fixtures):
    """testnet 997-999 sit in three lake files; the core-test streams and the galexie file hold
    runs of consecutive ledgers.  Every consecutive pair is linked (the SDK agrees on each link)."""
    groups: dict[str, list] = {}
    for f in fixtures:
        key = "testnet" if f.source.startswith("FFFFFC") else f.source.split(" frame")[0]
        groups.setdefault(key, []).append(f)
    links = 0
    for key, fs in groups.items():
        fs.sort(key=lambda f: f.seq)
        c = HashChain()
        for a, b in zip(fs, fs[1:], strict=False):
            if b.seq == a.seq + 1:
                assert (
                    _body(b.lcm)[1].ledger_header.header.previous_ledger_hash.hash
                    == _body(a.lcm)[1].ledger_header.hash.hash
                )
        if SYNTHETIC in key:
            continue  # not authenticable (see SYNTHETIC); their links are checked by the SDK above
        for f in fs:
            assert c.check(f.lcm)[0] == f.seq
        links += c.checked - c.unlinked
    assert groups["testnet"] and len(groups["testnet"]) == 3
    assert links >= 150  # the core-test streams are mostly consecutive runs


def test_testnet_chain_across_three_files(fixtures):
    fs = sorted((f for f in fixtures if f.source.startswith("FFFFFC")), key=lambda f: f.seq)
    assert [f.seq for f in fs] == [997, 998, 999]
    c = HashChain()
    for f in fs:
        c.check(f.lcm)
    assert (c.checked, c.unlinked) == (3, 1)
    with pytest.raises(LedgerAuthError, match=r"^ledger 999: broken hash chain"):
        c2 = HashChain()
        c2.check(fs[0].lcm)
        c2.seed(998, bytes(32))  # pretend 998 had another hash
        c2.check(fs[2].lcm)


# --- tampering ---------------------------------------------------------------------------------------


def _flip(buf: bytes, pos: int) -> bytes:
    b = bytearray(buf)
    b[pos] ^= 0x01
    return bytes(b)


def _envelopes(version: int, body) -> list:
    if version == 0:
        return list(body.tx_set.txs)
    out = []
    for ph in body.tx_set.v1_tx_set.phases:
        for comp in ph.v0_components or []:
            out += comp.txs_maybe_discounted_fee.txs
    return out


def _ledger_with_txs(version: int) -> tuple[int, bytes]:
    for seq, buf in iter_chain(500, 50, versions=(version,), tx_per_ledger=4):
        if _body(buf)[1].tx_processing:
            return seq, buf
    raise AssertionError("no generated ledger with transactions")


def _tamper_targets(buf: bytes) -> dict[str, int]:
    """Byte positions whose flip keeps the XDR valid: the header's closeTime, the last byte of an
    envelope (inside its last signature), the low byte of a result's feeCharged."""
    version, body = _body(buf)
    h0 = _lcm.auth_spans(buf)[6]
    env = _envelopes(version, body)[-1].to_xdr_bytes()
    pair = body.tx_processing[0].result.to_xdr_bytes()
    assert buf.count(env) == 1 and buf.count(pair) == 1
    return {
        "header": h0 + 4 + 32 + 32 + 7,  # ledgerVersion, previousLedgerHash, txSetHash, closeTime low byte
        "envelope": buf.index(env) + len(env) - 1,
        "result": buf.index(pair) + 32 + 7,  # transactionHash, feeCharged low byte
    }


@pytest.mark.parametrize("version", [0, 1])
@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("header", "header hash mismatch"),
        ("envelope", "transaction set does not match the header's txSetHash"),
        ("result", "transaction results do not match the header's txSetResultHash"),
    ],
)
def test_flipped_byte_is_detected_naming_the_ledger(version, target, message):
    seq, buf = _ledger_with_txs(version)
    assert verify_ledger(buf)[0] == seq
    bad = _flip(buf, _tamper_targets(buf)[target])
    _body(bad)  # still valid XDR: only authentication can tell
    assert lcm.tx_hashes(bad)[0] == seq
    with pytest.raises(LedgerAuthError, match=rf"^ledger {seq}: {message}"):
        verify_ledger(bad)
    assert our_verdict(bad) == sdk_verdict(bad)[:1]


def test_flipped_byte_in_a_real_v2_ledger(fixtures):
    f = next(f for f in fixtures if "core-test-lcm" in f.source and _body(f.lcm)[1].tx_processing)
    version, body = _body(f.lcm)
    pair = body.tx_processing[0].result.to_xdr_bytes()
    bad = _flip(f.lcm, f.lcm.index(pair) + 39)
    with pytest.raises(LedgerAuthError, match=rf"^ledger {f.seq}: transaction results do not match"):
        verify_ledger(bad)
    assert sdk_verdict(bad) == ["txSetResultHash"]


def test_broken_link_is_detected_naming_the_ledger():
    ledgers = chain(700, 6, tx_per_ledger=2)
    gen = generator(1, 2.0, 0)
    forged, _, _ = gen.build(703, hashlib.sha256(b"not ledger 702").digest())  # self-consistent, wrong parent
    verify_ledger(forged)
    c = HashChain()
    for _seq, buf in ledgers[:3]:
        c.check(buf)
    with pytest.raises(LedgerAuthError, match=r"^ledger 703: broken hash chain: its previousLedgerHash"):
        c.check(forged)


def test_rehashed_header_breaks_the_next_link():
    """Whoever edits a header and re-hashes it passes the ledger's own checks; the next ledger's
    previousLedgerHash still catches it."""
    (s1, a), (s2, b) = chain(900, 2, versions=(1,), tx_per_ledger=2)
    h0, h1 = _lcm.auth_spans(a)[6:8]
    edited = bytearray(_flip(a, h0 + 75))
    edited[h0 - 32 : h0] = hashlib.sha256(edited[h0:h1]).digest()
    c = HashChain()
    c.check(bytes(edited))
    with pytest.raises(LedgerAuthError, match=rf"^ledger {s2}: broken hash chain"):
        c.check(b)


def test_chain_returns_tx_hashes_and_restarts_after_a_gap():
    c = HashChain()
    ledgers = chain(1000, 5, tx_per_ledger=3)
    for _seq, buf in ledgers[:2] + ledgers[3:]:  # 1002 missing: 1003 cannot be linked
        assert c.check(buf) == lcm.tx_hashes(buf)
    assert (c.checked, c.unlinked) == (4, 2)
    with pytest.raises(ValueError):
        c.seed(5, b"short")


# --- hostile input -------------------------------------------------------------------------------------


def test_every_prefix_is_malformed():
    _, buf = _ledger_with_txs(1)
    for n in range(len(buf)):
        with pytest.raises(XdrError):
            _lcm.auth_spans(buf[:n])
    with pytest.raises(XdrError):
        _lcm.auth_spans(buf + b"\0\0\0\0")


def test_mutated_ledgers_agree_with_stellar_sdk():
    """Random byte flips: whatever auth_spans accepts, stellar-sdk decodes to the same spans."""
    rng = random.Random(15)
    bases = [_ledger_with_txs(0)[1], _ledger_with_txs(1)[1]]
    accepted = 0
    for i in range(600):
        buf = bytearray(bases[i % 2])
        for _ in range(rng.randint(1, 3)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        try:
            out = _lcm.auth_spans(bytes(buf))
        except XdrError:
            continue
        accepted += 1
        version, body = _body(bytes(buf))
        assert bytes(buf[out[6] : out[7]]) == body.ledger_header.header.to_xdr_bytes()
        assert bytes(buf[out[8] : out[9]]) == body.tx_set.to_xdr_bytes()
        assert out[10] == xdr.TransactionResultSet([t.result for t in body.tx_processing]).to_xdr_bytes()
        assert our_verdict(bytes(buf)) == sdk_verdict(bytes(buf))[:1]
    assert accepted > 50


# --- configuration ---------------------------------------------------------------------------------


def _cfg_file(tmp_path: Path, extra: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(
        f'[service]\ndata_dir = "{tmp_path / "d"}"\n[backfill]\n{extra}\n'
        f'[backfill.buffered_storage]\nbucket_path = "{tmp_path / "lake"}"\n'
    )
    return p


def test_config_key(tmp_path):
    assert load_config(_cfg_file(tmp_path, ""), env={}).backfill.check_ledger_hashes is True
    assert load_config(_cfg_file(tmp_path, "check_ledger_hashes = false"), env={}).backfill.check_ledger_hashes is False
    env = {"STELLAR_RPC_BACKFILL_CHECK_LEDGER_HASHES": "false"}
    assert load_config(_cfg_file(tmp_path, ""), env=env).backfill.check_ledger_hashes is False
    with pytest.raises(ConfigError, match="check_ledger_hashes .*must be true or false"):
        load_config(_cfg_file(tmp_path, 'check_ledger_hashes = "maybe"'), env={})
    with pytest.raises(ConfigError, match="check_ledger_hashes .*must be true or false"):
        load_config(_cfg_file(tmp_path, ""), env={"STELLAR_RPC_BACKFILL_CHECK_LEDGER_HASHES": "maybe"})


# --- end to end --------------------------------------------------------------------------------------

VICTIM = 5003


def _tamper_lake_ledger(lake: Path, seq: int) -> None:
    from rpcbackfill.sources import layout
    from tests.lib.fixtures import zstd_decompress

    schema = layout.read_manifest(lake)
    path = lake / layout.object_key(seq, schema)
    start, _, metas = lcm.split_batch(zstd_decompress(path.read_bytes()))
    buf = metas[seq - start]
    metas[seq - start] = _flip(buf, _tamper_targets(buf)["result"])
    path.write_bytes(layout.compress_batch(layout.encode_batch(start, metas)))


def test_backfill_fails_on_a_tampered_ledger_then_proceeds_with_the_check_off(tmp_path_factory, tmp_path):
    base = make_lake(tmp_path_factory.getbasetemp() / "lake-auth", 2, RS + 1)
    lake = tmp_path / "lake"
    subprocess.run(["cp", "-r", str(base), str(lake)], check=True)
    (victim,) = [m for _, m in lake_ledgers(lake, VICTIM, VICTIM)]
    assert _body(victim)[1].tx_processing  # the generator gives every ledger of this lake transactions
    _tamper_lake_ledger(lake, VICTIM)

    conf = write_backfill_config(
        tmp_path,
        lake,
        service={"data_dir": str(tmp_path / "data")},
        backfill={"parallel_ranges": 1},
        storage={"num_workers": 4, "buffer_size": 64},
    )
    cmd = backfill_command(conf, 2, RS + 1)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=REPO, env=cli_env())
    assert p.returncode == 1, p.stderr
    cause = f"ledger {VICTIM}: transaction results do not match the header's txSetResultHash"
    # one line names the range, that it is not retried, the ledger and the hash that failed
    assert any(f"range 0 FAILED (not retryable): {cause}" in line for line in p.stderr.splitlines()), p.stderr
    assert "range 0 attempt" not in p.stderr and "Traceback" not in p.stderr

    p = subprocess.run(
        [*cmd, "--set", "backfill.check_ledger_hashes=false"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
        env=cli_env(),
    )
    assert p.returncode == 0, p.stderr
    assert "check_ledger_hashes = false: ingested ledgers are NOT authenticated" in p.stderr
    off = make_config(tmp_path / "data", lake, 2, RS + 1, check_ledger_hashes=False)
    check_backfill_result(off, lake, 2, RS + 1)


# --- sources: authentication where the ledger is parsed -------------------------------------------

NET = "Public Global Stellar Network ; September 2015"


def _tampered(ledgers: list[tuple[int, bytes]], victim: int) -> list[tuple[int, bytes]]:
    out = []
    for seq, buf in ledgers:
        if seq == victim:
            assert _body(buf)[1].tx_processing
            buf = _flip(buf, _tamper_targets(buf)["result"])
        out.append((seq, buf))
    return out


@pytest.fixture(scope="module")
def small_chain():
    return chain(2, 120, tx_per_ledger=4)


def _victim(ledgers, at_least: int) -> int:
    return next(s for s, b in ledgers if s >= at_least and _body(b)[1].tx_processing)


def test_verify_batch_is_scan_batch_plus_hashes(small_chain):
    from rpcbackfill.ledgerauth import verify_batch
    from rpcbackfill.sources import layout
    from tests.lib.oracle import sdk_seq_and_hashes

    metas = [b for _, b in small_chain[:9]]
    batch = layout.encode_batch(2, metas)
    start, end, found = verify_batch(batch)
    assert (start, end) == lcm.scan_batch(batch)[:2] == (2, 10)
    for (seq, view, hashes, h, prev), (s2, v2, hashes2), m in zip(found, lcm.scan_batch(batch)[2], metas, strict=True):
        assert (seq, bytes(view), hashes) == (s2, bytes(v2), hashes2)
        assert (seq, h, prev) == sdk_seq_and_hashes(m)
    victim = _victim(small_chain[:9], 5)
    bad = layout.encode_batch(2, [b for _, b in _tampered(small_chain[:9], victim)])
    with pytest.raises(LedgerAuthError, match=rf"^ledger {victim}: transaction results do not match"):
        verify_batch(bad)
    with pytest.raises(XdrError):
        _lcm.auth_batch(batch[:-1])
    with pytest.raises(XdrError):
        _lcm.auth_batch(batch + b"\0")


def test_datalake_source_authenticates_each_ledger(tmp_path, small_chain):
    from rpcbackfill.config import BufferedStorageConfig
    from rpcbackfill.sources.datalake import DataLakeSource
    from rpcbackfill.sources.layout import LakeSchema, write_lake
    from tests.lib.oracle import sdk_seq_and_hashes

    victim = _victim(small_chain, 60)
    for name, ledgers in (("good", small_chain), ("bad", _tampered(small_chain, victim))):
        root = tmp_path / name
        write_lake(root, ledgers, LakeSchema(NET, 4, 16))
        cfg = BufferedStorageConfig(bucket_path=str(root), buffer_size=8, num_workers=2, retry_limit=2, retry_wait=0.01)
        c = HashChain()
        with DataLakeSource(cfg, NET, authenticate=True) as src:
            src.prepare_range(2, 121)
            for seq, buf in ledgers:
                if name == "bad" and seq == victim:
                    with pytest.raises(LedgerAuthError, match=rf"^ledger {victim}: transaction results do not match"):
                        src.get_ledger(seq)
                    assert src.stats["retries"] == 0  # fatal, not retried
                    break
                ledger = src.get_ledger(seq)
                assert (ledger.seq, ledger.hash, ledger.prev_hash) == sdk_seq_and_hashes(buf)
                assert bytes(ledger.lcm) == buf
                c.add(ledger)
        if name == "good":
            assert (c.checked, c.unlinked) == (120, 1)


def test_captive_core_source_authenticates_each_ledger(tmp_path, small_chain):
    import os

    from rpcbackfill.config import CaptiveCoreConfig
    from rpcbackfill.sources.captive_core import CaptiveCoreSource
    from rpcbackfill.sources.layout import LakeSchema, write_lake

    victim = _victim(small_chain, 70)
    lake = tmp_path / "lake"
    write_lake(lake, _tampered(small_chain, victim), LakeSchema(NET, 4, 16))
    from tests.lib.core import make_archive

    cfgp = tmp_path / "captive-core.cfg"
    cfgp.write_text(f'NETWORK_PASSPHRASE="{NET}"\nFAKE_LAKE="{lake}"\n')
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    archive = make_archive(tmp_path / "archive", 127, NET)  # a checkpoint beyond the range's end (80)
    cfg = CaptiveCoreConfig(
        binary_path=REPO / "tests" / "fake_stellar_core.py",
        config_path=cfgp,
        storage_path=tmp_path / "captive-core",
        history_archive_urls=(f"file://{archive}",),
    )
    with CaptiveCoreSource(cfg, network_passphrase=NET, env=env, stop_timeout=5.0, authenticate=True) as src:
        src.prepare_range(64, 80)
        for seq in range(64, victim):
            ledger = src.get_ledger(seq)
            assert ledger.hash is not None and ledger.prev_hash is not None
        with pytest.raises(LedgerAuthError, match=rf"^ledger {victim}: transaction results do not match"):
            src.get_ledger(victim)


@pytest.mark.parametrize("lcm_version", [0, 1])
def test_generated_lakes_authenticate(tmp_path, lcm_version):
    """`stellar-rpc dev generate-lake` writes ledgers whose every hash verifies, chained across
    lake files (the demo and the backfill tests run with the check on)."""
    from rpcbackfill.devtools.lakegen import generate_lake

    generate_lake(tmp_path, 2, 301, seed=3, tx_per_ledger=6, ledgers_per_batch=8, fsync=False, lcm_version=lcm_version)
    c = HashChain()
    txs = 0
    for seq, buf in lake_ledgers(tmp_path, 2, 301):
        assert c.check(buf)[0] == seq
        txs += len(lcm.tx_hashes(buf)[1])
        if seq % 25 == 0:
            assert sdk_verdict(buf) == []  # the independent re-encoding agrees (sampled: it is slow)
    assert (c.checked, c.unlinked) == (300, 1) and txs > 1000
