"""Where every file of a data directory lives: the one home of path and file-name rules.

Core module.  Every reader and writer (stores, index, orchestration, tests, benchmarks) asks
here instead of joining names itself::

    {ledgers_base}/chunks/{C//1000:04d}/{C:06d}.data        finished LFS chunk C (spec section 7)
    {ledgers_base}/chunks/{C//1000:04d}/{C:06d}.index
    {active ledger_path}/{R:04d}/{C:06d}.data.partial       open chunk of range R (resume state)
    {active ledger_path}/{R:04d}/{C:06d}.offsets.partial
    {active txhash_path}/{R:04d}/cf-{x}.spill               spill shard x of range R (sequential ingestion)
    {active txhash_path}/{R:04d}/chunk-{C:06d}/cf-{x}.spill spill shard x of chunk C (chunk-parallel ingestion)
    {active txhash_path}/{R:04d}/sorted/cf-{x}.sorted       compacted shard x (COMPACTING)
    {txhash_base}/{R:04d}/index/cf-{x}.idx                  RecSplit shard x (spec section 8)

``x`` is the shard's hex digit (``records.SHARD_DIGITS``).  Files are published through a
temp name beside them (``fsutil.temp_path``); ``DataDirLayout.interrupted_writes`` lists the
ones a killed writer left behind.

The free functions take the directory they resolve against (the stores and the index work on
any directory, e.g. in tests); ``DataDirLayout(config)`` applies them to a configured data
directory and is what the orchestration uses.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .fsutil import TEMP_GLOB, temp_owner
from .ledgermath import chunk_of_ledger
from .records import NSHARDS, shard_digit

if TYPE_CHECKING:
    from .config import Config

# Chunks per directory under {ledgers_base}/chunks (spec section 7).
CHUNKS_PER_DIR = 1000


# --- LFS chunks ---------------------------------------------------------------------------------


def chunk_paths(ledgers_base: str | os.PathLike, chunk_id: int) -> tuple[Path, Path]:
    """``(data_path, index_path)`` of finished chunk ``chunk_id`` under ``ledgers_base``."""
    if chunk_id < 0:
        raise ValueError(f"chunk id must be >= 0, got {chunk_id}")
    d = Path(ledgers_base) / "chunks" / f"{chunk_id // CHUNKS_PER_DIR:04d}"
    return d / f"{chunk_id:06d}.data", d / f"{chunk_id:06d}.index"


def chunk_partial_paths(work_dir: str | os.PathLike, chunk_id: int) -> tuple[Path, Path]:
    """``(data_partial, offsets_partial)`` of chunk ``chunk_id`` being written in ``work_dir``."""
    w = Path(work_dir)
    return w / f"{chunk_id:06d}.data.partial", w / f"{chunk_id:06d}.offsets.partial"


# --- txhash shards ------------------------------------------------------------------------------


def spill_shard_path(spill_dir: str | os.PathLike, shard: int) -> Path:
    """Spill file of shard ``shard`` (0..15) in the active txhash store ``spill_dir``."""
    return Path(spill_dir) / f"cf-{shard_digit(shard)}.spill"


CHUNK_SPILL_PREFIX = "chunk-"


def chunk_spill_dir(spill_dir: str | os.PathLike, chunk_id: int) -> Path:
    """Directory of the 16 spill shards one chunk worker wrote (chunk-parallel ingestion);
    published whole by renaming a temp directory beside it."""
    if chunk_id < 0:
        raise ValueError(f"chunk id must be >= 0, got {chunk_id}")
    return Path(spill_dir) / f"{CHUNK_SPILL_PREFIX}{chunk_id:06d}"


def chunk_spill_dirs(spill_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(chunk id, directory)`` of every published chunk spill in ``spill_dir``, in chunk order
    (temp directories of unfinished writes are not listed)."""
    d = Path(spill_dir)
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        tail = p.name[len(CHUNK_SPILL_PREFIX) :]
        if p.name.startswith(CHUNK_SPILL_PREFIX) and len(tail) == 6 and tail.isdigit() and p.is_dir():
            out.append((int(tail), p))
    return sorted(out)


def sorted_shard_path(sorted_dir: str | os.PathLike, shard: int) -> Path:
    """Compacted (sorted) record file of shard ``shard`` in ``sorted_dir``."""
    return Path(sorted_dir) / f"cf-{shard_digit(shard)}.sorted"


def range_index_dir(txhash_range_dir: str | os.PathLike) -> Path:
    """Directory of the 16 index shards of one range's immutable txhash store."""
    return Path(txhash_range_dir) / "index"


def index_shard_path(txhash_range_dir: str | os.PathLike, shard: int) -> Path:
    """RecSplit index file of shard ``shard`` of one range's immutable txhash store."""
    return range_index_dir(txhash_range_dir) / f"cf-{shard_digit(shard)}.idx"


def range_dir_name(rid: int) -> str:
    """Directory name of range ``rid`` in the active stores and the immutable txhash store."""
    if rid < 0:
        raise ValueError(f"range id must be >= 0, got {rid}")
    return f"{rid:04d}"


# --- one data directory ---------------------------------------------------------------------


class DataDirLayout:
    """The paths of the configured stores, per range, chunk and shard."""

    def __init__(self, config: Config):
        self.ledgers_base = Path(config.immutable_stores.ledgers_base)
        self.txhash_base = Path(config.immutable_stores.txhash_base)
        self.active_ledgers = Path(config.active_stores.ledger_path)
        self.active_txhash = Path(config.active_stores.txhash_path)

    # active stores (deleted when the range completes)
    def active_ledger_dir(self, rid: int) -> Path:
        """Work directory of the range's partial chunk files."""
        return self.active_ledgers / range_dir_name(rid)

    def active_txhash_dir(self, rid: int) -> Path:
        """The range's spill shards (and, below, its sorted shards)."""
        return self.active_txhash / range_dir_name(rid)

    def spill_shard(self, rid: int, shard: int) -> Path:
        return spill_shard_path(self.active_txhash_dir(rid), shard)

    def chunk_spill_dir(self, rid: int, chunk_id: int) -> Path:
        return chunk_spill_dir(self.active_txhash_dir(rid), chunk_id)

    def sorted_dir(self, rid: int) -> Path:
        return self.active_txhash_dir(rid) / "sorted"

    def sorted_shard(self, rid: int, shard: int) -> Path:
        return sorted_shard_path(self.sorted_dir(rid), shard)

    # immutable stores
    def chunk_paths(self, chunk_id: int) -> tuple[Path, Path]:
        return chunk_paths(self.ledgers_base, chunk_id)

    def txhash_range_dir(self, rid: int) -> Path:
        """What ``TxHashIndex`` opens for range ``rid``."""
        return self.txhash_base / range_dir_name(rid)

    def index_dir(self, rid: int) -> Path:
        return range_index_dir(self.txhash_range_dir(rid))

    def index_shard(self, rid: int, shard: int) -> Path:
        return index_shard_path(self.txhash_range_dir(rid), shard)

    def interrupted_writes(self, rid: int, first_ledger: int, last_ledger: int) -> list[Path]:
        """Temp files a killed atomic writer left beside the final files of range ``rid``
        (chunks of ledgers ``first_ledger..last_ledger`` and the range's index shards)."""
        finals = {
            p
            for c in range(chunk_of_ledger(first_ledger), chunk_of_ledger(last_ledger) + 1)
            for p in self.chunk_paths(c)
        }
        finals |= {self.index_shard(rid, x) for x in range(NSHARDS)}
        found: list[Path] = []
        for d in sorted({p.parent for p in finals}):
            if d.is_dir():  # one listing per directory, not one per final file
                found += [t for t in d.glob(TEMP_GLOB) if temp_owner(t) in finals]
        return found
