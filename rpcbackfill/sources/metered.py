"""``MeteredSource``: a ``LedgerSource`` wrapper that measures the source it wraps.

It times every ``get_ledger`` call (and every ``get_batch`` call: one clock pair per batch, its
ledgers counted at the batch's time per ledger) into fixed histogram buckets and reads the wrapped
source's own counters (``stats``: bytes downloaded, retries by reason) when it has them.
``snapshot()`` returns the totals so far as one ``SourceStats`` -- the typed value a range task
puts into its ``ProgressSnapshot`` and the coordinator turns into Prometheus metrics.  The
counters are cumulative for the life of the wrapper (one range-task attempt); the receiver
takes differences.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field

from .base import DEFAULT_BATCH, Ledger, LedgerSource

# Upper bounds (seconds) of the get_ledger latency buckets; a final +Inf bucket follows.
# Most calls return a ledger already buffered (microseconds); a call that waits on a download
# or on stellar-core takes milliseconds to seconds.
FETCH_BUCKETS: tuple[float, ...] = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)


@dataclass(frozen=True)
class SourceStats:
    """Cumulative measurements of one source since it was opened."""

    backend: str  # buffered_storage | captive_core
    fetches: int = 0  # get_ledger calls that returned a ledger
    fetch_seconds: float = 0.0  # total time spent in them
    # calls per latency bucket: len(FETCH_BUCKETS) + 1 entries (the last is +Inf), not cumulative
    fetch_buckets: tuple[int, ...] = field(default_factory=lambda: (0,) * (len(FETCH_BUCKETS) + 1))
    bytes_read: int = 0  # bytes the source received (downloaded objects; LCM bytes for captive core)
    retries: tuple[tuple[str, int], ...] = ()  # (reason, count), sorted by reason


class MeteredSource:
    """Wraps ``source`` (a ``LedgerSource``); ``backend`` labels its measurements."""

    def __init__(self, source: LedgerSource, backend: str):
        self.source = source
        self.backend = backend
        self._fetches = 0
        self._seconds = 0.0
        self._buckets = [0] * (len(FETCH_BUCKETS) + 1)
        self._lcm_bytes = 0
        # bytes_read: the source's own download counter when it keeps one, else the LCM bytes
        self._count_bytes = not isinstance(getattr(source, "stats", None), dict)
        self._get_batch = getattr(source, "get_batch", None)

    def prepare_range(self, first: int, last: int) -> None:
        self.source.prepare_range(first, last)

    def get_ledger(self, seq: int) -> Ledger:
        t0 = time.perf_counter()
        ledger = self.source.get_ledger(seq)
        dt = time.perf_counter() - t0
        self._fetches += 1
        self._seconds += dt
        self._buckets[bisect.bisect_left(FETCH_BUCKETS, dt)] += 1
        if self._count_bytes:
            self._lcm_bytes += len(ledger.lcm)
        return ledger

    def get_batch(self, seq: int, max_count: int = DEFAULT_BATCH) -> list[Ledger]:
        """The wrapped source's ``get_batch`` (one ``get_ledger`` if it has none), measured once."""
        t0 = time.perf_counter()
        gb = self._get_batch
        batch = gb(seq, max_count) if gb is not None else [self.source.get_ledger(seq)]
        dt = time.perf_counter() - t0
        n = len(batch)
        if n:
            self._fetches += n
            self._seconds += dt
            self._buckets[bisect.bisect_left(FETCH_BUCKETS, dt / n)] += n
            if self._count_bytes:
                self._lcm_bytes += sum([len(x.lcm) for x in batch])
        return batch

    def close(self) -> None:
        self.source.close()

    def __enter__(self) -> MeteredSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def snapshot(self) -> SourceStats:
        stats = getattr(self.source, "stats", None)
        own = stats if isinstance(stats, dict) else {}
        nbytes = int(own.get("bytes_downloaded", self._lcm_bytes))
        reasons = getattr(self.source, "retry_reasons", None)
        retries = tuple(sorted(reasons.items())) if isinstance(reasons, dict) else ()
        return SourceStats(self.backend, self._fetches, self._seconds, tuple(self._buckets), nbytes, retries)
