"""Chunk-parallel ingestion: one chunk (10,000 ledgers) of a range as a self-contained work item.

``ingest_chunk(task)`` runs anywhere -- in a pool process (``ChunkPool``) or inline -- and
needs nothing but the configuration: it opens the source for the chunk's ledgers (read in
batches through the batch APIs of the source, HashChain, ChunkWriter and TxHashSpill), writes the
LFS chunk with ``ChunkWriter`` (atomic publish; an already published chunk is compared with
the source instead of rewritten), verifies what it wrote while the data is still in the page
cache, and leaves a durable tx-hash spill of its own (``chunk-{C:06d}/``, published by a
directory rename once every shard is fsynced).  It returns a ``ChunkResult``; only the range
orchestrator records it (``MarkChunkDone`` through the coordinator, the only meta-store
writer), so a worker killed at any instant leaves nothing that a redo of the same chunk does
not replace.

Verification (``ChunkWriter(check_frames=True)``): each frame is decoded right after it is
compressed, while it is still in the CPU cache; zstd checks its content checksum, which the
compressor computed over the very bytes that were ingested, and the decoded length must equal
the ingested length.  After publishing, the writer reads the ``.data`` back once, sequentially,
and checks every frame's CRC-32 against the frame it decoded, and the ``.index`` against the
offsets it wrote.  So every stored frame decodes to the bytes ingested -- the guarantee of
``verify_chunk`` -- without a second XDR scan (the sequence of each ledger was checked when it
was ingested) and without a second decompression from the file.  The transition then only
confirms that the chunk exists.

``ChunkPool`` is a process pool of the "spawn" kind: children start from a fresh interpreter
(never a fork of the threaded orchestrator) with the parent's ``sys.path``, which the range
process pinned to the coordinator's package (``subprocess_runner.pinned_sys_path``).  Each
child arms ``PR_SET_PDEATHSIG`` in the pool initializer, so it dies with its orchestrator.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from ..config import Config
from ..errors import Cancelled, CorruptStoreError, LedgerSequenceError, RpcBackfillError
from ..fsutil import fsync_dir
from ..index.spill import TxHashSpill, chunk_spill_temp, publish_chunk_spill
from ..ledgerauth import HashChain, verify_ledger
from ..ledgermath import chunk_first_ledger, chunk_last_ledger
from ..paths import DataDirLayout
from ..procutil import set_parent_death_signal
from ..records import HASH_SIZE, NSHARDS
from ..sources import open_source
from ..sources.base import iter_batches
from ..sources.layout import LakeSchema
from ..sources.metered import MeteredSource, SourceStats
from ..stores.lfs import ChunkReader, ChunkWriter, chunk_exists
from . import faults

log = logging.getLogger(__name__)

COUNTER_EVERY = 64  # ledgers between updates of the pool's shared progress counters


@dataclass(frozen=True)
class ChunkTask:
    """Ingest ledgers ``first..last`` (all of chunk ``chunk_id`` inside range ``rid``)."""

    config: Config
    rid: int
    chunk_id: int
    first: int
    last: int


@dataclass(frozen=True)
class ChunkResult:
    chunk_id: int
    ledgers: int
    cf_counts: tuple[int, ...]  # records per spill shard
    first_prev_hash: bytes | None  # previousLedgerHash of the first ledger (check_ledger_hashes)
    last_hash: bytes | None  # hash of the last ledger
    rewritten: bool  # False: the LFS chunk existed and was compared, not written
    source: SourceStats | None = None

    @property
    def tx_count(self) -> int:
        return sum(self.cf_counts)


def chunk_tasks(config: Config, rid: int, first: int, last: int, chunks: list[int]) -> list[ChunkTask]:
    """One task per chunk of ``chunks``, clipped to the range's ledgers ``first..last``."""
    return [
        ChunkTask(config, rid, c, max(first, chunk_first_ledger(c)), min(last, chunk_last_ledger(c))) for c in chunks
    ]


# --- the work item -----------------------------------------------------------------------------

# Set in pool processes by ``_init_worker``: shared counters (ledgers, tx hashes) the
# orchestrator reads for its progress reports.
_counters = None


def _bump(ledgers: int, txs: int) -> None:
    c = _counters
    if c is not None and ledgers:
        with c.get_lock():
            c[0] += ledgers
            c[1] += txs


# The data lake's layout as the first chunk of this process resolved it (manifest, listing,
# checks against the configuration); the process's later chunks reuse it instead of reading
# the manifest and listing a partition again (27.6 ms of CPU for 40,000 local files, a
# request on a bucket).  A run reads one lake, so this holds one entry.
_lake_schemas: dict[tuple, LakeSchema] = {}


def _lake_key(config: Config) -> tuple:
    bs = config.backfill.buffered_storage
    return (
        config.backfill.ledger_backend,
        bs.bucket_path,
        config.service.network_passphrase,
        bs.ledgers_per_file,
        bs.files_per_partition,
    )


def ingest_chunk(task: ChunkTask, cancel: threading.Event | None = None) -> ChunkResult:
    """Ingest one chunk; see the module docstring.  Usable on its own (tests, tools)."""
    cancel = cancel or threading.Event()
    config, c = task.config, task.chunk_id
    layout = DataDirLayout(config)
    base = layout.ledgers_base
    ldir = layout.active_ledger_dir(task.rid)
    tdir = layout.active_txhash_dir(task.rid)
    check = config.backfill.check_ledger_hashes
    chain = HashChain() if check else None
    first_prev: bytes | None = None

    exists = chunk_exists(base, c)
    writer = reader = None
    if exists:
        reader = ChunkReader(base, c)
        log.info("chunk %d already published: comparing it with the source", c)
    else:
        writer = ChunkWriter(base, c, ldir, level=config.immutable_stores.compression_level, check_frames=True)
    tmp = chunk_spill_temp(tdir, c)
    shutil.rmtree(tmp, ignore_errors=True)
    spill = TxHashSpill(tmp)
    pending_l = pending_t = pending_total = 0
    stats = None
    try:
        # prefetch=False: the pool is the parallelism; a local lake is read in this thread
        lake_key = _lake_key(config)
        raw = open_source(config, cancel, prefetch=False, lake_schema=_lake_schemas.get(lake_key))
        with MeteredSource(raw, config.backfill.ledger_backend) as source:
            source.prepare_range(task.first, task.last)
            schema = getattr(raw, "schema", None)  # a data lake's, as resolved and checked
            if schema is not None:
                _lake_schemas[lake_key] = schema
            # batches of consecutive ledgers (one Python-level call per batch for each store)
            for batch in iter_batches(source, task.first, task.last):
                if cancel.is_set():
                    raise Cancelled(f"chunk {c}: cancelled at ledger {batch[0].seq}")
                seq, n = batch[0].seq, len(batch)
                if seq != task.first + pending_total or batch[-1].seq != seq + n - 1:
                    raise LedgerSequenceError(
                        f"chunk {c}: source returned ledgers {batch[0].seq}-{batch[-1].seq} for {task.first + pending_total}"
                    )
                if chain is not None:
                    if seq == task.first:  # the link to the previous chunk, checked by the orchestrator
                        prev = batch[0].prev_hash
                        if prev is None:
                            prev = verify_ledger(batch[0].lcm)[2]
                        first_prev = bytes(prev)
                    chain.add_many(batch)  # every ledger inside the chunk linked to the previous one
                lcms = [x.lcm for x in batch]
                if writer is not None:
                    writer.append_many(seq, lcms)
                else:
                    assert reader is not None
                    for i, lcm in enumerate(lcms):
                        if reader.get(seq + i) != lcm:
                            raise CorruptStoreError(f"chunk {c}: stored ledger {seq + i} differs from the source")
                hashes = [x.tx_hashes for x in batch]
                spill.add_many(seq, hashes)
                pending_total += n
                pending_l += n
                pending_t += sum(len(h) for h in hashes) // HASH_SIZE
                if pending_l >= COUNTER_EVERY:
                    _bump(pending_l, pending_t)
                    pending_l = pending_t = 0
                faults.hit("ingest")  # once per batch
            stats = source.snapshot()
        if writer is not None:
            writer.finish()  # publishes, then checks the published files (check_frames)
            writer = None
            faults.hit("chunk_finished")
        counts = spill.sync()
        spill.close()
        fsync_dir(tmp)
        faults.hit("chunk_spill_synced")
        publish_chunk_spill(tmp, tdir, c)
        faults.hit("chunk_spilled")
    except BaseException:
        spill.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if writer is not None:
            writer.close()
        if reader is not None:
            reader.close()
        _bump(pending_l, pending_t)
    if len(counts) != NSHARDS:  # pragma: no cover - TxHashSpill contract
        raise CorruptStoreError(f"chunk {c}: spill returned {len(counts)} shard counts")
    return ChunkResult(
        c,
        task.last - task.first + 1,
        tuple(counts),
        first_prev,
        None if chain is None or chain.last_hash is None else bytes(chain.last_hash),
        not exists,
        stats,
    )


# --- the pool ----------------------------------------------------------------------------------


def _init_worker(parent_pid: int, counters) -> None:
    """Pool initializer: die with the orchestrator, leave Ctrl-C to it, share the counters."""
    global _counters
    set_parent_death_signal(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the orchestrator cancels us on a stop
    _counters = counters


class ChunkPool:
    """``workers`` spawned processes running ``ingest_chunk``; ``kill()`` ends them at once.

    Killing is always safe: a chunk item publishes its results atomically and a redo replaces
    whatever an unrecorded attempt left."""

    def __init__(self, workers: int):
        ctx = multiprocessing.get_context("spawn")
        self.counters = ctx.Array("q", 2)  # ledgers, tx hashes read by the workers
        self._ex = ProcessPoolExecutor(
            max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(os.getpid(), self.counters)
        )

    def submit(self, task: ChunkTask) -> Future:
        return self._ex.submit(ingest_chunk, task)

    def progress(self) -> tuple[int, int]:
        with self.counters.get_lock():
            return int(self.counters[0]), int(self.counters[1])

    def kill(self) -> None:
        procs = list((getattr(self._ex, "_processes", None) or {}).values())
        for p in procs:
            try:
                p.kill()
            except (OSError, ValueError):
                pass
        self._ex.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            p.join(10)

    def close(self) -> None:
        self._ex.shutdown(wait=True, cancel_futures=True)


def wait_some(futures: set[Future], timeout: float) -> set[Future]:
    """The futures of ``futures`` that finished within ``timeout`` seconds."""
    done, _ = wait(futures, timeout=timeout, return_when=FIRST_COMPLETED)
    return done


def result_of(fut: Future, c: int) -> ChunkResult:
    """The chunk's result; a dead pool process becomes a retryable error of the range."""
    try:
        return fut.result()
    except BrokenProcessPool as e:
        raise RpcBackfillError(f"chunk {c}: a chunk worker process died ({e})") from None
