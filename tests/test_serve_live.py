"""``stellar-rpc serve`` beside a running backfill on the same data directory.

Only COMPLETE ranges are served: a range left INGESTING (the backfill killed at a fault point)
is reported as not available, answers stay whole while a backfill runs, and a range that
completes later is picked up without a restart.
"""

from __future__ import annotations

import time

from rpcbackfill import lcm
from rpcbackfill.orchestration import api
from rpcbackfill.rpc.server import ServerOptions
from tests.lib.orchestration import (
    RS,
    make_config,
    run_to_end,
    start_coordinator,
    wait_group_gone,
)
from tests.lib.serve import (
    DENSITY,
    LAST,
    SEED,
    InThreadServer,
    lake_ledgers,
    rpc,
    with_endpoint,
)


def _range1_hashes() -> list[tuple[int, bytes]]:
    out = []
    for seq, raw in lake_ledgers():
        if seq > RS + 1:
            out += [(seq, h) for h in lcm.iter_hashes(lcm.tx_hashes(raw)[1])]
    return out


def test_ingesting_range_not_served_then_picked_up(tmp_path, tmp_path_factory):
    from tests.lib.orchestration import make_lake

    lake = make_lake(tmp_path_factory.getbasetemp() / "serve-lake", 2, LAST, seed=SEED, tx_per_ledger=DENSITY)
    data = tmp_path / "data"
    cfg0 = make_config(data, lake, 2, RS + 1)
    assert run_to_end(tmp_path, cfg0) == 0  # range 0 COMPLETE
    cfg1 = make_config(data, lake, RS + 2, LAST)
    assert run_to_end(tmp_path, cfg1, env={"RPCBACKFILL_TEST_CRASH_AT": "checkpoint_acked:2"}) != 0
    st = {r.id: r for r in api.status(cfg1).ranges}
    assert st[0].state == "COMPLETE" and st[1].state == "INGESTING"
    assert st[1].last_committed_ledger >= RS + 2  # range 1 holds committed ledgers

    hashes = _range1_hashes()
    probe_seq, probe = hashes[len(hashes) // 20]  # a transaction of range 1's committed part
    assert probe_seq <= st[1].last_committed_ledger

    srv = InThreadServer(with_endpoint(cfg1, "127.0.0.1:0"), ServerOptions(refresh_interval_s=0.1))
    try:
        h = rpc(srv.url, "getHealth")["result"]
        assert (h["oldestLedger"], h["latestLedger"]) == (2, RS + 1)
        e = rpc(srv.url, "getLedgers", {"startLedger": RS + 2})["error"]
        assert e["code"] == -32602 and f"latest ledger: {RS + 1}" in e["message"]
        r = rpc(srv.url, "getTransaction", {"hash": probe.hex()})["result"]
        assert r["status"] == "NOT_FOUND" and r["latestLedger"] == RS + 1
        page = rpc(srv.url, "getLedgers", {"startLedger": RS - 2, "pagination": {"limit": 10}})["result"]
        assert [x["sequence"] for x in page["ledgers"]] == [RS - 2, RS - 1, RS, RS + 1]

        # resume the backfill while the server runs; every answer is whole or "not available"
        proc = start_coordinator(tmp_path, cfg1)
        answers = 0
        while proc.poll() is None:
            r = rpc(srv.url, "getTransaction", {"hash": probe.hex()})["result"]
            assert r["status"] in ("NOT_FOUND", "SUCCESS", "FAILED")
            if r["status"] != "NOT_FOUND":
                assert r["ledger"] == probe_seq and r["latestLedger"] == LAST
            page = rpc(srv.url, "getLedgers", {"startLedger": RS, "pagination": {"limit": 5}})["result"]
            assert all(x["sequence"] <= page["latestLedger"] for x in page["ledgers"])
            answers += 1
        assert proc.wait() == 0
        wait_group_gone(proc.pid)
        assert answers >= 1

        deadline = time.monotonic() + 60  # picked up by the periodic refresh, no restart
        while rpc(srv.url, "getHealth")["result"]["latestLedger"] != LAST:
            assert time.monotonic() < deadline, "range 1 was not picked up"
            time.sleep(0.1)
        r = rpc(srv.url, "getTransaction", {"hash": probe.hex()})["result"]
        assert r["status"] in ("SUCCESS", "FAILED") and r["ledger"] == probe_seq
        last_seq, last_hash = hashes[-1]
        r = rpc(srv.url, "getTransaction", {"hash": last_hash.hex()})["result"]
        assert r["ledger"] == last_seq
        page = rpc(srv.url, "getLedgers", {"startLedger": RS, "pagination": {"limit": 4}})["result"]
        assert [x["sequence"] for x in page["ledgers"]] == [RS, RS + 1, RS + 2, RS + 3]
    finally:
        srv.stop()
