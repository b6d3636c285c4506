"""Test-only fault injection: ``RPCBACKFILL_TEST_CRASH_AT=point:N[,point:N...]``.

At the N-th time (1-based) an orchestrator process passes ``point``, it SIGKILLs its whole
process group -- the same as ``kill -9`` of the process tree -- so crash tests can reach
short transition phases that random SIGKILL timing would almost never hit.  Points:
``ingest``, ``chunk_finished``, ``checkpoint_synced`` (data durable, checkpoint not yet
written), ``checkpoint_acked``, ``verify_chunk``, ``compact``, ``build``, ``verify_shard``,
``before_delete``, ``before_complete``.  Unset in production: ``hit`` is then a dict lookup.
With ``RPCBACKFILL_TEST_CRASH_LOG=FILE`` the point that fires is appended to FILE first.
"""

from __future__ import annotations

import fcntl
import os
import signal

ENV = "RPCBACKFILL_TEST_CRASH_AT"
# Optional: a file the firing point's name is appended to before the kill, so a test that arms
# several points learns which one fired.
LOG_ENV = "RPCBACKFILL_TEST_CRASH_LOG"


def _parse(spec: str) -> dict[str, int]:
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, n = part.partition(":")
        out[name] = int(n or 1)
    return out


_targets = _parse(os.environ.get(ENV, ""))
_counts: dict[str, int] = {}


def hit(point: str) -> None:
    if not _targets or point not in _targets:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] == _targets[point]:
        log_path = os.environ.get(LOG_ENV)
        if log_path:
            # One firing per process group: orchestrators running side by side can reach the same
            # point at the same moment.  The first takes the lock and kills the group while
            # holding it (the lock goes only with the process, after every member got SIGKILL),
            # so a sibling waiting here dies without logging a second firing.
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, (point + "\n").encode())
            os.fsync(fd)
        try:
            os.killpg(os.getpgid(0), signal.SIGKILL)
        finally:
            os._exit(137)
