"""``SubprocessRunner``: one orchestrator process per range, joined by a socketpair.

Why processes: ingestion is CPU-bound Python + zstd + XDR scanning, so one interpreter per
range gives real parallelism and isolates a crash (an OOM kill of one range is a retryable
failure of that range only).  The process side is ``worker.py``; messages are in
``protocol.py``.

Imports: a range process must run the very package the coordinator runs.  ``python -m`` would
put the working directory first on ``sys.path`` (an un-built source tree there would shadow an
installed package), and ``-P`` needs Python 3.11.  So the process starts with ``-c BOOTSTRAP``,
which first replaces ``sys.path`` with the coordinator's (the directory holding the
coordinator's ``rpcbackfill`` first, relative entries made absolute) and only then imports
rpcbackfill.  If that import fails the process exits ``IMPORT_FAILED_EXIT``: a broken
installation, which the coordinator does not retry.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import MetaStoreError
from .executor import Outcome, RunnerHost, RunnerSettings, WorkItem
from .protocol import Channel, ChannelClosed

log = logging.getLogger(__name__)

IMPORT_FAILED_EXIT = 70  # the bootstrap could not import rpcbackfill (EX_SOFTWARE)

# Runs as ``python -c BOOTSTRAP FD PARENT_PID PATH`` (PATH: sys.path entries joined by "\n").
# Only builtins before sys.path is pinned: nothing may be imported from the working directory.
BOOTSTRAP = f"""\
import sys
sys.path[:] = sys.argv[3].split("\\n")
try:
    from rpcbackfill.orchestration.worker import process_main
except ImportError as e:
    sys.stderr.write(f"error: range process cannot import rpcbackfill: {{type(e).__name__}}: {{e}}\\n")
    sys.stderr.flush()
    import os
    os._exit({IMPORT_FAILED_EXIT})
process_main(sys.argv[1:3])
"""


def pinned_sys_path() -> list[str]:
    """This interpreter's ``sys.path``, absolute, led by the directory of the running rpcbackfill."""
    pkg_root = str(Path(__file__).resolve().parents[2])
    out = [pkg_root]
    for p in sys.path:
        a = os.path.abspath(p) if p else os.getcwd()
        if a not in out and "\n" not in a:
            out.append(a)
    return out


def _worker_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    # numpy's OpenBLAS starts one busy-polling thread per core at import; orchestrators do no
    # linear algebra, and with parallel_ranges those threads steal cycles from the other
    # ranges.  An operator's explicit setting wins.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        env.setdefault(var, "1")
    # glibc malloc: keep ~1 MB ledger buffers in the heap instead of mmap/munmap (and the
    # page faults of fresh pages) per ledger; memory stays bounded by the source's buffer.
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(64 << 20))
    env.setdefault("MALLOC_TRIM_THRESHOLD_", str(256 << 20))
    env.update(extra)
    return env


@dataclass
class _Proc:
    rid: int
    proc: subprocess.Popen
    chan: Channel
    outcome: Outcome | None = None


class SubprocessRunner:
    """``RangeRunner`` with one ``worker.py`` process per work item."""

    def __init__(self, settings: RunnerSettings, host: RunnerHost):
        self.settings = settings
        self.host = host
        self._procs: dict[int, _Proc] = {}
        self._sel = selectors.DefaultSelector()
        self._path = "\n".join(pinned_sys_path())

    def start(self, item: WorkItem) -> None:
        parent_sock, child_sock = socket.socketpair()
        child_fd = child_sock.fileno()
        cmd = [sys.executable, "-c", BOOTSTRAP, str(child_fd), str(os.getpid()), self._path]
        proc = subprocess.Popen(
            cmd,
            pass_fds=(child_fd, *self.settings.inherit_fds),
            env=_worker_env(self.settings.env),
            stdin=subprocess.DEVNULL,
        )
        child_sock.close()
        p = _Proc(item.rid, proc, Channel(parent_sock))
        self._procs[item.rid] = p
        self._sel.register(parent_sock, selectors.EVENT_READ, p)
        opts = {
            "config": self.settings.config,
            "log_level": self.settings.log_level,
            "progress_every_s": self.settings.progress_every_s,
            "workers": self.settings.range_workers,
        }
        try:
            p.chan.send(("start", item, opts))
        except ChannelClosed:
            pass  # the process died at once; poll() reports its exit
        log.info("range %d: orchestrator started (pid %d, state %s)", item.rid, proc.pid, item.info.state)

    def running(self) -> set[int]:
        return set(self._procs)

    def stop(self, rid: int) -> None:
        p = self._procs.get(rid)
        if p is not None:
            try:
                p.chan.send(("stop", None))
            except ChannelClosed:
                pass

    def kill(self, rid: int) -> None:
        p = self._procs.get(rid)
        if p is not None and p.proc.poll() is None:
            log.warning("range %d: killing orchestrator pid %d", rid, p.proc.pid)
            p.proc.kill()
            p.proc.wait()

    def pid(self, rid: int) -> int | None:
        p = self._procs.get(rid)
        return None if p is None else p.proc.pid

    def poll(self, timeout: float) -> list[Outcome]:
        for key, _ in self._sel.select(timeout):
            p: _Proc = key.data
            try:
                msgs = p.chan.recv_ready()
            except ChannelClosed:
                self._sel.unregister(key.fileobj)
                continue
            for m in msgs:
                self._handle(p, m)
        return self._reap()

    def close(self) -> None:
        for rid in list(self._procs):
            self.kill(rid)
        self._reap()
        self._sel.close()

    # --- internals ---------------------------------------------------------------------------

    def _handle(self, p: _Proc, m: tuple) -> None:
        kind = m[0]
        if kind == "update":
            _, req, update = m
            try:
                self.host.apply_update(p.rid, update)
                reply: tuple = ("ack", req, None)
            except MetaStoreError as e:
                log.error("range %d: %s", p.rid, e)
                reply = ("err", req, str(e))
            try:
                p.chan.send(reply)
            except ChannelClosed:
                pass
        elif kind == "progress":
            self.host.on_progress(m[1])
        elif kind == "log":
            self.host.on_log(p.rid, logging.makeLogRecord(m[1]))
        elif kind == "outcome":
            p.outcome = m[1]
        else:
            log.warning("range %d: unknown message %r", p.rid, kind)

    def _reap(self) -> list[Outcome]:
        """Outcomes of the processes that exited (after draining their channel)."""
        out = []
        for rid, p in list(self._procs.items()):
            if p.proc.poll() is None:
                continue
            # drain whatever it sent before exiting (non-blocking: a leaked copy of the socket
            # in some grandchild must not hang the coordinator)
            try:
                self._sel.get_key(p.chan.sock)
                p.chan.sock.setblocking(False)
                while True:
                    for m in p.chan.recv_ready():
                        self._handle(p, m)
            except (ChannelClosed, KeyError, ValueError, BlockingIOError):
                pass
            try:
                self._sel.unregister(p.chan.sock)
            except (KeyError, ValueError):
                pass
            p.chan.close()
            del self._procs[rid]
            out.append(p.outcome or self._lost(rid, p.proc.returncode))
        return out

    @staticmethod
    def _lost(rid: int, code: int) -> Outcome:
        if code == IMPORT_FAILED_EXIT:
            return Outcome(
                rid,
                "failed",
                "ImportError",
                "the range process could not import rpcbackfill (its error is logged above)",
                False,
            )
        return Outcome(rid, "failed", "ProcessExit", f"orchestrator exited with code {code} without a report")
