"""The ledger source protocol, shaped like stellar/go's ``ledgerbackend``.

A source is prepared once for a bounded, inclusive range, then yields raw
``LedgerCloseMeta`` XDR bytes strictly in order, then is closed.

    src.prepare_range(first, last)      # validates the range is available, starts workers
    for seq in range(first, last + 1):
        lcm = src.get_ledger(seq)       # blocks; must be called with seq strictly increasing by 1
    src.close()                         # idempotent; stops workers promptly

Cancellation: every source takes a ``threading.Event`` (``cancel``); once set, blocked
calls raise ``rpcbackfill.errors.Cancelled`` promptly and workers stop.
Errors: ``rpcbackfill.errors.SourceError`` and subclasses only.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class LedgerSource(Protocol):
    def prepare_range(self, first: int, last: int) -> None: ...

    def get_ledger(self, seq: int) -> bytes: ...

    def close(self) -> None: ...

    def __enter__(self) -> LedgerSource: ...

    def __exit__(self, *exc) -> None: ...
