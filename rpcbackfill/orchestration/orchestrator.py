"""One range's orchestrator: ingestion with checkpoints, then the transition.

Runs as a work item of a ``RangeRunner`` (an orchestrator process of ``SubprocessRunner``, a
thread of ``InProcessRunner``) with a ``MetaWriter`` that forwards every meta-store update to
the coordinator and waits for its acknowledgement; tests may pass a real ``MetaStore``.  Each
update is a typed ``updates.MetaUpdate``; after it is acknowledged the same update is mirrored
onto ``self.info``, so the orchestrator's copy of the record never needs a re-read.

Every step is ordered so that a crash (SIGKILL) at any instant leaves a state the next run
resumes from without redoing finished work (docs/design.md has the argument per phase):

Ingestion (range state INGESTING)
    ledger L from the source -> ChunkWriter.append + TxHashSpill.add;
    at the last ledger of a chunk: ChunkWriter.finish() (final immutable files, atomic);
    at a checkpoint ledger: ChunkWriter.sync() + TxHashSpill.sync()  (data durable)
        -> meta.checkpoint(...)  (one synced WriteBatch, acknowledged).
    Resume from last_committed_ledger + 1 with the spill truncated to cf_counts and the
    open chunk truncated to its checkpointed progress; a chunk whose final files already
    exist is not rewritten (its ledgers only feed the spill).

Transition (range state TRANSITIONING), two sub-flows run side by side:
    ledger:  WRITING_LFS (verify every chunk; progress in ledger:chunks_verified) -> IMMUTABLE
    txhash:  COMPACTING (per shard) -> BUILDING_RECSPLIT (per shard) -> VERIFYING_RECSPLIT
             (per shard) -> COMPLETE
    Inside a phase the chunks / shards run in parallel, at most ``options.workers`` heavy
    steps at once for the whole range; a shard's spill is deleted once it is marked sorted,
    its sorted file once it is marked verified.
    then the active stores are deleted, then range state COMPLETE (written last).

Chunk-parallel ingestion (``options.workers`` > 1, data-lake source, two or more chunks to do;
or any range that already has chunks recorded done): the chunks are work items of a pool of
``workers`` processes (``chunk_ingest.py``).  Each item publishes its LFS chunk, verifies it
and leaves a spill of its own; this orchestrator records each finished chunk (``MarkChunkDone``)
and, in the same batch, the checkpoint of the contiguous finished run from the range's start
when that run grew.  Resume redoes only the chunks not recorded.  A partial chunk left by
sequential ingestion is finished sequentially first, so every chunk is ingested one way only.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ..config import Config
from ..errors import (
    Cancelled,
    CorruptStoreError,
    DiskFullError,
    LedgerAuthError,
    LedgerSequenceError,
    MetaStoreError,
)
from ..fsutil import DISK_FULL_ERRNOS, fsync_dir
from ..index import TxHashSpill, build_shard, compact_shard, verify_shard
from ..index.compact import DEFAULT_MEM_LIMIT
from ..index.spill import remove_shard_spill, remove_stale_chunk_spills
from ..ledgerauth import ledger_chain
from ..ledgermath import chunk_first_ledger, chunk_last_ledger, chunk_of_ledger, is_checkpoint_ledger
from ..meta.store import (
    Checkpoint,
    ChunkDone,
    LedgerPhase,
    MetaWriter,
    RangeInfo,
    RangeState,
    TxHashPhase,
)
from ..paths import DataDirLayout, spill_shard_path
from ..records import HASH_SIZE, NSHARDS, SHARD_DIGITS
from ..sources import open_source
from ..sources.metered import MeteredSource, SourceStats
from ..stores.lfs import ChunkWriter, chunk_exists, verify_chunk
from . import faults
from .chunk_ingest import ChunkPool, ChunkResult, chunk_tasks, ingest_chunk, result_of, wait_some
from .progress import ProgressSnapshot
from .updates import (
    CompleteRange,
    MarkChunkDone,
    MarkChunksVerified,
    MarkShard,
    MetaUpdate,
    SaveCheckpoint,
    SetLedgerPhase,
    SetTxHashPhase,
    StartIngesting,
    StartTransition,
)

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass(frozen=True)
class OrchestratorOptions:
    progress_every_s: float = 1.0  # progress snapshots to the coordinator at most this often
    workers: int = 1  # processes/threads this range may use


def _add_stats(a: SourceStats | None, b: SourceStats) -> SourceStats:
    """Measurements of two sources (chunk workers) as one."""
    if a is None:
        return b
    retries: dict[str, int] = dict(a.retries)
    for k, v in b.retries:
        retries[k] = retries.get(k, 0) + v
    return SourceStats(
        a.backend,
        a.fetches + b.fetches,
        a.fetch_seconds + b.fetch_seconds,
        tuple(x + y for x, y in zip(a.fetch_buckets, b.fetch_buckets)),
        a.bytes_read + b.bytes_read,
        tuple(sorted(retries.items())),
    )


# Compaction memory: DEFAULT_MEM_LIMIT is shared by the compactions that run at once (so the
# transition's sorts stay within it), but none gets less than this (fewer, larger partitions).
MIN_COMPACT_MEM = 128 << 20


def raise_nofile_limit(want: int = 1 << 16) -> None:
    """Raise this process's soft open-file limit toward ``want`` (capped by the hard limit):
    compactions running side by side each keep one file per partition open, which can pass the
    common soft default of 1024.  Best effort."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ImportError, OSError, ValueError):  # pragma: no cover - platform without the call
        pass


def remove_tree(path: Path) -> None:
    """Delete ``path`` (if present) and make the deletion durable."""
    if path.exists():
        shutil.rmtree(path)
        fsync_dir(path.parent)


class RangeOrchestrator:
    """Drive range ``info.id`` from its recorded state to COMPLETE."""

    def __init__(
        self,
        config: Config,
        info: RangeInfo,
        meta: MetaWriter,
        cancel: threading.Event,
        progress: Callable[[ProgressSnapshot], None] | None = None,
        options: OrchestratorOptions | None = None,
    ):
        self.config = config
        self.info = info
        self.rid = info.id
        self.meta = meta
        self.cancel = cancel
        self._progress_cb = progress
        self.options = options or OrchestratorOptions()
        self._meta_lock = threading.Lock()  # the transition's two sub-flows share one channel
        # the transition's heavy steps (chunk verification, per-shard compaction/build/verify)
        # of both sub-flows together run at most ``workers`` at a time
        self._budget = threading.BoundedSemaphore(max(1, self.options.workers))
        self._last_progress = 0.0
        self._report_lock = threading.Lock()  # both transition sub-flows report
        self.ledgers_done = info.ledger_count
        self._source: MeteredSource | None = None
        self._source_stats: SourceStats | None = None  # kept after the source closed
        self.tx_done = info.tx_count
        self.layout = DataDirLayout(config)
        self.ledgers_base = self.layout.ledgers_base

    # --- helpers ---------------------------------------------------------------------------

    def _update(self, update: MetaUpdate) -> None:
        """Apply ``update`` (acknowledged: durable once this returns), then mirror it."""
        with self._meta_lock:
            update.apply(self.meta, self.rid)
            update.mirror(self.info)

    def _fields(self, **kw) -> dict:
        """``extra=`` fields of this range's log records."""
        return {
            "range_id": self.rid,
            **{k: (str(v) if v is not None and not isinstance(v, int) else v) for k, v in kw.items()},
        }

    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled(f"range {self.rid}: cancelled")

    def _report(self, force: bool = False) -> None:
        if self._progress_cb is None:
            return
        with self._report_lock:
            self._report_locked(force)

    def _report_locked(self, force: bool) -> None:
        assert self._progress_cb is not None
        now = time.monotonic()
        if not force and now - self._last_progress < self.options.progress_every_s:
            return
        self._last_progress = now
        total = self.info.end_ledger - self.info.start_ledger + 1
        if self._source is not None:
            self._source_stats = self._source.snapshot()
        done, steps = self._transition_steps()
        self._progress_cb(
            ProgressSnapshot(
                self.rid,
                self.ledgers_done,
                total,
                self.tx_done,
                source=self._source_stats,
                steps_done=done,
                steps_total=steps,
            )
        )

    def _transition_steps(self) -> tuple[int, int]:
        """Transition steps (chunks verified + shards compacted, built and verified) done and in all."""
        info = self.info
        n_chunks = chunk_of_ledger(info.end_ledger) - chunk_of_ledger(info.start_ledger) + 1
        total = n_chunks + 3 * len(SHARD_DIGITS)
        if info.state == RangeState.COMPLETE:
            return total, total
        chunks = n_chunks if info.ledger_phase == LedgerPhase.IMMUTABLE else info.chunks_verified
        done = chunks + len(info.shard_sorted) + len(info.shard_built) + len(info.shard_verified)
        return min(done, total), total

    # --- entry point -------------------------------------------------------------------------

    def run(self) -> None:
        st = self.info.state
        if st == RangeState.FAILED:
            raise MetaStoreError(f"range {self.rid} is FAILED; the coordinator must reset it before a run")
        try:
            if st in (RangeState.PENDING, RangeState.INGESTING):
                self._ingest()
                self._check_cancel()
                self._update(StartTransition())
            self._transition()
        except OSError as e:
            if e.errno in DISK_FULL_ERRNOS:
                raise DiskFullError(f"no space left on device: {e.filename or ''} ({e.strerror})") from None
            raise

    # --- ingestion ---------------------------------------------------------------------------

    def _ingest(self) -> None:
        if self._chunk_parallel():
            self._ingest_chunks()
        else:
            self._ingest_sequential(self.info.end_ledger)

    def _chunk_parallel(self) -> bool:
        """Chunk-parallel ingestion for this run?  Always once chunks are recorded done (so a
        range is never ingested both ways past its committed prefix); otherwise when the range
        may use several workers, reads a data lake (a captive core serves one range
        sequentially: each start costs minutes of catchup) and has two or more chunks to do."""
        info = self.info
        if info.chunks_done:
            return True
        if self.options.workers <= 1 or self.config.backfill.ledger_backend != "buffered_storage":
            return False
        lc = info.ledger_last_committed if info.ledger_last_committed is not None else info.start_ledger - 1
        return lc < info.end_ledger and chunk_of_ledger(info.end_ledger) > chunk_of_ledger(lc + 1)

    def _stores_ready(self, lc: int, last: int, ldir: Path, tdir: Path) -> bool:
        """False (and say so) when ingestion already committed ``last``; otherwise create the
        active store directories and return True."""
        if lc >= last:
            log.info(
                "range %d: ingestion already complete at ledger %d",
                self.rid,
                lc,
                extra=self._fields(ledger=lc, phase="INGESTING"),
            )
            return False
        ldir.mkdir(parents=True, exist_ok=True)
        tdir.mkdir(parents=True, exist_ok=True)
        return True

    def _ingest_sequential(self, upto: int) -> None:
        """Ingest ledgers in order up to ``upto`` (the range's end, or the end of a partial chunk
        that chunk-parallel ingestion finishes first), checkpointing every ``checkpoint_interval``."""
        info = self.info
        first, last = info.start_ledger, upto
        ldir = self.layout.active_ledger_dir(self.rid)
        tdir = self.layout.active_txhash_dir(self.rid)
        if info.state == RangeState.PENDING or info.ledger_last_committed is None:
            # Nothing committed: whatever an earlier attempt left in the active stores is garbage.
            remove_tree(ldir)
            remove_tree(tdir)
            if info.state == RangeState.PENDING:
                self._update(StartIngesting(str(tdir)))
            lc = first - 1
            counts = None
        else:
            lc = info.ledger_last_committed
            counts = list(info.cf_counts)
        if not self._stores_ready(lc, last, ldir, tdir):
            return
        interval = self.config.backfill.checkpoint_interval
        log.info(
            "range %d: ingesting ledgers %d-%d%s",
            self.rid,
            lc + 1,
            last,
            " (resumed)" if counts else "",
            extra=self._fields(ledger=lc + 1, phase="INGESTING"),
        )
        spill = TxHashSpill(tdir, counts=counts)
        chain = ledger_chain(self.config, f"range {self.rid}")  # None if check_ledger_hashes = false
        writer = None
        writer_chunk = -1  # chunk id the current writer (or skip mode) belongs to
        try:
            with MeteredSource(open_source(self.config, self.cancel), self.config.backfill.ledger_backend) as source:
                self._source = source
                source.prepare_range(lc + 1, last)
                self._report(force=True)
                for seq in range(lc + 1, last + 1):
                    self._check_cancel()
                    ledger = source.get_ledger(seq)  # parsed once, by the source
                    if ledger.seq != seq:
                        raise LedgerSequenceError(f"range {self.rid}: source returned ledger {ledger.seq} for {seq}")
                    if chain is not None:
                        chain.add(ledger)  # links it (the source authenticated it) or checks it
                    c = chunk_of_ledger(seq)
                    if c != writer_chunk:
                        writer = self._open_writer(c, seq, ldir)
                        writer_chunk = c
                    if writer is not None:
                        writer.append(seq, ledger.lcm)
                    spill.add(seq, ledger.tx_hashes)
                    self.ledgers_done = seq - first + 1
                    self.tx_done += len(ledger.tx_hashes) // HASH_SIZE
                    faults.hit("ingest")
                    if seq == chunk_last_ledger(c) and writer is not None:
                        writer.finish()
                        writer = None
                        faults.hit("chunk_finished")
                    if is_checkpoint_ledger(seq, interval) or seq == last:
                        self._checkpoint(seq, writer, writer_chunk, spill)
                    self._report()
        finally:
            if self._source is not None:
                self._source_stats = self._source.snapshot()
                self._source = None
            if writer is not None:
                writer.close()
            spill.close()
        self._report(force=True)

    # --- chunk-parallel ingestion -----------------------------------------------------------

    def _ingest_chunks(self) -> None:
        info = self.info
        first, last = info.start_ledger, info.end_ledger
        ldir = self.layout.active_ledger_dir(self.rid)
        tdir = self.layout.active_txhash_dir(self.rid)
        if info.state == RangeState.PENDING or (info.ledger_last_committed is None and not info.chunks_done):
            remove_tree(ldir)
            remove_tree(tdir)
            if info.state == RangeState.PENDING:
                self._update(StartIngesting(str(tdir)))
        lc = self._committed()
        if lc < last and lc + 1 != chunk_first_ledger(chunk_of_ledger(lc + 1)):
            # a chunk left half-done by sequential ingestion is finished the same way
            self._ingest_sequential(chunk_last_ledger(chunk_of_ledger(lc + 1)))
            lc = self._committed()
        lc = self._grow_prefix(None)  # chunks recorded beyond a just-finished sequential part
        if not self._stores_ready(lc, last, ldir, tdir):
            return
        done = info.chunks_done
        # The sequential spill holds the committed records not in a chunk spill; anything past
        # them was never committed.
        seq_counts = list(info.cf_counts)
        for c, d in done.items():
            if chunk_last_ledger(c) <= lc:
                seq_counts = [a - b for a, b in zip(seq_counts, d.cf_counts)]
        if any(n < 0 for n in seq_counts):
            raise CorruptStoreError(f"range {self.rid}: cf_counts {info.cf_counts} below its recorded chunks")
        if any(seq_counts) or any(spill_shard_path(tdir, i).exists() for i in range(NSHARDS)):
            TxHashSpill(tdir, counts=seq_counts).close()
        for p in remove_stale_chunk_spills(tdir, set(done)):
            log.info("range %d: removed %s (chunk not recorded done)", self.rid, p, extra=self._fields())
        todo = [c for c in range(chunk_of_ledger(lc + 1), chunk_of_ledger(last) + 1) if c not in done]
        tasks = chunk_tasks(self.config, self.rid, first, last, todo)
        ahead = [d for c, d in done.items() if chunk_last_ledger(c) > lc]
        base_ledgers = lc - first + 1 + sum(d.ledgers for d in ahead)
        base_tx = sum(info.cf_counts) + sum(d.tx_count for d in ahead)
        self.ledgers_done, self.tx_done = base_ledgers, base_tx
        workers = max(1, min(self.options.workers, len(tasks)))
        log.info(
            "range %d: ingesting %d chunks (%d-%d) with %d worker%s%s",
            self.rid,
            len(tasks),
            tasks[0].first,
            tasks[-1].last,
            workers,
            "s" if workers > 1 else "",
            f" ({len(done)} already done)" if done else "",
            extra=self._fields(ledger=tasks[0].first, phase="INGESTING"),
        )
        self._report(force=True)
        if workers == 1:
            for t in tasks:
                self._check_cancel()
                res = ingest_chunk(t, self.cancel)
                self._chunk_finished(res)
                self.ledgers_done += res.ledgers
                self.tx_done += res.tx_count
                self._report()
        else:
            pool = ChunkPool(workers)
            try:
                pending = {pool.submit(t): t.chunk_id for t in tasks}
                while pending:
                    for f in wait_some(set(pending), 0.2):
                        self._chunk_finished(result_of(f, pending.pop(f)))
                    self._check_cancel()
                    n_l, n_t = pool.progress()
                    self.ledgers_done, self.tx_done = base_ledgers + n_l, base_tx + n_t
                    self._report()
            except BaseException:
                pool.kill()  # a killed chunk item leaves nothing a redo does not replace
                raise
            pool.close()
        if self._committed() != last:
            raise CorruptStoreError(
                f"range {self.rid}: every chunk ingested but the committed prefix ends at {self._committed()}"
            )
        self.ledgers_done, self.tx_done = last - first + 1, sum(info.cf_counts)
        self._report(force=True)

    def _committed(self) -> int:
        """Last ledger of the committed prefix (start - 1 when nothing is committed)."""
        lc = self.info.ledger_last_committed
        return self.info.start_ledger - 1 if lc is None else lc

    def _grow_prefix(self, new: ChunkDone | None) -> int:
        """Record ``new`` (if given) and, in the same batch, the checkpoint of the contiguous run of
        finished chunks from the range's start when it grew; return the run's last ledger."""
        info = self.info
        first, last = info.start_ledger, info.end_ledger
        done = dict(info.chunks_done)
        if new is not None:
            done[new.chunk_id] = new
        lc = self._committed()
        counts = list(info.cf_counts)
        grew = False
        while lc < last and chunk_of_ledger(lc + 1) in done:
            d = done[chunk_of_ledger(lc + 1)]
            lc = min(chunk_last_ledger(d.chunk_id), last)
            counts = [a + b for a, b in zip(counts, d.cf_counts)]
            grew = True
        cp = Checkpoint(lc, lc - first + 1, counts, None) if grew else None
        if new is not None:
            self._update(MarkChunkDone(new, cp))
        elif cp is not None:
            self._update(SaveCheckpoint(cp))
        return lc

    def _chunk_finished(self, res: ChunkResult) -> None:
        d = ChunkDone(res.chunk_id, res.ledgers, res.cf_counts, res.first_prev_hash, res.last_hash)
        for a, b in ((self.info.chunks_done.get(d.chunk_id - 1), d), (d, self.info.chunks_done.get(d.chunk_id + 1))):
            if (
                a is not None
                and b is not None
                and a.last_hash
                and b.first_prev_hash
                and a.last_hash != b.first_prev_hash
            ):
                raise LedgerAuthError(
                    f"range {self.rid}: broken hash chain between chunk {a.chunk_id} and chunk {b.chunk_id}: "
                    f"previousLedgerHash {b.first_prev_hash.hex()[:16]}... is not {a.last_hash.hex()[:16]}..."
                )
        if res.source is not None:
            self._source_stats = _add_stats(self._source_stats, res.source)
        lc = self._grow_prefix(d)
        faults.hit("chunk_recorded")
        log.info(
            "range %d: chunk %d done (%d tx)%s",
            self.rid,
            d.chunk_id,
            d.tx_count,
            f"; committed through ledger {lc}" if lc >= chunk_last_ledger(d.chunk_id) else "",
            extra=self._fields(ledger=chunk_last_ledger(d.chunk_id), phase="INGESTING", chunk=d.chunk_id),
        )

    def _open_writer(self, c: int, seq: int, ldir: Path):
        """Writer for chunk ``c`` at ledger ``seq``; None if the chunk's final files exist."""
        if chunk_exists(self.ledgers_base, c):
            # Finished before the crash but after the last checkpoint: never rewrite it.
            log.info(
                "range %d: chunk %d already final; re-reading its ledgers for the spill only",
                self.rid,
                c,
                extra=self._fields(ledger=seq, phase="INGESTING", chunk=c),
            )
            return None
        level = self.config.immutable_stores.compression_level
        if seq == chunk_first_ledger(c):
            return ChunkWriter(self.ledgers_base, c, ldir, level=level)
        oc = self.info.open_chunk
        if oc is None or oc.chunk_id != c:
            raise CorruptStoreError(
                f"range {self.rid}: resuming at ledger {seq} inside chunk {c} but the checkpoint "
                f"records open chunk {oc.chunk_id if oc else None}"
            )
        return ChunkWriter(self.ledgers_base, c, ldir, resume=oc, level=level)

    def _checkpoint(self, seq: int, writer, chunk: int, spill) -> None:
        open_chunk = None
        if writer is not None:
            open_chunk = writer.sync()
        counts = list(spill.sync())
        faults.hit("checkpoint_synced")
        self._update(SaveCheckpoint(Checkpoint(seq, seq - self.info.start_ledger + 1, counts, open_chunk)))
        self.tx_done = sum(counts)
        faults.hit("checkpoint_acked")
        self._report(force=True)

    # --- transition ----------------------------------------------------------------------------

    def _transition(self) -> None:
        self._budget = threading.BoundedSemaphore(self._workers)  # options may be set after __init__
        self._report(force=True)
        log.info(
            "range %d: transition (ledger %s, txhash %s)",
            self.rid,
            self.info.ledger_phase,
            self.info.txhash_phase,
            extra=self._fields(ledger=self.info.end_ledger, phase="TRANSITIONING"),
        )
        with ThreadPoolExecutor(2, thread_name_prefix=f"range{self.rid}") as ex:
            futs = [ex.submit(self._ledger_subflow), ex.submit(self._txhash_subflow)]
            errors = []
            for f in futs:
                try:
                    f.result()
                except BaseException as e:
                    if not isinstance(e, Cancelled):
                        self.cancel.set()  # stop the other sub-flow at its next cancel check
                    errors.append(e)
        if errors:
            # Prefer the real failure over the Cancelled it caused in the other sub-flow.
            real = [e for e in errors if not isinstance(e, Cancelled)]
            raise (real or errors)[0]
        self._check_cancel()
        self._sweep_temp_files()
        faults.hit("before_delete")
        remove_tree(self.layout.active_ledger_dir(self.rid))
        remove_tree(self.layout.active_txhash_dir(self.rid))
        faults.hit("before_complete")
        self._update(CompleteRange())
        self._report(force=True)
        log.info("range %d: COMPLETE", self.rid, extra=self._fields(ledger=self.info.end_ledger, phase="COMPLETE"))

    def _sweep_temp_files(self) -> None:
        """Remove temp files that atomic writers killed mid-write left beside this range's final
        files (chunks and index shards; ``paths.DataDirLayout.interrupted_writes``).
        Only this range's orchestrator writes those names and the data-dir lock excludes any
        other run, so every such file is garbage of an earlier, crashed attempt."""
        candidates = self.layout.interrupted_writes(self.rid, self.info.start_ledger, self.info.end_ledger)
        for p in candidates:
            log.info(
                "range %d: removing %s left by an interrupted write",
                self.rid,
                p,
                extra=self._fields(phase="TRANSITIONING"),
            )
            p.unlink(missing_ok=True)
        for d in {p.parent for p in candidates}:
            fsync_dir(d)

    @property
    def _workers(self) -> int:
        return max(1, self.options.workers)

    def _parallel(
        self,
        name: str,
        items: list[_T],
        work: Callable[[_T], _R],
        done: Callable[[_T, _R], None],
    ) -> None:
        """``work(item)`` for every item, at most ``workers`` at once across both sub-flows
        (the range's budget), each followed by ``done(item, result)`` -- fault hook, durable
        mark, scratch deletion -- outside the budget, so a test holding one item at its fault
        point never blocks the other sub-flow.  Items are taken in list order.  The first
        failure cancels the range's remaining work (the other sub-flow too) and is raised
        after the items already running have stopped."""
        if not items:
            return

        def task(item: _T) -> None:
            self._check_cancel()
            with self._budget:
                self._check_cancel()
                result = work(item)
            done(item, result)

        errors: list[BaseException] = []
        with ThreadPoolExecutor(min(len(items), self._workers), thread_name_prefix=f"range{self.rid}-{name}") as ex:
            futs = [ex.submit(task, it) for it in items]
            for f in futs:
                try:
                    f.result()
                except BaseException as e:
                    if not isinstance(e, Cancelled):
                        self.cancel.set()  # pending items stop at their first cancel check
                    errors.append(e)
        if errors:
            real = [e for e in errors if not isinstance(e, Cancelled)]
            raise (real or errors)[0]

    def _ledger_subflow(self) -> None:
        info = self.info
        if info.ledger_phase == LedgerPhase.WRITING_LFS:
            chunks = list(range(chunk_of_ledger(info.start_ledger), chunk_of_ledger(info.end_ledger) + 1))
            # chunks_verified is a prefix count: chunks verified out of order are recorded once
            # every earlier one is (a crash redoes at most the ones verified beyond the prefix)
            verified: set[int] = set()
            prefix_lock = threading.Lock()

            def work(i: int) -> None:
                c = chunks[i]
                if not chunk_exists(self.ledgers_base, c):
                    raise CorruptStoreError(f"range {self.rid}: chunk {c} is missing after ingestion")
                if c not in info.chunks_done:  # a chunk worker verified its chunk before reporting it
                    verify_chunk(self.ledgers_base, c, cancel=self.cancel)

            def done(i: int, _: None) -> None:
                faults.hit("verify_chunk")
                with prefix_lock:
                    verified.add(i)
                    n = self.info.chunks_verified
                    while n in verified:
                        verified.discard(n)
                        n += 1
                    if n != self.info.chunks_verified:
                        self._update(MarkChunksVerified(n))
                self._report(force=True)

            self._parallel("chunks", list(range(info.chunks_verified, len(chunks))), work, done)
            self._update(SetLedgerPhase(LedgerPhase.IMMUTABLE, str(self.ledgers_base)))

    def _drop_scratch(self) -> None:
        """Delete what a crash between a shard's mark and its deletion left: the spill of every
        shard recorded sorted, the sorted file of every shard recorded verified (idempotent)."""
        info = self.info
        tdir = self.layout.active_txhash_dir(self.rid)
        for i, x in enumerate(SHARD_DIGITS):
            if x in info.shard_sorted:
                remove_shard_spill(tdir, i)
            if x in info.shard_verified:
                self._remove_sorted(i)

    def _remove_sorted(self, shard: int) -> None:
        p = self.layout.sorted_shard(self.rid, shard)
        try:
            p.unlink()
        except FileNotFoundError:
            return
        fsync_dir(p.parent)

    def _txhash_subflow(self) -> None:
        info = self.info
        tdir = self.layout.active_txhash_dir(self.rid)
        sorted_dir = self.layout.sorted_dir(self.rid)
        if info.txhash_phase != TxHashPhase.COMPLETE:
            self._drop_scratch()
        # Each phase runs its shards in parallel; the next phase starts when all are marked.
        if info.txhash_phase == TxHashPhase.COMPACTING:
            if self._workers > 1:
                raise_nofile_limit()
            sorted_dir.mkdir(parents=True, exist_ok=True)
            todo = [i for i, x in enumerate(SHARD_DIGITS) if x not in info.shard_sorted]
            # the compactions running at once share DEFAULT_MEM_LIMIT (floor MIN_COMPACT_MEM each)
            mem = max(MIN_COMPACT_MEM, DEFAULT_MEM_LIMIT // max(1, min(len(todo), self._workers)))

            def compact(i: int) -> Path:
                return compact_shard(
                    tdir,
                    i,
                    sorted_dir,
                    mem_limit_bytes=mem,
                    expect_records=info.cf_counts[i],
                    range_start=info.start_ledger,
                    cancel=self.cancel,
                )

            def compacted(i: int, p: Path) -> None:
                faults.hit("compact")
                self._update(MarkShard("sorted", SHARD_DIGITS[i], str(p)))
                faults.hit("scratch_delete")
                remove_shard_spill(tdir, i)  # the sorted file now holds the shard
                self._report(force=True)

            self._parallel("compact", todo, compact, compacted)
            self._update(SetTxHashPhase(TxHashPhase.BUILDING_RECSPLIT))
        if info.txhash_phase == TxHashPhase.BUILDING_RECSPLIT:
            self.layout.index_dir(self.rid).mkdir(parents=True, exist_ok=True)

            def build(i: int) -> None:
                build_shard(
                    Path(info.shard_sorted[SHARD_DIGITS[i]]),
                    self.layout.index_shard(self.rid, i),
                    info.start_ledger,
                    info.cf_counts[i],
                    cancel=self.cancel,
                )

            def built(i: int, _: None) -> None:
                faults.hit("build")
                self._update(MarkShard("built", SHARD_DIGITS[i], info.cf_counts[i]))
                self._report(force=True)

            todo = [i for i, x in enumerate(SHARD_DIGITS) if x not in info.shard_built]
            self._parallel("build", todo, build, built)
            self._update(SetTxHashPhase(TxHashPhase.VERIFYING_RECSPLIT))
        if info.txhash_phase == TxHashPhase.VERIFYING_RECSPLIT:

            def verify(i: int) -> None:
                verify_shard(
                    self.layout.index_shard(self.rid, i),
                    Path(info.shard_sorted[SHARD_DIGITS[i]]),
                    info.start_ledger,
                    info.cf_counts[i],
                    cancel=self.cancel,
                )

            def verified(i: int, _: None) -> None:
                faults.hit("verify_shard")
                self._update(MarkShard("verified", SHARD_DIGITS[i], info.cf_counts[i]))
                faults.hit("scratch_delete")
                self._remove_sorted(i)  # the index is verified: its input is no longer needed
                self._report(force=True)

            todo = [i for i, x in enumerate(SHARD_DIGITS) if x not in info.shard_verified]
            self._parallel("verify", todo, verify, verified)
            self._update(SetTxHashPhase(TxHashPhase.COMPLETE, str(self.layout.index_dir(self.rid))))
        if info.txhash_phase != TxHashPhase.COMPLETE:
            raise MetaStoreError(f"range {self.rid}: unexpected txhash phase {info.txhash_phase}")
