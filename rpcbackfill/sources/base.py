"""The ledger source protocol, shaped like stellar/go's ``ledgerbackend``.

A source is prepared once for a bounded, inclusive range, then yields ledgers strictly in
order, then is closed.

    src.prepare_range(first, last)      # validates the range is available, starts workers
    for seq in range(first, last + 1):
        ledger = src.get_ledger(seq)    # blocks; must be called with seq strictly increasing by 1
    src.close()                         # idempotent; stops workers promptly

``get_ledger`` returns a ``Ledger``: the raw ``LedgerCloseMeta`` XDR together with what the
source's own validating scan of it found (sequence and transaction hashes), so a ledger is
parsed once on its way from the source to the stores.

Cancellation: every source takes a ``threading.Event`` (``cancel``); once set, blocked
calls raise ``rpcbackfill.errors.Cancelled`` promptly and workers stop.
Errors: ``rpcbackfill.errors.SourceError`` and subclasses only.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable


class Ledger(NamedTuple):
    """One ledger as a source delivers it."""

    seq: int  # ledgerSeq of the header (the source checked it is the one asked for)
    lcm: bytes | memoryview  # the LedgerCloseMeta XDR, exactly as stored (a view into a batch when possible)
    tx_hashes: bytes  # concatenated 32-byte hashes in apply order, as rpcbackfill.lcm.tx_hashes
    # Set when the source authenticated the ledger (rpcbackfill.ledgerauth, check_ledger_hashes):
    # its header hash and previousLedgerHash, for the orchestrator's HashChain to link.
    hash: bytes | None = None
    prev_hash: bytes | None = None


@runtime_checkable
class LedgerSource(Protocol):
    def prepare_range(self, first: int, last: int) -> None: ...

    def get_ledger(self, seq: int) -> Ledger: ...

    def close(self) -> None: ...

    def __enter__(self) -> LedgerSource: ...

    def __exit__(self, *exc) -> None: ...
