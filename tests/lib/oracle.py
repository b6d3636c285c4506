"""stellar-sdk decoding: the independent XDR reference the tests compare the product with.

Deliberately a second implementation (stellar-sdk's generated XDR classes, not our scanner or
generator), so a test that agrees with it checks something.  Slow: tests only.
"""

from __future__ import annotations


def _body(lcm: bytes):
    from stellar_sdk import xdr

    m = xdr.LedgerCloseMeta.from_xdr_bytes(lcm)
    return m, {0: m.v0, 1: m.v1, 2: m.v2}[m.v]


def sdk_split_batch(batch: bytes) -> tuple[int, int, list[bytes]]:
    """(startSequence, endSequence, [LedgerCloseMeta XDR]) of a LedgerCloseMetaBatch."""
    from stellar_sdk import xdr

    b = xdr.LedgerCloseMetaBatch.from_xdr_bytes(batch)
    return b.start_sequence.uint32, b.end_sequence.uint32, [m.to_xdr_bytes() for m in b.ledger_close_metas]


def sdk_ledger_seq(lcm: bytes) -> int:
    return _body(lcm)[1].ledger_header.header.ledger_seq.uint32


def sdk_seq_and_hashes(lcm: bytes) -> tuple[int, bytes, bytes]:
    """(ledgerSeq, hash, previousLedgerHash)."""
    e = _body(lcm)[1].ledger_header
    return e.header.ledger_seq.uint32, e.hash.hash, e.header.previous_ledger_hash.hash


def sdk_reference(lcm: bytes) -> tuple[int, bytes, bytes, bytes]:
    """(seq, concatenated tx hashes in apply order -- a fee bump's inner hash right after its outer
    one --, header hash, previous hash) by a full decode."""
    _, body = _body(lcm)
    out = []
    for meta in body.tx_processing:
        pair = meta.result
        out.append(pair.transaction_hash.hash)
        inner = pair.result.result.inner_result_pair
        if inner is not None:
            out.append(inner.transaction_hash.hash)
    hdr = body.ledger_header
    return hdr.header.ledger_seq.uint32, b"".join(out), hdr.hash.hash, hdr.header.previous_ledger_hash.hash


def sdk_header_hash_ok(lcm: bytes) -> bool:
    """Whether the LedgerHeaderHistoryEntry hash is sha256 of the LedgerHeader XDR (as core writes it)."""
    import hashlib

    e = _body(lcm)[1].ledger_header
    return hashlib.sha256(e.header.to_xdr_bytes()).digest() == e.hash.hash
