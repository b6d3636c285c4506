"""rpcbackfill: backfill Stellar ledger history into immutable LFS chunks and a RecSplit tx-hash index."""

__version__ = "0.1.0"
