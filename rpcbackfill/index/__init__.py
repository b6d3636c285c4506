"""rpcbackfill.index: the txhash spill store, compaction and the RecSplit index (spec section 8).

Flow per range: ``TxHashSpill`` (INGESTING) -> ``compact_shard`` (COMPACTING) -> ``build_shard``
(BUILDING_RECSPLIT) -> ``verify_shard`` (VERIFYING_RECSPLIT); queries use ``TxHashIndex``.
"""

from __future__ import annotations

from .compact import compact_shard
from .recsplit import ShardIndex, ShardStats, build_shard, verify_shard
from .spill import SpillConfig, TxHashSpill
from .txhash_index import TxHashIndex

__all__ = [
    "ShardIndex",
    "ShardStats",
    "SpillConfig",
    "TxHashIndex",
    "TxHashSpill",
    "build_shard",
    "compact_shard",
    "verify_shard",
]
