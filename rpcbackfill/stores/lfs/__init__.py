"""LFS ledger chunks (spec section 7): streaming writer, reader, verifier, cross-chunk store.

A chunk ``C`` holds ledgers ``C*10000+2 .. (C+1)*10000+1`` in a ``.data`` file (one zstd frame
per ledger) and an ``.index`` file (frame offsets); ``rpcbackfill.paths`` names them.

Modules:

* ``format``: the byte formats -- spec section 7 codec, constants, our partial-file format;
* ``writer``: ``ChunkWriter`` (partial files, checkpoint progress, resume, atomic publish);
* ``reader``: ``ChunkReader``, ``verify_chunk`` and ``LedgerStore``.

The public names are re-exported here: ``from rpcbackfill.stores.lfs import ChunkReader``.
"""

from __future__ import annotations

from ...paths import chunk_paths
from ...records import ChunkProgress
from .format import (
    ChunkStats,
    chunk_exists,
    compress_ledger,
    decode_index,
    encode_index,
    index_width,
)
from .reader import ChunkReader, LedgerStore, verify_chunk
from .writer import ChunkWriter, remove_chunk

__all__ = [
    "ChunkProgress",
    "ChunkReader",
    "ChunkStats",
    "ChunkWriter",
    "LedgerStore",
    "chunk_exists",
    "chunk_paths",
    "compress_ledger",
    "decode_index",
    "encode_index",
    "index_width",
    "remove_chunk",
    "verify_chunk",
]
