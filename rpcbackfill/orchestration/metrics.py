"""Prometheus metrics of a running backfill, served on ``[service] admin_endpoint`` at
``GET /metrics`` (docs/operations.md has the table).

One private ``CollectorRegistry`` per coordinator (never the process-global registry).  Its
collector builds every family at scrape time from what the coordinator already keeps: the
range records (state, phases, checkpoint, attempts), the latest ``ProgressSnapshot`` per range
(ledgers, transactions, ETA) and the source measurements those snapshots carry
(``SourceStats``), accumulated here across ranges and attempts.  Range processes never touch
Prometheus: their numbers reach this one registry only through the typed snapshot.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..meta.store import LedgerPhase, RangeState, TxHashPhase
from ..sources.metered import FETCH_BUCKETS, SourceStats
from .progress import ProgressSnapshot
from .status import StatusReport

if TYPE_CHECKING:  # prometheus_client is imported when a registry is first asked for (an admin endpoint)
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import Metric

PREFIX = "stellar_rpc_backfill_"


@dataclass
class _BackendTotals:
    fetches: int = 0
    seconds: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(FETCH_BUCKETS) + 1))
    bytes_read: int = 0
    retries: dict[str, int] = field(default_factory=dict)


class BackfillMetrics:
    """``report`` returns the coordinator's live ``StatusReport`` (without RSS)."""

    def __init__(self, report: Callable[[], StatusReport]):
        self._report = report
        self._lock = threading.Lock()
        self._last: dict[int, SourceStats] = {}  # per range: the stats already counted
        self._backends: dict[str, _BackendTotals] = {}
        self._errors: dict[str, int] = {}
        self._registry: CollectorRegistry | None = None

    @property
    def registry(self) -> CollectorRegistry:
        """This coordinator's registry (prometheus_client is imported on first use: a run without
        an admin endpoint never loads it)."""
        if self._registry is None:
            from prometheus_client import CollectorRegistry

            self._registry = CollectorRegistry(auto_describe=False)
            self._registry.register(_Collector(self))  # type: ignore[arg-type,unused-ignore]  # duck-typed collector
        return self._registry

    def attempt_started(self, rid: int) -> None:
        """A new attempt of ``rid`` starts: its source counters start again from zero."""
        with self._lock:
            self._last.pop(rid, None)

    def observe(self, snap: ProgressSnapshot) -> None:
        new = snap.source
        if new is None:
            return
        with self._lock:
            old = self._last.get(snap.rid)
            if old is None or old.backend != new.backend or new.fetches < old.fetches:
                old = SourceStats(new.backend)  # first report of this attempt
            t = self._backends.setdefault(new.backend, _BackendTotals())
            t.fetches += new.fetches - old.fetches
            t.seconds += max(0.0, new.fetch_seconds - old.fetch_seconds)
            for i, (a, b) in enumerate(zip(new.fetch_buckets, old.fetch_buckets)):
                t.buckets[i] += max(0, a - b)
            t.bytes_read += max(0, new.bytes_read - old.bytes_read)
            before = dict(old.retries)
            for reason, n in new.retries:
                t.retries[reason] = t.retries.get(reason, 0) + max(0, n - before.get(reason, 0))
            self._last[snap.rid] = new

    def error(self, error_class: str | None) -> None:
        with self._lock:
            k = error_class or "unknown"
            self._errors[k] = self._errors.get(k, 0) + 1

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        rep = self._report()
        ledgers = CounterMetricFamily(
            PREFIX + "ledgers_ingested", "Ledgers of the range ingested so far.", labels=["range"]
        )
        txs = CounterMetricFamily(
            PREFIX + "transactions_indexed", "Transaction hashes collected so far.", labels=["range"]
        )
        state = GaugeMetricFamily(PREFIX + "range_state", "1 for the range's current state.", labels=["range", "state"])
        phase = GaugeMetricFamily(
            PREFIX + "range_phase",
            "1 for the current phase of each transition sub-flow.",
            labels=["range", "subflow", "phase"],
        )
        cp = GaugeMetricFamily(
            PREFIX + "last_checkpoint_ledger", "Last ledger of the last durable checkpoint.", labels=["range"]
        )
        attempts = CounterMetricFamily(
            PREFIX + "range_attempts", "Failed attempts of the range in this run.", labels=["range"]
        )
        eta = GaugeMetricFamily(
            PREFIX + "eta_seconds", "Estimated seconds until the range's ingestion ends.", labels=["range"]
        )
        for r in rep.ranges:
            rid = str(r.id)
            ledgers.add_metric([rid], r.ledgers_done)
            txs.add_metric([rid], r.tx_count)
            for s in RangeState:
                state.add_metric([rid, str(s)], 1.0 if r.state == s else 0.0)
            for subflow, phases, cur in (
                ("ledger", LedgerPhase, r.ledger_phase),
                ("txhash", TxHashPhase, r.txhash_phase),
            ):
                for p in phases:
                    phase.add_metric([rid, subflow, str(p)], 1.0 if cur == p else 0.0)
            if r.last_committed_ledger is not None:
                cp.add_metric([rid], r.last_committed_ledger)
            attempts.add_metric([rid], r.attempts)
            if r.eta_s is not None:
                eta.add_metric([rid], r.eta_s)
        fetch = HistogramMetricFamily(
            PREFIX + "source_fetch_seconds", "Time get_ledger took, per ledger.", labels=["backend"]
        )
        retries = CounterMetricFamily(
            PREFIX + "source_retries", "Source retries by reason.", labels=["backend", "reason"]
        )
        nbytes = CounterMetricFamily(PREFIX + "source_bytes", "Bytes received from the source.", labels=["backend"])
        errors = CounterMetricFamily(PREFIX + "errors", "Failed range attempts by error class.", labels=["class"])
        with self._lock:
            for backend, t in sorted(self._backends.items()):
                cum, buckets = 0, []
                for bound, n in zip((*map(str, FETCH_BUCKETS), "+Inf"), t.buckets):
                    cum += n
                    buckets.append((bound, cum))
                fetch.add_metric([backend], buckets, t.seconds)
                nbytes.add_metric([backend], t.bytes_read)
                for reason, n in sorted(t.retries.items()):
                    retries.add_metric([backend, reason], n)
            for cls, n in sorted(self._errors.items()):
                errors.add_metric([cls], n)
        yield from (ledgers, txs, state, phase, cp, attempts, eta, fetch, retries, nbytes, errors)


class _Collector:
    """A prometheus_client collector (duck-typed: ``collect`` is all a registry calls)."""

    def __init__(self, metrics: BackfillMetrics):
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        return self._m.collect()
