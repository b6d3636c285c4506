"""The compacted ("sorted") record file of one txhash shard: what the RecSplit builder consumes.

Layout (little-endian), version 1:

    offset size field
    0      8    magic  b"RBTXSRT\\0"
    8      4    version (1)
    12     4    record size (36)
    16     8    record count
    24     8    bucket salt (keys the bucket hash the records are ordered by)
    32     ...  records: 32-byte transaction hash || uint32 LE ledger sequence

Records are in non-decreasing order of the salted bucket hash ``rs_hash_bucket(salt, hash)``
(ties broken by the hash bytes), which is exactly the order in which the builder consumes
buckets (the bucket of a key is a monotone function of that hash).  Identical hashes are
therefore adjacent; compaction rejects them.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from ..errors import CorruptStoreError, UnsupportedFormatError
from ..records import RECORD_SIZE

MAGIC = b"RBTXSRT\0"
VERSION = 1
HEADER = struct.Struct("<8sIIQQ")  # magic, version, record size, count, bucket salt
HEADER_SIZE = HEADER.size  # 32


def pack_header(count: int, salt: int) -> bytes:
    return HEADER.pack(MAGIC, VERSION, RECORD_SIZE, count, salt)


def read_header(path: Path | str) -> tuple[int, int]:
    """(record count, bucket salt) of a sorted file; checks magic, version and size."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(HEADER_SIZE)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise CorruptStoreError(f"sorted shard file {path} is missing") from None
    if len(raw) < HEADER_SIZE:
        raise CorruptStoreError(f"sorted shard file {path} is truncated ({size} bytes, header needs {HEADER_SIZE})")
    magic, version, rec, count, salt = HEADER.unpack(raw)
    if magic != MAGIC:
        raise CorruptStoreError(f"{path} is not a sorted txhash shard file (bad magic {magic!r})")
    if version != VERSION:
        raise UnsupportedFormatError(
            f"{path}: sorted shard format version {version} is not supported (expected {VERSION})"
        )
    if rec != RECORD_SIZE:
        raise CorruptStoreError(f"{path}: record size {rec}, expected {RECORD_SIZE}")
    if size != HEADER_SIZE + count * RECORD_SIZE:
        raise CorruptStoreError(
            f"{path}: {size} bytes but header declares {count} records ({HEADER_SIZE + count * RECORD_SIZE} bytes)"
        )
    return count, salt


def iter_blocks(path: Path | str, block_records: int = 1 << 16):
    """Yield the records of a sorted file as bytes blocks of at most ``block_records`` records."""
    with open(path, "rb") as f:
        f.seek(HEADER_SIZE)
        while True:
            blk = f.read(block_records * RECORD_SIZE)
            if not blk:
                return
            if len(blk) % RECORD_SIZE:
                raise CorruptStoreError(f"{path}: trailing partial record")
            yield blk
