"""Damage of COMPLETE ranges: find it (``status``, start-up of ``--backfill``) and repair it.

A COMPLETE range is described by immutable files only: its LFS chunks and its 16 index shards.
When one of them is missing or damaged, a re-run of the same ``--backfill`` command repairs it
before any range is scheduled (``Coordinator._repair_complete_ranges`` calls ``repair_ranges``):

* **finding** -- by default the cheap structural check of ``verify.structural_damage`` (every
  file present, each chunk index consistent with its ``.data`` size and holding 10,000 ledgers,
  each shard's header and section table sound, its range start and key count as recorded).
  It costs one small read per chunk and one header per shard, so it runs on every start.  With
  ``[backfill] verify_complete = true`` (``--verify-complete``) the full check of
  ``stellar-rpc verify`` runs instead: every ledger decoded, every shard's CRC, every key looked
  up -- hours for 60M ledgers, so it is opt-in.
* **a damaged or missing chunk** is re-ingested from the configured source into a scratch
  directory (``{ledgers_base}/.repair``) by the ingestion's own work item
  (``chunk_ingest.ingest_chunk``: ledgers authenticated when ``check_ledger_hashes``, written
  with ``ChunkWriter``, every frame read back), and only then put in place:
  the bad files are deleted (index first) and the new ``.data`` then ``.index`` renamed in.
  The source is opened and read *before* anything is deleted, so an unreadable source leaves
  the damage as it was and the run exits 1 saying what to do.
* **a damaged or missing index shard** is rebuilt from the range's own chunks (local, no
  source needed, and no slower than the source: reading the chunks is what ingestion did
  anyway): the hashes of that shard are re-derived from every ledger of the range, compacted,
  built into ``{range dir}/.repair/``, verified key by key, checked against the meta store's
  key count, and renamed over the bad file.  A chunk that turns out unreadable while doing so
  is repaired first (from the source).

Crash safety without a meta-store write: each step either leaves the old (damaged) file in
place or an absent file, and both are found again by the next start's check; the scratch
directories are wiped at the start of every repair.  The meta store is not written: a
repaired range keeps its COMPLETE record, which was true of the data it describes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import lcm
from ..config import ActiveStoresConfig, Config
from ..errors import Cancelled, CorruptStoreError, RepairError, RpcBackfillError, XdrError
from ..fsutil import fsync_dir
from ..index import TxHashSpill, build_shard, compact_shard, verify_shard
from ..ledgermath import chunk_first_ledger, chunk_last_ledger, chunk_of_ledger
from ..meta.store import RangeInfo, RangeState
from ..paths import DataDirLayout, chunk_paths
from ..records import HASH_SIZE, NSHARDS, SHARD_DIGITS
from ..stores.lfs import ChunkReader
from ..stores.lfs.writer import remove_chunk
from . import faults
from .verify import Problem, structural_damage, verify_range

log = logging.getLogger(__name__)

SCRATCH = ".repair"  # scratch directory name, under ledgers_base and under a range's txhash dir


def check_complete_range(layout: DataDirLayout, info: RangeInfo) -> list[Problem]:
    """The cheap structural check of COMPLETE range ``info`` (``verify.structural_damage``)."""
    return structural_damage(layout, info.id, info.start_ledger, info.end_ledger, shard_keys=list(info.cf_counts))


def full_check_range(config: Config, info: RangeInfo, cancel: threading.Event | None = None) -> list[Problem]:
    """The full check of ``stellar-rpc verify`` for one range (every ledger, CRC, key)."""
    return [p for p in verify_range(config, info.id, str(info.state), cancel) if p.kind not in ("range", "source")]


@dataclass
class RangeRepair:
    """What to repair in one range: chunks to re-ingest, shards (indexes 0..15) to rebuild."""

    info: RangeInfo
    chunks: dict[int, str] = field(default_factory=dict)  # chunk -> why
    shards: dict[int, str] = field(default_factory=dict)  # shard index -> why

    @classmethod
    def of(cls, info: RangeInfo, problems: Iterable[Problem]) -> RangeRepair:
        rr = cls(info)
        for p in problems:
            chunk = p.chunk if p.chunk is not None else (chunk_of_ledger(p.ledger) if p.ledger is not None else None)
            if p.kind in ("chunk", "ledger") and chunk is not None:
                rr.chunks.setdefault(chunk, p.message)
            elif p.kind in ("shard", "key") and p.shard is not None:
                rr.shards.setdefault(SHARD_DIGITS.index(p.shard), p.message)
        return rr

    def __bool__(self) -> bool:
        return bool(self.chunks or self.shards)


class Repairer:
    """Repairs the final files of COMPLETE ranges (see the module docstring)."""

    def __init__(self, config: Config, cancel: threading.Event | None = None):
        self.config = config
        self.cancel = cancel or threading.Event()
        self.layout = DataDirLayout(config)

    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled("repair cancelled")

    # --- chunks ----------------------------------------------------------------------------

    def repair_chunk(self, rid: int, c: int, why: str) -> None:
        """Re-ingest chunk ``c`` of range ``rid`` from the source and put it in place."""
        data, index = chunk_paths(self.layout.ledgers_base, c)
        first, last = chunk_first_ledger(c), chunk_last_ledger(c)
        log.warning(
            "range %d: chunk %d (%s) is damaged: %s; re-ingesting ledgers %d-%d from the source",
            rid,
            c,
            index,
            why,
            first,
            last,
            extra={"range_id": rid, "phase": "REPAIR", "chunk": c},
        )
        scratch = self.layout.ledgers_base / SCRATCH
        _remove_tree(scratch)
        try:
            self._write_chunk(rid, c, scratch)
        except Cancelled:
            raise
        except RpcBackfillError as e:
            raise RepairError(
                f"chunk {c} of COMPLETE range {rid} is damaged ({why}) and could not be re-ingested: {e}; "
                f"the damaged files are left as they were ({data}, {index}): make the source readable "
                "and re-run the same command"
            ) from None
        new_data, new_index = chunk_paths(scratch, c)
        remove_chunk(self.layout.ledgers_base, c)  # index first: the chunk stops existing at once
        faults.hit("repair_swap")
        data.parent.mkdir(parents=True, exist_ok=True)
        os.replace(new_data, data)
        fsync_dir(data.parent)
        os.replace(new_index, index)  # the chunk exists again
        fsync_dir(index.parent)
        _remove_tree(scratch)
        log.info("range %d: chunk %d repaired", rid, c, extra={"range_id": rid, "phase": "REPAIR", "chunk": c})

    def _write_chunk(self, rid: int, c: int, base: Path) -> None:
        """Chunk ``c`` from the source into the scratch ledgers base ``base`` through the
        ingestion's own work item (``chunk_ingest.ingest_chunk``: ledgers authenticated, chunk
        written, published and read back there); its tx-hash spill stays in the scratch too."""
        from .chunk_ingest import ChunkTask, ingest_chunk

        cfg = dataclasses.replace(
            self.config,
            immutable_stores=dataclasses.replace(self.config.immutable_stores, ledgers_base=base),
            active_stores=ActiveStoresConfig(ledger_path=base / "active-ledgers", txhash_path=base / "active-txhash"),
        )
        ingest_chunk(ChunkTask(cfg, rid, c, chunk_first_ledger(c), chunk_last_ledger(c)), self.cancel)
        faults.hit("repair_chunk_written")

    # --- shards ----------------------------------------------------------------------------

    def rebuild_shards(self, info: RangeInfo, shards: dict[int, str]) -> None:
        """Rebuild the index shards ``shards`` (index -> why) of COMPLETE range ``info`` from
        the range's own chunks; put each in place once it is verified."""
        rid = info.id
        for x, why in sorted(shards.items()):
            log.warning(
                "range %d: index shard %s (%s) is damaged: %s; rebuilding it from the range's chunks",
                rid,
                SHARD_DIGITS[x],
                self.layout.index_shard(rid, x),
                why,
                extra={"range_id": rid, "phase": "REPAIR", "shard": SHARD_DIGITS[x]},
            )
        scratch = self.layout.txhash_range_dir(rid) / SCRATCH
        _remove_tree(scratch)
        spill_dir, sorted_dir = scratch / "spill", scratch / "sorted"
        want = np.zeros(NSHARDS, dtype=bool)
        want[list(shards)] = True
        spill = TxHashSpill(spill_dir)
        try:
            for c in range(chunk_of_ledger(info.start_ledger), chunk_of_ledger(info.end_ledger) + 1):
                self._check_cancel()
                for seq, hashes in self._chunk_hashes(rid, c):
                    if hashes:
                        keys = np.frombuffer(hashes, dtype=np.uint8).reshape(-1, HASH_SIZE)
                        keep = keys[want[keys[:, 0] >> 4]]
                        if keep.size:
                            spill.add(seq, keep.tobytes())
            counts = spill.sync()
        finally:
            spill.close()
        sorted_dir.mkdir(parents=True, exist_ok=True)
        for x in sorted(shards):
            self._check_cancel()
            n = counts[x]
            if n != info.cf_counts[x]:
                raise RepairError(
                    f"index shard {SHARD_DIGITS[x]} of COMPLETE range {rid}: the range's chunks hold {n} transaction "
                    f"hashes for it, the meta store records {info.cf_counts[x]}; the chunks do not match what was "
                    f"indexed: run `stellar-rpc verify`, then delete the range's files and re-run the backfill"
                )
            sorted_path = compact_shard(spill_dir, x, sorted_dir, n_records=n, cancel=self.cancel)
            built = scratch / self.layout.index_shard(rid, x).name
            build_shard(sorted_path, built, info.start_ledger, n, cancel=self.cancel)
            faults.hit("repair_shard_built")
            verify_shard(built, sorted_path, info.start_ledger, n, cancel=self.cancel)
            final = self.layout.index_shard(rid, x)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(built, final)
            fsync_dir(final.parent)
            log.info(
                "range %d: index shard %s rebuilt (%d keys)",
                rid,
                SHARD_DIGITS[x],
                n,
                extra={"range_id": rid, "phase": "REPAIR", "shard": SHARD_DIGITS[x]},
            )
        _remove_tree(scratch)

    def _chunk_hashes(self, rid: int, c: int) -> list[tuple[int, bytes]]:
        """``(seq, tx hashes)`` of every ledger of chunk ``c``, decoded in full before any is
        returned; a chunk that does not decode is repaired from the source first."""
        for attempt in (1, 2):
            try:
                out = []
                with ChunkReader(self.layout.ledgers_base, c) as reader:
                    for seq, raw in reader:
                        got, hashes = lcm.tx_hashes(raw)
                        if got != seq:
                            raise CorruptStoreError(f"holds ledger {got} where ledger {seq} belongs")
                        out.append((seq, hashes))
                if len(out) != chunk_last_ledger(c) - chunk_first_ledger(c) + 1:
                    raise CorruptStoreError(f"holds {len(out)} ledgers")
                return out
            except (RpcBackfillError, XdrError) as e:
                if attempt == 2:
                    raise RepairError(f"chunk {c} of range {rid} is still unreadable after its repair: {e}") from None
                self.repair_chunk(rid, c, f"found while rebuilding an index shard: {e}")
        raise AssertionError("unreachable")

    # --- ranges ----------------------------------------------------------------------------

    def repair(self, rr: RangeRepair) -> None:
        """Chunks first (the shards are derived from them), then shards."""
        for c, why in sorted(rr.chunks.items()):
            self._check_cancel()
            self.repair_chunk(rr.info.id, c, why)
        if rr.shards:
            self.rebuild_shards(rr.info, rr.shards)


def repair_ranges(
    config: Config,
    infos: Iterable[RangeInfo],
    *,
    full: bool = False,
    cancel: threading.Event | None = None,
    found: dict[int, list[Problem]] | None = None,
) -> dict[int, list[Problem]]:
    """Check every COMPLETE range of ``infos`` (structurally, or in full with ``full``) and repair
    what is damaged; ``found`` is the structural damage already known per range (the check is
    then not run again).  Returns the damage found per range (empty when every range was sound);
    raises ``RepairError`` (exit 1, one line saying what to do) when a repair is impossible,
    and raises when a repaired range still fails the structural check."""
    repairer = Repairer(config, cancel)
    known = found
    found = {}
    for info in infos:
        if info.state != RangeState.COMPLETE:
            continue
        repairer._check_cancel()
        if full:
            problems = full_check_range(config, info, cancel)
        elif known is not None:
            problems = known.get(info.id, [])
        else:
            problems = check_complete_range(repairer.layout, info)
        if not problems:
            continue
        found[info.id] = problems
        rr = RangeRepair.of(info, problems)
        if not rr:
            raise RepairError(
                f"COMPLETE range {info.id} is damaged in a way this run cannot repair "
                f"({problems[0].subject}: {problems[0].message}); run `stellar-rpc verify` for the full report"
            )
        repairer.repair(rr)
        left = check_complete_range(repairer.layout, info)
        if left:
            raise RepairError(
                f"COMPLETE range {info.id} is still damaged after its repair ({left[0].subject}: {left[0].message}); "
                "run `stellar-rpc verify` for the full report"
            )
        log.info(
            "range %d: repaired (%d chunk(s) re-ingested, %d index shard(s) rebuilt); COMPLETE again",
            info.id,
            len(rr.chunks),
            len(rr.shards),
            extra={"range_id": info.id, "phase": "COMPLETE"},
        )
    return found


def _remove_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
        fsync_dir(path.parent)


__all__ = [
    "RangeRepair",
    "Repairer",
    "check_complete_range",
    "full_check_range",
    "repair_ranges",
]
