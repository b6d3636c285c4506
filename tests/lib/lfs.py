"""Helpers shared by the LFS tests: whole chunks of generated ledgers.

The ledgers come from ``tests.lib.ledgers`` (the product's generator); the session fixtures
that use these helpers (``sample_ledgers``, ``full_chunk``) are in tests/conftest.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rpcbackfill.ledgermath import CHUNK_SIZE, chunk_first_ledger
from rpcbackfill.stores import lfs

from .ledgers import ledger_bytes


def make_ledgers(first: int, n: int) -> list[bytes]:
    """``n`` consecutive generated ledgers starting at ``first`` (V0 and V1 alternating)."""
    return ledger_bytes(first, n)


def write_chunk(base: Path, work: Path, chunk_id: int, ledgers: list[bytes], **finish_kw) -> lfs.ChunkStats:
    """Write ``ledgers`` as chunk ``chunk_id`` from its first ledger on and finish it."""
    first = chunk_first_ledger(chunk_id)
    with lfs.ChunkWriter(base, chunk_id, work) as w:
        for i, lcm in enumerate(ledgers):
            w.append(first + i, lcm)
        return w.finish(allow_partial=len(ledgers) != CHUNK_SIZE, **finish_kw)


def build_full_chunk(root: Path, chunk_id: int = 3) -> tuple[Path, list[bytes], lfs.ChunkStats]:
    """A finished, full chunk under ``root/base``: (base, its ledgers, stats)."""
    ledgers = make_ledgers(chunk_first_ledger(chunk_id), CHUNK_SIZE)
    stats = write_chunk(root / "base", root / "work", chunk_id, ledgers)
    return root / "base", ledgers, stats


def copy_base(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
