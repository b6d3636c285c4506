"""All 16 shard indexes of one range: ``{range_dir}/index/cf-{0..f}.idx`` (spec section 8)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import numpy as np

from ..errors import CorruptStoreError, DataCorruptionError, StoreError
from ..paths import index_shard_path
from ..records import HASH_SIZE, NSHARDS, shard_of
from .recsplit import ShardIndex, as_key_buffer


def open_shard(range_dir: Path | str, shard: int, range_start: int | None = None) -> ShardIndex:
    """One shard of a range (``CorruptStoreError`` if missing, damaged or of another range).

    Queries of one hash need only its shard: opening just that one keeps a damaged sibling
    shard from failing lookups it has no part in."""
    ix = ShardIndex(index_shard_path(range_dir, shard))
    if range_start is not None and ix.range_start != range_start:
        ix.close()
        raise CorruptStoreError(f"{ix.path} belongs to range start {ix.range_start}, expected {range_start}")
    return ix


R = TypeVar("R")
T = TypeVar("T")


def search_ranges(ranges: Iterable[R], lookup: Callable[[R], T | None]) -> tuple[T | None, list[StoreError]]:
    """First answer of ``lookup`` over ``ranges``, and the damage met on the way.

    ``lookup(range)`` answers the confirmed location of a hash in that range, None when the
    range does not hold it, or raises a ``StoreError`` for damage (a missing or corrupt shard,
    a missing chunk).  Damage in one range does not stop the search: a healthy range that
    holds the hash still answers.  The caller reports the damage only when nothing answered
    (then "not found" would be a lie: the hash may be in a damaged range)."""
    damage: list[StoreError] = []
    for r in ranges:
        try:
            found = lookup(r)
        except StoreError as e:
            damage.append(e)
            continue
        if found is not None:
            return found, damage
    return None, damage


def damage_summary(damage: list[StoreError]) -> str:
    """The first damage met, plus how many more ranges were damaged."""
    more = f" (and {len(damage) - 1} more damaged range(s))" if len(damage) > 1 else ""
    return f"{damage[0]}{more}"


def shard_candidate(ix: ShardIndex, tx_hash: bytes, range_id: int, start: int, end: int) -> int | None:
    """Candidate ledger of ``tx_hash`` from its shard ``ix`` of range ``range_id`` [start, end].

    The candidate must still be confirmed by reading that ledger (RecSplit answers absent keys
    with false positives); an answer outside the range is damage, as a sound shard only holds
    values of its own keys."""
    seq = ix.lookup(tx_hash)
    if seq is not None and not start <= seq <= end:
        raise DataCorruptionError(f"{ix.path} answered ledger {seq}, outside range {range_id} [{start}, {end}]")
    return seq


class TxHashIndex:
    """Route a hash to its shard (first hex digit) and look it up there.

    ``range_dir`` is the range's immutable txhash directory (``paths.DataDirLayout.txhash_range_dir``).
    ``range_start`` (optional) is checked against every shard header."""

    def __init__(self, range_dir: Path | str, range_start: int | None = None):
        self.range_dir = Path(range_dir)
        self._shards: list[ShardIndex] = []
        try:
            for x in range(NSHARDS):
                self._shards.append(open_shard(self.range_dir, x, range_start))
        except BaseException:
            self.close()
            raise

    @property
    def n_keys(self) -> int:
        return sum(s.n_keys for s in self._shards)

    def lookup(self, hash32: bytes) -> int | None:
        """Ledger that probably holds ``hash32`` (confirm by reading it), or None if absent."""
        if len(hash32) != HASH_SIZE:
            raise ValueError(f"transaction hash must be {HASH_SIZE} bytes, got {len(hash32)}")
        if not self._shards:
            raise ValueError(f"index {self.range_dir} is closed")
        return self._shards[shard_of(hash32)].lookup(hash32)

    def lookup_many(self, hashes) -> np.ndarray:
        """uint32 ledgers (0 = not found) of concatenated 32-byte hashes or an (n, 32) uint8 array."""
        if not self._shards:
            raise ValueError(f"index {self.range_dir} is closed")
        keys = np.frombuffer(as_key_buffer(hashes), dtype=np.uint8).reshape(-1, HASH_SIZE)
        out = np.zeros(keys.shape[0], dtype=np.uint32)
        shard = keys[:, 0] >> 4  # shard_of, vectorised
        for x in np.unique(shard).tolist():
            sel = np.nonzero(shard == x)[0]
            out[sel] = self._shards[x].lookup_many(np.ascontiguousarray(keys[sel]))
        return out

    def close(self) -> None:
        for s in self._shards:
            s.close()
        self._shards = []

    def __enter__(self) -> TxHashIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
