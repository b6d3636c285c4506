"""Fixed-size records and small value types shared by the stores, the index and the meta store.

Core module (no imports from the other layers), so ``stores``, ``index`` and ``meta`` use one
declaration each instead of their own copies:

* the txhash record of the spill and sorted files: a 32-byte transaction hash followed by the
  ledger sequence as uint32 little-endian (``RECORD_SIZE`` = 36 bytes);
* the 16 txhash shards, chosen by the hash's first hex digit (``shard_of``), named by that
  digit in file names and meta-store keys (``SHARD_DIGITS``);
* ``ChunkProgress``: how far the open LFS chunk of a range got, as ``ChunkWriter.sync()``
  returns it and a checkpoint stores it.

The native modules (ext/_spill.pyx, ext/_recsplit.pyx) take the same values from
ext/txhash_record.h; ``rpcbackfill.index`` checks at import that they agree with this module.
"""

from __future__ import annotations

from dataclasses import dataclass

HASH_SIZE = 32  # bytes per transaction hash (SHA-256)
SEQ_SIZE = 4  # uint32 little-endian ledger sequence after the hash
RECORD_SIZE = HASH_SIZE + SEQ_SIZE  # 36
NSHARDS = 16  # one shard per first hex digit of the hash
SHARD_DIGITS = "0123456789abcdef"  # shard i is named SHARD_DIGITS[i] in files and meta keys

assert len(SHARD_DIGITS) == NSHARDS


def shard_of(hash32: bytes) -> int:
    """Shard (0..15) of a transaction hash: its first hex digit."""
    return hash32[0] >> 4


def shard_digit(shard: int) -> str:
    """The hex digit naming shard ``shard`` (ValueError outside 0..15)."""
    if not 0 <= shard < NSHARDS:
        raise ValueError(f"shard must be 0..{NSHARDS - 1}, got {shard}")
    return SHARD_DIGITS[shard]


@dataclass(frozen=True)
class ChunkProgress:
    """Durable progress of the open (partial) LFS chunk of a range.

    ``ChunkWriter.sync()`` returns it, the checkpoint stores it (three meta-store keys, see
    ``meta.store``), and ``ChunkWriter(..., resume=progress)`` reopens the chunk from it."""

    chunk_id: int
    ledgers: int  # ledgers appended and fsynced, from the first ledger of the chunk on
    data_bytes: int  # bytes of the data partial those ledgers occupy
