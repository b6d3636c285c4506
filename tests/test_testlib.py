"""Checks of the test helpers themselves (tests/lib/): a helper that is wrong makes every test
built on it worthless, so each is compared with something independent of it."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import threading

import pytest

from rpcbackfill import lcm
from rpcbackfill.config import PUBNET_PASSPHRASE, BufferedStorageConfig
from rpcbackfill.sources.datalake import DataLakeSource
from rpcbackfill.sources.layout import LakeSchema, object_key, write_lake
from tests.lib.fixtures import zstd_decompress
from tests.lib.lake import lake_ledgers
from tests.lib.ledgers import chain, iter_chain, ledger_at
from tests.lib.net import free_port
from tests.lib.oracle import sdk_header_hash_ok, sdk_ledger_seq, sdk_reference, sdk_seq_and_hashes
from tests.lib.records import frame, iter_record_marked, join_record_marked, split_record_marked

# --- fixtures and oracle ------------------------------------------------------------------------


def test_fixture_ledgers_and_expected_hashes(fixture_ledgers):
    # 5 ttp + 1 pubnet batch + 3 testnet batches carry expected.json hashes; the others do not
    with_hashes = [f for f in fixture_ledgers if f.expected_hashes is not None]
    assert len(with_hashes) == 9
    assert {f.lcm[:4] for f in fixture_ledgers} == {bytes([0, 0, 0, v]) for v in (0, 1, 2)}
    for f in with_hashes:
        seq, hashes, _, _ = sdk_reference(f.lcm)
        assert seq == f.seq
        assert hashes == b"".join(f.expected_hashes), f.source  # the oracle agrees with expected.json


# --- record-marked streams ----------------------------------------------------------------------


def test_record_marked_round_trip():
    payloads = [b"", b"a", b"\x00" * 5, bytes(range(256)) * 3]
    stream = join_record_marked(payloads)
    assert stream[:4] == b"\x80\x00\x00\x00"
    assert frame(b"xyz") == b"\x80\x00\x00\x03xyz"
    assert split_record_marked(stream) == payloads
    assert list(iter_record_marked(io.BytesIO(stream))) == payloads


@pytest.mark.parametrize(
    "stream, match",
    [
        (b"\x00\x00\x00\x01a", "record mark bit missing"),
        (b"\x80\x00\x00\x05abc", "needs 5 bytes"),
        (b"\x80\x00", "truncated frame header"),
    ],
)
def test_record_marked_rejects_damage(stream, match):
    with pytest.raises(ValueError, match=match):
        split_record_marked(stream)
    with pytest.raises(ValueError):
        list(iter_record_marked(io.BytesIO(stream)))


def test_record_marked_real_galexie_stream(fixtures_dir):
    raw = zstd_decompress((fixtures_dir / "galexie-load-test-ledgers-v23-standalone.xdr.zstd").read_bytes())
    metas = split_record_marked(raw)
    assert len(metas) == 3
    seqs = [sdk_ledger_seq(m) for m in metas]  # each piece is a whole ledger to stellar-sdk
    assert seqs == sorted(seqs) == [lcm.ledger_sequence(m) for m in metas]
    assert join_record_marked(metas) == raw


# --- the ledger generator -----------------------------------------------------------------------


def test_chain_is_consecutive_and_hash_chained_for_stellar_sdk():
    ledgers = chain(1000, 12)
    prev = None
    for seq, m in ledgers:
        s, h, p = sdk_seq_and_hashes(m)
        assert s == seq
        assert sdk_header_hash_ok(m)  # hash = sha256(LedgerHeader XDR), as stellar-core writes it
        if prev is not None:
            assert p == prev
        prev = h
    assert {m[:4] for _, m in ledgers} == {b"\x00\x00\x00\x00", b"\x00\x00\x00\x01"}  # V0 and V1


def test_chain_tx_hashes_agree_with_stellar_sdk():
    n = 0
    for seq, m in iter_chain(500, 6, tx_per_ledger=20):
        ref_seq, ref_hashes, ref_hash, ref_prev = sdk_reference(m)
        assert lcm.ledger_info(m) == (ref_seq, ref_hash, ref_prev, ref_hashes) and ref_seq == seq
        n += len(ref_hashes) // 32
    assert n > 0


def test_chain_is_deterministic_and_takes_a_previous_hash():
    assert chain(40, 5) == chain(40, 5)
    assert ledger_at(44) == chain(44, 1)[0][1]
    anchor = hashlib.sha256(b"x").digest()
    ((_, m),) = chain(7, 1, prev_hash=anchor)
    assert sdk_seq_and_hashes(m)[2] == anchor
    assert chain(7, 3, versions=(1,))[1][1][:4] == b"\x00\x00\x00\x01"


# --- the lake reader ----------------------------------------------------------------------------


def test_lake_reader_matches_written_chain_and_the_source(tmp_path):
    ledgers = chain(2, 90)
    schema = LakeSchema(PUBNET_PASSPHRASE, ledgers_per_batch=8, batches_per_partition=4)
    write_lake(tmp_path, iter(ledgers), schema, fsync=False)
    assert list(lake_ledgers(tmp_path, 2, 91)) == ledgers
    assert list(lake_ledgers(tmp_path, 13, 30)) == ledgers[11:29]
    src = DataLakeSource(
        BufferedStorageConfig(bucket_path=str(tmp_path), num_workers=2, buffer_size=4),
        PUBNET_PASSPHRASE,
        threading.Event(),
    )
    with src:
        src.prepare_range(13, 30)
        assert [(q, src.get_ledger(q).lcm) for q in range(13, 31)] == ledgers[11:29]
    (tmp_path / object_key(40, schema)).unlink()
    with pytest.raises(FileNotFoundError):
        list(lake_ledgers(tmp_path, 2, 91))


# --- free_port ----------------------------------------------------------------------------------


def test_free_port_can_be_bound_on_localhost():
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass


def test_backfill_config_helper_writes_what_load_config_reads(tmp_path):
    from rpcbackfill.config import load_config
    from tests.lib.orchestration import backfill_command, write_backfill_config

    lake = tmp_path / 'lake "quoted"'
    lake.mkdir()
    plain = load_config(write_backfill_config(tmp_path, lake, name="a.toml"), env={})
    assert plain.service.http_port == 0  # endpoint off by default
    assert (plain.backfill.range_size, plain.backfill.parallel_ranges) == (10_000, 2)
    assert plain.backfill.buffered_storage.bucket_path == str(lake)
    cfg = write_backfill_config(
        tmp_path,
        lake,
        name="b.toml",
        service={"http_endpoint": "127.0.0.1:0", "progress_interval": "1s"},
        backfill={"parallel_ranges": 1, "checkpoint_interval": None},
        storage={"retry_wait": 0.01, "num_workers": 3},
    )
    text = cfg.read_text()
    assert "http_port" not in text and "checkpoint_interval" not in text  # replaced / removed
    got = load_config(cfg, env={})
    assert got.service.http_port is None and got.service.http_endpoint == "127.0.0.1:0"
    assert got.backfill.parallel_ranges == 1 and got.backfill.buffered_storage.num_workers == 3
    assert got.backfill.buffered_storage.retry_wait == 0.01

    cmd = backfill_command(cfg, 2, 10_001, "--set", "x=y", before=("--log-format", "json"))
    assert cmd[1:] == ["-m", "rpcbackfill", "--log-format", "json", "--backfill", "--start-ledger", "2"] + [
        "--end-ledger",
        "10001",
        "--config-path",
        str(cfg),
        "--set",
        "x=y",
    ]


def test_cli_env_drops_config_and_fault_variables_unless_inherited(monkeypatch):
    from tests.lib import REPO
    from tests.lib.orchestration import cli_env

    monkeypatch.setenv("STELLAR_RPC_SERVICE__LOG_LEVEL", "debug")
    monkeypatch.setenv("RPCBACKFILL_TEST_CRASH_AT", "ingest")
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = cli_env({"EXTRA": "1"})
    assert "STELLAR_RPC_SERVICE__LOG_LEVEL" not in env and "RPCBACKFILL_TEST_CRASH_AT" not in env
    assert env["PYTHONPATH"].split(os.pathsep) == [str(REPO), "/elsewhere"] and env["EXTRA"] == "1"
    kept = cli_env(inherit=True)
    assert kept["STELLAR_RPC_SERVICE__LOG_LEVEL"] == "debug" and kept["RPCBACKFILL_TEST_CRASH_AT"] == "ingest"
