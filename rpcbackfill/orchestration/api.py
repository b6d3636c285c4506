"""Entry points the CLI calls.  Owner: orchestration.

Signatures are the contract with ``rpcbackfill.cli``.  Query commands read the immutable
stores and open the meta store read-only, so they work beside a running backfill.
"""

from __future__ import annotations

import logging

from .. import lcm
from ..config import Config
from ..errors import InputError, MetaStoreError, NotFoundError
from ..index import TxHashIndex
from ..ledgermath import FIRST_LEDGER
from ..meta.store import COMPLETE, MetaStore
from ..paths import DataDirLayout
from ..records import HASH_SIZE
from ..stores.lfs import LedgerStore
from .coordinator import Coordinator

log = logging.getLogger(__name__)


def run_backfill(config: Config) -> int:
    """Run the backfill described by ``config.backfill`` to completion; return the exit code.

    0 every range COMPLETE, 1 a range FAILED, 128+signal when interrupted.  Input problems
    raise ``InputError`` (exit 2) and a locked data directory ``DataDirLockedError`` (exit 4)
    before any work.
    """
    return Coordinator(config).run()


def _open_meta(config: Config):
    try:
        return MetaStore(config.meta_store.path, read_only=True)
    except MetaStoreError as e:
        raise NotFoundError(f"no backfill data in {config.service.data_dir} ({e})") from None


def get_ledger(config: Config, seq: int) -> bytes:
    """Raw LedgerCloseMeta XDR of ledger ``seq`` from the immutable stores (NotFoundError if absent)."""
    if seq < FIRST_LEDGER:
        raise InputError(f"ledger {seq} precedes the first ledger {FIRST_LEDGER}")
    try:
        with LedgerStore(config.immutable_stores.ledgers_base) as store:
            return store.get_ledger(seq)
    except NotFoundError as e:
        raise NotFoundError(_why_absent(config, seq)) from e


def get_transaction_ledger(config: Config, tx_hash: bytes) -> int:
    """Ledger sequence holding ``tx_hash`` (confirmed by reading the ledger); NotFoundError if absent.

    Every COMPLETE range's index is asked; a candidate ledger counts only once the hash is
    found among that ledger's transaction hashes (the index answers absent keys with false
    positives by design).
    """
    if len(tx_hash) != HASH_SIZE:
        raise InputError(f"a transaction hash has {HASH_SIZE} bytes, got {len(tx_hash)}")
    meta = _open_meta(config)
    try:
        ranges = [meta.range_info(rid) for rid in meta.range_ids()]
    finally:
        meta.close()
    layout = DataDirLayout(config)
    with LedgerStore(config.immutable_stores.ledgers_base) as store:
        for info in ranges:
            if info.state != COMPLETE:
                continue
            idx = TxHashIndex(layout.txhash_range_dir(info.id), range_start=info.start_ledger)
            try:
                seq = idx.lookup(tx_hash)
            finally:
                idx.close()
            if seq is None or not info.start_ledger <= seq <= info.end_ledger:
                continue
            try:
                _, hashes = lcm.tx_hashes(store.get_ledger(seq))
            except NotFoundError:
                continue
            if tx_hash in lcm.iter_hashes(hashes):
                return seq
            log.debug("index candidate ledger %d for %s was a false positive", seq, tx_hash.hex())
    done = [i.id for i in ranges if i.state == COMPLETE]
    others = "; ".join(f"range {i.id} is {i.state}" for i in ranges if i.state != COMPLETE)
    raise NotFoundError(
        f"transaction {tx_hash.hex()} is not in this data directory (searched "
        + (f"COMPLETE range{'s' * (len(done) > 1)} {', '.join(map(str, done))}" if done else "no COMPLETE range")
        + (f"; {others}" if others else "")
        + ")"
    )


def _why_absent(config: Config, seq: int) -> str:
    """Why ledger ``seq`` has no finished chunk, in the operator's terms (range and its state)."""
    from ..ledgermath import range_first_ledger, range_last_ledger, range_of_ledger
    from ..meta.store import COMPLETE, MetaStore

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
    if info.state == COMPLETE:
        return f"{head}: {where} is COMPLETE but its chunk is missing (run `stellar-rpc verify`)"
    return f"{head}: {where} is {info.state}" + (f" ({info.error})" if info.error else "")


def status(config: Config) -> dict:
    """Per-range state and progress read from the meta store (JSON-serialisable)."""
    meta = _open_meta(config)
    try:
        g = meta.global_info()
        ranges = [meta.range_info(rid).to_json() for rid in meta.range_ids()]
    finally:
        meta.close()
    for r in ranges:
        total = r["end_ledger"] - r["start_ledger"] + 1
        r["ledgers_total"] = total
        r["ledgers_done"] = r["ledger"]["count"]
        r["percent"] = round(100.0 * r["ledger"]["count"] / total, 2) if total else 0.0
    states = [r["state"] for r in ranges]
    return {
        "mode": g["mode"],
        "start_ledger": g["backfill_start_ledger"],
        "end_ledger": g["backfill_end_ledger"],
        "range_size": g["range_size"],
        "complete": bool(ranges) and all(s == "COMPLETE" for s in states),
        "counts": {s: states.count(s) for s in sorted(set(states))},
        "ledgers_done": sum(r["ledgers_done"] for r in ranges),
        "tx_count": sum(r["txhash"]["count"] for r in ranges),
        "ranges": ranges,
    }


__all__ = ["run_backfill", "get_ledger", "get_transaction_ledger", "status"]
