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

from typing import ClassVar, NamedTuple, Protocol, runtime_checkable

from ..errors import LedgerSequenceError, SourceError


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


class _BoundedSource:
    """The ordering contract shared by the sources: one ``prepare_range`` of a valid range on an
    open source, then ``get_ledger`` for each ledger of it strictly in order."""

    _name: ClassVar[str]  # the class name the errors give
    _closed: bool
    _next_seq: int | None  # the ledger get_ledger expects next; None before prepare_range
    _first: int
    _last: int

    def _check_prepare(self, first: int, last: int, *, started: bool = False) -> None:
        """Raise unless prepare_range(first, last) may run (``started``: workers already run)."""
        if self._closed:
            raise SourceError(f"prepare_range on a closed {self._name}")
        if started or self._next_seq is not None:
            raise SourceError(f"{self._name}.prepare_range called twice (one bounded range per source)")
        if not (isinstance(first, int) and isinstance(last, int)) or first < 2 or last < first:
            raise SourceError(f"invalid ledger range [{first}, {last}]")

    def _check_get(self, seq: int) -> None:
        """Raise unless get_ledger(seq) is the next call the contract allows."""
        if self._next_seq is None:
            raise SourceError("get_ledger before prepare_range")
        if self._closed:
            raise SourceError(f"get_ledger on a closed {self._name}")
        if seq != self._next_seq:
            raise LedgerSequenceError(f"get_ledger({seq}) out of order: expected ledger {self._next_seq}")
        if seq > self._last:
            raise SourceError(f"ledger {seq} is beyond the prepared range [{self._first}, {self._last}]")
