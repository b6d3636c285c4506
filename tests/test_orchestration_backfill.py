"""End-to-end backfills through the real coordinator and orchestrator processes.

Lakes come from the generator (real pubnet transactions re-sequenced, unique hashes);
range_size = 10,000 so that a 3-range backfill takes seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from rpcbackfill.errors import NotFoundError
from rpcbackfill.meta.store import MetaStore
from rpcbackfill.orchestration import api
from tests.lib.net import free_port
from tests.lib.orchestration import (
    RS,
    active_leftovers,
    check_backfill_result,
    kill_tree,
    make_config,
    make_lake,
    run_to_end,
    start_coordinator,
    store_digest,
    wait_group_gone,
    with_port,
)

LAST = 3 * RS + 1


@pytest.fixture(scope="session")
def lake3(tmp_path_factory) -> Path:
    return make_lake(tmp_path_factory.getbasetemp() / "lake-3ranges", 2, LAST)


def _rpc(port: int, method: str):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_full_backfill_http_lock_and_queries(tmp_path, lake3):
    port = free_port()
    cfg = with_port(make_config(tmp_path / "data", lake3, 2, LAST, parallel_ranges=2), port)
    p = start_coordinator(tmp_path, cfg)
    try:
        # --- while running: HTTP status/health, 503 for queries, second process refused
        seen_states = set()
        status = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and p.poll() is None:
            try:
                code, r = _rpc(port, "getStatus")
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)
                continue
            assert code == 200
            status = r["result"]
            seen_states |= {x["state"] for x in status["ranges"]}
            if "INGESTING" in seen_states:
                break
            time.sleep(0.05)
        assert status is not None and status["mode"] == "backfill"
        assert [x["id"] for x in status["ranges"]] == [0, 1, 2]
        assert {"ledgers_per_s", "tx_per_s", "eta_s", "last_committed_ledger", "phase"} <= set(status["ranges"][0])
        code, r = _rpc(port, "getHealth")
        assert code == 200 and r["result"]["status"] == "healthy"
        code, r = _rpc(port, "getTransaction")
        assert code == 503 and r["error"]["message"] == "Service in backfill mode"

        second = start_coordinator(tmp_path, cfg, stderr=subprocess.PIPE)
        _, err = second.communicate(timeout=60)
        assert second.returncode == 4, err
        assert b"in use by another process" in err

        # the read-only status works beside the writer
        st = api.status(cfg)
        assert st["mode"] == "backfill" and len(st["ranges"]) == 3

        assert p.wait(timeout=240) == 0
    finally:
        if p.poll() is None:
            kill_tree(p)
    wait_group_gone(p.pid)

    n_ledgers, n_hashes = check_backfill_result(cfg, lake3, 2, LAST)
    assert n_ledgers == LAST - 1
    st = api.status(cfg)
    assert st["complete"] and st["counts"] == {"COMPLETE": 3}
    assert st["ledgers_done"] == LAST - 1 and st["tx_count"] == n_hashes
    for r in st["ranges"]:
        assert r["ledger"]["phase"] == "IMMUTABLE" and r["txhash"]["phase"] == "COMPLETE"
        assert r["ledger"]["last_committed_ledger"] == r["end_ledger"]
        assert r["completed_at"] >= r["created_at"]
    assert active_leftovers(cfg) == []
    with pytest.raises(NotFoundError):
        api.get_transaction_ledger(cfg, b"\x5a" * 32)
    with pytest.raises(NotFoundError):
        api.get_ledger(cfg, LAST + 1)

    # --- re-running a finished backfill changes nothing and exits 0
    before = store_digest(cfg)
    assert run_to_end(tmp_path, cfg) == 0
    assert store_digest(cfg) == before


def test_input_errors_before_any_work(tmp_path, lake3):
    cfg = make_config(tmp_path / "data", lake3, 3, LAST)
    p = start_coordinator(tmp_path, cfg, stderr=subprocess.PIPE)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2 and b"--start-ledger must be rangeFirstLedger(N)" in err
    assert not (tmp_path / "data" / "meta").exists()

    # a data directory keeps its range_size forever
    m = MetaStore(tmp_path / "data2" / "meta" / "rocksdb")
    m.init_backfill(2, 2 * RS + 1, 2 * RS)
    m.close()
    cfg = make_config(tmp_path / "data2", lake3, 2, 2 * RS + 1)
    p = start_coordinator(tmp_path, cfg, stderr=subprocess.PIPE)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2 and b"range_size 10000 differs from 20000" in err


def test_sigterm_stops_consistently_and_rerun_resumes(tmp_path, lake3):
    cfg = make_config(tmp_path / "data", lake3, 2, 2 * RS + 1, parallel_ranges=2)
    p = start_coordinator(tmp_path, cfg)
    meta_path = cfg.meta_store.path
    deadline = time.monotonic() + 60
    committed = 0
    while time.monotonic() < deadline and committed < 2001:  # wait for a couple of checkpoints
        time.sleep(0.1)
        try:
            st = api.status(cfg)
        except NotFoundError:
            continue
        committed = max((r["ledger"]["last_committed_ledger"] or 0) for r in st["ranges"]) if st["ranges"] else 0
    os.killpg(p.pid, signal.SIGTERM)  # like Ctrl-C/kill of the whole tree
    assert p.wait(timeout=60) == 128 + signal.SIGTERM
    wait_group_gone(p.pid)
    m = MetaStore(meta_path, read_only=True)
    infos = [m.range_info(r) for r in m.range_ids()]
    m.close()
    assert all(i.state in ("INGESTING", "TRANSITIONING", "COMPLETE") for i in infos)
    assert any(i.ledger_last_committed for i in infos)
    assert run_to_end(tmp_path, cfg) == 0
    check_backfill_result(cfg, lake3, 2, 2 * RS + 1)
    assert active_leftovers(cfg) == []


def _copy_lake(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _lake_file_of(lake: Path, seq: int) -> Path:
    from rpcbackfill.sources.layout import object_key, read_manifest

    return lake / object_key(seq, read_manifest(lake))


def test_source_failures_retry_fail_then_resume(tmp_path, lake3):
    lake = _copy_lake(lake3, tmp_path / "lake")
    victim = _lake_file_of(lake, 5000)
    good = victim.read_bytes()
    victim.write_bytes(b"\x28\xb5\x2f\xfd" + b"\x00" * 40)  # a corrupt zstd frame: transient, retried
    cfg = make_config(tmp_path / "data", lake, 2, RS + 1, max_retries=2)
    p = start_coordinator(tmp_path, cfg, stderr=subprocess.PIPE)
    _, err = p.communicate(timeout=180)
    assert p.returncode == 1, err
    assert err.count(b"range 0 attempt ") == 2, err  # 1 try + max_retries task retries, then FAILED
    assert b"(after 3 attempts)" in err
    assert b"re-running the same command resumes" in err
    st = api.status(cfg)
    (r,) = st["ranges"]
    assert r["state"] == "FAILED" and r["error"]
    committed = r["ledger"]["last_committed_ledger"]
    assert committed is not None and 4001 <= committed < 5000  # progress before the bad file is kept

    # a missing object inside the bounded range is fatal: FAILED without task retries
    victim.unlink()
    p = start_coordinator(tmp_path, cfg, stderr=subprocess.PIPE)
    _, err = p.communicate(timeout=180)
    assert p.returncode == 1 and b"range 0 attempt" not in err, err
    assert b"FAILED (not retryable)" in err
    assert api.status(cfg)["ranges"][0]["ledger"]["last_committed_ledger"] == committed

    victim.write_bytes(good)
    assert run_to_end(tmp_path, cfg) == 0
    check_backfill_result(cfg, lake, 2, RS + 1)
    assert api.status(cfg)["ranges"][0]["error"] is None
