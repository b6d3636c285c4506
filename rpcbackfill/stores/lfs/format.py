"""Byte formats of LFS chunks: the spec section 7 codec and our private partial-file format.

Final files of chunk ``C`` (names: ``rpcbackfill.paths.chunk_paths``), byte-exact with the Go
tooling (docs/formats.md "LFS chunks")::

    {C:06d}.data    one zstd frame (level 3, content size and content checksum set) per ledger,
                    concatenated
    {C:06d}.index   8-byte header (version, offset width, 6 zero bytes), then N+1 little-endian
                    offsets of width 4 or 8: offset[i] is where ledger i's frame starts in .data
                    and offset[N] is the size of .data

Partial files of the chunk being written (ours, internal to resume; ``paths.chunk_partial_paths``)::

    {C:06d}.data.partial      the frames appended so far
    {C:06d}.offsets.partial   16-byte header, then one 16-byte record per appended ledger:
        header: magic "RBLFSOFP", u16 version, u16 record size, u32 chunk id       (little-endian)
        record: u64 end offset of the ledger's frame in .data.partial, u32 uncompressed size,
                u32 CRC-32 of the compressed frame (lets a resume prove the data partial is intact)
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np
import zstandard

from ...errors import CorruptStoreError, UnsupportedFormatError
from ...ledgermath import CHUNK_SIZE
from ...paths import chunk_paths
from ...zstdframe import ZSTD_LEVEL, decompress_frame

# --- final files (spec section 7) ---------------------------------------------------------------

INDEX_VERSION = 1
INDEX_HEADER_SIZE = 8  # byte0 version, byte1 offset width, 6 zero bytes
# Width 4 stores offsets up to 2**32 - 1.  The spec says "width 8 only if the data exceeds
# 4 GiB"; a chunk of exactly 2**32 bytes needs its last offset (= data size = 2**32) stored,
# which does not fit in 32 bits, so the exact rule is: width 4 iff data size <= 2**32 - 1.
MAX_WIDTH4_OFFSET = 2**32 - 1
# Largest bytes an index of a full chunk can take (width 8); readers never read more.
MAX_INDEX_BYTES = INDEX_HEADER_SIZE + (CHUNK_SIZE + 1) * 8
# Sanity bound on any recorded offset (4 EiB, far beyond a real file).  Offsets are read as
# uint64 and differenced as int64 to check they increase; below this bound that difference
# cannot wrap, so a hostile 8-byte offset is reported as corrupt instead of passing the check.
MAX_PLAUSIBLE_OFFSET = 2**62
# Largest decompressed LedgerCloseMeta we accept when reading.  Real pubnet ledgers are a few
# MiB at most; this bound only protects readers from hostile frames declaring huge sizes.
MAX_LEDGER_BYTES = 256 * 1024 * 1024
# Read-ahead block of sequential scans (reader iteration, CRC re-check on resume).
READ_AHEAD = 8 << 20

# --- partial files (ours) -----------------------------------------------------------------------

PARTIAL_MAGIC = b"RBLFSOFP"
PARTIAL_VERSION = 1
PARTIAL_HEADER = struct.Struct("<8sHHI")
PARTIAL_RECORD = struct.Struct("<QII")
PARTIAL_RECORD_DTYPE = np.dtype([("end", "<u8"), ("raw", "<u4"), ("crc", "<u4")])
assert PARTIAL_HEADER.size == 16 and PARTIAL_RECORD.size == 16 == PARTIAL_RECORD_DTYPE.itemsize


@dataclass(frozen=True)
class ChunkStats:
    ledgers: int
    data_bytes: int  # size of .data (compressed)
    raw_bytes: int  # total uncompressed LedgerCloseMeta bytes


def chunk_exists(ledgers_base: str | os.PathLike, chunk_id: int) -> bool:
    """True when both final files of the chunk are present (not verified).  The index is
    published last, so this is the "chunk is finished" test."""
    data, index = chunk_paths(ledgers_base, chunk_id)
    return data.is_file() and index.is_file()


# Frames carry zstd's content checksum (low 32 bits of XXH64 of the ledger): a flipped bit anywhere
# in a frame is then a decompression error, not a different well-formed ledger.  Spec section 7
# allows frames with or without it; readers accept both (chunks written by other tools may lack
# it, and are then only as safe as the spec'd format).
ZSTD_CHECKSUM = True


def compress_ledger(lcm: bytes, level: int = ZSTD_LEVEL) -> bytes:
    """The exact frame we store for one ledger (content size and content checksum set)."""
    return zstandard.ZstdCompressor(level=level, write_checksum=ZSTD_CHECKSUM).compress(lcm)


def decompress_ledger(dctx: zstandard.ZstdDecompressor, frame, where: str) -> bytes:
    """One stored frame -> its LedgerCloseMeta; a corrupt or oversized frame is CorruptStoreError."""
    return decompress_frame(frame, where, CorruptStoreError, max_size=MAX_LEDGER_BYTES, dctx=dctx)


def index_width(data_size: int) -> int:
    """Offset width the index uses for a .data file of ``data_size`` bytes (4 or 8)."""
    if data_size < 0:
        raise ValueError(f"data size must be >= 0, got {data_size}")
    return 4 if data_size <= MAX_WIDTH4_OFFSET else 8


def encode_index(ends) -> bytes:
    """Index bytes for frames ending at ``ends`` (ascending, last = data size): header + [0] + ends."""
    ends = np.asarray(ends, dtype=np.uint64)
    data_size = int(ends[-1]) if len(ends) else 0
    width = index_width(data_size)
    offs = np.empty(len(ends) + 1, dtype="<u4" if width == 4 else "<u8")
    offs[0] = 0
    offs[1:] = ends
    return bytes([INDEX_VERSION, width, 0, 0, 0, 0, 0, 0]) + offs.tobytes()


def decode_index(raw: bytes, data_size: int, where: str = "index") -> np.ndarray:
    """Validate index bytes against a data file size; return the N+1 offsets as uint64.

    Unknown version -> UnsupportedFormatError; anything else inconsistent -> CorruptStoreError.
    """
    if len(raw) < INDEX_HEADER_SIZE:
        raise CorruptStoreError(f"{where}: {len(raw)} bytes, shorter than the {INDEX_HEADER_SIZE}-byte header")
    version, width = raw[0], raw[1]
    if version != INDEX_VERSION:
        raise UnsupportedFormatError(f"{where}: index version {version}, this build reads version {INDEX_VERSION}")
    if width not in (4, 8):
        raise CorruptStoreError(f"{where}: offset width {width}, must be 4 or 8")
    if any(raw[2:INDEX_HEADER_SIZE]):
        raise CorruptStoreError(f"{where}: reserved header bytes 2..7 are not zero")
    body = len(raw) - INDEX_HEADER_SIZE
    if body % width:
        raise CorruptStoreError(f"{where}: {body} offset bytes is not a multiple of width {width}")
    n = body // width - 1
    if n < 1:
        raise CorruptStoreError(f"{where}: holds {n} ledgers, at least 1 required")
    if n > CHUNK_SIZE:
        raise CorruptStoreError(f"{where}: holds {n} ledgers, a chunk holds at most {CHUNK_SIZE}")
    offs = np.frombuffer(raw, dtype="<u4" if width == 4 else "<u8", offset=INDEX_HEADER_SIZE).astype(np.uint64)
    if offs[0] != 0:
        raise CorruptStoreError(f"{where}: first offset is {int(offs[0])}, must be 0")
    if width == 8 and (offs > np.uint64(MAX_PLAUSIBLE_OFFSET)).any():
        raise CorruptStoreError(f"{where}: offset beyond any plausible file size")
    steps = np.diff(offs.astype(np.int64))
    bad = np.flatnonzero(steps <= 0)
    if len(bad):
        i = int(bad[0])
        raise CorruptStoreError(
            f"{where}: offsets not strictly increasing at ledger #{i} ({int(offs[i])} -> {int(offs[i + 1])})"
        )
    if int(offs[-1]) != data_size:
        raise CorruptStoreError(f"{where}: last offset {int(offs[-1])} != data file size {data_size}")
    return offs
