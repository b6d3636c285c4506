"""Ledger authentication: check every ingested LedgerCloseMeta against its own hashes.

A ledger header commits to everything the backfill stores, and the header itself is committed
to by the next ledger's header.  For one ledger (``verify_ledger``):

* ``LedgerHeaderHistoryEntry.hash`` must be SHA-256 of the LedgerHeader XDR;
* ``header.scpValue.txSetHash`` must be the transaction set's hash: for a V0 LedgerCloseMeta
  (legacy ``TransactionSet``) SHA-256 of ``previousLedgerHash`` followed by the XDR of each
  envelope in the set's order (no count); for V1/V2 SHA-256 of the GeneralizedTransactionSet XDR;
* ``header.txSetResultHash`` must be SHA-256 of the TransactionResultSet XDR made of the
  TransactionResultPairs of ``txProcessing`` in apply order.

Across ledgers (``HashChain``): ledger N's ``previousLedgerHash`` must equal ledger N-1's hash,
whichever file, batch or chunk each came from.  The chain starts unlinked: the first ledger a
``HashChain`` sees (the first of a range, or the first after a resume) is authenticated on its own
unless the caller seeds the predecessor's hash.

The native scanner (``rpcbackfill._lcm.auth_spans``) validates the whole ledger and returns the
byte spans; SHA-256 runs in OpenSSL through hashlib (SHA-NI where the CPU has it).  Any mismatch
raises ``LedgerAuthError`` naming the ledger and the hash.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from ._lcm import auth_batch, auth_spans
from .errors import LedgerAuthError

if TYPE_CHECKING:
    from typing_extensions import Buffer  # collections.abc.Buffer from Python 3.12

    from .config import Config

__all__ = ["HashChain", "LedgerAuthError", "ledger_chain", "verify_batch", "verify_ledger"]

log = logging.getLogger(__name__)


class _SourcedLedger(Protocol):
    """What ``HashChain.add`` reads of a ``sources.base.Ledger``."""

    @property
    def seq(self) -> int: ...
    @property
    def lcm(self) -> bytes | memoryview: ...
    @property
    def hash(self) -> bytes | None: ...
    @property
    def prev_hash(self) -> bytes | None: ...


_sha256 = hashlib.sha256


def _short(h: bytes) -> str:
    return h.hex()[:16] + "…"


def _verify(
    mv: memoryview,
    seq: int,
    version: int,
    stored: bytes,
    txset_hash: bytes,
    result_hash: bytes,
    h0: int,
    h1: int,
    t0: int,
    t1: int,
    results: bytes,
) -> None:
    """The three hash checks of one ledger whose spans ``auth_spans`` found in ``mv``."""
    got = _sha256(mv[h0:h1]).digest()
    if got != stored:
        raise LedgerAuthError(
            f"ledger {seq}: header hash mismatch: the ledger carries {_short(stored)} but SHA-256 of its "
            f"LedgerHeader is {_short(got)}"
        )
    if version == 0:
        h = _sha256(mv[t0 : t0 + 32])  # previousLedgerHash of the legacy TransactionSet
        h.update(mv[t0 + 36 : t1])  # the envelopes, without their count
        got = h.digest()
    else:
        got = _sha256(mv[t0:t1]).digest()
    if got != txset_hash:
        raise LedgerAuthError(
            f"ledger {seq}: transaction set does not match the header's txSetHash {_short(txset_hash)} "
            f"(its SHA-256 is {_short(got)})"
        )
    got = _sha256(results).digest()
    if got != result_hash:
        raise LedgerAuthError(
            f"ledger {seq}: transaction results do not match the header's txSetResultHash "
            f"{_short(result_hash)} (their SHA-256 is {_short(got)})"
        )


def verify_ledger(buf: Buffer) -> tuple[int, bytes, bytes, bytes]:
    """Authenticate one LedgerCloseMeta; return (seq, hash, previousLedgerHash, tx hashes), the
    last exactly as ``lcm.tx_hashes`` returns them (the scan that finds the spans collects them),
    i.e. the same tuple as ``lcm.ledger_info``.

    Raises ``XdrError`` if the bytes are malformed and ``LedgerAuthError`` if a hash fails."""
    seq, version, stored, prev, txset_hash, result_hash, h0, h1, t0, t1, results, hashes = auth_spans(buf)
    _verify(memoryview(buf).cast("B"), seq, version, stored, txset_hash, result_hash, h0, h1, t0, t1, results)
    return seq, stored, prev, hashes


def verify_batch(buf: Buffer) -> tuple[int, int, list[tuple[int, memoryview, bytes, bytes, bytes]]]:
    """``lcm.scan_batch`` with every ledger authenticated, in the same single scan per ledger:
    (start, end, [(seq, lcm view, tx hashes, hash, previousLedgerHash), ...]).  Linking the
    ledgers to each other is left to a ``HashChain``."""
    start, end, found = auth_batch(buf)
    out = []
    for seq, view, version, stored, prev, txset_hash, result_hash, h0, h1, t0, t1, results, hashes in found:
        _verify(view, seq, version, stored, txset_hash, result_hash, h0, h1, t0, t1, results)
        out.append((seq, view, hashes, stored, prev))
    return start, end, out


class HashChain:
    """Authenticates a stream of ledgers in sequence order and links them by hash.

    ``check(buf)`` verifies the ledger (``verify_ledger``) and, when the previous ledger
    (sequence - 1) was checked by this object or seeded with ``seed``, that its
    ``previousLedgerHash`` equals that ledger's hash.  A ledger whose predecessor is unknown starts
    a new chain (``unlinked`` counts them)."""

    __slots__ = ("last_seq", "last_hash", "checked", "unlinked")

    def __init__(self) -> None:
        self.last_seq: int | None = None
        self.last_hash: bytes | None = None
        self.checked = 0
        self.unlinked = 0

    def seed(self, seq: int, ledger_hash: bytes) -> None:
        """Declare ``ledger_hash`` as the hash of ledger ``seq`` (e.g. the last stored ledger before
        a resume), so that ledger ``seq + 1`` is linked to it."""
        if len(ledger_hash) != 32:
            raise ValueError("a ledger hash has 32 bytes")
        self.last_seq, self.last_hash = seq, bytes(ledger_hash)

    def check(self, buf: Buffer) -> tuple[int, bytes]:
        """Authenticate ``buf`` and link it to its predecessor; return (seq, tx hashes) as
        ``lcm.tx_hashes`` would, so a caller that needs both scans the ledger once."""
        seq, h, prev, hashes = verify_ledger(buf)
        self.link(seq, h, prev)
        return seq, hashes

    def add(self, ledger: _SourcedLedger) -> None:
        """A ledger from a source: linked only, when the source already authenticated it (it then
        carries ``hash`` and ``prev_hash``); authenticated and linked otherwise."""
        if ledger.hash is not None and ledger.prev_hash is not None:
            self.link(ledger.seq, ledger.hash, ledger.prev_hash)
        else:
            self.check(ledger.lcm)

    def add_many(self, ledgers: Iterable[_SourcedLedger]) -> None:
        """``add`` for consecutive ledgers in order (a source batch), in one call."""
        last_seq, last_hash = self.last_seq, self.last_hash
        n = unlinked = 0
        try:
            for ledger in ledgers:
                seq, h, prev = ledger.seq, ledger.hash, ledger.prev_hash
                if h is None or prev is None:  # not authenticated by the source: the full check
                    seq, h, prev, _ = verify_ledger(ledger.lcm)
                if last_seq is not None and seq == last_seq + 1:
                    if prev != last_hash:
                        raise LedgerAuthError(
                            f"ledger {seq}: broken hash chain: its previousLedgerHash {_short(prev)} is not the "
                            f"hash {_short(last_hash or b'')} of ledger {last_seq}"
                        )
                else:
                    unlinked += 1
                last_seq, last_hash = seq, h
                n += 1
        finally:  # the ledgers before a failure stay linked, exactly as one add() each would leave it
            self.last_seq, self.last_hash = last_seq, last_hash
            self.checked += n
            self.unlinked += unlinked

    def link(self, seq: int, ledger_hash: bytes, prev_hash: bytes) -> None:
        """Link an already authenticated ledger (its hash and previousLedgerHash) to its predecessor."""
        h, prev = ledger_hash, prev_hash
        if self.last_seq is not None and seq == self.last_seq + 1:
            if prev != self.last_hash:
                raise LedgerAuthError(
                    f"ledger {seq}: broken hash chain: its previousLedgerHash {_short(prev)} is not the hash "
                    f"{_short(self.last_hash or b'')} of ledger {self.last_seq}"
                )
        else:
            self.unlinked += 1
        self.last_seq, self.last_hash = seq, h
        self.checked += 1


def ledger_chain(config: Config, what: str) -> HashChain | None:
    """A fresh ``HashChain`` for one ingestion run, or None (after a warning naming ``what``) when
    ``[backfill] check_ledger_hashes`` is false."""
    if config.backfill.check_ledger_hashes:
        return HashChain()
    log.warning(
        "%s: backfill.check_ledger_hashes = false: ingested ledgers are NOT authenticated against their "
        "header, transaction-set and result hashes, nor hash-chained",
        what,
    )
    return None
