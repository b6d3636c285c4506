"""Progress of a running backfill: trailing-window rates, ETA, RSS, progress lines and bar.

The coordinator feeds it every progress snapshot an orchestrator sends; the HTTP status, the
periodic progress line and the terminal bar all read from here.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time
from dataclasses import dataclass

WINDOW_S = 30.0  # trailing window for ledgers/s and tx/s: long enough to smooth checkpoint stalls


@dataclass
class RangeProgress:
    rid: int
    state: str = "PENDING"
    phase: str = "PENDING"
    ledgers_done: int = 0
    ledgers_total: int = 0
    tx_done: int = 0
    last_committed_ledger: int | None = None
    attempts: int = 0
    error: str | None = None
    samples: collections.deque = None  # type: ignore[assignment]  # set in __post_init__; (time, ledgers, txs)

    def __post_init__(self):
        if self.samples is None:
            self.samples = collections.deque()

    def rates(self) -> tuple[float, float]:
        s = self.samples
        if len(s) < 2 or s[-1][0] <= s[0][0]:
            return 0.0, 0.0
        dt = s[-1][0] - s[0][0]
        return (s[-1][1] - s[0][1]) / dt, (s[-1][2] - s[0][2]) / dt

    def eta_s(self) -> float | None:
        lps, _ = self.rates()
        left = self.ledgers_total - self.ledgers_done
        if left <= 0:
            return 0.0
        return left / lps if lps > 0 else None

    def to_json(self) -> dict:
        lps, tps = self.rates()
        eta = self.eta_s()
        return {
            "id": self.rid,
            "state": self.state,
            "phase": self.phase,
            "last_committed_ledger": self.last_committed_ledger,
            "ledgers_done": self.ledgers_done,
            "ledgers_total": self.ledgers_total,
            "tx_count": self.tx_done,
            "ledgers_per_s": round(lps, 1),
            "tx_per_s": round(tps, 1),
            "eta_s": None if eta is None else round(eta, 1),
            "attempts": self.attempts,
            "error": self.error,
        }


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


class Progress:
    """Thread-safe per-range progress; ``window_s`` is the trailing window for rates."""

    def __init__(self, window_s: float = WINDOW_S):
        self.window_s = window_s
        self._lock = threading.Lock()
        self.ranges: dict[int, RangeProgress] = {}
        self.started = time.monotonic()

    def set_range(self, rid: int, **fields) -> None:
        with self._lock:
            rp = self.ranges.setdefault(rid, RangeProgress(rid))
            for k, v in fields.items():
                setattr(rp, k, v)

    def update(self, snap: dict) -> None:
        """A snapshot from an orchestrator (see RangeOrchestrator._report)."""
        now = time.monotonic()
        with self._lock:
            rp = self.ranges.setdefault(snap["range"], RangeProgress(snap["range"]))
            rp.phase = snap.get("phase", rp.phase)
            rp.ledgers_done = snap.get("ledgers_done", rp.ledgers_done)
            rp.ledgers_total = snap.get("ledgers_total", rp.ledgers_total)
            rp.tx_done = snap.get("tx_done", rp.tx_done)
            if rp.samples and rp.samples[-1][1] > rp.ledgers_done:  # resumed from an older checkpoint
                rp.samples.clear()
            rp.samples.append((now, rp.ledgers_done, rp.tx_done))
            while len(rp.samples) > 2 and now - rp.samples[0][0] > self.window_s:
                rp.samples.popleft()

    def snapshot(self) -> list[dict]:
        with self._lock:
            return [self.ranges[r].to_json() for r in sorted(self.ranges)]

    def lines(self) -> list[str]:
        """One progress line per range in flight (not PENDING, COMPLETE or FAILED)."""
        rss = tree_rss_bytes()
        out = []
        for r in self.snapshot():
            if r["state"] in ("PENDING", "COMPLETE", "FAILED"):
                continue
            pct = 100.0 * r["ledgers_done"] / r["ledgers_total"] if r["ledgers_total"] else 0.0
            out.append(
                f"range {r['id']} {r['state']}/{r['phase']}: {r['ledgers_done']}/{r['ledgers_total']} ledgers "
                f"({pct:.1f}%), {r['ledgers_per_s']:.0f} ledgers/s, {r['tx_per_s']:.0f} tx/s "
                f"(last {self.window_s:.0f}s), ETA {fmt_eta(r['eta_s'])}, RSS {rss / 2**20:.0f} MiB"
            )
        return out

    def bar(self, width: int = 30) -> str:
        snap = self.snapshot()
        done = sum(r["ledgers_done"] for r in snap)
        total = sum(r["ledgers_total"] for r in snap) or 1
        lps = sum(r["ledgers_per_s"] for r in snap)
        filled = int(width * done / total)
        eta = (total - done) / lps if lps > 0 else None
        return f"[{'#' * filled}{'.' * (width - filled)}] {100 * done / total:5.1f}% {lps:,.0f} ledgers/s ETA {fmt_eta(eta)}"


class TerminalBar:
    """A one-line bar redrawn on stderr, only when stderr is a terminal."""

    def __init__(self, progress: Progress, enabled: bool | None = None, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.progress = progress

    def draw(self) -> None:
        if self.enabled:
            self.stream.write("\r" + self.progress.bar() + "\x1b[K")
            self.stream.flush()

    def clear(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
