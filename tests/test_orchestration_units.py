"""Dependency-free pieces: data-dir lock, message channel, HTTP status endpoint, progress."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from rpcbackfill.errors import DataDirLockedError
from rpcbackfill.orchestration.http import BACKFILL_MODE_MESSAGE, Health, StatusServer
from rpcbackfill.orchestration.lock import DataDirLock
from rpcbackfill.orchestration.progress import LiveDisplay, Progress, ProgressSnapshot, fmt_eta
from rpcbackfill.orchestration.protocol import Channel, ChannelClosed
from rpcbackfill.orchestration.status import RangeStatus, StatusReport


def test_lock_is_exclusive_and_released(tmp_path):
    a = DataDirLock(tmp_path).acquire()
    with pytest.raises(DataDirLockedError, match=str(tmp_path)):
        DataDirLock(tmp_path).acquire()
    a.release()
    a.release()  # idempotent
    with DataDirLock(tmp_path):
        pass


def test_lock_waits_for_a_dying_holder(tmp_path):
    import threading

    a = DataDirLock(tmp_path).acquire()
    threading.Timer(0.3, a.release).start()
    b = DataDirLock(tmp_path).acquire(wait_s=30)  # succeeds once the holder lets go
    assert b.fd is not None
    b.release()


def test_lock_held_by_other_process(tmp_path):
    code = (
        "import sys,time; from rpcbackfill.orchestration.lock import DataDirLock;"
        f"DataDirLock({str(tmp_path)!r}).acquire(); print('ok', flush=True); time.sleep(30)"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ok"
        with pytest.raises(DataDirLockedError, match=f"pid {p.pid}"):
            DataDirLock(tmp_path).acquire()
    finally:
        p.kill()
        p.wait()
    DataDirLock(tmp_path).acquire().release()  # the kernel dropped the dead holder's lock


def test_channel_roundtrip_and_eof():
    a, b = socket.socketpair()
    ca, cb = Channel(a), Channel(b)
    big = bytes(range(256)) * 4000  # larger than one recv() chunk and the socket buffer
    import threading

    t = threading.Thread(
        target=lambda: (
            ca.send(("call", 1, "checkpoint", (0, big))),
            ca.send(("progress", ProgressSnapshot(0, 1, 2, 3, sent_at=1.0))),
        )
    )
    t.start()
    assert cb.recv() == ("call", 1, "checkpoint", (0, big))
    assert cb.recv() == ("progress", ProgressSnapshot(0, 1, 2, 3, sent_at=1.0))
    t.join()
    ca.close()
    with pytest.raises(ChannelClosed):
        cb.recv()


def _post(port, body: bytes):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_http_jsonrpc_and_get():
    calls = {"n": 0}

    def status():
        calls["n"] += 1
        return {"mode": "backfill", "ranges": [{"id": 0, "state": "INGESTING"}], "n": calls["n"]}

    health = {"h": Health(None, {"status": "healthy"})}
    srv = StatusServer(0, lambda: health["h"], status).start()
    try:
        code, r = _post(srv.port, b'{"jsonrpc":"2.0","id":1,"method":"getHealth"}')
        assert code == 200 and r == {"jsonrpc": "2.0", "id": 1, "result": {"status": "healthy"}}
        code, r = _post(srv.port, b'{"jsonrpc":"2.0","id":"a","method":"getStatus"}')
        assert code == 200 and r["id"] == "a" and r["result"]["ranges"][0]["state"] == "INGESTING"
        code, r = _post(srv.port, b'{"jsonrpc":"2.0","id":2,"method":"getLedgers","params":{}}')
        assert code == 503 and r["error"]["message"] == BACKFILL_MODE_MESSAGE and r["id"] == 2
        code, r = _post(srv.port, b"{not json")
        assert code == 400 and r["error"]["code"] == -32700
        code, r = _post(srv.port, b'{"id":3,"method":"getHealth"}')
        assert code == 400 and r["error"]["code"] == -32600
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/status", timeout=10) as resp:
            assert json.loads(resp.read())["n"] == calls["n"]
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/health", timeout=10) as resp:
            assert json.loads(resp.read()) == {"status": "healthy"}
        health["h"] = Health("stalled since T", {"status": "unhealthy", "reason": "stalled since T"})
        code, r = _post(srv.port, b'{"jsonrpc":"2.0","id":4,"method":"getHealth"}')
        assert code == 200 and r["id"] == 4 and "result" not in r
        assert r["error"]["code"] == -32603 and r["error"]["message"] == "stalled since T"
        assert json.loads(r["error"]["data"]) == {"status": "unhealthy", "reason": "stalled since T"}
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/health", timeout=10)
        assert e.value.code == 503 and json.loads(e.value.read())["status"] == "unhealthy"
    finally:
        srv.close()
        srv.close()


def _info(rid: int, state: str = "INGESTING", done: int = 0):
    from rpcbackfill.meta.store import LedgerPhase, RangeInfo, RangeState, TxHashPhase

    return RangeInfo(
        rid,
        RangeState(state),
        start_ledger=rid * 10_000 + 2,
        end_ledger=(rid + 1) * 10_000 + 1,
        ledger_phase=LedgerPhase.INGESTING,
        txhash_phase=TxHashPhase.INGESTING,
        ledger_count=done,
    )


def test_progress_rates_eta_and_lines(monkeypatch):
    import rpcbackfill.orchestration.progress as pm

    t = [100.0]
    monkeypatch.setattr(pm.time, "monotonic", lambda: t[0])
    p = Progress(window_s=10)
    for i in range(21):  # 100 ledgers/s, 300 tx/s for 20 s
        p.update(ProgressSnapshot(0, 100 * i, 10_000, 300 * i))
        t[0] += 1.0
    live = p.live(0)
    assert live.ledgers_per_s == pytest.approx(100.0) and live.tx_per_s == pytest.approx(300.0)
    assert live.eta_s == pytest.approx((10_000 - 2000) / 100.0)
    assert p.live(1) is None
    rep = StatusReport.of(
        "backfill",
        2,
        20_001,
        10_000,
        [RangeStatus.of(_info(0), live), RangeStatus.of(_info(1, "PENDING"))],
        rss_bytes=50 << 20,
    )
    (line,) = rep.progress_lines(p.window_s)  # PENDING ranges have no line
    assert line.startswith("range 0 INGESTING: 2000/10000 ledgers (20.0%), 100 ledgers/s, 300 tx/s")
    assert "RSS 50 MiB" in line and f"ETA {fmt_eta(80)}" in line
    assert rep.ledgers_done == 2000 and rep.counts == {"INGESTING": 1, "PENDING": 1}
    # the snapshot appears field for field in the JSON output
    assert rep.to_json()["ranges"][0]["progress"] == dataclasses.asdict(live.snapshot)
    # a resume from an older checkpoint resets the window instead of producing negative rates
    p.update(ProgressSnapshot(0, 1000, 10_000, 3000))
    assert p.live(0).ledgers_per_s == 0.0
    assert fmt_eta(3725) == "1h02m05s" and fmt_eta(None) == "?"


def test_live_progress_never_lowers_the_checkpointed_count():
    snap = ProgressSnapshot(0, 500, 10_000, 7)
    r = RangeStatus.of(_info(0, done=1000), Progress().live(0))
    assert r.ledgers_done == 1000 and r.progress is None
    p = Progress()
    p.update(snap)
    r = RangeStatus.of(_info(0, done=1000), p.live(0))
    assert r.ledgers_done == 1000 and r.progress == snap
    p.update(ProgressSnapshot(0, 4321, 10_000, 9))
    assert RangeStatus.of(_info(0, done=1000), p.live(0)).ledgers_done == 4321


def test_live_display_only_on_tty(tmp_path):
    rep = StatusReport.of("backfill", 2, 10_001, 10_000, [RangeStatus.of(_info(0, done=5000))])
    with open(tmp_path / "f", "w") as f:
        d = LiveDisplay(rep.renderable, stream=f)
        d.draw()
        d.clear()
    assert (tmp_path / "f").read_text() == ""
