"""The executor seam between the coordinator and whatever runs range tasks.

The coordinator decides *what* runs and *when* (scheduling, retries with backoff, FAILED);
a ``RangeRunner`` decides *where* and *how* (a process per range, a thread, a remote worker).
The runner reports back through the ``RunnerHost`` the coordinator implements:

* ``apply_update(rid, update)`` -- a typed meta-store update (``updates.MetaUpdate``) from the
  task.  The coordinator applies it (one synced batch) before returning; the runner then lets
  the task continue, or raises ``MetaStoreError`` in it with the refusal.  The coordinator
  stays the only writer of the meta store, whatever the runner.
* ``on_progress(snapshot)`` -- a ``ProgressSnapshot``; fire and forget.
* ``on_log(rid, record)`` -- a log record produced where the coordinator's handlers do not
  reach (another process); in-process runners log directly.

Host calls happen only inside ``RangeRunner.poll``, on the coordinator's thread.

Implementations: ``SubprocessRunner`` (the default: one orchestrator process per range, see
``subprocess_runner.py``) and ``InProcessRunner`` (threads; tests and embedding).  A new
executor implements ``RangeRunner``; neither the orchestrator nor the meta store change.
Today a work item is a whole range; when ranges run chunk-parallel, ``WorkItem`` grows a
sub-range and the same interface carries the pieces.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal, Protocol

from ..config import Config
from ..errors import is_retryable
from ..meta.store import RangeInfo
from .progress import ProgressSnapshot
from .updates import MetaUpdate


@dataclass(frozen=True)
class WorkItem:
    """Run range ``info.id`` from its recorded state to COMPLETE."""

    info: RangeInfo

    @property
    def rid(self) -> int:
        return self.info.id


@dataclass(frozen=True)
class Outcome:
    """How a work item ended.  ``retryable`` is decided where the error was raised
    (``errors.is_retryable``), the retry itself by the coordinator."""

    rid: int
    status: Literal["done", "failed", "cancelled"]
    error_class: str | None = None
    message: str | None = None
    retryable: bool = True

    @classmethod
    def done(cls, rid: int) -> Outcome:
        return cls(rid, "done")

    @classmethod
    def cancelled(cls, rid: int, message: str) -> Outcome:
        return cls(rid, "cancelled", "Cancelled", message)

    @classmethod
    def failed(cls, rid: int, e: BaseException, *, unexpected: bool = False) -> Outcome:
        name = type(e).__name__
        return cls(rid, "failed", name, f"{name}: {e}" if unexpected else str(e), is_retryable(e))


@dataclass(frozen=True)
class RunnerSettings:
    config: Config
    log_level: int = logging.INFO  # for tasks whose records travel back (on_log)
    progress_every_s: float = 1.0  # tasks report progress at most this often
    env: dict[str, str] = field(default_factory=dict)  # extra environment (process runners)
    inherit_fds: tuple[int, ...] = ()  # descriptors a task process must hold (the data-dir lock)
    range_workers: int = 1  # processes each range task may use (its share of [backfill] workers)


class RunnerHost(Protocol):
    def apply_update(self, rid: int, update: MetaUpdate) -> None: ...

    def on_progress(self, snapshot: ProgressSnapshot) -> None: ...

    def on_log(self, rid: int, record: logging.LogRecord) -> None: ...


class RangeRunner(Protocol):
    def start(self, item: WorkItem) -> None:
        """Start the item (returns at once)."""

    def poll(self, timeout: float) -> list[Outcome]:
        """Wait up to ``timeout`` s for task messages, hand them to the host, and return the
        outcomes of the items that ended (each exactly once)."""
        ...

    def stop(self, rid: int) -> None:
        """Ask the item to stop at its next cancellation check (it ends ``cancelled``)."""

    def kill(self, rid: int) -> None:
        """Stop it now, without cleanup (its outcome still arrives through ``poll``)."""

    def running(self) -> set[int]:
        """Items started whose outcome ``poll`` has not returned yet."""
        ...

    def close(self) -> None:
        """Release the runner's resources; call after every item ended."""
