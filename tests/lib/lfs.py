"""Helpers shared by the LFS tests: real fixture ledgers re-sequenced to fill chunks.

``reseq`` patches a LedgerCloseMeta's header.ledgerSeq; it is checked against stellar-sdk
(decode, set ``ledger_seq``, re-encode) in tests/test_testlib.py.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest

from rpcbackfill.ledgermath import CHUNK_SIZE, chunk_first_ledger
from rpcbackfill.stores import lfs


def _pad(n: int) -> int:
    return (n + 3) & ~3


def seq_offset(lcm: bytes) -> int:
    """Byte offset of header.ledgerSeq in a LedgerCloseMeta (v0/v1/v2) -- minimal XDR walk."""
    (v,) = struct.unpack_from(">i", lcm, 0)
    pos = 4
    if v in (1, 2):
        (ext,) = struct.unpack_from(">i", lcm, pos)
        pos += 4
        if ext == 1:  # LedgerCloseMetaExtV1 {ExtensionPoint ext; int64 sorobanFeeWrite1KB}
            pos += 4 + 8
        elif ext != 0:
            raise ValueError(f"LedgerCloseMeta ext v{ext}")
    elif v != 0:
        raise ValueError(f"LedgerCloseMeta v{v}")
    pos += 32  # LedgerHeaderHistoryEntry.hash
    pos += 4 + 32  # header.ledgerVersion, previousLedgerHash
    pos += 32 + 8  # scpValue.txSetHash, closeTime
    (n_upgrades,) = struct.unpack_from(">I", lcm, pos)
    pos += 4
    for _ in range(n_upgrades):
        (n,) = struct.unpack_from(">I", lcm, pos)
        pos += 4 + _pad(n)
    (sv_ext,) = struct.unpack_from(">i", lcm, pos)
    pos += 4
    if sv_ext == 1:  # LedgerCloseValueSignature: nodeID (PublicKey) + signature<64>
        pos += 4 + 32
        (n,) = struct.unpack_from(">I", lcm, pos)
        pos += 4 + _pad(n)
    pos += 32 + 32  # txSetResultHash, bucketListHash
    return pos


def fast_seq(lcm: bytes) -> int:
    return struct.unpack_from(">I", lcm, seq_offset(lcm))[0]


def reseq(lcm: bytes, seq: int) -> bytes:
    b = bytearray(lcm)
    struct.pack_into(">I", b, seq_offset(lcm), seq)
    return bytes(b)


def sdk_reseq(lcm: bytes, seq: int) -> bytes:
    """Reference: decode with stellar-sdk, set header.ledger_seq, re-encode."""
    from stellar_sdk import xdr

    m = xdr.LedgerCloseMeta.from_xdr_bytes(lcm)
    body = {0: m.v0, 1: m.v1, 2: m.v2}[m.v]
    body.ledger_header.header.ledger_seq = xdr.Uint32(seq)
    return m.to_xdr_bytes()


def make_ledgers(templates: list[bytes], first: int, n: int) -> list[bytes]:
    return [reseq(templates[i % len(templates)], first + i) for i in range(n)]


@pytest.fixture(scope="session")
def templates(fixture_ledgers) -> list[bytes]:
    """Small real ledgers (all three LCM versions) to fill whole chunks quickly."""
    out, seen = [], set()
    for f in fixture_ledgers:
        if len(f.lcm) <= 10_000 and f.lcm not in seen:
            seen.add(f.lcm)
            out.append(f.lcm)
    assert {struct.unpack_from(">i", t)[0] for t in out} == {0, 1, 2}
    return out


def write_chunk(base: Path, work: Path, chunk_id: int, ledgers: list[bytes], **finish_kw) -> lfs.ChunkStats:
    first = chunk_first_ledger(chunk_id)
    with lfs.ChunkWriter(base, chunk_id, work) as w:
        for i, lcm in enumerate(ledgers):
            w.append(first + i, lcm)
        return w.finish(allow_partial=len(ledgers) != CHUNK_SIZE, **finish_kw)


@pytest.fixture(scope="session")
def full_chunk(tmp_path_factory, templates):
    """A finished, full chunk 3 (ledgers 30002..40001) and its payloads; copy before mutating."""
    root = tmp_path_factory.mktemp("fullchunk")
    ledgers = make_ledgers(templates, chunk_first_ledger(3), CHUNK_SIZE)
    stats = write_chunk(root / "base", root / "work", 3, ledgers)
    return root / "base", ledgers, stats


def copy_base(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
