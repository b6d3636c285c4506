"""The backfill coordinator (spec sections 1-4): one per data directory.

    validate -> lock {data_dir}/.lock -> open meta store (sole writer) -> create/load ranges
    -> run up to parallel_ranges range tasks -> exit 0 when every range is COMPLETE, 1 when
    any FAILED, 128+signal when interrupted.

The coordinator decides what runs and when; a ``RangeRunner`` (``executor.py``; by default
``SubprocessRunner``, one orchestrator process per range) runs it.  Range tasks never open the
meta store: each update reaches ``apply_update`` here and is applied as one synced WriteBatch
before the task continues.  A failed task is retried with exponential backoff up to
``[backfill] max_retries`` times (``RetryPolicy``), except for errors whose class is not
retryable (``errors.is_retryable``), which mark the range FAILED at once.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ..config import Config, format_duration
from ..errors import Cancelled, InputError, MaxDurationElapsed, MetaStoreCorruptError, MetaStoreError
from ..jsonrpc import parse_host_port
from ..ledgermath import ranges_between
from ..meta.store import MetaStore, RangeInfo, RangeState, resume_state
from ..sources import preflight
from .executor import Outcome, RangeRunner, RunnerHost, RunnerSettings, WorkItem
from .http import Health, MetricsServer, StatusServer
from .lock import DataDirLock
from .metrics import BackfillMetrics
from .progress import LiveDisplay, Progress, ProgressSnapshot, tree_rss_bytes
from .status import RangeStatus, StatusReport
from .updates import MetaUpdate

log = logging.getLogger(__name__)


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


FIRST_PROGRESS_S = 5.0  # the first progress line comes this soon after the start
POLL_S = 0.2  # event-loop tick: bounds the latency of signals, retries and progress lines

RunnerFactory = Callable[[RunnerSettings, RunnerHost], RangeRunner]


@dataclass(frozen=True)
class CoordinatorOptions:
    retry_backoff_s: float = 2.0  # delay before the first retry of a failed range; doubles each time
    retry_backoff_max_s: float = 120.0
    progress_interval_s: float = 30.0  # a progress line per running range this often (0 = never)
    worker_progress_s: float = 1.0  # range tasks report at most this often
    stop_grace_s: float = 30.0  # after a stop request, kill range tasks still running after this
    progress_bar: bool | None = None  # None = only when stderr is a terminal
    http_host: str = "127.0.0.1"
    lock_wait_s: float = 2.0  # a just-killed run's orchestrators may hold the lock this long
    worker_env: dict = field(default_factory=dict)  # extra environment for orchestrators (tests)


@dataclass(frozen=True)
class RetryDecision:
    attempts: int  # failed attempts of the range so far, this one included
    retry_in_s: float | None  # None: give up, the range is FAILED
    reason: str  # for the log and, when giving up, range:{id}:error


@dataclass
class RetryPolicy:
    """Per range: retry a retryable failure after ``backoff_s * 2**(n-1)`` (capped), at most
    ``max_retries`` times; a failure that is not retryable ends the range at once."""

    max_retries: int
    backoff_s: float
    backoff_max_s: float
    attempts: dict[int, int] = field(default_factory=dict)

    def failed(self, out: Outcome) -> RetryDecision:
        n = self.attempts[out.rid] = self.attempts.get(out.rid, 0) + 1
        msg = out.message or out.error_class or "unknown error"
        if not out.retryable:
            return RetryDecision(n, None, msg)
        if n > self.max_retries:
            return RetryDecision(n, None, f"{msg} (after {n} attempts)")
        return RetryDecision(n, min(self.backoff_s * 2 ** (n - 1), self.backoff_max_s), msg)


def _default_runner(settings: RunnerSettings, host: RunnerHost) -> RangeRunner:
    from .subprocess_runner import SubprocessRunner

    return SubprocessRunner(settings, host)


class Coordinator:
    """Runs the backfill of ``config.backfill``; implements ``RunnerHost`` for its runner."""

    def __init__(self, config: Config, options: CoordinatorOptions | None = None, runner: RunnerFactory | None = None):
        self.config = config
        self.options = options or CoordinatorOptions()
        self.progress = Progress()
        self._runner_factory = runner or _default_runner
        self._runner: RangeRunner | None = None
        self._stop_signal: int | None = None
        self._lock: DataDirLock | None = None
        self.meta: MetaStore | None = None
        self._http: StatusServer | None = None
        self._admin: MetricsServer | None = None
        self.metrics = BackfillMetrics(lambda: self.report(rss=False))
        self._status_lock = threading.Lock()
        self._infos: dict[int, RangeInfo] = {}
        self._range_ids: list[int] = []
        self._state = "starting"
        self._bar: LiveDisplay | None = None
        # health: when the run last advanced (a ledger ingested or a meta update applied), and
        # the ranges whose last attempt failed and that have not advanced since (rid -> reason)
        self._last_advance = time.time()
        self._retrying: dict[int, str] = {}
        self.http_port: int | None = None
        self.admin_port: int | None = None
        # start-up check and repair of COMPLETE ranges (``_repair_complete_ranges``)
        self._damage: dict[int, list] = {}  # rid -> verify.Problem found, while not yet repaired
        self._repair_cancel = threading.Event()

    # --- public ---------------------------------------------------------------------------

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Ask the run to stop (signal handlers call this); safe from any thread."""
        if self._stop_signal is None:
            self._stop_signal = signum
        self._repair_cancel.set()

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
            try:
                self.meta = MetaStore(self.config.meta_store.path, self.config.rocksdb)
                ids = self.meta.init_backfill(bf.start_ledger, bf.end_ledger, bf.range_size)
            except MetaStoreError as e:
                raise MetaStoreCorruptError(
                    f"{e}; the meta store {self.config.meta_store.path} is damaged: run "
                    "`stellar-rpc rebuild-meta` to rebuild it from the immutable files"
                ) from None
            self._range_ids = ids
            for rid in ids:
                info = self.meta.range_info(rid)
                if info.state == RangeState.COMPLETE:
                    self._set_info(info)
                    continue
                if info.state == RangeState.FAILED:
                    to = resume_state(info)
                    log.info(
                        "range %d was FAILED (%s); resuming it as %s",
                        rid,
                        info.error,
                        to,
                        extra={"range_id": rid, "phase": str(to)},
                    )
                    self.meta.set_range_state(rid, to)
                if info.attempts:
                    self.meta.set_attempts(rid, 0)  # range:{id}:attempts counts the failures of this run
                self._set_info(self.meta.range_info(rid))
            preflight(self.config, list(self._infos.values()))  # exit 1 at once if the source cannot serve them
            self._start_http()
            if not self._repair_complete_ranges():
                assert self._stop_signal is not None
                return 128 + self._stop_signal
            self._runner = self._runner_factory(self._runner_settings(), self)
            return self._loop()
        finally:
            if self._bar is not None:
                self._bar.close()  # idempotent; here for a loop left by an exception
            self._shutdown_runner()
            if self._http is not None:
                self._http.close()
            if self._admin is not None:
                self._admin.close()
            if self.meta is not None:
                self.meta.close()
            if self._lock is not None:
                self._lock.release()
            self._restore_signals(old_handlers)

    def _repair_complete_ranges(self) -> bool:
        """Start-up check of the ranges already COMPLETE, and repair of what is damaged
        (``repair.repair_ranges``: structural check, or the full verify with
        ``[backfill] verify_complete``).  Runs here, in the coordinator, before any range task
        starts; it writes no meta-store key.  False when a stop was requested meanwhile;
        ``RepairError`` (exit 1) when a repair is impossible."""
        with self._status_lock:
            done = [self._infos[rid] for rid in self._range_ids if self._infos[rid].state == RangeState.COMPLETE]
        if not done:
            return True
        # imported only when there is something to check: it loads the store and index stack
        # (numpy, the native modules), which a coordinator otherwise never needs
        from .repair import check_complete_range, repair_ranges

        full = self.config.backfill.verify_complete
        log.info(
            "checking %d COMPLETE range(s) before the backfill continues (%s)",
            len(done),
            "full verification: verify_complete = true" if full else "structural check",
        )
        self._state = "repairing"
        known = None
        if not full:  # shown by getStatus while the repair runs
            from ..paths import DataDirLayout

            layout = DataDirLayout(self.config)
            known = {i.id: d for i in done if (d := check_complete_range(layout, i))}
            with self._status_lock:
                self._damage = dict(known)
        try:
            repair_ranges(self.config, done, full=full, cancel=self._repair_cancel, found=known)
        except Cancelled:
            return False
        with self._status_lock:
            self._damage = {}
        self._state = "starting"
        return self._stop_signal is None

    def _runner_settings(self) -> RunnerSettings:
        assert self._lock is not None and self._lock.fd is not None
        return RunnerSettings(
            config=self.config,
            log_level=logging.getLogger().getEffectiveLevel(),
            progress_every_s=self.options.worker_progress_s,
            env=dict(self.options.worker_env),
            inherit_fds=(self._lock.fd,),  # tasks keep the data dir locked while they live
            range_workers=self._range_workers(),
        )

    def _range_workers(self) -> int:
        """Each range task's share of ``[backfill] workers``: the budget split evenly over the
        ranges that run at once (at least one process each)."""
        bf = self.config.backfill
        with self._status_lock:
            todo = sum(1 for rid in self._range_ids if self._infos[rid].state != RangeState.COMPLETE)
        at_once = max(1, min(bf.parallel_ranges, todo))
        return max(1, bf.effective_workers() // at_once)

    # --- RunnerHost ---------------------------------------------------------------------------

    def apply_update(self, rid: int, update: MetaUpdate) -> None:
        assert self.meta is not None
        try:
            update.apply(self.meta, rid)
        except MetaStoreError as e:
            log.error("range %d: refused %s: %s", rid, type(update).__name__, e)
            self._set_info(self.meta.range_info(rid))
            raise
        with self._status_lock:
            update.mirror(self._infos[rid])
        self._advanced(rid)

    def on_progress(self, snapshot: ProgressSnapshot) -> None:
        live = self.progress.live(snapshot.rid)
        self.progress.update(snapshot)
        self.metrics.observe(snapshot)
        if live is None or snapshot.ledgers_done > live.snapshot.ledgers_done:
            if snapshot.ledgers_done > 0 or live is not None:
                self._advanced(snapshot.rid)

    def _advanced(self, rid: int) -> None:
        with self._status_lock:
            self._last_advance = time.time()
            self._retrying.pop(rid, None)

    def on_log(self, rid: int, record: logging.LogRecord) -> None:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            if self._bar is not None:
                self._bar.clear()
            logger.handle(record)

    # --- status ---------------------------------------------------------------------------------

    def _set_info(self, info: RangeInfo) -> None:
        with self._status_lock:
            self._infos[info.id] = info

    def health(self) -> Health:
        """``getHealth``: healthy only while the run advances (a ledger ingested or a transition
        step applied within ``[service] health_stall_threshold``), no range waits for a retry
        and none is FAILED.  Otherwise ``Health.error`` names the reason."""
        now = time.time()
        threshold = self.config.service.health_stall_threshold
        with self._status_lock:
            infos = [self._infos[rid] for rid in self._range_ids]
            last, retrying = self._last_advance, dict(self._retrying)
        rep = self.report(rss=False)
        ingested = [(r.start_ledger, r.start_ledger + r.ledgers_done - 1) for r in rep.ranges if r.ledgers_done > 0]
        oldest = min((a for a, _ in ingested), default=0)
        latest = max((b for _, b in ingested), default=0)
        result = {
            "status": "healthy",
            "latestLedger": latest,
            "oldestLedger": oldest,
            "ledgerRetentionWindow": rep.ledgers_done,
            "mode": "backfill",
            "state": self._state,
            "lastProgressAt": _rfc3339(last),
            "secondsSinceProgress": round(now - last, 1),
            "stallThresholdSeconds": threshold,
            "ranges": rep.counts,
        }
        failed = [i for i in infos if i.state == RangeState.FAILED]
        error = None
        if failed:
            error = "; ".join(f"range {i.id} FAILED: {i.error}" for i in failed)
        elif retrying:
            error = "; ".join(f"range {rid} retrying after error {why}" for rid, why in sorted(retrying.items()))
        elif self._state == "running" and now - last > threshold:
            error = f"stalled since {_rfc3339(last)}: no ledger ingested and no transition step for {now - last:.0f}s"
        if error is not None:
            result["status"] = "unhealthy"
            result["reason"] = error
        return Health(error, result)

    def health_json(self) -> dict:
        return self.health().result

    def report(self, rss: bool = True) -> StatusReport:
        """The live status; ``rss=False`` skips the process-tree walk (the bar redraws often)."""
        bf = self.config.backfill
        with self._status_lock:
            rows = [
                RangeStatus.of(self._infos[rid], self.progress.live(rid), self._damage.get(rid))
                for rid in self._range_ids
            ]
        return StatusReport.of(
            "backfill",
            bf.start_ledger,
            bf.end_ledger,
            bf.range_size,
            rows,
            run_state=self._state,
            parallel_ranges=bf.parallel_ranges,
            rss_bytes=tree_rss_bytes() if rss else None,
        )

    def status(self) -> dict:
        """The HTTP ``getStatus`` result: ``StatusReport`` as JSON."""
        return self.report().to_json()

    def _start_http(self) -> None:
        """Bind the configured endpoints; one that cannot listen stops the run (EndpointError)."""
        svc = self.config.service
        host, port = parse_host_port(svc.http_endpoint, "[service] http_endpoint")
        if svc.http_port is not None:
            log.warning('[service] http_port is deprecated; set http_endpoint = "%s:%d" instead', host, svc.http_port)
            port = svc.http_port
        if svc.http_port != 0:  # http_port = 0 (deprecated) disables the endpoint
            self._http = StatusServer(port, self.health, self.status, host=host).start()
            self.http_port = self._http.port
        if svc.admin_endpoint:
            ahost, aport = parse_host_port(svc.admin_endpoint, "[service] admin_endpoint")
            self._admin = MetricsServer(ahost, aport, self.metrics.registry).start()
            self.admin_port = self._admin.port

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

    # --- main loop -----------------------------------------------------------------------------

    def _shutdown_runner(self) -> None:
        """Stop every running task; keep applying their updates while they wind down."""
        runner, meta = self._runner, self.meta
        if runner is None or meta is None:
            return
        for rid in runner.running():
            runner.stop(rid)
        deadline = time.monotonic() + self.options.stop_grace_s
        while runner.running() and time.monotonic() < deadline:
            for out in runner.poll(POLL_S):
                self._set_info(meta.range_info(out.rid))
        for rid in runner.running():
            log.warning("range %d: orchestrator did not stop in time; killing it", rid)
            runner.kill(rid)
        while runner.running():
            for out in runner.poll(POLL_S):
                self._set_info(meta.range_info(out.rid))
        runner.close()
        self._runner = None

    def _loop(self) -> int:
        bf = self.config.backfill
        runner = self._runner
        assert runner is not None
        with self._status_lock:
            todo = [rid for rid in self._range_ids if self._infos[rid].state != RangeState.COMPLETE]
        policy = RetryPolicy(bf.max_retries, self.options.retry_backoff_s, self.options.retry_backoff_max_s)
        not_before = {rid: 0.0 for rid in todo}
        failed: dict[int, str] = {}
        self._state = "running"
        bar = self._bar = LiveDisplay(lambda: self.report(rss=False).renderable(), self.options.progress_bar)
        # the first progress line soon (FIRST_PROGRESS_S), then every progress_interval
        next_line = time.monotonic() + min(FIRST_PROGRESS_S, self.options.progress_interval_s)
        t0 = time.monotonic()
        log.info(
            "backfill %d-%d: %d ranges (%d already COMPLETE), up to %d in parallel",
            bf.start_ledger,
            bf.end_ledger,
            len(self._range_ids),
            len(self._range_ids) - len(todo),
            bf.parallel_ranges,
        )
        deadline = t0 + bf.max_duration if bf.max_duration else None
        timed_out = False
        while (todo or runner.running()) and self._stop_signal is None:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                timed_out = True  # stop like a signal does: orchestrators cancel, checkpoints stay
                break
            for rid in list(todo):
                if len(runner.running()) >= bf.parallel_ranges:
                    break
                if not_before[rid] <= now:
                    todo.remove(rid)
                    with self._status_lock:
                        info = self._infos[rid]
                    self.metrics.attempt_started(rid)
                    runner.start(WorkItem(info))
            for out in runner.poll(POLL_S):
                retry_in = self._finished(out, policy, failed)
                if retry_in is not None:
                    not_before[out.rid] = time.monotonic() + retry_in
                    todo.insert(0, out.rid)
            now = time.monotonic()
            if self.options.progress_interval_s > 0 and now >= next_line:
                next_line = now + self.options.progress_interval_s
                bar.clear()
                for line, fields in self.report().progress_records(self.progress.window_s):
                    log.info("progress: %s", line, extra=fields)
            bar.draw()
        bar.close()
        if self._stop_signal is not None:
            self._state = "stopping"
            name = signal.Signals(self._stop_signal).name
            log.warning("%s received: stopping orchestrators; re-run the same command to resume", name)
            self._shutdown_runner()
            self._summary(time.monotonic() - t0)
            return 128 + self._stop_signal
        if timed_out:
            self._state = "stopping"
            limit = format_duration(bf.max_duration or 0)
            log.warning("max_duration %s elapsed: stopping orchestrators; re-run the same command to continue", limit)
            self._shutdown_runner()
            self._summary(time.monotonic() - t0)
            raise MaxDurationElapsed(
                f"max_duration {limit} elapsed: stopped before the backfill finished; re-running the same command "
                "continues from the last checkpoint"
            )
        self._summary(time.monotonic() - t0)
        if failed:
            self._state = "failed"
            for rid, why in sorted(failed.items()):
                log.error("range %d FAILED: %s", rid, why, extra={"range_id": rid, "phase": "FAILED"})
            log.error("backfill failed; re-running the same command resumes from the last checkpoint")
            return 1
        self._state = "complete"
        log.info("backfill complete: %d ranges COMPLETE", len(self._range_ids))
        return 0

    def _finished(self, out: Outcome, policy: RetryPolicy, failed: dict[int, str]) -> float | None:
        """Record the end of a task; the delay before its retry, or None."""
        assert self.meta is not None
        rid = out.rid
        info = self.meta.range_info(rid)  # the store, not the mirror: the task may have died mid-update
        self._set_info(info)
        if info.state == RangeState.COMPLETE:
            return None
        if self._stop_signal is not None or out.status == "cancelled":
            return None  # stopped on request: resumes on the next run
        if out.status == "done":  # cannot happen: "done" is sent after CompleteRange was applied
            out = Outcome(rid, "failed", "ProtocolError", f"task reported done in state {info.state}")
        self.metrics.error(out.error_class)
        d = policy.failed(out)
        self.meta.set_attempts(rid, d.attempts)
        info.attempts = d.attempts
        if d.retry_in_s is None:
            self.meta.set_range_state(rid, RangeState.FAILED, error=d.reason)
            self._set_info(self.meta.range_info(rid))
            failed[rid] = d.reason
            log.error(
                "range %d FAILED%s: %s",
                rid,
                "" if out.retryable else " (not retryable)",
                out.message,
                extra={"range_id": rid, "attempt": d.attempts, "error_class": out.error_class, "phase": "FAILED"},
            )
            return None
        with self._status_lock:
            self._retrying[rid] = f"{out.error_class}: {out.message}"
            info.error = d.reason  # shown by getStatus; the store keeps an error only for FAILED
        log.warning(
            "range %d attempt %d failed (%s: %s); retrying in %.1fs (max_retries %d)",
            rid,
            d.attempts,
            out.error_class,
            out.message,
            d.retry_in_s,
            self.config.backfill.max_retries,
            extra={
                "range_id": rid,
                "attempt": d.attempts,
                "error_class": out.error_class,
                "retry_in_s": round(d.retry_in_s, 3),
            },
        )
        return d.retry_in_s

    def _summary(self, elapsed: float) -> None:
        rep = self.report(rss=False)
        log.info(
            "summary: %d ledgers and %d tx hashes in %.1fs across %d ranges",
            rep.ledgers_done,
            rep.tx_count,
            elapsed,
            len(rep.ranges),
        )
        for r in rep.ranges:
            log.info(
                "range %d: %s (%d to %d)%s",
                r.id,
                r.state,
                r.start_ledger,
                r.end_ledger,
                f" -- {r.error}" if r.error else "",
                extra={"range_id": r.id, "phase": str(r.state), "ledgers_done": r.ledgers_done},
            )
