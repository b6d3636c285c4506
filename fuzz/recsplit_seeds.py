#!/usr/bin/env python3
"""Write seed index files for fuzz/recsplit_fuzz.c.

    python fuzz/recsplit_seeds.py OUT_DIR

Each seed is a real ``cf-x.idx`` built by rpcbackfill.index from the keys ``fuzz_key(0..n-1)``
that the harness looks up (same SplitMix64 words as in recsplit_fuzz.c), for several key
counts: empty, one key, one leaf, one partial bucket, and a few buckets.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

SIZES = (0, 1, 2, 9, 40, 200, 1001, 2600)
RANGE_START = 10_000_002
MASK = (1 << 64) - 1


def _splitmix(state: int) -> tuple[int, int]:
    state = (state + 0x9E3779B97F4A7C15) & MASK
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return state, z ^ (z >> 31)


def fuzz_key(i: int) -> bytes:
    s = 0x6B65797300000000 ^ i
    out = b""
    for _ in range(4):
        s, w = _splitmix(s)
        out += w.to_bytes(8, "little")
    return out


def write_seeds(out_dir: Path | str, sizes=SIZES) -> list[Path]:
    from rpcbackfill.index import build_shard, compact_shard
    from rpcbackfill.paths import spill_shard_path as shard_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    with tempfile.TemporaryDirectory(prefix="recsplit_seeds_") as tmp:
        for n in sizes:
            work = Path(tmp) / str(n)
            (work / "spill").mkdir(parents=True)
            seqs = RANGE_START + (np.arange(n, dtype=np.uint64) * 7919) % 10_000_000
            recs = b"".join(fuzz_key(i) + int(seqs[i]).to_bytes(4, "little") for i in range(n))
            shard_file(work / "spill", 0).write_bytes(recs)
            sp = compact_shard(work / "spill", 0, work / "sorted")
            p = out_dir / f"seed-{n}.idx"
            build_shard(sp, p, RANGE_START, n, salt=n + 1)
            paths.append(p)
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for p in write_seeds(sys.argv[1]):
        print(p)
