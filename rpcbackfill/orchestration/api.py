"""Entry points the CLI calls (placeholder until the orchestration issue lands).

Owner: orchestration.  Signatures are the contract with ``rpcbackfill.cli``.
"""

from __future__ import annotations

from ..config import Config
from ..errors import NotImplementedFeatureError


def run_backfill(config: Config) -> int:
    """Run the backfill described by ``config.backfill`` to completion; return the exit code."""
    raise NotImplementedFeatureError("backfill is not implemented yet in this build")


def get_ledger(config: Config, seq: int) -> bytes:
    """Raw LedgerCloseMeta XDR of ledger ``seq`` from the immutable stores (NotFoundError if absent)."""
    raise NotImplementedFeatureError("get-ledger-by-sequence is not implemented yet in this build")


def get_transaction_ledger(config: Config, tx_hash: bytes) -> int:
    """Ledger sequence holding ``tx_hash`` (confirmed by reading the ledger); NotFoundError if absent."""
    raise NotImplementedFeatureError("get-transaction-by-hash is not implemented yet in this build")


def status(config: Config) -> dict:
    """Per-range state and progress read from the meta store (JSON-serialisable)."""
    raise NotImplementedFeatureError("status is not implemented yet in this build")
