"""Live progress of a running backfill: the snapshot type range tasks send, trailing-window
rates and ETA, process-tree RSS, and the terminal display (``LiveDisplay``, drawn with rich).

ETA model of one range (``Progress.live``), documented in docs/operations.md:

* ingesting: remaining ledgers / ingest rate (trailing window), plus the transition still to
  come, estimated as ``TRANSITION_SHARE`` x the time the whole range's ingestion takes at that
  rate (no transition step has been timed yet);
* transitioning: remaining transition steps / step rate, the rate measured over the steps this
  run did since the transition started (unknown, shown as ``?``, until the first step is done).

A transition step is one chunk verified or one shard compacted, built or verified.

``ProgressSnapshot`` is the one type for progress: a range task builds it
(``RangeOrchestrator._report``), the runner carries it unchanged (pickled, or by reference in
process), ``Progress.update`` keeps the latest one per range, and the status report
(``status.RangeStatus.progress``) shows it field for field.  A new worker-side measurement is a
new field with a default here; nothing in between changes.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..sources.metered import SourceStats

if TYPE_CHECKING:  # rich is imported where it draws: range processes and headless runs never load it
    from rich.console import Console, RenderableType
    from rich.live import Live

WINDOW_S = 30.0  # trailing window for ledgers/s and tx/s: long enough to smooth checkpoint stalls
# Before any transition step is timed, the transition is taken to last this share of the range's
# ingestion time (measured on the demo: the transition is about a third of a range's wall time).
TRANSITION_SHARE = 0.5


@dataclass(frozen=True)
class ProgressSnapshot:
    """What a range task reports about itself, at most every ``progress_every_s``."""

    rid: int
    ledgers_done: int  # ledgers of the range ingested so far (this run's view, ahead of checkpoints)
    ledgers_total: int
    tx_count: int  # transaction hashes collected so far
    sent_at: float = field(default_factory=time.time)  # wall clock of the sender
    # the ledger source's cumulative measurements in this attempt (None before the source opened)
    source: SourceStats | None = None
    # transition steps: chunks verified + shards compacted, built and verified (0 done while ingesting)
    steps_done: int = 0
    steps_total: int = 0

    @property
    def transitioning(self) -> bool:
        return self.ledgers_total > 0 and self.ledgers_done >= self.ledgers_total

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class LiveRange:
    """The latest snapshot of a range with rates over the trailing window."""

    snapshot: ProgressSnapshot
    ledgers_per_s: float
    tx_per_s: float
    eta_s: float | None
    steps_per_s: float | None = None  # transition steps per second (None before one was timed)


class _Window:
    def __init__(self) -> None:
        self.samples: collections.deque[tuple[float, int, int]] = collections.deque()  # (monotonic, ledgers, tx)
        self.last: ProgressSnapshot | None = None
        self.transition_start: tuple[float, int] | None = None  # (monotonic, steps_done) at its first snapshot

    def rates(self) -> tuple[float, float]:
        s = self.samples
        if len(s) < 2 or s[-1][0] <= s[0][0]:
            return 0.0, 0.0
        dt = s[-1][0] - s[0][0]
        return (s[-1][1] - s[0][1]) / dt, (s[-1][2] - s[0][2]) / dt


class Progress:
    """Thread-safe latest snapshot per range; ``window_s`` is the trailing window for rates."""

    def __init__(self, window_s: float = WINDOW_S):
        self.window_s = window_s
        self._lock = threading.Lock()
        self._ranges: dict[int, _Window] = {}

    def update(self, snap: ProgressSnapshot) -> None:
        now = time.monotonic()
        with self._lock:
            w = self._ranges.setdefault(snap.rid, _Window())
            w.last = snap
            if w.samples and w.samples[-1][1] > snap.ledgers_done:  # resumed from an older checkpoint
                w.samples.clear()
            w.samples.append((now, snap.ledgers_done, snap.tx_count))
            if not snap.transitioning or (w.transition_start is not None and snap.steps_done < w.transition_start[1]):
                w.transition_start = None
            if snap.transitioning and w.transition_start is None:
                w.transition_start = (now, snap.steps_done)
            while len(w.samples) > 2 and now - w.samples[0][0] > self.window_s:
                w.samples.popleft()

    def live(self, rid: int) -> LiveRange | None:
        now = time.monotonic()
        with self._lock:
            w = self._ranges.get(rid)
            if w is None or w.last is None:
                return None
            lps, tps = w.rates()
            snap = w.last
            start = w.transition_start
        sps = None
        if start is not None and snap.steps_done > start[1] and now > start[0]:
            sps = (snap.steps_done - start[1]) / (now - start[0])
        return LiveRange(snap, lps, tps, range_eta(snap, lps, sps), sps)


def range_eta(snap: ProgressSnapshot, ledgers_per_s: float, steps_per_s: float | None) -> float | None:
    """Seconds until the range is COMPLETE by the model in the module docstring; None = unknown."""
    steps_left = max(snap.steps_total - snap.steps_done, 0)
    if snap.transitioning:
        if steps_left == 0:
            return 0.0
        return steps_left / steps_per_s if steps_per_s else None
    if ledgers_per_s <= 0:
        return None
    ingest = (snap.ledgers_total - snap.ledgers_done) / ledgers_per_s
    transition = TRANSITION_SHARE * snap.ledgers_total / ledgers_per_s if snap.steps_total else 0.0
    return ingest + transition


def tree_rss_bytes() -> int:
    """Resident memory of this process and all its descendants."""
    try:
        import psutil

        p = psutil.Process(os.getpid())
        total = p.memory_info().rss
        for c in p.children(recursive=True):
            try:
                total += c.memory_info().rss
            except psutil.Error:
                pass
        return total
    except Exception:
        return 0


def fmt_eta(s: float | None) -> str:
    if s is None:
        return "?"
    s = math.ceil(s)  # work left never shows as 0m00s
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"


class LiveDisplay:
    """The live progress display on stderr, only on a terminal: what ``render`` returns, drawn by
    rich to the terminal's current width (cells are cut, never wrapped).  ``clear`` takes it off
    the screen before a log line is written; the next ``draw`` puts it back below."""

    def __init__(
        self, render: Callable[[], RenderableType], enabled: bool | None = None, stream=None, width: int | None = None
    ):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.render = render
        self._width = width
        self._console: Console | None = None
        self._live: Live | None = None
        self._lock = threading.Lock()  # log lines of range tasks clear it from another thread
        self._handlers: list[logging.Handler] = []

    @property
    def console(self) -> Console:
        """The rich console drawing on ``stream`` (created, and rich imported, on first use)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(
                file=self.stream,
                width=self._width,
                force_terminal=self.enabled or None,
                highlight=False,
                soft_wrap=False,
            )
        return self._console

    def _before_log(self, record: logging.LogRecord) -> bool:
        self.clear()  # any log line goes above the display, which the next draw puts back
        return True

    def draw(self) -> None:
        if not self.enabled:
            return
        if not self._handlers:
            self._handlers = list(logging.getLogger().handlers)
            for h in self._handlers:
                h.addFilter(self._before_log)
        with self._lock:
            self._draw()

    def close(self) -> None:
        """Clear the display and stop watching log records."""
        self.clear()
        for h in self._handlers:
            h.removeFilter(self._before_log)
        self._handlers = []

    def _draw(self) -> None:
        if self._live is None:
            from rich.live import Live

            self._live = Live(
                console=self.console,
                auto_refresh=False,
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
                vertical_overflow="ellipsis",
            )
            self._live.start()
        self._live.update(self.render(), refresh=True)

    def clear(self) -> None:
        with self._lock:
            if self._live is not None:
                self._live.stop()  # transient: erases what it drew
                self._live = None
