"""Truthful ``getHealth`` of a running backfill, and endpoints that cannot listen.

Real CLI subprocesses over a small generated lake; stellar-sdk's RPC client asks getHealth.
The source "starts failing" deterministically: the lake object holding the range's first
ledger is overwritten with garbage, so every attempt fails at once (retry_limit = 0) and the
coordinator schedules retries; restoring the object lets the next attempt ingest.  A fault
hold in the transition keeps the run alive for the final healthy answer.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.request
from pathlib import Path

from stellar_sdk import SorobanServer
from stellar_sdk.exceptions import ConnectionError as SdkConnectionError
from stellar_sdk.exceptions import SorobanRpcErrorResponse

from rpcbackfill.orchestration import faults
from rpcbackfill.sources import layout
from tests.lib.net import free_port
from tests.lib.orchestration import kill_tree, make_lake, poll_until, start_backfill, wait_held, write_backfill_config

FIRST, LAST = 2, 10001


def write_config(tmp: Path, lake: Path, http: str, **service: object) -> Path:
    """One range at a time, the source never retried within an attempt, many attempts."""
    return write_backfill_config(
        tmp,
        lake,
        service={"http_endpoint": http, **service},
        backfill={"parallel_ranges": 1, "max_retries": 50},
        storage={"retry_limit": 0, "retry_wait": 0.01},
    )


def get_status(port: int) -> dict:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "getStatus"}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())["result"]


def poll_health(server: SorobanServer, p: subprocess.Popen, want_error: bool, timeout: float = 180.0):
    """Ask getHealth until it answers an error (want_error) or healthy; the deadline only
    guards against a hang."""

    def ask():
        try:
            h = server.get_health()
            return None if want_error else h
        except SorobanRpcErrorResponse as e:
            return e if want_error else None
        except SdkConnectionError:
            return None  # the endpoint is not up yet

    return poll_until(ask, p, "change of getHealth", timeout, interval=0.05)


def test_get_health_flips_on_source_failure_and_back(tmp_path):
    lake = make_lake(tmp_path / "lake", FIRST, LAST, seed=5, tx_per_ledger=1.0)
    obj = lake / layout.object_key(FIRST, layout.read_manifest(lake))
    good = obj.read_bytes()
    obj.write_bytes(b"not a zstd frame" * 8)
    port = free_port()
    hold = tmp_path / "hold"
    hold.mkdir()
    log = (tmp_path / "stderr.txt").open("wb")
    cfg = write_config(tmp_path, lake, f"127.0.0.1:{port}")
    p = start_backfill(cfg, FIRST, LAST, env=faults.hold_env(hold, "verify_shard:1"), stderr=log)
    server = SorobanServer(f"http://127.0.0.1:{port}")
    try:
        err = poll_health(server, p, want_error=True)
        assert err.code == -32603
        assert "range 0 retrying after error" in err.message and obj.name in err.message, err.message
        data = json.loads(err.data)
        assert data["status"] == "unhealthy" and data["mode"] == "backfill" and data["reason"] == err.message
        r0 = get_status(port)["ranges"][0]
        assert r0["attempts"] >= 1 and obj.name in r0["error"]

        obj.write_bytes(good)  # the source recovers: the next attempt ingests
        h = poll_health(server, p, want_error=False)
        assert h.status == "healthy"
        assert h.oldest_ledger == FIRST and FIRST <= h.latest_ledger <= LAST

        wait_held(hold, "verify_shard", p)
        h = server.get_health()
        assert h.status == "healthy" and h.latest_ledger == LAST
        faults.release(hold, "verify_shard")
        assert p.wait(timeout=240) == 0
    finally:
        obj.write_bytes(good)
        if p.poll() is None:
            kill_tree(p)
        log.close()


def feed_fifo(fifo: Path, data: bytes, timeout: float = 60.0) -> None:
    """Write ``data`` to the reader blocked on ``fifo`` (ENXIO until a reader has it open)."""

    def open_for_writing() -> int | None:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return None

    fd = poll_until(open_for_writing, None, "reader of the FIFO", timeout)
    os.set_blocking(fd, True)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


LAST_CHECKPOINT_BEFORE_FIFO = 4001  # checkpoints every 1,000 ledgers: 1001, 2001, ...


def test_get_health_reports_a_stall_then_recovers(tmp_path):
    lake = make_lake(tmp_path / "lake", FIRST, LAST, seed=6, tx_per_ledger=1.0)
    obj = lake / layout.object_key(5000, layout.read_manifest(lake))
    good = obj.read_bytes()
    obj.unlink()
    os.mkfifo(obj)  # reading it blocks until the test writes: ingestion stops at ledger ~5000
    port = free_port()
    hold = tmp_path / "hold"
    hold.mkdir()
    log = (tmp_path / "stderr.txt").open("wb")
    cfg = write_config(tmp_path, lake, f"127.0.0.1:{port}", health_stall_threshold="2s")
    p = start_backfill(cfg, FIRST, LAST, env=faults.hold_env(hold, "verify_shard:1"), stderr=log)
    server = SorobanServer(f"http://127.0.0.1:{port}")

    def committed() -> int | None:
        try:
            ranges = get_status(port)["ranges"]
        except OSError:  # the endpoint is not up yet
            return None
        last = ranges[0]["last_committed_ledger"] if ranges else None
        return last if last is not None and last >= LAST_CHECKPOINT_BEFORE_FIFO else None

    try:
        # Ingestion runs up to the FIFO's object and checkpoints at 4001, the last checkpoint it
        # can reach; from then on nothing advances, so the stall reported next is the FIFO's (a
        # slow start-up alone could otherwise be reported as a stall before any ledger).
        assert poll_until(committed, p, "the checkpoint before the FIFO", 180) == LAST_CHECKPOINT_BEFORE_FIFO
        err = poll_health(server, p, want_error=True)
        assert err.message.startswith("stalled since ") and "no ledger ingested" in err.message, err.message
        data = json.loads(err.data)
        assert data["secondsSinceProgress"] >= 2 and data["oldestLedger"] == FIRST
        assert data["latestLedger"] == LAST_CHECKPOINT_BEFORE_FIFO

        feed_fifo(obj, good)  # the source delivers again
        h = poll_health(server, p, want_error=False)
        assert h.status == "healthy" and h.latest_ledger >= 5000
        wait_held(hold, "verify_shard", p)
        faults.release(hold, "verify_shard")
        assert p.wait(timeout=240) == 0
    finally:
        if obj.is_fifo():
            obj.unlink()
            obj.write_bytes(good)
        if p.poll() is None:
            kill_tree(p)
        log.close()


def test_http_endpoint_port_in_use_is_a_startup_error(tmp_path):
    lake = make_lake(tmp_path / "lake", FIRST, LAST, seed=5, tx_per_ledger=1.0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = start_backfill(write_config(tmp_path, lake, f"127.0.0.1:{port}"), FIRST, LAST, stderr=subprocess.PIPE)
        _, err = p.communicate(timeout=120)
    text = err.decode()
    assert p.returncode == 1, text
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert errors == [f"error: [service] http_endpoint: cannot listen on 127.0.0.1:{port}: Address already in use"]
