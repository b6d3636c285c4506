"""``stellar-rpc serve`` through stellar-sdk's own JSON-RPC client (``SorobanServer``).

A real ``stellar-rpc serve`` process answers over a data directory produced by a real backfill
(two ranges) of a generated data lake; the ground truth is the generator's output for the same
seed, independent of the stores.
"""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from stellar_sdk import SorobanServer
from stellar_sdk import xdr as sdk_xdr
from stellar_sdk.exceptions import SorobanRpcErrorResponse
from stellar_sdk.soroban_rpc import GetTransactionStatus

from rpcbackfill import lcm
from rpcbackfill.rpc.ledger import network_id
from tests.lib.serve import (
    FIRST,
    LAST,
    ServerProcess,
    backfilled,
    lake_ledgers,
    post,
    rpc,
)

PUBNET = "Public Global Stellar Network ; September 2015"
_CLOSE: dict[int, int] = {}  # ledger -> close time, filled by the truth fixture


@pytest.fixture(scope="module")
def truth():
    """Every ledger of the lake, and every transaction: hash -> (ledger, apply order, inner?)."""
    ledgers = dict(lake_ledgers())
    txs: dict[bytes, tuple[int, int, bool]] = {}
    _CLOSE.clear()
    for seq, raw in ledgers.items():
        _, hashes = lcm.tx_hashes(raw)
        # apply order counts result pairs; a fee bump's inner hash follows its outer hash
        m = sdk_xdr.LedgerCloseMeta.from_xdr_bytes(raw) if hashes else None
        if m is None:
            continue
        body = m.v0 or m.v1 or m.v2
        _CLOSE[seq] = body.ledger_header.header.scp_value.close_time.time_point.uint64
        for i, p in enumerate(body.tx_processing):
            txs[p.result.transaction_hash.hash] = (seq, i + 1, False)
            inner = p.result.result.result.inner_result_pair
            if inner is not None:
                txs[inner.transaction_hash.hash] = (seq, i + 1, True)
    return ledgers, txs


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    cfg, _ = backfilled(tmp_path_factory.getbasetemp())
    srv = ServerProcess(cfg)
    yield srv
    assert srv.terminate() == 0  # graceful stop on SIGTERM
    assert any("JSON-RPC server stopped" in line for line in srv.log)


@pytest.fixture(scope="module")
def client(server):
    return SorobanServer(server.url)


def _envelope_hash(env_b64: str) -> bytes:
    """Transaction hash of an envelope, computed with stellar-sdk (not our code)."""
    from stellar_sdk import FeeBumpTransactionEnvelope, TransactionEnvelope

    env = sdk_xdr.TransactionEnvelope.from_xdr(env_b64)
    if env.type == sdk_xdr.EnvelopeType.ENVELOPE_TYPE_TX_FEE_BUMP:
        return FeeBumpTransactionEnvelope.from_xdr(env_b64, PUBNET).hash()
    return TransactionEnvelope.from_xdr(env_b64, PUBNET).hash()


def test_health_network_latest(client, truth):
    ledgers, _ = truth
    h = client.get_health()
    assert (h.status, h.oldest_ledger, h.latest_ledger) == ("healthy", FIRST, LAST)
    assert h.ledger_retention_window == LAST - FIRST + 1
    n = client.get_network()
    assert n.passphrase == PUBNET
    hdr = sdk_xdr.LedgerCloseMeta.from_xdr_bytes(ledgers[LAST]).v1.ledger_header
    assert n.protocol_version == hdr.header.ledger_version.uint32
    ll = client.get_latest_ledger()
    assert ll.sequence == LAST
    assert ll.id == hdr.hash.hash.hex()
    assert ll.close_time == hdr.header.scp_value.close_time.time_point.uint64
    assert base64.b64decode(ll.metadata_xdr) == ledgers[LAST]
    assert base64.b64decode(ll.header_xdr) == hdr.to_xdr_bytes()


def test_get_ledgers_pages_through_both_ranges(client, truth):
    ledgers, _ = truth
    start = 10001 - 150  # pages cross the boundary between range 0 and range 1
    seen, cursor = [], None
    while len(seen) < 400:
        page = (
            client.get_ledgers(start_ledger=start, limit=200)
            if cursor is None
            else client.get_ledgers(cursor=cursor, limit=200)
        )
        assert page.oldest_ledger == FIRST and page.latest_ledger == LAST
        for item in page.ledgers:
            raw = ledgers[item.sequence]
            assert base64.b64decode(item.metadata_xdr) == raw  # the stored bytes, exactly
            hdr = sdk_xdr.LedgerHeaderHistoryEntry.from_xdr(item.header_xdr)
            assert item.hash == hdr.hash.hash.hex() == lcm.header_hashes(raw)[0].hex()
            assert item.ledger_close_time == hdr.header.scp_value.close_time.time_point.uint64
            seen.append(item.sequence)
        assert page.cursor == str(seen[-1])
        cursor = page.cursor
    assert seen == list(range(start, start + 400))
    last = client.get_ledgers(start_ledger=LAST - 2, limit=200)
    assert [x.sequence for x in last.ledgers] == [LAST - 2, LAST - 1, LAST]
    assert client.get_ledgers(cursor=last.cursor).ledgers == []
    assert len(client.get_ledgers(start_ledger=FIRST).ledgers) == 5  # default limit


def test_every_transaction_found_by_hash(client, truth):
    ledgers, txs = truth
    assert len(txs) > 5000
    assert any(inner for _, _, inner in txs.values()), "the lake should hold fee bumps"
    for h, (seq, order, inner) in txs.items():
        r = client.get_transaction(h.hex())
        assert r.status in (GetTransactionStatus.SUCCESS, GetTransactionStatus.FAILED), h.hex()
        assert (r.ledger, r.application_order) == (seq, order)
        assert r.latest_ledger == LAST and r.oldest_ledger == FIRST
        raw = ledgers[seq]
        assert r.create_at == close_time(seq)
        for field in (r.envelope_xdr, r.result_xdr, r.result_meta_xdr):
            assert base64.b64decode(field) in raw  # a slice of the stored ledger
        if inner:  # looked up by the inner hash of a fee bump: the fee bump is returned
            assert r.fee_bump
            assert bytes.fromhex(r.transaction_hash) != h
    assert sum(1 for _, _, inner in txs.values() if inner) >= 1


def close_time(seq: int) -> int:
    """Close time of a ledger holding transactions, as stellar-sdk decoded it (see ``truth``)."""
    return _CLOSE[seq]


def test_transactions_match_stellar_sdk_decoding(client, truth):
    """Envelope, result and meta equal stellar-sdk's encoding of the ledger's own objects,
    and the envelope hashes (computed by stellar-sdk) to the requested hash."""
    ledgers, txs = truth
    bumped = {(seq, order) for seq, order, inner in txs.values() if inner}
    checked = fee_bumps = 0
    for h, (seq, order, inner) in txs.items():
        if inner or (checked >= 300 and (seq, order) not in bumped):
            continue
        r = client.get_transaction(h.hex())
        body = _body(ledgers[seq])
        p = body.tx_processing[order - 1]
        assert base64.b64decode(r.result_xdr) == p.result.result.to_xdr_bytes()
        assert base64.b64decode(r.result_meta_xdr) == p.tx_apply_processing.to_xdr_bytes()
        assert _envelope_hash(r.envelope_xdr) == h
        ok = p.result.result.result.code in (
            sdk_xdr.TransactionResultCode.txSUCCESS,
            sdk_xdr.TransactionResultCode.txFEE_BUMP_INNER_SUCCESS,
        )
        assert r.status == (GetTransactionStatus.SUCCESS if ok else GetTransactionStatus.FAILED)
        assert r.fee_bump == (p.result.result.result.inner_result_pair is not None)
        fee_bumps += r.fee_bump
        checked += 1
    assert checked >= 300 and fee_bumps >= 1


def _body(raw: bytes):
    m = sdk_xdr.LedgerCloseMeta.from_xdr_bytes(raw)
    return m.v0 or m.v1 or m.v2


def test_absent_hashes_not_found(client, truth):
    _, txs = truth
    for i in range(300):
        h = hashlib.sha256(b"absent %d" % i).digest()
        assert h not in txs
        r = client.get_transaction(h.hex())
        assert r.status == GetTransactionStatus.NOT_FOUND
        assert r.transaction_hash == h.hex()
        assert r.ledger is None and r.envelope_xdr is None
        assert r.latest_ledger == LAST and r.oldest_ledger == FIRST


def test_get_transactions_pages_over_every_transaction(client, truth):
    """Paging from the first ledger returns every transaction once, in (ledger, apply) order."""
    ledgers, txs = truth
    want = sorted((seq, order, h) for h, (seq, order, inner) in txs.items() if not inner)
    got: list[tuple[int, int, bytes]] = []
    page = client.get_transactions(start_ledger=FIRST, limit=200)
    while True:
        for t in page.transactions:
            got.append((t.ledger, t.application_order, bytes.fromhex(t.transaction_hash)))
            assert t.created_at == close_time(t.ledger)
            assert base64.b64decode(t.envelope_xdr) in ledgers[t.ledger]
        assert page.latest_ledger == LAST and page.oldest_ledger == FIRST
        if not page.transactions and int(page.cursor) >> 32 >= LAST:
            break
        page = client.get_transactions(cursor=page.cursor, limit=200)
    assert got == want
    small = client.get_transactions(start_ledger=FIRST)
    assert len(small.transactions) == 10  # default limit
    nxt = client.get_transactions(cursor=small.cursor, limit=3)
    assert [(t.ledger, t.application_order) for t in nxt.transactions] == [g[:2] for g in want[10:13]]


def test_json_xdr_format(server, truth):
    ledgers, txs = truth
    h, (seq, order, _) = next((h, v) for h, v in txs.items() if not v[2])
    r = rpc(server.url, "getTransaction", {"hash": h.hex(), "xdrFormat": "json"})["result"]
    body = _body(ledgers[seq])
    p = body.tx_processing[order - 1]
    assert r["resultJson"] == json.loads(p.result.result.to_json())
    assert r["resultMetaJson"] == json.loads(p.tx_apply_processing.to_json())
    env = sdk_xdr.TransactionEnvelope.from_json(json.dumps(r["envelopeJson"]))
    assert _envelope_hash(env.to_xdr()) == h
    assert "envelopeXdr" not in r
    page = rpc(server.url, "getLedgers", {"startLedger": seq, "pagination": {"limit": 1}, "xdrFormat": "json"})
    led = page["result"]["ledgers"][0]
    assert led["headerJson"] == json.loads(body.ledger_header.to_json())
    assert sdk_xdr.LedgerCloseMeta.from_json(json.dumps(led["metadataJson"])).to_xdr_bytes() == ledgers[seq]


def test_client_sees_rpc_errors(client):
    with pytest.raises(SorobanRpcErrorResponse) as e:
        client.get_ledgers(start_ledger=LAST + 1)
    assert e.value.code == -32602 and str(LAST) in e.value.message
    with pytest.raises(SorobanRpcErrorResponse) as e:
        client.get_transactions(start_ledger=FIRST, limit=201)
    assert e.value.code == -32602 and "200" in e.value.message


def test_raw_batch(server):
    status, out = post(
        server.url,
        json.dumps(
            [
                {"jsonrpc": "2.0", "id": 1, "method": "getHealth"},
                {"jsonrpc": "2.0", "id": "b", "method": "nope"},
            ]
        ),
    )
    assert status == 200
    assert out[0]["id"] == 1 and out[0]["result"]["status"] == "healthy"
    assert out[1]["id"] == "b" and out[1]["error"]["code"] == -32601


def test_network_id_matches_sdk():
    from stellar_sdk import Network

    assert network_id(PUBNET) == Network(PUBNET).network_id()
