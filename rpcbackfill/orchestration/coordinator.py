"""The backfill coordinator (spec sections 1-4): one process per data directory.

    validate -> lock {data_dir}/.lock -> open meta store (sole writer) -> create/load ranges
    -> run up to parallel_ranges orchestrator processes -> exit 0 when every range is
    COMPLETE, 1 when any FAILED, 128+signal when interrupted.

Orchestrators are separate processes (``python -m rpcbackfill.orchestration.worker``) joined
by a socketpair; they never open the meta store: each update is a ("call", ...) message the
coordinator applies as one synced WriteBatch before acknowledging it.  A failed range task is
retried with exponential backoff up to ``[backfill] max_retries`` times, except for fatal
errors (disk full, corruption, missing ledger, configuration) which mark it FAILED at once.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config, format_duration
from ..errors import InputError, MaxDurationElapsed, MetaStoreError
from ..ledgermath import ranges_between
from ..meta.store import COMPLETE, FAILED, MetaStore, RangeInfo, resume_state
from .lock import DataDirLock
from .progress import Progress, TerminalBar, tree_rss_bytes
from .protocol import ALLOWED_CALLS, Channel, ChannelClosed

log = logging.getLogger(__name__)

POLL_S = 0.2  # event-loop tick: bounds the latency of signals, retries and progress lines


@dataclass(frozen=True)
class CoordinatorOptions:
    retry_backoff_s: float = 2.0  # delay before the first retry of a failed range; doubles each time
    retry_backoff_max_s: float = 120.0
    progress_interval_s: float = 30.0  # a progress line per running range this often (0 = never)
    worker_progress_s: float = 1.0  # orchestrators report at most this often
    stop_grace_s: float = 30.0  # after a stop request, SIGKILL orchestrators still alive after this
    progress_bar: bool | None = None  # None = only when stderr is a terminal
    http_host: str = "127.0.0.1"
    lock_wait_s: float = 2.0  # a just-killed run's orchestrators may hold the lock this long
    worker_env: dict = field(default_factory=dict)  # extra environment for orchestrators (tests)


@dataclass
class _Worker:
    rid: int
    proc: subprocess.Popen
    chan: Channel
    outcome: tuple | None = None  # ("done",) / ("failed", cls, msg, fatal) / ("cancelled", msg)


class Coordinator:
    def __init__(self, config: Config, options: CoordinatorOptions | None = None):
        self.config = config
        self.options = options or CoordinatorOptions()
        self.progress = Progress()
        self._stop_signal: int | None = None
        self._lock: DataDirLock | None = None
        self.meta: MetaStore | None = None
        self._http = None
        self._workers: dict[int, _Worker] = {}
        self._sel = selectors.DefaultSelector()
        self._status_lock = threading.Lock()
        self._infos: dict[int, RangeInfo] = {}
        self._range_ids: list[int] = []
        self._state = "starting"
        self._bar: TerminalBar | None = None
        self.http_port: int | None = None

    # --- public ---------------------------------------------------------------------------

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Ask the run to stop (signal handlers call this); safe from any thread."""
        if self._stop_signal is None:
            self._stop_signal = signum

    def run(self) -> int:
        bf = self.config.backfill
        if bf.start_ledger is None or bf.end_ledger is None:
            raise InputError("backfill needs --start-ledger and --end-ledger")
        ranges_between(bf.start_ledger, bf.end_ledger, bf.range_size)  # LedgerRangeError names the rule
        if bf.parallel_ranges < 1:
            raise InputError(f"parallel_ranges must be >= 1, got {bf.parallel_ranges}")
        old_handlers = self._install_signals()
        try:
            self._lock = DataDirLock(self.config.service.data_dir).acquire(self.options.lock_wait_s)
            self.meta = MetaStore(self.config.meta_store.path, self.config.rocksdb)
            ids = self.meta.init_backfill(bf.start_ledger, bf.end_ledger, bf.range_size)
            self._range_ids = ids
            for rid in ids:
                info = self.meta.range_info(rid)
                if info.state == FAILED:
                    to = resume_state(info)
                    log.info("range %d was FAILED (%s); resuming it as %s", rid, info.error, to)
                    self.meta.set_range_state(rid, to)
                    info = self.meta.range_info(rid)
                self._set_info(info)
            self._start_http()
            return self._loop()
        finally:
            self._shutdown_workers()
            if self._http is not None:
                self._http.close()
            if self.meta is not None:
                self.meta.close()
            if self._lock is not None:
                self._lock.release()
            self._restore_signals(old_handlers)

    # --- status ---------------------------------------------------------------------------------

    def _set_info(self, info: RangeInfo) -> None:
        with self._status_lock:
            self._infos[info.id] = info
        self.progress.set_range(
            info.id,
            state=info.state,
            last_committed_ledger=info.ledger_last_committed,
            ledgers_total=info.end_ledger - info.start_ledger + 1,
            error=info.error,
        )
        if info.state in ("PENDING", "INGESTING") or info.ledger_count:
            self.progress.set_range(info.id, ledgers_done=info.ledger_count, tx_done=info.tx_count)
        if info.state != "INGESTING":
            self.progress.set_range(info.id, phase=_phase_of(info))

    def health(self) -> dict:
        return {"status": "healthy", "mode": "backfill", "state": self._state}

    def status(self) -> dict:
        bf = self.config.backfill
        with self._status_lock:
            infos = dict(self._infos)
        ranges = []
        for r in self.progress.snapshot():
            info = infos.get(r["id"])
            if info is not None:
                r["ledger_phase"] = info.ledger_phase
                r["txhash_phase"] = info.txhash_phase
                r["start_ledger"] = info.start_ledger
                r["end_ledger"] = info.end_ledger
            ranges.append(r)
        return {
            "mode": "backfill",
            "state": self._state,
            "start_ledger": bf.start_ledger,
            "end_ledger": bf.end_ledger,
            "range_size": bf.range_size,
            "parallel_ranges": bf.parallel_ranges,
            "ranges": ranges,
            "ledgers_done": sum(r["ledgers_done"] for r in ranges),
            "ledgers_total": sum(r["ledgers_total"] for r in ranges),
            "tx_count": sum(r["tx_count"] for r in ranges),
            "rss_bytes": tree_rss_bytes(),
        }

    def _start_http(self) -> None:
        port = self.config.service.http_port
        if not port or port < 0:  # 0 disables the endpoint
            return
        from .http import StatusServer

        try:
            self._http = StatusServer(port, self.health, self.status, host=self.options.http_host).start()
            self.http_port = self._http.port
        except OSError as e:
            log.warning("status endpoint disabled: cannot listen on port %d (%s)", port, e)

    # --- signals ------------------------------------------------------------------------------

    def _install_signals(self):
        if threading.current_thread() is not threading.main_thread():
            return None
        old = {}
        for s in (signal.SIGINT, signal.SIGTERM):
            old[s] = signal.signal(s, lambda signum, frame: self.request_stop(signum))
        return old

    @staticmethod
    def _restore_signals(old) -> None:
        for s, h in (old or {}).items():
            signal.signal(s, h)

    # --- workers -------------------------------------------------------------------------------

    def _spawn(self, rid: int) -> None:
        info = self.meta.range_info(rid)
        parent_sock, child_sock = socket.socketpair()
        env = dict(os.environ)
        pkg_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        # numpy's OpenBLAS starts one busy-polling thread per core at import; orchestrators do no
        # linear algebra, and with parallel_ranges those threads steal cycles from the other
        # ranges.  An operator's explicit setting wins.
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
            env.setdefault(var, "1")
        # glibc malloc: keep ~1 MB ledger buffers in the heap instead of mmap/munmap (and the
        # page faults of fresh pages) per ledger; memory stays bounded by the source's buffer.
        env.setdefault("MALLOC_MMAP_THRESHOLD_", str(64 << 20))
        env.setdefault("MALLOC_TRIM_THRESHOLD_", str(256 << 20))
        env.update(self.options.worker_env)
        child_fd = child_sock.fileno()
        cmd = [sys.executable, "-m", "rpcbackfill.orchestration.worker", str(child_fd), str(os.getpid())]
        proc = subprocess.Popen(cmd, pass_fds=(child_fd, self._lock.fd), env=env, stdin=subprocess.DEVNULL)
        child_sock.close()
        chan = Channel(parent_sock)
        w = _Worker(rid, proc, chan)
        self._workers[rid] = w
        self._sel.register(parent_sock, selectors.EVENT_READ, w)
        opts = {"log_level": logging.getLogger().getEffectiveLevel(), "progress_every_s": self.options.worker_progress_s}
        try:
            chan.send(("start", self.config, info, opts))
        except ChannelClosed:
            pass  # the worker died at once; its exit is handled by the loop
        log.info("range %d: orchestrator started (pid %d, state %s)", rid, proc.pid, info.state)

    def _handle(self, w: _Worker, m: tuple) -> None:
        kind = m[0]
        if kind == "call":
            _, req, method, args = m
            try:
                if method not in ALLOWED_CALLS or not args or args[0] != w.rid:
                    raise MetaStoreError(f"range {w.rid}: refused meta update {method}{args[:1]}")
                getattr(self.meta, method)(*args)
                reply = ("ack", req, None)
            except MetaStoreError as e:
                log.error("range %d: %s", w.rid, e)
                reply = ("err", req, str(e))
            self._set_info(self.meta.range_info(w.rid))
            try:
                w.chan.send(reply)
            except ChannelClosed:
                pass
        elif kind == "progress":
            self.progress.update(m[1])
        elif kind == "log":
            rec = logging.makeLogRecord(m[1])
            logger = logging.getLogger(rec.name)
            if logger.isEnabledFor(rec.levelno):
                self._bar_clear()
                logger.handle(rec)
        elif kind in ("done", "failed", "cancelled"):
            w.outcome = m
        else:
            log.warning("range %d: unknown message %r", w.rid, kind)

    def _bar_clear(self) -> None:
        if self._bar is not None:
            self._bar.clear()

    def _pump(self, timeout: float) -> None:
        for key, _ in self._sel.select(timeout):
            w: _Worker = key.data
            try:
                msgs = w.chan.recv_ready()
            except ChannelClosed:
                self._sel.unregister(key.fileobj)
                continue
            for m in msgs:
                self._handle(w, m)

    def _reap(self) -> list[_Worker]:
        """Workers whose process exited (after draining their channel)."""
        out = []
        for rid, w in list(self._workers.items()):
            if w.proc.poll() is None:
                continue
            # drain whatever it sent before exiting (non-blocking: a leaked copy of the socket
            # in some grandchild must not hang the coordinator)
            try:
                self._sel.get_key(w.chan.sock)
                w.chan.sock.setblocking(False)
                while True:
                    msgs = w.chan.recv_ready()
                    for m in msgs:
                        self._handle(w, m)
            except (ChannelClosed, KeyError, ValueError):
                pass
            try:
                self._sel.unregister(w.chan.sock)
            except (KeyError, ValueError):
                pass
            w.chan.close()
            del self._workers[rid]
            out.append(w)
        return out

    def _shutdown_workers(self) -> None:
        if not self._workers:
            return
        for w in self._workers.values():
            try:
                w.chan.send(("stop", None))
            except ChannelClosed:
                pass
        deadline = time.monotonic() + self.options.stop_grace_s
        while self._workers and time.monotonic() < deadline:
            self._pump(POLL_S)  # keep acknowledging checkpoints while they wind down
            self._reap()
        for w in list(self._workers.values()):
            log.warning("range %d: orchestrator pid %d did not stop in time; killing it", w.rid, w.proc.pid)
            w.proc.kill()
            w.proc.wait()
        self._reap()

    # --- main loop -----------------------------------------------------------------------------

    def _loop(self) -> int:
        bf = self.config.backfill
        with self._status_lock:
            todo = [rid for rid in self._range_ids if self._infos[rid].state != COMPLETE]
        attempts = {rid: 0 for rid in todo}
        not_before = {rid: 0.0 for rid in todo}
        failed: dict[int, str] = {}
        self._state = "running"
        bar = self._bar = TerminalBar(self.progress, self.options.progress_bar)
        next_line = time.monotonic() + self.options.progress_interval_s
        t0 = time.monotonic()
        log.info(
            "backfill %d-%d: %d ranges (%d already COMPLETE), up to %d in parallel",
            bf.start_ledger, bf.end_ledger, len(self._range_ids), len(self._range_ids) - len(todo), bf.parallel_ranges,
        )
        deadline = t0 + bf.max_duration if bf.max_duration else None
        timed_out = False
        while (todo or self._workers) and self._stop_signal is None:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                timed_out = True  # stop like a signal does: orchestrators cancel, checkpoints stay
                break
            for rid in list(todo):
                if len(self._workers) >= bf.parallel_ranges:
                    break
                if rid not in self._workers and not_before[rid] <= now:
                    todo.remove(rid)
                    self._spawn(rid)
            self._pump(POLL_S)
            for w in self._reap():
                self._finished(w, attempts, not_before, failed, todo)
            now = time.monotonic()
            if self.options.progress_interval_s > 0 and now >= next_line:
                next_line = now + self.options.progress_interval_s
                bar.clear()
                for line in self.progress.lines():
                    log.info("progress: %s", line)
            bar.draw()
        bar.clear()
        if self._stop_signal is not None:
            self._state = "stopping"
            name = signal.Signals(self._stop_signal).name
            log.warning("%s received: stopping orchestrators; re-run the same command to resume", name)
            self._shutdown_workers()
            self._summary(time.monotonic() - t0)
            return 128 + self._stop_signal
        if timed_out:
            self._state = "stopping"
            limit = format_duration(bf.max_duration or 0)
            log.warning("max_duration %s elapsed: stopping orchestrators; re-run the same command to continue", limit)
            self._shutdown_workers()
            self._summary(time.monotonic() - t0)
            raise MaxDurationElapsed(
                f"max_duration {limit} elapsed: stopped before the backfill finished; re-running the same command "
                "continues from the last checkpoint"
            )
        self._summary(time.monotonic() - t0)
        if failed:
            self._state = "failed"
            for rid, why in sorted(failed.items()):
                log.error("range %d FAILED: %s", rid, why)
            log.error("backfill failed; re-running the same command resumes from the last checkpoint")
            return 1
        self._state = "complete"
        log.info("backfill complete: %d ranges COMPLETE", len(self._range_ids))
        return 0

    def _finished(self, w: _Worker, attempts, not_before, failed, todo) -> None:
        rid, out, code = w.rid, w.outcome, w.proc.returncode
        info = self.meta.range_info(rid)
        self._set_info(info)
        if info.state == COMPLETE:
            return
        if self._stop_signal is not None or (out and out[0] == "cancelled"):
            return  # stopped on request: resumes on the next run
        if out and out[0] == "failed":
            _, cls, msg, fatal = out
        else:
            cls, msg, fatal = "ProcessExit", f"orchestrator exited with code {code} without a report", False
        attempts[rid] += 1
        self.progress.set_range(rid, attempts=attempts[rid], error=msg)
        if fatal or attempts[rid] > self.config.backfill.max_retries:
            why = msg if fatal else f"{msg} (after {attempts[rid]} attempts)"
            self.meta.set_range_state(rid, FAILED, error=why)
            self._set_info(self.meta.range_info(rid))
            failed[rid] = why
            log.error("range %d FAILED%s: %s", rid, " (not retryable)" if fatal else "", msg)
            return
        delay = min(self.options.retry_backoff_s * 2 ** (attempts[rid] - 1), self.options.retry_backoff_max_s)
        log.warning(
            "range %d attempt %d failed (%s: %s); retrying in %.1fs (max_retries %d)",
            rid, attempts[rid], cls, msg, delay, self.config.backfill.max_retries,
        )
        not_before[rid] = time.monotonic() + delay
        todo.insert(0, rid)

    def _summary(self, elapsed: float) -> None:
        snap = self.progress.snapshot()
        log.info(
            "summary: %d ledgers and %d tx hashes in %.1fs across %d ranges",
            sum(r["ledgers_done"] for r in snap), sum(r["tx_count"] for r in snap), elapsed, len(snap),
        )
        for r in snap:
            info = self._infos.get(r["id"])
            span = f" ({info.start_ledger} to {info.end_ledger})" if info else ""
            log.info("range %d: %s%s%s", r["id"], r["state"], span, f" -- {r['error']}" if r["error"] else "")


def _phase_of(info: RangeInfo) -> str:
    if info.state == "TRANSITIONING":
        return f"ledger:{info.ledger_phase} txhash:{info.txhash_phase}"
    return info.state or "PENDING"
