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

Batches (``LedgerBatchSource``): ``get_batch(seq, max_count)`` returns ledgers ``seq, seq+1, ...``
(at least one, at most ``max_count``, never past the prepared range) in one call, blocking only
for the first; the next call continues after the last one returned.  It is the same stream as
``get_ledger`` (the two may be mixed) with one Python-level call, one lock hand-off and one
metering step per batch instead of per ledger.  Every source here has it (``_BoundedSource``
falls back to one ``get_ledger``); ``iter_batches`` walks a whole range with it.

Cancellation: every source takes a ``threading.Event`` (``cancel``); once set, blocked
calls raise ``rpcbackfill.errors.Cancelled`` promptly and workers stop.
Errors: ``rpcbackfill.errors.SourceError`` and subclasses only.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple, Protocol, runtime_checkable

from ..errors import LedgerSequenceError, SourceError

# How often a source's blocking waits (queues, sockets, child processes, backoff sleeps) re-check
# the cancel event and their deadlines (seconds): the bound on how late Cancelled is raised.
POLL_S = 0.05


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


@runtime_checkable
class LedgerBatchSource(LedgerSource, Protocol):
    def get_batch(self, seq: int, max_count: int) -> list[Ledger]: ...


# Default batch size: big enough that the per-call cost vanishes next to the ledgers' own work,
# small enough that a batch of dense pubnet ledgers stays a few tens of MB of views.
DEFAULT_BATCH = 256


def get_batch(source: LedgerSource, seq: int, max_count: int = DEFAULT_BATCH) -> list[Ledger]:
    """``source.get_batch`` when the source has it, else one ``get_ledger``."""
    gb = getattr(source, "get_batch", None)
    if gb is not None:
        return gb(seq, max_count)
    return [source.get_ledger(seq)]


def iter_batches(source: LedgerSource, first: int, last: int, max_count: int = DEFAULT_BATCH):
    """Yield lists of consecutive ``Ledger`` s covering ``first..last`` in order (the source must
    be prepared for a range containing them, positioned at ``first``)."""
    seq = first
    while seq <= last:
        batch = get_batch(source, seq, min(max_count, last - seq + 1))
        if not batch:
            raise SourceError(f"source returned an empty batch at ledger {seq}")
        yield batch
        seq += len(batch)


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

    def get_ledger(self, seq: int) -> Ledger:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def get_batch(self, seq: int, max_count: int = DEFAULT_BATCH) -> list[Ledger]:
        """Ledgers from ``seq`` on, at most ``max_count`` (here: one; sources that hold several
        ledgers at once return more)."""
        if max_count < 1:
            raise SourceError(f"get_batch: max_count must be >= 1, got {max_count}")
        return [self.get_ledger(seq)]

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
