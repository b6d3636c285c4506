"""Live progress of a running backfill: the snapshot type range tasks send, trailing-window
rates and ETA, process-tree RSS, and the terminal bar.

``ProgressSnapshot`` is the one type for progress: a range task builds it
(``RangeOrchestrator._report``), the runner carries it unchanged (pickled, or by reference in
process), ``Progress.update`` keeps the latest one per range, and the status report
(``status.RangeStatus.progress``) shows it field for field.  A new worker-side measurement is a
new field with a default here; nothing in between changes.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..sources.metered import SourceStats

WINDOW_S = 30.0  # trailing window for ledgers/s and tx/s: long enough to smooth checkpoint stalls


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

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class LiveRange:
    """The latest snapshot of a range with rates over the trailing window."""

    snapshot: ProgressSnapshot
    ledgers_per_s: float
    tx_per_s: float
    eta_s: float | None


class _Window:
    def __init__(self) -> None:
        self.samples: collections.deque[tuple[float, int, int]] = collections.deque()  # (monotonic, ledgers, tx)
        self.last: ProgressSnapshot | None = None

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
            while len(w.samples) > 2 and now - w.samples[0][0] > self.window_s:
                w.samples.popleft()

    def live(self, rid: int) -> LiveRange | None:
        with self._lock:
            w = self._ranges.get(rid)
            if w is None or w.last is None:
                return None
            lps, tps = w.rates()
            snap = w.last
        left = snap.ledgers_total - snap.ledgers_done
        eta = 0.0 if left <= 0 else (left / lps if lps > 0 else None)
        return LiveRange(snap, lps, tps, eta)


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
    s = int(s)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"


class TerminalBar:
    """A one-line bar (the text ``render`` returns) redrawn on stderr, only on a terminal."""

    def __init__(self, render: Callable[[], str], enabled: bool | None = None, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.render = render

    def draw(self) -> None:
        if self.enabled:
            self.stream.write("\r" + self.render() + "\x1b[K")
            self.stream.flush()

    def clear(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
