"""``stellar-rpc serve``: damage in one range does not break lookups in the others; strict cursors.

The data directory holds two COMPLETE ranges (0 and 1, one chunk each).  The damage is put in
range 1, which ``getTransaction`` asks first (newest first), so a hash of range 0 is found only
if the search goes on past the damaged range."""

from __future__ import annotations

import shutil

import pytest

from rpcbackfill.config import default_config
from rpcbackfill.ledgermath import chunk_of_ledger
from rpcbackfill.paths import DataDirLayout, index_shard_path
from rpcbackfill.records import shard_of
from rpcbackfill.stores.lfs import chunk_paths
from tests.lib.orchestration import RS
from tests.lib.serve import FIRST, LAST, InThreadServer, backfilled, rpc, with_endpoint


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return backfilled(tmp_path_factory.getbasetemp())[0]


def _hashes(url: str, start: int, n: int = 400) -> list[tuple[str, int]]:
    """(hash, ledger) of the first ``n`` transactions from ledger ``start`` on."""
    out: list[tuple[str, int]] = []
    params: dict = {"startLedger": start, "pagination": {"limit": 200}}
    while len(out) < n:
        res = rpc(url, "getTransactions", params)["result"]
        out += [(t["txHash"], t["ledger"]) for t in res["transactions"]]
        params = {"pagination": {"cursor": res["cursor"], "limit": 200}}
    return out


@pytest.fixture(scope="module")
def pair(cfg):
    """A hash of range 0 and a hash of range 1 that fall in the same shard."""
    srv = InThreadServer(cfg)
    try:
        old = _hashes(srv.url, FIRST)
        new = _hashes(srv.url, RS + FIRST)
    finally:
        srv.stop()
    assert all(s < RS + FIRST for _, s in old) and all(s >= RS + FIRST for _, s in new)
    for h0, s0 in old:
        same = [(h, s) for h, s in new if shard_of(bytes.fromhex(h)) == shard_of(bytes.fromhex(h0))]
        if same:
            return (h0, s0), same[0]
    pytest.fail("no two transactions of the two ranges share a shard")


def _copy(cfg, tmp_path):
    data_dir = tmp_path / "copy"
    shutil.copytree(cfg.service.data_dir, data_dir)
    return with_endpoint(default_config(data_dir), "127.0.0.1:0")


def _damage(copy, how: str, h_new: str, seq_new: int) -> str:
    """Damage range 1 where ``h_new`` lives; the path of the damaged file."""
    shard = index_shard_path(DataDirLayout(copy).txhash_range_dir(1), shard_of(bytes.fromhex(h_new)))
    if how == "shard-deleted":
        shard.unlink()
        return str(shard)
    if how == "shard-flipped":  # one bit in the middle: the CRC check fails on first use
        b = bytearray(shard.read_bytes())
        b[len(b) // 2] ^= 0x10
        shard.write_bytes(bytes(b))
        return str(shard)
    assert how == "chunk-deleted"
    data, _ = chunk_paths(copy.immutable_stores.ledgers_base, chunk_of_ledger(seq_new))
    data.unlink()
    return str(data)


@pytest.mark.parametrize("how", ["shard-deleted", "shard-flipped", "chunk-deleted"])
def test_damaged_range_does_not_hide_the_healthy_one(cfg, pair, tmp_path, how):
    (h_old, s_old), (h_new, s_new) = pair
    copy = _copy(cfg, tmp_path)
    path = _damage(copy, how, h_new, s_new)
    srv = InThreadServer(copy)
    try:
        # the healthy range still answers, although the damaged range is asked first
        got = rpc(srv.url, "getTransaction", {"hash": h_old})["result"]
        assert got["status"] in ("SUCCESS", "FAILED") and got["ledger"] == s_old and got["txHash"] == h_old
        # the hash of the damaged range: an error naming the damaged file, not NOT_FOUND
        reply = rpc(srv.url, "getTransaction", {"hash": h_new})
        assert "result" not in reply, reply
        assert reply["error"]["code"] == -32603
        assert path in reply["error"]["message"] and h_new in reply["error"]["message"]
        # the server stays up and keeps answering
        again = rpc(srv.url, "getTransaction", {"hash": h_old})["result"]
        assert again["ledger"] == s_old
        assert rpc(srv.url, "getHealth")["result"]["oldestLedger"] == FIRST
    finally:
        srv.stop()


def test_healthy_directory_finds_both_and_reports_absent_as_not_found(cfg, pair):
    (h_old, s_old), (h_new, s_new) = pair
    srv = InThreadServer(cfg)
    try:
        assert rpc(srv.url, "getTransaction", {"hash": h_old})["result"]["ledger"] == s_old
        assert rpc(srv.url, "getTransaction", {"hash": h_new})["result"]["ledger"] == s_new
        absent = "ab" * 32
        assert rpc(srv.url, "getTransaction", {"hash": absent})["result"]["status"] == "NOT_FOUND"
    finally:
        srv.stop()


@pytest.mark.parametrize("method", ["getLedgers", "getTransactions"])
@pytest.mark.parametrize(
    ("cursor", "reason"),
    [
        ("\u0661\u0662\u0663", "ASCII decimal digits"),  # Arabic-Indic "123": int() would take it
        ("１２", "ASCII decimal digits"),  # fullwidth digits
        ("1_000", "ASCII decimal digits"),
        (" 12", "ASCII decimal digits"),
        ("-1", "ASCII decimal digits"),
        ("+5", "ASCII decimal digits"),
        ("9" * 20_000, "must not exceed"),  # within the request cap
        ("0" * 30 + "1", "must not exceed"),
    ],
    ids=["arabic-indic", "fullwidth", "underscore", "blank", "minus", "plus", "huge", "zero-padded"],
)
def test_cursor_accepts_only_bounded_ascii_digits(cfg, method, cursor, reason):
    srv = InThreadServer(cfg)
    try:
        reply = rpc(srv.url, method, {"pagination": {"cursor": cursor}})
    finally:
        srv.stop()
    assert "result" not in reply, reply
    assert reply["error"]["code"] == -32602 and reason in reply["error"]["message"]
    assert len(reply["error"]["message"]) < 200  # a huge cursor is not echoed back whole


@pytest.mark.parametrize(
    ("method", "cursor", "bound"),
    [("getLedgers", str(2**32), "4294967295"), ("getTransactions", str(2**63), str(2**63 - 1))],
)
def test_cursor_above_its_bound(cfg, method, cursor, bound):
    srv = InThreadServer(cfg)
    try:
        reply = rpc(srv.url, method, {"pagination": {"cursor": cursor}})
        assert reply["error"]["code"] == -32602 and bound in reply["error"]["message"]
        # the largest valid cursor is accepted (an empty page past the served ledgers)
        ok = rpc(srv.url, method, {"pagination": {"cursor": bound}})
        assert "result" in ok, ok
    finally:
        srv.stop()


def test_last_ledger_is_served(cfg):
    srv = InThreadServer(cfg)
    try:
        assert rpc(srv.url, "getHealth")["result"]["latestLedger"] == LAST
    finally:
        srv.stop()
