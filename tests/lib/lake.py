"""Reading a local data lake for tests, from the product's layout math.

Object keys, the manifest and the batch boundaries come from ``rpcbackfill.sources.layout``
(the same functions the lake writer and the source use); the batch is split by the product's
scanner.  What stays here is the part a test needs to be independent of the source under test:
read a file, decompress it, yield the ledgers of the requested range.  Used as the oracle of the
backfill checks and by the fake stellar-core.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from rpcbackfill import lcm
from rpcbackfill.sources import layout

from .fixtures import zstd_decompress


def lake_ledgers(root: str | os.PathLike, first: int, last: int) -> Iterator[tuple[int, bytes]]:
    """``(seq, LedgerCloseMeta XDR)`` for ``first..last`` from the lake at ``root``; a missing
    object raises ``FileNotFoundError``."""
    schema = layout.read_manifest(root)
    for boundary in layout.batch_starts(first, last, schema):
        raw = zstd_decompress((Path(root) / layout.object_key(boundary, schema)).read_bytes())
        start, _, metas = lcm.split_batch(raw)
        for seq, m in enumerate(metas, start):
            if first <= seq <= last:
                yield seq, m
