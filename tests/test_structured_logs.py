"""``--log-format json`` through the real CLI: every line of every process is one JSON object
whose fields are fields (range_id, pid, attempt, error_class, ledger, phase, rates).

The run is made to fail once deterministically: the lake object holding the range's first
ledger is garbage until the coordinator logs that it will retry; the test then restores it,
so attempt 2 succeeds.  A fault hold in the transition keeps the range TRANSITIONING until a
progress line (``[service] progress_interval = "1s"``) has been logged.
"""

from __future__ import annotations

import json

from rpcbackfill.orchestration import faults
from rpcbackfill.sources import layout
from tests.lib.orchestration import LoggedBackfill, make_lake, wait_held, write_backfill_config

FIRST, LAST = 2, 10001


def wait_for(run: LoggedBackfill, pred) -> dict:
    """The first JSON record the run logged that ``pred`` accepts."""
    return json.loads(run.lines[run.wait_line(lambda line: pred(json.loads(line)))])


def test_json_logs_carry_fields_from_every_process(tmp_path):
    lake = make_lake(tmp_path / "lake", FIRST, LAST, seed=8, tx_per_ledger=1.0)
    obj = lake / layout.object_key(FIRST, layout.read_manifest(lake))
    good = obj.read_bytes()
    obj.write_bytes(b"garbage, not zstd" * 8)
    cfg = write_backfill_config(
        tmp_path,
        lake,
        service={"http_endpoint": "127.0.0.1:0", "progress_interval": "1s"},
        backfill={"parallel_ranges": 1, "max_retries": 5},
        storage={"retry_limit": 1, "retry_wait": 0.01},
    )
    hold = tmp_path / "hold"
    hold.mkdir()
    env = faults.hold_env(hold, "verify_shard:1")
    with LoggedBackfill(cfg, FIRST, LAST, env=env, before=("--log-format", "json")) as run:
        try:
            retry = wait_for(run, lambda r: "retrying in" in r["msg"] and r["logger"].endswith("coordinator"))
            obj.write_bytes(good)
            wait_held(hold, "verify_shard", run.proc)
            # the line logged while held (one logged earlier in the transition has another txhash phase)
            progress = wait_for(
                run, lambda r: r["msg"].startswith("progress:") and "txhash:VERIFYING_RECSPLIT" in r["phase"]
            )
            faults.release(hold, "verify_shard")
            assert run.wait() == 0
        finally:
            obj.write_bytes(good)
    p, lines = run.proc, run.lines
    recs = [json.loads(line) for line in lines]  # every line is one JSON object
    assert recs and all({"ts", "level", "logger", "msg", "pid"} <= set(r) for r in recs)

    # the coordinator's retry decision
    assert retry["range_id"] == 0 and retry["attempt"] == 1 and retry["error_class"] == "SourceError"
    assert retry["pid"] == p.pid
    # range-process records: forwarded with their own pid, the range and the attempt
    worker = [r for r in recs if r["pid"] != p.pid]
    assert worker and all(r["range_id"] == 0 and r["attempt"] in (1, 2) for r in worker)
    assert len({r["pid"] for r in worker}) == 2  # two attempts, two processes
    lake_retry = [r for r in worker if r["logger"] == "rpcbackfill.sources.datalake" and "retrying" in r["msg"]]
    assert (
        lake_retry and lake_retry[0]["error_class"] == "CorruptDownloadError" and lake_retry[0]["reason"] == "corrupt"
    )
    failed = [r for r in worker if r["level"] == "error"]
    assert failed and failed[0]["error_class"] == "SourceError" and failed[0]["attempt"] == 1
    ingesting = [r for r in worker if r["msg"].startswith("range 0: ingesting")]
    assert [r["attempt"] for r in ingesting] == [1, 2] or [r["attempt"] for r in ingesting] == [2]
    assert all(r["ledger"] == FIRST and r["phase"] == "INGESTING" for r in ingesting)
    done = [r for r in worker if r["msg"] == "range 0: COMPLETE"]
    assert done and done[0]["ledger"] == LAST and done[0]["phase"] == "COMPLETE" and done[0]["attempt"] == 2
    # progress lines carry their numbers as fields
    assert progress["range_id"] == 0 and progress["ledgers_done"] == LAST - FIRST + 1
    assert progress["ledger"] == LAST and "txhash:VERIFYING_RECSPLIT" in progress["phase"]
    early = [r for r in recs if r["msg"].startswith("progress:")]
    assert all(isinstance(r["ledgers_done"], int) and r["range_id"] == 0 for r in early)
    assert isinstance(progress["ledgers_per_s"], (int, float)) and isinstance(progress["tx_per_s"], (int, float))
    assert "eta_s" in progress
