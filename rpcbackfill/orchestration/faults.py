"""Test-only fault injection at named points of a range task.  Unset in production: ``hit`` is
then one dict lookup.

Points: ``ingest`` (each ledger), ``chunk_finished``, ``checkpoint_synced`` (data durable,
checkpoint not yet written), ``checkpoint_acked``, ``verify_chunk``, ``compact``, ``build``,
``verify_shard``, ``scratch_delete`` (a shard's mark is durable, its scratch input -- spill after
``compact``, sorted file after ``verify_shard`` -- not yet deleted), ``before_delete``,
``before_complete``.  Chunk-parallel ingestion adds, in the chunk worker processes,
``chunk_spill_synced`` (chunk published and its spill fsynced under the temp name) and
``chunk_spilled`` (spill renamed into place, result not yet reported) beside ``ingest`` (there
once per batch of ledgers) and ``chunk_finished``, and in the orchestrator ``chunk_recorded`` (MarkChunkDone acknowledged).
Counts are per process.

Kill: ``RPCBACKFILL_TEST_CRASH_AT=point:N[,point:N...]``
    At the N-th time (1-based) a process passes ``point`` it SIGKILLs its whole process group --
    the same as ``kill -9`` of the process tree -- so crash tests reach short transition phases
    that random SIGKILL timing would almost never hit.  With ``RPCBACKFILL_TEST_CRASH_LOG=FILE``
    the point that fires is appended to FILE first.

Hold: ``RPCBACKFILL_TEST_HOLD_AT=point:N[,...]`` with ``RPCBACKFILL_TEST_HOLD_DIR=DIR``
    At the N-th pass the process creates ``DIR/point.held.PID`` and waits there until
    ``DIR/point.release`` exists, then continues.  Tests use it to act while a range is known
    to be at a given point (status queries, signals, a second coordinator) instead of hoping
    the run is still going.  ``held(dir, point)`` / ``release(dir, point)`` are the test side.
"""

from __future__ import annotations

import fcntl
import os
import signal
import threading
import time
from pathlib import Path

ENV = "RPCBACKFILL_TEST_CRASH_AT"
# Optional: a file the firing point's name is appended to before the kill, so a test that arms
# several points learns which one fired.
LOG_ENV = "RPCBACKFILL_TEST_CRASH_LOG"
HOLD_ENV = "RPCBACKFILL_TEST_HOLD_AT"
HOLD_DIR_ENV = "RPCBACKFILL_TEST_HOLD_DIR"
HOLD_POLL_S = 0.01


def _parse(spec: str) -> dict[str, int]:
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, n = part.partition(":")
        out[name] = int(n or 1)
    return out


_kill = _parse(os.environ.get(ENV, ""))
_hold = _parse(os.environ.get(HOLD_ENV, ""))
_armed = set(_kill) | set(_hold)
_counts: dict[str, int] = {}
_counts_lock = threading.Lock()  # the transition's worker threads pass points concurrently


def hit(point: str) -> None:
    if not _armed or point not in _armed:
        return
    with _counts_lock:
        n = _counts[point] = _counts.get(point, 0) + 1
    if _hold.get(point) == n:
        _wait_release(Path(os.environ[HOLD_DIR_ENV]), point)
    if _kill.get(point) == n:
        _kill_group(point)


def _wait_release(d: Path, point: str) -> None:
    marker = d / f"{point}.held.{os.getpid()}"
    marker.write_text("")
    while not (d / f"{point}.release").exists():
        time.sleep(HOLD_POLL_S)


def _kill_group(point: str) -> None:
    log_path = os.environ.get(LOG_ENV)
    if log_path:
        # One firing per process group: orchestrators running side by side can reach the same
        # point at the same moment.  The first takes the lock and kills the group while holding
        # it (the lock goes only with the process, after every member got SIGKILL), so a sibling
        # waiting here dies without logging a second firing.
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, (point + "\n").encode())
        os.fsync(fd)
    try:
        os.killpg(os.getpgid(0), signal.SIGKILL)
    finally:
        os._exit(137)


# --- test side -----------------------------------------------------------------------------


def hold_env(d: Path, *points: str) -> dict[str, str]:
    """Environment that holds each ``point:N`` spec in ``points`` (N defaults to 1)."""
    return {HOLD_ENV: ",".join(points), HOLD_DIR_ENV: str(d)}


def held(d: Path, point: str) -> list[int]:
    """Pids of the processes holding at ``point`` (or that held there)."""
    return sorted(int(p.name.rsplit(".", 1)[1]) for p in Path(d).glob(f"{point}.held.*"))


def release(d: Path, point: str) -> None:
    (Path(d) / f"{point}.release").write_text("")
