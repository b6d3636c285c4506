"""The active txhash store of a range: 16 append-only spill files ``cf-{0..f}.spill``.

Record: 32-byte transaction hash || uint32 LE ledger sequence (36 bytes), appended to the shard
of the hash's first hex digit (hash[0] >> 4).  Routing into 16 in-memory buffers is done by the
Cython ``Router`` (ext/_spill.pyx); buffers are written out when they exceed
``SpillConfig.flush_bytes`` and on ``sync()``, which also fsyncs every shard and returns the
per-shard record counts that the checkpoint stores as ``cf_counts``.

Resume: ``TxHashSpill(dir, counts=checkpointed)`` truncates every shard to exactly its
checkpointed record count (anything after the last checkpoint was never committed); a shard
shorter than its count means committed data was lost -> CorruptStoreError.  ``counts=None``
starts empty: existing shard files are truncated to zero.

Chunk-parallel ingestion: every chunk worker writes a spill of its own, the 16 shard files of
one ``TxHashSpill`` in ``chunk-{C:06d}/`` (``paths.chunk_spill_dir``), built under a temp
name and published by renaming the directory once every shard is fsynced
(``write_chunk_spill``).  A shard's records are then spread over several inputs:
``shard_spill_inputs`` lists them in the order compaction reads them (the sequential file
first, then the chunks in chunk order).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import _spill
from .._spill import Router
from ..errors import CorruptStoreError
from ..fsutil import fsync_dir, io_errors
from ..paths import chunk_spill_dir, chunk_spill_dirs, spill_shard_path
from ..records import NSHARDS, RECORD_SIZE

log = logging.getLogger(__name__)

# The router's C constants come from ext/txhash_record.h; they must be the records.py ones.
if (_spill.NSHARDS, _spill.RECORD_SIZE) != (NSHARDS, RECORD_SIZE):  # pragma: no cover - build mismatch
    raise ImportError(
        f"rpcbackfill._spill was built with {(_spill.NSHARDS, _spill.RECORD_SIZE)} "
        f"(shards, record size), rpcbackfill.records says {(NSHARDS, RECORD_SIZE)}"
    )


@dataclass(frozen=True)
class SpillConfig:
    # Pending bytes (all shards) that trigger a write(2) of the buffers: 4 MiB amortises the
    # system calls (~110k hashes) while keeping the ingest process small.
    flush_bytes: int = 4 << 20


class TxHashSpill:
    def __init__(self, dir: Path | str, counts: list[int] | None = None, config: SpillConfig | None = None):
        self.dir = Path(dir)
        self.config = config or SpillConfig()
        if counts is not None:
            counts = [int(c) for c in counts]
            if len(counts) != NSHARDS or any(c < 0 for c in counts):
                raise ValueError(f"counts must be {NSHARDS} non-negative integers, got {counts!r}")
        want = counts if counts is not None else [0] * NSHARDS
        with io_errors(self.dir, "creating spill directory"):
            self.dir.mkdir(parents=True, exist_ok=True)
        self._fds: list[int] = []
        try:
            for i in range(NSHARDS):
                p = spill_shard_path(self.dir, i)
                with io_errors(p, "opening spill shard"):
                    fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
                self._fds.append(fd)
                size = os.fstat(fd).st_size
                need = want[i] * RECORD_SIZE
                if size < need:
                    raise CorruptStoreError(
                        f"spill shard {p} holds {size // RECORD_SIZE} records ({size} bytes), checkpoint says {want[i]}"
                    )
                with io_errors(p, "truncating spill shard"):
                    if size != need:
                        os.ftruncate(fd, need)
                    os.lseek(fd, need, os.SEEK_SET)
                    os.fsync(fd)
            fsync_dir(self.dir)
        except BaseException:
            self._close_fds()
            raise
        self._base = list(want)
        self._router = Router()
        self._closed = False

    @property
    def counts(self) -> list[int]:
        """Records per shard, including buffered ones not yet synced."""
        return [b + r for b, r in zip(self._base, self._router.routed())]

    def add(self, seq: int, hashes: bytes) -> None:
        """Append every 32-byte hash of ``hashes`` (concatenated) with ledger ``seq``."""
        if self._closed:
            raise ValueError(f"spill store {self.dir} is closed")
        if not 0 <= seq < 1 << 32:
            raise ValueError(f"ledger sequence {seq} does not fit in uint32")
        if self._router.add(seq, hashes) >= self.config.flush_bytes:
            self._flush()

    def add_many(self, first_seq: int, hashes: Sequence[bytes]) -> None:
        """``add(first_seq + i, hashes[i])`` for every i: the hashes of consecutive ledgers (a
        source batch) in one call, flushing at most once."""
        if self._closed:
            raise ValueError(f"spill store {self.dir} is closed")
        if first_seq < 0 or first_seq + len(hashes) > 1 << 32:
            raise ValueError(f"ledger sequences {first_seq}..{first_seq + len(hashes) - 1} do not fit in uint32")
        add = self._router.add
        seq = first_seq
        for h in hashes:
            if h:
                add(seq, h)
            seq += 1
        if self._router.pending >= self.config.flush_bytes:
            self._flush()

    def _flush(self) -> None:
        with io_errors(self.dir, "writing spill shards in"):
            self._router.flush(self._fds)

    def sync(self) -> list[int]:
        """Write and fsync every shard; return the per-shard record counts (the cf_counts)."""
        if self._closed:
            raise ValueError(f"spill store {self.dir} is closed")
        self._flush()
        for i, fd in enumerate(self._fds):
            with io_errors(spill_shard_path(self.dir, i), "fsync of"):
                os.fsync(fd)
        return self.counts

    def _close_fds(self) -> None:
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []

    def close(self) -> None:
        """Write out buffered records (no fsync: only ``sync`` makes data durable) and close."""
        if getattr(self, "_closed", True):
            self._close_fds()
            return
        self._closed = True
        try:
            self._flush()
        finally:
            self._close_fds()

    def __enter__(self) -> TxHashSpill:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def shard_spill_inputs(tdir: Path | str, shard: int) -> list[Path]:
    """Every file holding records of spill shard ``shard`` in the active txhash store ``tdir``, in
    reading order: the sequential spill file (if present), then each published chunk spill in
    chunk order.  Files already removed (``remove_shard_spill``) are not listed."""
    out = []
    seq = spill_shard_path(tdir, shard)
    if seq.exists():
        out.append(seq)
    for _, d in chunk_spill_dirs(tdir):
        p = spill_shard_path(d, shard)
        if p.exists():
            out.append(p)
    return out


def remove_shard_spill(tdir: Path | str, shard: int) -> None:
    """Delete every input of spill shard ``shard`` (once its compacted file is recorded), durably;
    a chunk spill directory left empty goes too."""
    tdir = Path(tdir)
    inputs = shard_spill_inputs(tdir, shard)
    if not inputs:
        return  # already deleted (a resumed run repeats the deletion), or no store at all
    dirs = set()
    for p in inputs:
        with io_errors(p, "removing spill shard"):
            p.unlink(missing_ok=True)
        dirs.add(p.parent)
    for d in sorted(dirs):
        if d == tdir:
            continue
        # shards are deleted by parallel threads: another one may empty and remove ``d`` meanwhile
        with io_errors(d, "removing chunk spill directory"):
            try:
                if any(d.iterdir()):
                    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                else:
                    d.rmdir()
            except FileNotFoundError:
                pass
    fsync_dir(tdir)


def chunk_spill_temp(tdir: Path | str, chunk_id: int) -> Path:
    """The temp directory a chunk spill is built in before ``publish_chunk_spill``."""
    final = chunk_spill_dir(tdir, chunk_id)
    return final.with_name(f".{final.name}.tmp-{os.getpid()}")


def publish_chunk_spill(tmp: Path, tdir: Path | str, chunk_id: int) -> Path:
    """Rename the fsynced chunk spill ``tmp`` to its final name (replacing an unrecorded earlier
    copy of the same chunk) and make the rename durable."""
    import shutil

    final = chunk_spill_dir(tdir, chunk_id)
    if final.exists():
        # published by an attempt that died before the coordinator recorded the chunk
        shutil.rmtree(final)
    with io_errors(final, "publishing chunk spill"):
        os.replace(tmp, final)
    fsync_dir(final.parent)
    return final


def remove_stale_chunk_spills(tdir: Path | str, keep: set[int]) -> list[Path]:
    """Delete chunk spills whose chunk is not in ``keep`` (not recorded done) and the temp
    directories of interrupted chunk workers; return what was removed."""
    import shutil

    tdir = Path(tdir)
    if not tdir.is_dir():
        return []
    gone = [d for c, d in chunk_spill_dirs(tdir) if c not in keep]
    gone += [p for p in tdir.iterdir() if p.name.startswith(".chunk-") and ".tmp-" in p.name]
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    if gone:
        fsync_dir(tdir)
    return gone
