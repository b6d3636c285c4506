"""``stellar-rpc serve``: JSON-RPC errors for bad input, odd ids, damaged data, request caps."""

from __future__ import annotations

import json
import shutil

import pytest

from rpcbackfill.ledgermath import chunk_of_ledger
from rpcbackfill.rpc.server import ServerOptions
from rpcbackfill.stores.lfs import chunk_paths, decode_index
from tests.lib.serve import (
    FIRST,
    LAST,
    InThreadServer,
    backfilled,
    post,
    rpc,
    run_serve_until_exit,
    with_endpoint,
)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return backfilled(tmp_path_factory.getbasetemp())[0]


@pytest.fixture(scope="module")
def url(cfg):
    srv = InThreadServer(cfg, ServerOptions(max_request_bytes=8192))
    yield srv.url
    srv.stop()


def err(reply) -> tuple[int, str]:
    assert "result" not in reply, reply
    return reply["error"]["code"], reply["error"]["message"]


@pytest.mark.parametrize("body", [b"{", b"not json", b"\xff\xfe", b'{"jsonrpc":"2.0",'])
def test_parse_errors(url, body):
    status, reply = post(url, body)
    assert status == 200
    assert reply["id"] is None and err(reply)[0] == -32700


def test_deep_nesting_is_rejected_without_a_traceback(url):
    """Parse error when it exceeds the interpreter's recursion limit, else an invalid (batch) request."""
    status, reply = post(url, b"[" * 2000 + b"]" * 2000)
    assert status == 200
    replies = reply if isinstance(reply, list) else [reply]
    assert replies and all(r["id"] is None and err(r)[0] in (-32700, -32600) for r in replies)


@pytest.mark.parametrize(
    "doc",
    [
        5,
        "x",
        None,
        [],
        [1],
        {"id": 1, "method": "getHealth"},
        {"jsonrpc": "1.0", "id": 1, "method": "getHealth"},
        {"jsonrpc": "2.0", "id": 1},
        {"jsonrpc": "2.0", "id": 1, "method": 7},
    ],
)
def test_invalid_requests(url, doc):
    _, reply = post(url, json.dumps(doc))
    replies = reply if isinstance(reply, list) else [reply]
    for r in replies:
        assert err(r)[0] == -32600


def test_unknown_method(url):
    code, msg = err(rpc(url, "sendTransaction", {"transaction": "AAAA"}))
    assert code == -32601 and "sendTransaction" in msg


@pytest.mark.parametrize(
    ("method", "params", "reason"),
    [
        ("getTransaction", None, "hash is required"),
        ("getTransaction", {"hash": "zz"}, "hash length"),
        ("getTransaction", {"hash": "g" * 64}, "not hexadecimal"),
        ("getTransaction", {"hash": 5}, "hash is required"),
        ("getTransaction", {"hash": "00" * 32, "xdrFormat": "xml"}, "xdrFormat"),
        ("getTransaction", ["00" * 32], "params must be an object"),
        ("getTransaction", {"hash": "00" * 32, "bogus": 1}, "bogus"),
        ("getLedgers", {}, "startLedger is required"),
        ("getLedgers", {"startLedger": "7"}, "startLedger must be an integer"),
        ("getLedgers", {"startLedger": -1}, "startLedger must be within"),
        ("getLedgers", {"startLedger": 2**40}, "startLedger must be within"),
        ("getLedgers", {"startLedger": 1}, f"oldest ledger: {FIRST}"),
        ("getLedgers", {"startLedger": LAST + 1}, f"latest ledger: {LAST}"),
        ("getLedgers", {"startLedger": FIRST, "pagination": {"limit": 201}}, "must not exceed 200"),
        ("getLedgers", {"startLedger": FIRST, "pagination": {"limit": True}}, "limit must be an integer"),
        ("getLedgers", {"startLedger": FIRST, "pagination": {"cursor": "5"}}, "cannot both be set"),
        ("getLedgers", {"pagination": {"cursor": "abc"}}, "invalid cursor"),
        ("getLedgers", {"pagination": 5}, "pagination must be an object"),
        ("getTransactions", {"startLedger": FIRST, "pagination": {"limit": 1000}}, "must not exceed 200"),
        ("getTransactions", {"pagination": {"cursor": "-5"}}, "invalid cursor"),
        ("getTransactions", {"startLedger": 0}, "startLedger is required"),
        ("getHealth", {"x": 1}, "unknown parameter"),
    ],
)
def test_invalid_params_name_the_reason(url, method, params, reason):
    code, msg = err(rpc(url, method, params))
    assert code == -32602
    assert reason in msg


@pytest.mark.parametrize(
    ("raw_id", "expect"),
    [
        ("1", 1),
        ('"abc"', "abc"),
        ("null", None),
        ("NaN", None),
        ("Infinity", None),
        ("-Infinity", None),
        ("1e999", None),
        ("123456789012345678901234567890", 123456789012345678901234567890),
        ("1.5", 1.5),
        ('{"a": [1, {"b": 2}]}', None),
        ("[1, 2]", None),
        ("true", None),
        ('"\\ud800"', "\ud800"),
    ],
)
def test_any_id_gives_valid_json(url, raw_id, expect):
    status, reply = post(url, '{"jsonrpc": "2.0", "method": "getHealth", "id": ' + raw_id + "}")
    assert status == 200
    assert reply["id"] == expect
    assert reply["result"]["status"] == "healthy"


def test_huge_numbers_are_parse_errors_not_tracebacks(url):
    status, reply = post(url, '{"jsonrpc": "2.0", "method": "getHealth", "id": ' + "9" * 5000 + "}")
    assert status == 200 and err(reply)[0] == -32700


def test_request_size_cap(url):
    status, reply = post(url, json.dumps({"jsonrpc": "2.0", "id": 1, "method": "getHealth", "pad": "x" * 10000}))
    assert status == 413 and err(reply)[0] == -32600 and "8192" in err(reply)[1]


def test_batch_cap(url):
    batch = [{"jsonrpc": "2.0", "id": i, "method": "getHealth"} for i in range(21)]
    code, msg = err(post(url, json.dumps(batch))[1])
    assert code == -32600 and "20" in msg


def test_server_still_answers_after_bad_input(url):
    assert rpc(url, "getHealth")["result"]["latestLedger"] == LAST


def _corrupt_frame(cfg, seq: int) -> None:
    """Overwrite the zstd magic of ledger ``seq``'s frame: it can no longer be decompressed."""
    data, index = chunk_paths(cfg.immutable_stores.ledgers_base, chunk_of_ledger(seq))
    offs = decode_index(index.read_bytes(), data.stat().st_size)
    start = int(offs[seq - (chunk_of_ledger(seq) * 10000 + 2)])
    with open(data, "r+b") as f:
        f.seek(start)
        f.write(b"\0\0\0\0")


def test_damaged_chunk_fails_the_request_and_server_stays_up(cfg, tmp_path):
    data_dir = tmp_path / "copy"
    shutil.copytree(cfg.service.data_dir, data_dir)
    from rpcbackfill.config import default_config

    copy = with_endpoint(default_config(data_dir), "127.0.0.1:0")
    bad = 12345
    _corrupt_frame(copy, bad)
    # ledger 15000's chunk loses its tail: the index no longer matches the data file
    data, _ = chunk_paths(copy.immutable_stores.ledgers_base, chunk_of_ledger(15000))
    srv = InThreadServer(copy)
    try:
        code, msg = err(rpc(srv.url, "getLedgers", {"startLedger": bad - 1, "pagination": {"limit": 3}}))
        assert code == -32603 and f"ledger {bad}" in msg
        ok = rpc(srv.url, "getLedgers", {"startLedger": bad + 1, "pagination": {"limit": 2}})["result"]
        assert [x["sequence"] for x in ok["ledgers"]] == [bad + 1, bad + 2]
        with open(data, "r+b") as f:
            f.truncate(data.stat().st_size // 2)
        code, msg = err(rpc(srv.url, "getLedgers", {"startLedger": LAST - 1}))
        assert code == -32603 and f"ledger {LAST - 1}" in msg
        assert rpc(srv.url, "getHealth")["result"]["status"] == "healthy"
    finally:
        srv.stop()


def test_piece_encoder_matches_json():
    from rpcbackfill.rpc.methods import RawJSON
    from rpcbackfill.rpc.server import encode_pieces

    docs = [
        {},
        [],
        {"a": [1, {"b": [], "c": {}}], "d": "é\u2028", "e": None},
        [{"x": 1.5}, [True, False]],
        {"deep": [[[[[[{"z": [1]}]]]]]]},
    ]
    for doc in docs:
        out: list[bytes] = []
        encode_pieces(doc, out)
        assert json.loads(b"".join(out)) == doc
    out = []
    encode_pieces({"r": {"m": RawJSON(b'"', b"QUJD", b'"')}}, out)
    assert json.loads(b"".join(out)) == {"r": {"m": "QUJD"}}


@pytest.mark.parametrize("endpoint", ["nohost", "127.0.0.1:http", "127.0.0.1:70000", ":8000"])
def test_cli_rejects_bad_endpoint(cfg, endpoint):
    p = run_serve_until_exit(cfg.service.data_dir, endpoint)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "endpoint" in lines[-1] and "Traceback" not in p.stderr


def test_cli_port_in_use_is_input_error(cfg):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = run_serve_until_exit(cfg.service.data_dir, f"127.0.0.1:{port}")
    assert p.returncode == 2
    assert "cannot listen on 127.0.0.1" in p.stderr.strip().splitlines()[-1]


def test_wrong_network_passphrase_is_a_clear_error(cfg):
    import dataclasses

    from rpcbackfill import lcm
    from rpcbackfill.rpc.reader import HistoryReader

    other = dataclasses.replace(
        cfg, service=dataclasses.replace(cfg.service, network_passphrase="Test SDF Network ; September 2015")
    )
    srv = InThreadServer(other)
    try:
        reader = HistoryReader(cfg)
        reader.refresh()
        seq = next(s for s in range(FIRST, LAST) if reader.ledger(s).tx_count)
        h = lcm.tx_hashes(reader.ledger_bytes(seq))[1][:32]
        reader.close()
        code, msg = err(rpc(srv.url, "getTransaction", {"hash": h.hex()}))
        assert code == -32603 and "network_passphrase" in msg and f"ledger {seq}" in msg
        assert rpc(srv.url, "getNetwork")["result"]["passphrase"] == "Test SDF Network ; September 2015"
    finally:
        srv.stop()


def test_get_transactions_reads_a_bounded_number_of_ledgers(cfg, url):
    from rpcbackfill.rpc.methods import Limits

    srv = InThreadServer(cfg, ServerOptions(limits=Limits(scan_ledgers_max=3)))
    try:
        start, seen = FIRST, []
        page = rpc(srv.url, "getTransactions", {"startLedger": start, "pagination": {"limit": 200}})["result"]
        for _ in range(5):
            ledgers = {t["ledger"] for t in page["transactions"]}
            cursor_ledger = int(page["cursor"]) >> 32
            assert all(start <= s < start + 3 for s in ledgers)  # at most 3 ledgers read per request
            assert cursor_ledger == start + 2  # the cursor continues after the last ledger read
            seen += [(t["ledger"], t["applicationOrder"]) for t in page["transactions"]]
            start += 3
            page = rpc(srv.url, "getTransactions", {"pagination": {"cursor": page["cursor"], "limit": 200}})["result"]
        full = rpc(url, "getTransactions", {"startLedger": FIRST, "pagination": {"limit": 200}})  # no cap
        assert (
            seen and seen == [(t["ledger"], t["applicationOrder"]) for t in full["result"]["transactions"]][: len(seen)]
        )
    finally:
        srv.stop()
