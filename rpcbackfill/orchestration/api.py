"""Entry points the CLI calls.  Owner: orchestration.

Signatures are the contract with ``rpcbackfill.cli``.  Query commands read the immutable
stores and open the meta store read-only, so they work beside a running backfill.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .. import lcm
from ..config import Config
from ..errors import (
    DataCorruptionError,
    InputError,
    MetaStoreCorruptError,
    MetaStoreError,
    MissingDataError,
    NotFoundError,
    XdrError,
)
from ..ledgermath import FIRST_LEDGER, chunk_of_ledger
from ..meta.store import MetaStore, RangeState
from ..paths import DataDirLayout, chunk_paths
from ..records import HASH_SIZE, shard_of
from .coordinator import Coordinator, CoordinatorOptions
from .status import RangeStatus, StatusReport

log = logging.getLogger(__name__)


def run_backfill(config: Config) -> int:
    """Run the backfill described by ``config.backfill`` to completion; return the exit code.

    0 every range COMPLETE, 1 a range FAILED, 128+signal when interrupted.  Input problems
    raise ``InputError`` (exit 2) and a locked data directory ``DataDirLockedError`` (exit 4)
    before any work.
    """
    return Coordinator(config, CoordinatorOptions(progress_interval_s=config.service.progress_interval)).run()


def _open_meta(config: Config):
    """The meta store, read-only.  Absent -> NotFoundError (nothing was ever backfilled here);
    present but unreadable, or missing beside finished data -> MetaStoreCorruptError (exit 1)
    naming the meta directory."""
    path = Path(config.meta_store.path)
    if not (path / "CURRENT").exists():
        if any(path.glob("MANIFEST-*")) or any(path.glob("*.sst")):
            raise MetaStoreCorruptError(f"meta store {path} is damaged: its CURRENT file is missing")
        if _finished_data(config):
            raise MetaStoreCorruptError(
                f"meta store {path} is missing, but {config.service.data_dir} holds finished ranges"
            )
        raise NotFoundError(f"no backfill data in {config.service.data_dir} (no meta store at {path})")
    return MetaStore(path, read_only=True)


def _finished_data(config: Config) -> list[Path]:
    """Range directories of the immutable txhash store (evidence that ranges were finished)."""
    base = Path(config.immutable_stores.txhash_base)
    try:
        return sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    except OSError:
        return []


def _check_meta_consistent(config: Config, g: dict, ids: list[int]) -> None:
    """RocksDB opens a store whose MANIFEST lost its tail as an older -- even empty -- database
    without an error, so a read must not take "no ranges" at its word: the ranges must span the
    recorded scope (its first and last range exist), and an empty store must not sit beside
    finished data."""
    path = config.meta_store.path
    if g["mode"] is None:
        if ids:
            raise MetaStoreCorruptError(f"meta store {path} lists ranges {ids} but no backfill scope")
        found = _finished_data(config)
        if found:
            raise MetaStoreCorruptError(
                f"meta store {path} records no backfill, but {found[0]} holds a finished "
                "range (damaged or replaced meta store)"
            )
        return
    start, end, rs = g["backfill_start_ledger"], g["backfill_end_ledger"], g["range_size"]
    if start is None or end is None or not rs:
        raise MetaStoreCorruptError(f"meta store {path}: backfill scope incomplete ({g})")
    # a scope widened by later runs may have gaps, but its first and last ranges were created with it
    first, last = (start - 2) // rs, (end - 2) // rs
    if not ids or ids[0] != first or ids[-1] != last:
        raise MetaStoreCorruptError(
            f"meta store {path} lists ranges {ids}, its scope [{start}, {end}] starts with range {first} "
            f"and ends with range {last}"
        )


def _read_meta(config: Config) -> tuple[dict, list]:
    """(global info, every RangeInfo) of a consistent meta store."""
    meta = _open_meta(config)
    try:
        g = meta.global_info()
        ids = meta.range_ids()
        infos = [meta.range_info(rid) for rid in ids]
    finally:
        meta.close()
    _check_meta_consistent(config, g, ids)
    return g, infos


def _complete_ranges(config: Config) -> list:
    return [info for info in _read_meta(config)[1] if info.state == RangeState.COMPLETE]


def _missing_chunk(config: Config, seq: int, info, err: Exception) -> DataCorruptionError:
    """The error for a ledger that COMPLETE range ``info`` must hold but the store did not find."""
    files = chunk_paths(config.immutable_stores.ledgers_base, chunk_of_ledger(seq))
    gone = [str(p) for p in files if not p.exists()]
    if gone:
        return MissingDataError(
            f"ledger {seq} of COMPLETE range {info.id} is missing: {', '.join(gone)} ({err}); "
            "run `stellar-rpc verify` to check the data directory"
        )
    # both files exist but the index lists fewer ledgers than a finished chunk holds
    return DataCorruptionError(f"ledger {seq} of COMPLETE range {info.id} is not in {files[1]} ({err})")


def get_ledger(config: Config, seq: int) -> bytes:
    """Raw LedgerCloseMeta XDR of ledger ``seq`` from the immutable stores.

    NotFoundError only when no COMPLETE range holds ``seq``; a ledger a COMPLETE range must hold
    whose chunk is gone is MissingDataError (exit 1, naming the files); a stored ledger that is
    not ledger ``seq`` is DataCorruptionError."""
    from ..stores.lfs import LedgerStore  # the store stack (numpy, zstd) only where a query reads it

    if seq < FIRST_LEDGER:
        raise InputError(f"ledger {seq} precedes the first ledger {FIRST_LEDGER}")
    with LedgerStore(config.immutable_stores.ledgers_base) as store:
        try:
            raw = store.get_ledger(seq)
        except NotFoundError as e:
            try:
                owner = [r for r in _complete_ranges(config) if r.start_ledger <= seq <= r.end_ledger]
            except NotFoundError:
                owner = []
            if owner:
                raise _missing_chunk(config, seq, owner[0], e) from None
            raise NotFoundError(_why_absent(config, seq)) from e
    try:
        got = lcm.ledger_sequence(raw)
    except XdrError as e:
        raise DataCorruptionError(f"ledger {seq} read from the store is not a LedgerCloseMeta ({e})") from None
    if got != seq:
        raise DataCorruptionError(f"the store returned ledger {got} when asked for ledger {seq}")
    return raw


def get_transaction_ledger(config: Config, tx_hash: bytes) -> int:
    """Ledger sequence holding ``tx_hash``, confirmed by reading the ledger; NotFoundError if absent.

    Every COMPLETE range is asked, through the one index shard the hash belongs to (its CRC is
    checked before it answers).  A candidate ledger counts only once the ledger read back carries
    that sequence and lists ``tx_hash`` among its transaction hashes (the index answers absent
    keys with false positives by design).  Damage in one range (a bad shard, a missing or corrupt
    chunk) does not stop the search: a healthy range that holds the hash still answers.  Only when
    no range answers is the damage raised (DataCorruptionError / MissingDataError, exit 1) --
    "not found" (exit 3) is reserved for a search that met no damage.
    """
    from ..index.txhash_index import damage_summary, search_ranges
    from ..stores.lfs import LedgerStore

    if len(tx_hash) != HASH_SIZE:
        raise InputError(f"a transaction hash has {HASH_SIZE} bytes, got {len(tx_hash)}")
    ranges = _read_meta(config)[1]
    with LedgerStore(config.immutable_stores.ledgers_base) as store:
        seq, damage = search_ranges(
            (i for i in ranges if i.state == RangeState.COMPLETE),
            lambda info: _lookup_in_range(config, store, info, tx_hash),
        )
    if seq is not None:
        return seq
    if damage:
        for e in damage:
            log.warning("%s", e)
        err = damage[0]
        cls = type(err) if isinstance(err, DataCorruptionError) else DataCorruptionError
        raise cls(f"transaction {tx_hash.hex()} not found in the readable ranges; {damage_summary(damage)}") from None
    done = [i.id for i in ranges if i.state == RangeState.COMPLETE]
    others = "; ".join(f"range {i.id} is {i.state}" for i in ranges if i.state != RangeState.COMPLETE)
    raise NotFoundError(
        f"transaction {tx_hash.hex()} is not in this data directory (searched "
        + (f"COMPLETE range{'s' * (len(done) > 1)} {', '.join(map(str, done))}" if done else "no COMPLETE range")
        + (f"; {others}" if others else "")
        + ")"
    )


def _why_absent(config: Config, seq: int) -> str:
    """Why ledger ``seq`` has no finished chunk, in the operator's terms (range and its state)."""
    from ..ledgermath import range_first_ledger, range_last_ledger, range_of_ledger

    head = f"ledger {seq} is not in this data directory"
    try:
        meta = MetaStore(config.meta_store.path, read_only=True)
    except MetaStoreError:
        return f"{head} ({config.service.data_dir} holds no backfill)"
    try:
        rs = meta.global_info()["range_size"] or config.backfill.range_size
        rid = range_of_ledger(seq, rs)
        info = meta.range_info(rid) if rid in meta.range_ids() else None
    finally:
        meta.close()
    where = f"range {rid} (ledgers {range_first_ledger(rid, rs)}-{range_last_ledger(rid, rs)})"
    if info is None or info.state is None:
        return f"{head}: {where} has not been backfilled"
    if info.state == RangeState.COMPLETE:
        return f"{head}: {where} is COMPLETE but its chunk is missing (run `stellar-rpc verify`)"
    return f"{head}: {where} is {info.state}" + (f" ({info.error})" if info.error else "")


def _lookup_in_range(config: Config, store, info, tx_hash: bytes) -> int | None:
    """Confirmed ledger of ``tx_hash`` in one COMPLETE range, None if the range does not hold it;
    StoreError subclasses for damage."""
    from ..index.txhash_index import open_shard, shard_candidate

    ix = open_shard(DataDirLayout(config).txhash_range_dir(info.id), shard_of(tx_hash), range_start=info.start_ledger)
    try:
        seq = shard_candidate(ix, tx_hash, info.id, info.start_ledger, info.end_ledger)
    finally:
        ix.close()
    if seq is None:
        return None
    try:
        raw = store.get_ledger(seq)
    except NotFoundError as e:
        raise _missing_chunk(config, seq, info, e) from None
    try:
        got, hashes = lcm.tx_hashes(raw)
    except XdrError as e:
        raise DataCorruptionError(f"ledger {seq} of range {info.id} is not a LedgerCloseMeta ({e})") from None
    if got != seq:
        raise DataCorruptionError(f"the ledger store returned ledger {got} when asked for ledger {seq}")
    if tx_hash in lcm.iter_hashes(hashes):
        return seq
    log.debug("index candidate ledger %d for %s was a false positive", seq, tx_hash.hex())
    return None


def status(config: Config) -> StatusReport:
    """Per-range state and progress read from the meta store (``StatusReport.to_json`` for JSON).

    Each COMPLETE range's final files get the cheap structural check (``repair.check_complete_range``);
    what it finds is the range's ``damage``."""
    from .repair import check_complete_range

    g, infos = _read_meta(config)
    layout = DataDirLayout(config)
    ranges = [
        RangeStatus.of(info, damage=check_complete_range(layout, info) if info.state == RangeState.COMPLETE else None)
        for info in infos
    ]
    return StatusReport.of(g["mode"], g["backfill_start_ledger"], g["backfill_end_ledger"], g["range_size"], ranges)


__all__ = ["StatusReport", "get_ledger", "get_transaction_ledger", "run_backfill", "status"]
