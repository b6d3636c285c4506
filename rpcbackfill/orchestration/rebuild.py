"""``stellar-rpc rebuild-meta``: rebuild the meta store from the immutable files alone.

When the meta store is lost or damaged, the finished ranges are still described completely by
their immutable files.  For every range found on disk (an LFS chunk or a txhash directory of
it exists) this checks, without trusting any recorded state:

- every chunk of the range exists, its index is well formed and agrees with the size of its
  ``.data`` file, and it holds all 10,000 ledgers (``verify.open_chunk_checked``);
- each of the 16 index shards exists, opens, passes its CRC-32 and belongs to the range
  (``verify.open_shard_checked`` with ``crc=True``).

A range that passes is written as COMPLETE with the keys a normal run leaves
(``meta.store.restore_complete``); any other range is left out of the new store, so the next
``--backfill`` redoes it from scratch.  The new store is built in a temporary directory beside
the configured one and renamed in; the old directory, if any, is renamed aside to
``{name}.corrupt-{UTC timestamp}`` and never deleted.  The data-directory lock is held
throughout, so this refuses to run beside a backfill.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config
from ..errors import InputError
from ..fsutil import fsync_dir
from ..ledgermath import chunk_of_ledger, range_first_ledger, range_last_ledger
from ..meta.store import MetaStore, RestoredRange, restore_complete
from ..paths import DataDirLayout
from ..records import NSHARDS, shard_digit
from .lock import DataDirLock
from .verify import _ranges_on_disk, open_chunk_checked, open_shard_checked

log = logging.getLogger(__name__)


@dataclass
class RangeCheck:
    id: int
    first_ledger: int
    last_ledger: int
    problems: list[str] = field(default_factory=list)
    restored: RestoredRange | None = None

    @property
    def complete(self) -> bool:
        return self.restored is not None


@dataclass
class RebuildPlan:
    meta_path: Path
    range_size: int
    ranges: list[RangeCheck]
    moved_to: Path | None = None  # where the old store went (after ``apply``)

    @property
    def complete(self) -> list[RangeCheck]:
        return [r for r in self.ranges if r.complete]

    @property
    def partial(self) -> list[RangeCheck]:
        return [r for r in self.ranges if not r.complete]

    def format_text(self) -> str:
        lines = []
        for r in self.ranges:
            head = f"range {r.id} (ledgers {r.first_ledger}-{r.last_ledger})"
            if r.restored is not None:
                lines.append(f"{head}: COMPLETE ({sum(r.restored.shard_keys)} transactions)")
            else:
                shown = "; ".join(r.problems[:5]) + (f"; {len(r.problems) - 5} more" if len(r.problems) > 5 else "")
                lines.append(f"{head}: partial, left out (--backfill will redo it): {shown}")
        if not self.ranges:
            lines.append("no chunk and no index found: the new meta store is empty")
        return "\n".join(lines)


def check_range(layout: DataDirLayout, rid: int, range_size: int) -> RangeCheck:
    """Check the immutable files of range ``rid``; ``restored`` is set when they are all sound."""
    first, last = range_first_ledger(rid, range_size), range_last_ledger(rid, range_size)
    rc = RangeCheck(rid, first, last)
    chunks = list(range(chunk_of_ledger(first), chunk_of_ledger(last) + 1))
    for c in chunks:
        reader, problems = open_chunk_checked(layout.ledgers_base, c)
        if reader is not None:
            reader.close()
        rc.problems += [f"chunk {c}: {msg}" for msg, _ in problems]
    keys: list[int] = []
    for x in range(NSHARDS):
        ix, problem = open_shard_checked(layout.index_shard(rid, x), first, crc=True)
        if ix is None:
            rc.problems.append(f"shard {shard_digit(x)}: {problem}")
            continue
        keys.append(int(ix.n_keys))
        ix.close()
    if not rc.problems:
        rc.restored = RestoredRange(
            id=rid,
            range_size=range_size,
            chunks=len(chunks),
            shard_keys=keys,
            immutable_path=str(layout.ledgers_base),
            recsplit_path=str(layout.index_dir(rid)),
            rocksdb_path=str(layout.active_txhash_dir(rid)),
            sorted_paths=[str(layout.sorted_shard(rid, x)) for x in range(NSHARDS)],
        )
    return rc


def plan_rebuild(config: Config) -> RebuildPlan:
    """Check every range found on disk (reads only)."""
    rs = config.backfill.range_size
    layout = DataDirLayout(config)
    ranges = [check_range(layout, rid, rs) for rid in sorted(_ranges_on_disk(config, rs))]
    for r in ranges:
        if r.complete:
            log.info("rebuild-meta: range %d checks out", r.id)
        else:
            log.warning("rebuild-meta: range %d is partial: %s", r.id, "; ".join(r.problems))
    return RebuildPlan(Path(config.meta_store.path), rs, ranges)


def apply_rebuild(plan: RebuildPlan) -> RebuildPlan:
    """Build the new store in a temp dir, move the old one aside, rename the new one in."""
    meta = plan.meta_path
    parent = meta.parent
    parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    tmp = parent / f".{meta.name}.rebuild-{stamp}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)  # our own leftover (same second, same pid): never the live store
    done = plan.complete
    try:
        store = MetaStore(tmp)
        try:
            if done:
                start = min(r.first_ledger for r in done)
                end = max(r.last_ledger for r in done)
                restore_complete(
                    store, [r.restored for r in done if r.restored is not None], start, end, plan.range_size
                )
        finally:
            store.close()
        fsync_dir(tmp)
        if meta.exists() or meta.is_symlink():
            aside = parent / f"{meta.name}.corrupt-{stamp}"
            n = 1
            while aside.exists():
                aside = parent / f"{meta.name}.corrupt-{stamp}.{n}"
                n += 1
            os.rename(meta, aside)
            plan.moved_to = aside
            log.warning("rebuild-meta: old meta store moved to %s", aside)
        os.rename(tmp, meta)
        fsync_dir(parent)
    except OSError as e:
        raise InputError(f"cannot rebuild the meta store at {meta}: {e.strerror or e}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return plan


def rebuild_meta(config: Config, confirm=None) -> RebuildPlan:
    """Check, then (if ``confirm(plan)`` is None or returns True) rebuild; holds the data-dir lock."""
    with DataDirLock(config.service.data_dir):
        plan = plan_rebuild(config)
        if confirm is not None and not confirm(plan):
            return plan
        return apply_rebuild(plan)


__all__ = ["RangeCheck", "RebuildPlan", "apply_rebuild", "check_range", "plan_rebuild", "rebuild_meta"]
