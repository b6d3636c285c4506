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
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from rpcbackfill.errors import NotFoundError
from rpcbackfill.meta.store import MetaStore
from rpcbackfill.orchestration import api, faults
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
    wait_held,
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
    hold = tmp_path / "hold"
    hold.mkdir()
    # Every range process stops after its first acknowledged checkpoint until released: the
    # checks below run while the backfill is certainly in progress.
    p = start_coordinator(tmp_path, cfg, env=faults.hold_env(hold, "checkpoint_acked:1"))
    try:
        wait_held(hold, "checkpoint_acked", p, n=2)  # ranges 0 and 1 (parallel_ranges=2)
        # --- while running: HTTP status/health, 503 for queries, second process refused
        code, r = _rpc(port, "getStatus")
        assert code == 200
        status = r["result"]
        assert status["mode"] == "backfill" and status["run_state"] == "running"
        assert [x["id"] for x in status["ranges"]] == [0, 1, 2]
        assert [x["state"] for x in status["ranges"]] == ["INGESTING", "INGESTING", "PENDING"]
        r0 = status["ranges"][0]
        assert {"ledgers_per_s", "tx_per_s", "eta_s", "last_committed_ledger", "ledger_phase", "attempts"} <= set(r0)
        assert r0["last_committed_ledger"] == cfg.backfill.checkpoint_interval + 1  # held at the first checkpoint
        assert r0["progress"]["rid"] == 0 and r0["progress"]["ledgers_total"] == RS
        code, r = _rpc(port, "getHealth")
        assert code == 200 and r["result"]["status"] == "healthy"
        code, r = _rpc(port, "getTransaction")
        assert code == 503 and r["error"]["message"] == "Service in backfill mode"

        second = start_coordinator(tmp_path, cfg, stderr=subprocess.PIPE)
        _, err = second.communicate(timeout=60)
        assert second.returncode == 4, err
        assert b"in use by another process" in err

        # the read-only status works beside the writer, in the same schema
        st = api.status(cfg)
        assert st.mode == "backfill" and len(st.ranges) == 3
        assert st.ranges[0].last_committed_ledger == r0["last_committed_ledger"]
        assert set(st.to_json()["ranges"][0]) == set(r0)

        faults.release(hold, "checkpoint_acked")
        assert p.wait(timeout=240) == 0
    finally:
        if p.poll() is None:
            kill_tree(p)
    wait_group_gone(p.pid)

    n_ledgers, n_hashes = check_backfill_result(cfg, lake3, 2, LAST)
    assert n_ledgers == LAST - 1
    st = api.status(cfg)
    assert st.complete and st.counts == {"COMPLETE": 3}
    assert st.ledgers_done == LAST - 1 and st.tx_count == n_hashes
    for r in st.ranges:
        assert r.ledger_phase == "IMMUTABLE" and r.txhash_phase == "COMPLETE"
        assert r.last_committed_ledger == r.end_ledger and r.percent == 100.0
        assert r.completed_at >= r.created_at and r.attempts == 0
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
    hold = tmp_path / "hold"
    hold.mkdir()
    log_file = tmp_path / "coordinator.log"
    with open(log_file, "wb") as log_out:
        p = start_coordinator(tmp_path, cfg, env=faults.hold_env(hold, "checkpoint_acked:2"), stderr=log_out)
    meta_path = cfg.meta_store.path
    wait_held(hold, "checkpoint_acked", p)  # a range has two checkpoints and waits: the run is not over
    os.killpg(p.pid, signal.SIGTERM)  # like Ctrl-C/kill of the whole tree
    # release the held range only once the coordinator acted on the signal
    deadline = time.monotonic() + 60
    while b"SIGTERM received" not in log_file.read_bytes():
        assert time.monotonic() < deadline and p.poll() is None, log_file.read_text()
        time.sleep(0.02)
    faults.release(hold, "checkpoint_acked")
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
    (r,) = api.status(cfg).ranges
    assert r.state == "FAILED" and r.error and r.attempts == 3
    committed = r.last_committed_ledger
    assert committed is not None and 4001 <= committed < 5000  # progress before the bad file is kept

    # a missing object inside the bounded range is fatal: FAILED without task retries
    victim.unlink()
    p = start_coordinator(tmp_path, cfg, stderr=subprocess.PIPE)
    _, err = p.communicate(timeout=180)
    assert p.returncode == 1 and b"range 0 attempt" not in err, err
    assert b"FAILED (not retryable)" in err
    (r,) = api.status(cfg).ranges
    assert r.last_committed_ledger == committed and r.attempts == 1

    victim.write_bytes(good)
    assert run_to_end(tmp_path, cfg) == 0
    check_backfill_result(cfg, lake, 2, RS + 1)
    (r,) = api.status(cfg).ranges
    assert r.error is None and r.attempts == 0 and r.state == "COMPLETE"


def _decoy_package(root: Path) -> Path:
    """A directory holding an ``rpcbackfill`` package that refuses to be imported -- what a
    source checkout without built extensions looks like to a process started there."""
    pkg = root / "rpcbackfill"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('raise ImportError("decoy rpcbackfill imported from the working directory")\n')
    return root


def test_range_processes_import_the_coordinators_package_whatever_the_cwd(tmp_path, lake3):
    cwd = _decoy_package(tmp_path / "checkout")
    cfg = make_config(tmp_path / "data", lake3, 2, RS + 1, max_retries=0)
    p = start_coordinator(tmp_path, cfg, cwd=cwd, stderr=subprocess.PIPE)
    _, err = p.communicate(timeout=240)
    assert p.returncode == 0, err
    assert b"decoy" not in err
    check_backfill_result(cfg, lake3, 2, RS + 1)


def test_bootstrap_import_failure_is_reported_and_not_retryable(tmp_path):
    from rpcbackfill.orchestration.subprocess_runner import BOOTSTRAP, IMPORT_FAILED_EXIT, SubprocessRunner

    decoy = _decoy_package(tmp_path / "checkout")
    # a range process whose pinned sys.path leads to the decoy: it exits with the dedicated code
    r = subprocess.run(
        [sys.executable, "-c", BOOTSTRAP, "0", str(os.getpid()), str(decoy)],
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == IMPORT_FAILED_EXIT
    assert b"error: range process cannot import rpcbackfill: ImportError: decoy" in r.stderr
    out = SubprocessRunner._lost(3, IMPORT_FAILED_EXIT)
    assert (out.rid, out.status, out.error_class, out.retryable) == (3, "failed", "ImportError", False)
    assert SubprocessRunner._lost(3, -9).retryable  # a killed process is retried
