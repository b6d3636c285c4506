"""The read path's LedgerCloseMeta map (ext/_txmap.pyx + rpc/ledger.py) against stellar-sdk.

Real pubnet ledgers (V0 and V1, protocols 11-21), stellar-core's V2 test ledgers and generated
ledgers of both generator layouts: every transaction's envelope, result and meta must equal
stellar-sdk's encoding of the same objects, the header entry and close time must match, and an
envelope must hash (per stellar-sdk) to its transaction's hash.  Damaged input raises XdrError.
"""

from __future__ import annotations

import random

import pytest
from stellar_sdk import FeeBumpTransactionEnvelope, TransactionEnvelope
from stellar_sdk import xdr as sdk_xdr

from rpcbackfill._txmap import ledger_map
from rpcbackfill.errors import XdrError
from rpcbackfill.rpc.ledger import LedgerView, network_id

PASSPHRASES = (
    "Public Global Stellar Network ; September 2015",
    "Standalone Network ; February 2017",
    "Test SDF Network ; September 2015",
)


def _sdk_hash(env: bytes, passphrase: str) -> bytes:
    e = sdk_xdr.TransactionEnvelope.from_xdr_bytes(env)
    if e.type == sdk_xdr.EnvelopeType.ENVELOPE_TYPE_TX_FEE_BUMP:
        return FeeBumpTransactionEnvelope.from_xdr_object(e, passphrase).hash()
    return TransactionEnvelope.from_xdr_object(e, passphrase).hash()


def check_against_sdk(raw: bytes) -> tuple[int, int]:
    """Compare every mapped piece with stellar-sdk; return (version, transactions matched to envelopes)."""
    m = sdk_xdr.LedgerCloseMeta.from_xdr_bytes(raw)
    body = m.v0 or m.v1 or m.v2
    hdr = body.ledger_header
    matched = 0
    for passphrase in PASSPHRASES:
        v = LedgerView(raw, network_id(passphrase))
        assert (v.version, v.seq, v.protocol) == (m.v, hdr.header.ledger_seq.uint32, hdr.header.ledger_version.uint32)
        assert v.close_time == hdr.header.scp_value.close_time.time_point.uint64
        assert bytes(v.header_xdr) == hdr.to_xdr_bytes() and v.hash == hdr.hash.hash
        assert v.tx_count == len(body.tx_processing)
        for i, p in enumerate(body.tx_processing):
            assert v.tx_hash(i) == p.result.transaction_hash.hash
            assert v.find(p.result.transaction_hash.hash) == i
            assert LedgerView(raw, network_id(passphrase), want=p.result.transaction_hash.hash).found == i
            inner = p.result.result.result.inner_result_pair
            if inner is not None:
                assert v.find(inner.transaction_hash.hash) == i
                assert LedgerView(raw, network_id(passphrase), want=inner.transaction_hash.hash).found == i
        try:
            txs = v.txs()
        except LookupError:
            continue  # another network's ledger: its envelopes do not hash to its results
        assert LedgerView(raw, network_id(passphrase), want=b"\xee" * 32).found is None
        for t, p in zip(txs, body.tx_processing):
            assert bytes(t.result) == p.result.result.to_xdr_bytes()
            assert bytes(t.meta) == p.tx_apply_processing.to_xdr_bytes()
            assert _sdk_hash(bytes(t.envelope), passphrase) == t.hash
            assert t.fee_bump == (p.result.result.result.inner_result_pair is not None)
            matched += 1
        break
    return m.v, matched


def test_fixture_ledgers_match_stellar_sdk(fixture_ledgers):
    versions: dict[int, int] = {}
    matched = 0
    for f in fixture_ledgers:
        ver, n = check_against_sdk(f.lcm)
        versions[ver] = versions.get(ver, 0) + 1
        matched += n
    assert set(versions) == {0, 1, 2}, versions
    assert matched > 500


@pytest.mark.parametrize("lcm_version", [0, 1])
def test_generated_ledgers_match_stellar_sdk(lcm_version):
    from rpcbackfill.devtools.lakegen import generate_ledgers

    total = by_fee_account = 0
    nid = network_id(PASSPHRASES[0])
    for _, raw in generate_ledgers(100, 104, seed=3, tx_per_ledger=40, lcm_version=lcm_version):
        ver, n = check_against_sdk(raw)
        assert ver == lcm_version
        total += n
        # the fee account read from the fee changes narrows the envelopes to hash
        for i in range(LedgerView(raw, nid).tx_count):
            v = LedgerView(raw, nid, want=LedgerView(raw, nid).tx_hash(i))
            assert v.found == i
            v.tx(i)
            by_fee_account += v._hashed == 0  # found among the fee account's envelopes
    assert total > 50
    assert by_fee_account == total


def test_damaged_ledgers_raise_xdr_error(fixture_ledgers):
    rng = random.Random(5)
    raws = [f.lcm for f in fixture_ledgers if len(f.lcm) > 2000][:20]
    for raw in raws:
        for cut in sorted(rng.sample(range(1, len(raw)), 20)):
            with pytest.raises(XdrError):
                ledger_map(raw[:cut])
        with pytest.raises(XdrError):
            ledger_map(raw + b"\0\0\0\0")
        for _ in range(30):  # flipped bytes: an error or a consistent map, never a crash
            b = bytearray(raw)
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            try:
                out = ledger_map(bytes(b))
            except XdrError:
                continue
            envs, txs = memoryview(out[6]).cast("q").tolist(), memoryview(out[7]).cast("q").tolist()
            for i in range(0, len(envs), 7):
                assert 0 <= envs[i] < envs[i + 1] <= len(b)
            for i in range(0, len(txs), 11):
                t = txs[i : i + 11]
                assert 0 <= t[0] <= t[2] <= t[3] <= t[6] <= t[7] <= t[1] <= len(b)
    with pytest.raises(XdrError):
        ledger_map(b"")
