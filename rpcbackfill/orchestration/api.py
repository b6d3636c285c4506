"""Entry points the CLI calls.  Owner: orchestration.

Signatures are the contract with ``rpcbackfill.cli``.  Query commands read the immutable
stores and open the meta store read-only, so they work beside a running backfill.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..config import Config
from ..errors import InputError, MetaStoreError, NotFoundError
from ..ledgermath import FIRST_LEDGER
from .status import RangeStatus, StatusReport

log = logging.getLogger(__name__)


def run_backfill(config: Config) -> int:
    """Run the backfill described by ``config.backfill`` to completion; return the exit code.

    0 every range COMPLETE, 1 a range FAILED, 128+signal when interrupted.  Input problems
    raise ``InputError`` (exit 2) and a locked data directory ``DataDirLockedError`` (exit 4)
    before any work.
    """
    from .coordinator import Coordinator

    return Coordinator(config).run()


def _open_meta(config: Config):
    from ..meta.store import MetaStore

    try:
        return MetaStore(config.meta_store.path, read_only=True)
    except MetaStoreError as e:
        raise NotFoundError(f"no backfill data in {config.service.data_dir} ({e})") from None


def get_ledger(config: Config, seq: int) -> bytes:
    """Raw LedgerCloseMeta XDR of ledger ``seq`` from the immutable stores (NotFoundError if absent)."""
    from ..stores.lfs import LedgerStore

    if seq < FIRST_LEDGER:
        raise InputError(f"ledger {seq} precedes the first ledger {FIRST_LEDGER}")
    with LedgerStore(config.immutable_stores.ledgers_base) as store:
        return store.get_ledger(seq)


def get_transaction_ledger(config: Config, tx_hash: bytes) -> int:
    """Ledger sequence holding ``tx_hash`` (confirmed by reading the ledger); NotFoundError if absent.

    Every COMPLETE range's index is asked; a candidate ledger counts only once the hash is
    found among that ledger's transaction hashes (the index answers absent keys with false
    positives by design).
    """
    from .. import lcm
    from ..index import TxHashIndex
    from ..meta.store import RangeState
    from ..stores.lfs import LedgerStore

    if len(tx_hash) != 32:
        raise InputError(f"a transaction hash has 32 bytes, got {len(tx_hash)}")
    meta = _open_meta(config)
    try:
        ranges = [meta.range_info(rid) for rid in meta.range_ids()]
    finally:
        meta.close()
    base = Path(config.immutable_stores.txhash_base)
    with LedgerStore(config.immutable_stores.ledgers_base) as store:
        for info in ranges:
            if info.state != RangeState.COMPLETE:
                continue
            idx = TxHashIndex(base / f"{info.id:04d}", range_start=info.start_ledger)
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
            if any(hashes[i : i + 32] == tx_hash for i in range(0, len(hashes), 32)):
                return seq
            log.debug("index candidate ledger %d for %s was a false positive", seq, tx_hash.hex())
    raise NotFoundError(f"transaction {tx_hash.hex()} not found in any COMPLETE range")


def status(config: Config) -> StatusReport:
    """Per-range state and progress read from the meta store (``StatusReport.to_json`` for JSON)."""
    meta = _open_meta(config)
    try:
        g = meta.global_info()
        ranges = [RangeStatus.of(meta.range_info(rid)) for rid in meta.range_ids()]
    finally:
        meta.close()
    return StatusReport.of(g["mode"], g["backfill_start_ledger"], g["backfill_end_ledger"], g["range_size"], ranges)


__all__ = ["run_backfill", "get_ledger", "get_transaction_ledger", "status", "StatusReport"]
