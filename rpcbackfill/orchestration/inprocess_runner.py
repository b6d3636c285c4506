"""``InProcessRunner``: range tasks as threads of the coordinator's process.

For tests and embedding: no process start-up, no pickling, log records go straight to the
coordinator's handlers.  Meta-store updates still go through the host on the coordinator's
thread (queued by the task thread, applied inside ``poll``), so the coordinator stays the
single writer exactly as with processes.  Threads cannot be killed: ``kill`` is ``stop``, and
the ingest of parallel ranges shares one GIL -- not the production executor.
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import Cancelled, MetaStoreError, RpcBackfillError
from .executor import Outcome, RunnerHost, RunnerSettings, WorkItem
from .progress import ProgressSnapshot
from .updates import ForwardingMeta, MetaUpdate

log = logging.getLogger(__name__)


@dataclass
class _Reply:
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None


@dataclass
class _Task:
    thread: threading.Thread
    cancel: threading.Event


class InProcessRunner:
    """``RangeRunner`` with one thread per work item.  ``orchestrator`` builds the task
    (default ``RangeOrchestrator``; same signature), so tests can wrap or replace it."""

    def __init__(self, settings: RunnerSettings, host: RunnerHost, orchestrator: Callable[..., Any] | None = None):
        if orchestrator is None:
            from .orchestrator import RangeOrchestrator

            orchestrator = RangeOrchestrator
        self.settings = settings
        self.host = host
        self._make = orchestrator
        self._tasks: dict[int, _Task] = {}
        self._q: queue.Queue = queue.Queue()  # (kind, rid, payload, reply)
        self._closed = False

    def start(self, item: WorkItem) -> None:
        from .orchestrator import OrchestratorOptions

        rid = item.rid
        cancel = threading.Event()
        orch = self._make(
            self.settings.config,
            copy.deepcopy(item.info),  # the task's own record, as if it had crossed a process boundary
            ForwardingMeta(rid, lambda u: self._update(rid, u)),
            cancel,
            progress=lambda snap: self._q.put(("progress", rid, snap, None)),
            options=OrchestratorOptions(
                progress_every_s=self.settings.progress_every_s, workers=self.settings.range_workers
            ),
        )
        t = threading.Thread(target=self._run, args=(rid, orch), name=f"range-{rid}", daemon=True)
        self._tasks[rid] = _Task(t, cancel)
        t.start()

    def _run(self, rid: int, orch) -> None:
        try:
            orch.run()
            out = Outcome.done(rid)
        except Cancelled as e:
            out = Outcome.cancelled(rid, str(e))
        except RpcBackfillError as e:
            log.error("range %d failed: %s", rid, e)
            out = Outcome.failed(rid, e)
        except Exception as e:
            log.exception("range %d failed unexpectedly", rid)
            out = Outcome.failed(rid, e, unexpected=True)
        self._q.put(("outcome", rid, out, None))

    def _update(self, rid: int, update: MetaUpdate) -> None:
        """On the task's thread: queue the update and wait for the coordinator to apply it."""
        reply = _Reply()
        self._q.put(("update", rid, update, reply))
        reply.done.wait()
        if reply.error is not None:
            raise MetaStoreError(reply.error)

    def running(self) -> set[int]:
        return set(self._tasks)

    def stop(self, rid: int) -> None:
        t = self._tasks.get(rid)
        if t is not None:
            t.cancel.set()

    kill = stop  # a thread cannot be killed; it stops at its next cancellation check

    def poll(self, timeout: float) -> list[Outcome]:
        outcomes: list[Outcome] = []
        try:
            msg = self._q.get(timeout=timeout) if timeout > 0 else self._q.get_nowait()
        except queue.Empty:
            return outcomes
        while True:
            kind, rid, payload, reply = msg
            if kind == "update":
                try:
                    if self._closed:
                        raise MetaStoreError("runner closed")
                    self.host.apply_update(rid, payload)
                except MetaStoreError as e:
                    reply.error = str(e)
                reply.done.set()
            elif kind == "progress":
                assert isinstance(payload, ProgressSnapshot)
                self.host.on_progress(payload)
            elif kind == "outcome":
                task = self._tasks.pop(rid)
                task.thread.join()
                outcomes.append(payload)
            try:
                msg = self._q.get_nowait()
            except queue.Empty:
                return outcomes

    def close(self) -> None:
        self._closed = True
        for t in self._tasks.values():
            t.cancel.set()
        while self._tasks:
            self.poll(0.1)
