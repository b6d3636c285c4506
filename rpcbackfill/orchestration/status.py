"""The one status schema: ``StatusReport`` with a ``RangeStatus`` per range.

Built from meta-store records (``RangeInfo``), optionally overlaid with live progress:

* ``stellar-rpc status [--json]`` (``api.status``): from the meta store alone, beside a running
  backfill or after it; the live fields (rates, ETA, RSS, ``progress``) are null.
* The HTTP ``getStatus`` / ``GET /status`` of a running backfill (``Coordinator.status``):
  the coordinator's records plus each range task's latest ``ProgressSnapshot``.
* The periodic progress lines and the terminal bar of the coordinator.

A COMPLETE range also carries ``damage``: the problems the cheap structural check
(``verify.structural_damage``: files present, index consistent with the ``.data`` size, shard
headers and sections sound, key counts as recorded) found in its final files -- run by
``stellar-rpc status`` on every call, and by the coordinator at start-up (where it is then
repaired, see ``repair.py``).  The full check (every ledger decoded, every key looked up) is
``stellar-rpc verify``.

``to_json`` is the JSON form of both outputs (enum values as their strings).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..ledgermath import chunk_of_ledger
from ..meta.store import LedgerPhase, RangeInfo, RangeState, TxHashPhase
from ..records import SHARD_DIGITS
from .progress import TRANSITION_SHARE, LiveRange, ProgressSnapshot, fmt_eta

if TYPE_CHECKING:  # rich is imported by renderable() only (a terminal display)
    from rich.console import RenderableType


@dataclass
class RangeStatus:
    id: int
    state: RangeState
    start_ledger: int
    end_ledger: int
    ledger_phase: LedgerPhase | None
    txhash_phase: TxHashPhase | None
    last_committed_ledger: int | None  # the last checkpoint
    ledgers_done: int  # live when the range runs, else the checkpointed count
    ledgers_total: int
    percent: float
    tx_count: int
    cf_counts: dict[str, int]
    chunks_verified: int
    shards_compacted: int
    shards_built: int
    shards_verified: int
    attempts: int  # failed attempts of the range in the last run
    error: str | None
    created_at: str | None
    completed_at: str | None
    # live only (null from the meta store alone)
    ledgers_per_s: float | None = None
    tx_per_s: float | None = None
    eta_s: float | None = None
    progress: ProgressSnapshot | None = None
    # transition steps (chunks verified + shards compacted, built, verified): live from the
    # snapshot when the range runs, else from the record
    steps_done: int = 0
    steps_total: int = 0
    steps_per_s: float | None = None
    # problems in the final files of a COMPLETE range (``Problem.to_json`` of verify.py);
    # empty when sound or not checked (a range that is not COMPLETE has no final files yet)
    damage: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, info: RangeInfo, live: LiveRange | None = None, damage: list | None = None) -> RangeStatus:
        total = info.end_ledger - info.start_ledger + 1
        done, tx = info.ledger_count, info.tx_count
        if live is not None:  # both only grow within a run; the snapshot is usually ahead
            done, tx = max(done, live.snapshot.ledgers_done), max(tx, live.snapshot.tx_count)
        return cls(
            id=info.id,
            state=info.state,
            start_ledger=info.start_ledger,
            end_ledger=info.end_ledger,
            ledger_phase=info.ledger_phase,
            txhash_phase=info.txhash_phase,
            last_committed_ledger=info.ledger_last_committed,
            ledgers_done=done,
            ledgers_total=total,
            percent=round(100.0 * done / total, 2) if total else 0.0,
            tx_count=tx,
            cf_counts={SHARD_DIGITS[i]: n for i, n in enumerate(info.cf_counts)},
            chunks_verified=info.chunks_verified,
            shards_compacted=len(info.shard_sorted),
            shards_built=len(info.shard_built),
            shards_verified=len(info.shard_verified),
            attempts=info.attempts,
            error=info.error,
            created_at=info.created_at,
            completed_at=info.completed_at,
            ledgers_per_s=None if live is None else round(live.ledgers_per_s, 1),
            tx_per_s=None if live is None else round(live.tx_per_s, 1),
            # rounded up: work left never reads as 0 s (fmt_eta rounds up too)
            eta_s=None if live is None or live.eta_s is None else math.ceil(live.eta_s * 10) / 10,
            progress=None if live is None else live.snapshot,
            damage=[p.to_json() for p in damage or ()],
            **_steps(info, live),
        )

    @property
    def damaged(self) -> bool:
        return bool(self.damage)

    def state_text(self) -> str:
        """The state, with the damage of a COMPLETE range: ``COMPLETE (damaged: chunk 17: ...)``."""
        if not self.damage:
            return str(self.state)
        return f"{self.state} (damaged: {'; '.join(damage_text(d) for d in self.damage)})"

    @property
    def transitioning(self) -> bool:
        return self.state == RangeState.TRANSITIONING or (
            self.state == RangeState.INGESTING and self.ledgers_done >= self.ledgers_total
        )

    def progress_text(self) -> str:
        """What the range is doing, without rates: ledgers while ingesting, steps in the transition."""
        if self.transitioning:
            n_chunks = self.steps_total - 3 * len(SHARD_DIGITS)
            n = len(SHARD_DIGITS)
            return (
                f"transition {self.steps_done}/{self.steps_total} steps (chunks {self.chunks_verified}/{n_chunks} "
                f"verified, shards {self.shards_compacted}/{n} compacted, {self.shards_built}/{n} built, "
                f"{self.shards_verified}/{n} verified)"
            )
        return f"{self.ledgers_done}/{self.ledgers_total} ledgers ({self.percent:.1f}%)"

    @property
    def fraction(self) -> float:
        """Share of the range's work done: ingestion and transition weighted by the ETA model."""
        if self.state == RangeState.COMPLETE:
            return 1.0
        ingest = self.ledgers_done / self.ledgers_total if self.ledgers_total else 0.0
        steps = self.steps_done / self.steps_total if self.steps_total else 0.0
        return (ingest + TRANSITION_SHARE * steps) / (1 + TRANSITION_SHARE)

    @property
    def phase(self) -> str:
        """One word for the table and progress lines: the state, or both sub-flow phases."""
        if self.state == RangeState.TRANSITIONING:
            return f"ledger:{self.ledger_phase} txhash:{self.txhash_phase}"
        return str(self.state)


@dataclass
class StatusReport:
    mode: str | None
    start_ledger: int | None
    end_ledger: int | None
    range_size: int | None
    ranges: list[RangeStatus]
    complete: bool  # every range COMPLETE and none damaged
    counts: dict[str, int]  # ranges per state
    ledgers_done: int
    ledgers_total: int
    tx_count: int
    damaged: list[int] = field(default_factory=list)  # ids of the ranges with damage
    # live only (null from the meta store alone)
    run_state: str | None = None  # starting | running | stopping | failed | complete
    parallel_ranges: int | None = None
    rss_bytes: int | None = None

    @classmethod
    def of(
        cls,
        mode: str | None,
        start: int | None,
        end: int | None,
        range_size: int | None,
        ranges: list[RangeStatus],
        **live: Any,
    ) -> StatusReport:
        states = [str(r.state) for r in ranges]
        return cls(
            mode=mode,
            start_ledger=start,
            end_ledger=end,
            range_size=range_size,
            ranges=ranges,
            complete=bool(ranges)
            and all(s == RangeState.COMPLETE for s in states)
            and not any(r.damage for r in ranges),
            counts={s: states.count(s) for s in sorted(set(states))},
            ledgers_done=sum(r.ledgers_done for r in ranges),
            ledgers_total=sum(r.ledgers_total for r in ranges),
            tx_count=sum(r.tx_count for r in ranges),
            damaged=[r.id for r in ranges if r.damage],
            **live,
        )

    def to_json(self) -> dict:
        return _plain(dataclasses.asdict(self))

    def progress_lines(self, window_s: float) -> list[str]:
        """One line per range in flight (INGESTING or TRANSITIONING)."""
        return [line for line, _ in self.progress_records(window_s)]

    def progress_records(self, window_s: float) -> list[tuple[str, dict[str, Any]]]:
        """``progress_lines`` with each line's numbers as log fields (``extra=``)."""
        rss = f", RSS {self.rss_bytes / 2**20:.0f} MiB" if self.rss_bytes is not None else ""
        out = []
        for r in self.ranges:
            if r.state not in (RangeState.INGESTING, RangeState.TRANSITIONING):
                continue
            if r.transitioning:
                rate = f"{r.steps_per_s or 0:.2f} steps/s" if r.steps_per_s is not None else "step rate ?"
            else:
                rate = f"{r.ledgers_per_s or 0:.0f} ledgers/s, {r.tx_per_s or 0:.0f} tx/s (last {window_s:.0f}s)"
            line = f"range {r.id} {r.phase}: {r.progress_text()}, {rate}, ETA {fmt_eta(r.eta_s)}{rss}"
            fields = {
                "range_id": r.id,
                "phase": r.phase,
                "ledger": (r.start_ledger + r.ledgers_done - 1) if r.ledgers_done else None,
                "ledgers_done": r.ledgers_done,
                "ledgers_total": r.ledgers_total,
                "ledgers_per_s": r.ledgers_per_s or 0.0,
                "tx_per_s": r.tx_per_s or 0.0,
                "eta_s": r.eta_s,
                "steps_done": r.steps_done,
                "steps_total": r.steps_total,
                "steps_per_s": r.steps_per_s,
                "rss_bytes": self.rss_bytes,
            }
            out.append((line, fields))
        return out

    def eta_s(self) -> float | None:
        """The whole run: the slowest running range, plus the ranges not started yet at the
        summed ingest rate (each with its transition share); None while unknown."""
        running = [r for r in self.ranges if r.state in (RangeState.INGESTING, RangeState.TRANSITIONING)]
        etas = [r.eta_s for r in running]
        if any(e is None for e in etas):
            return None
        eta = max((e for e in etas if e is not None), default=0.0)
        waiting = sum(r.ledgers_total for r in self.ranges if r.state == RangeState.PENDING)
        if waiting:
            lps = sum(r.ledgers_per_s or 0.0 for r in running)
            if lps <= 0:
                return None
            eta += waiting * (1 + TRANSITION_SHARE) / lps
        return eta

    def renderable(self) -> RenderableType:
        """The terminal display: a total row and one row per range in flight, the ETA first.
        Every cell is cut rather than wrapped, so no line is wider than the console."""
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        grid = Table.grid(padding=(0, 1))
        label = max((len(f"range {r.id}") for r in self.ranges), default=5)
        grid.add_column(no_wrap=True, overflow="ellipsis", min_width=label)
        grid.add_column(no_wrap=True, min_width=12)
        grid.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
        total = len(self.ranges) or 1
        done = sum(r.fraction for r in self.ranges) / total
        lps = sum(r.ledgers_per_s or 0.0 for r in self.ranges)
        grid.add_row(
            "all",
            ProgressBar(total=1.0, completed=done, width=12),
            f"{100 * done:5.1f}% ETA {fmt_eta(self.eta_s())} {lps:,.0f} ledgers/s",
        )
        for r in self.ranges:
            if r.state not in (RangeState.INGESTING, RangeState.TRANSITIONING):
                continue
            if r.transitioning:
                what = (
                    f"ETA {fmt_eta(r.eta_s)} transition {r.steps_done}/{r.steps_total} steps (chunks verified "
                    f"{r.chunks_verified}, shards compacted/built/verified "
                    f"{r.shards_compacted}/{r.shards_built}/{r.shards_verified})"
                )
            else:
                what = f"ETA {fmt_eta(r.eta_s)} ingest {r.percent:5.1f}% {r.ledgers_per_s or 0:,.0f} ledgers/s"
            grid.add_row(f"range {r.id}", ProgressBar(total=1.0, completed=r.fraction, width=12), what)
        return grid


def damage_text(d: dict[str, Any]) -> str:
    """One problem of ``RangeStatus.damage`` in a few words, naming the chunk or shard."""
    if d.get("chunk") is not None:
        return f"chunk {d['chunk']}: {d['message']}"
    if d.get("shard") is not None:
        return f"index shard {d['shard']}: {d['message']}"
    return str(d["message"])


def _steps(info: RangeInfo, live: LiveRange | None) -> dict[str, Any]:
    if live is not None and live.snapshot.steps_total:
        snap = live.snapshot
        sps = None if live.steps_per_s is None else round(live.steps_per_s, 3)
        return {"steps_done": snap.steps_done, "steps_total": snap.steps_total, "steps_per_s": sps}
    n_chunks = chunk_of_ledger(info.end_ledger) - chunk_of_ledger(info.start_ledger) + 1
    total = n_chunks + 3 * len(SHARD_DIGITS)
    if info.state == RangeState.COMPLETE:
        return {"steps_done": total, "steps_total": total}
    chunks = n_chunks if info.ledger_phase == LedgerPhase.IMMUTABLE else info.chunks_verified
    done = chunks + len(info.shard_sorted) + len(info.shard_built) + len(info.shard_verified)
    return {"steps_done": min(done, total), "steps_total": total}


def _plain(v: Any) -> Any:
    """asdict output with enum members as their plain string values."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, str):
        return str(v)
    return v
