"""LedgerCloseMeta scanning: ledger sequence, header hashes, transaction hashes, batch split.

Thin public wrapper over the native scanner ``rpcbackfill._lcm`` (ext/_lcm.pyx + the grammar
generated from stellar-sdk by tools/gen_xdr_grammar.py; see docs/lcm-scanner.md).

Every function accepts ``bytes``, ``bytearray``, ``memoryview`` or any contiguous buffer
(read-only is fine), validates the *whole* XDR value against the grammar -- so a truncated or
corrupt ledger raises even when the requested fields were already seen -- and raises
``rpcbackfill.errors.XdrError`` (a ``ValueError``) on malformed input.  The GIL is released while
parsing, so threads scale.

Functions:

* ``lcm_length(buf, offset=0) -> int``: bytes the LedgerCloseMeta starting at ``offset`` occupies
  (the buffer may continue after it).
* ``ledger_sequence(buf) -> int``: ``buf`` must hold exactly one LedgerCloseMeta.
* ``header_sequence(buf) -> int``: the ledger sequence from a bounded parse of the prefix only
  (union arm, ext, header fields up to ledgerSeq; microseconds whatever the ledger's size).  It
  does NOT validate the rest: for bytes already proven to be a scanned ledger (e.g. a stored zstd
  frame whose content checksum matched).
* ``header_hashes(buf) -> (hash, previous_ledger_hash)``: 32 bytes each.
* ``tx_hashes(buf) -> (seq, hashes)``: ``hashes`` concatenates the 32-byte hash of every
  TransactionResultPair of txProcessing in apply order; a fee-bump transaction's inner hash follows
  its outer hash immediately (spec section 8).
* ``tx_hashes_into(buf, out, out_offset=0) -> (seq, count)``: same, written into a caller buffer.
* ``ledger_info(buf) -> (seq, hash, previous_ledger_hash, hashes)``: all of the above in one pass
  (use it instead of calling ledger_sequence + header_hashes + tx_hashes on the same ledger).
* ``split_batch(buf) -> (start, end, [lcm bytes, ...])``: a LedgerCloseMetaBatch; checks the count,
  the sequences start..end in order and that nothing trails the batch.
* ``scan_batch(buf) -> (start, end, [(seq, lcm, hashes), ...])``: split_batch that also returns what
  the same pass found: each ledger's sequence and transaction hashes, its bytes as a ``memoryview``
  slice of ``buf`` (no copy).  The data-lake source uses it so every ledger is parsed once.
"""

from __future__ import annotations

from ._lcm import (
    MAX_DEPTH,
    MIN_LCM_SIZE,
    SDK_VERSION,
    header_hashes,
    header_sequence,
    lcm_length,
    ledger_info,
    ledger_sequence,
    scan_batch,
    split_batch,
    tx_hashes,
    tx_hashes_into,
)
from .records import HASH_SIZE  # bytes per transaction hash (SHA-256), re-exported


def iter_hashes(hashes: bytes) -> list[bytes]:
    """Split the concatenated output of ``tx_hashes`` into 32-byte hashes."""
    return [hashes[i : i + HASH_SIZE] for i in range(0, len(hashes), HASH_SIZE)]


__all__ = [
    "HASH_SIZE",
    "MAX_DEPTH",
    "MIN_LCM_SIZE",
    "SDK_VERSION",
    "header_hashes",
    "header_sequence",
    "iter_hashes",
    "lcm_length",
    "ledger_info",
    "ledger_sequence",
    "scan_batch",
    "split_batch",
    "tx_hashes",
    "tx_hashes_into",
]
