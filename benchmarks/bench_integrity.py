"""Cost of the integrity checks on the txhash index (issue 15).

    python benchmarks/bench_integrity.py [--keys 20M] [--runs 5] [--work DIR]

Builds one shard of uniform keys (kept in --work for reuse), then measures:

* ``lookup batched`` / ``lookup single``: ShardIndex.lookup_many over every key in random order
  and ShardIndex.lookup from Python, CPU ns/key -- the bounded readers and the per-bucket range
  checks are part of these (compare with docs/recsplit-format.md's numbers for the unchecked
  reader);
* ``crc warm`` / ``crc cold``: the whole-file CRC-32 that ShardIndex checks before a shard's
  first answer, with the file in the page cache and after dropping it (posix_fadvise DONTNEED);
* ``open``: mapping + header/section validation (rs_index_open), no CRC;
* ``first lookup``: open + first answer, cold file, checksum="first-use" vs "off";
* ``per-block estimate``: CRC of the 64 KiB blocks one lookup touches (header, both Elias-Fano
  directories, the bucket's seeds, the value slot), i.e. what a per-block checksum would cost
  per cold lookup (the format has no per-block CRCs; this is the alternative that was weighed).

Medians of --runs.  Wall-clock where I/O is involved, CPU time otherwise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from common import format_machine, machine_info  # noqa: E402

from rpcbackfill.index import ShardIndex, build_shard, compact_shard  # noqa: E402
from rpcbackfill.index.recsplit import check_crc  # noqa: E402
from rpcbackfill.paths import spill_shard_path as shard_file  # noqa: E402

RANGE_START = 10_000_002
BLOCK = 1 << 16


def parse_size(s: str) -> int:
    s = s.strip().upper()
    mult = {"K": 1_000, "M": 1_000_000}.get(s[-1], 1)
    return int(float(s[:-1] if s[-1] in "KM" else s) * mult)


def build(work: Path, n: int) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(1)
    keys = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    idx = work / f"shard-{n}.idx"
    if not idx.exists():
        seqs = rng.integers(RANGE_START, RANGE_START + 10_000_000, n).astype(np.uint32)
        recs = np.zeros((n, 36), np.uint8)
        recs[:, :32] = keys
        recs[:, 32:] = seqs.astype("<u4").view(np.uint8).reshape(n, 4)
        (work / "spill").mkdir(parents=True, exist_ok=True)
        shard_file(work / "spill", 0).write_bytes(recs.tobytes())
        del recs
        sp = compact_shard(work / "spill", 0, work / "sorted")
        build_shard(sp, idx, RANGE_START, n)
        sp.unlink()
        shard_file(work / "spill", 0).unlink()
    return idx, keys


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", default="5M")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--work", default="/tmp/rpcbackfill-bench-integrity")
    a = ap.parse_args()
    n = parse_size(a.keys)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    idx, keys = build(work, n)
    size = idx.stat().st_size
    print(format_machine(machine_info()))
    print(f"shard: {n} keys, {size / 2**20:.1f} MiB")
    rng = np.random.default_rng(2)
    q = np.ascontiguousarray(keys[rng.permutation(n)]).reshape(-1)
    single = [keys[i].tobytes() for i in rng.integers(0, n, 100_000)]
    res: dict[str, list[float]] = {
        k: [] for k in ("batched", "single", "crc_warm", "crc_cold", "open", "first_crc", "first_off", "blocks")
    }
    with ShardIndex(idx, checksum="open") as ix:
        h = ix.header
        for _ in range(a.runs):
            t = time.process_time()
            ix.lookup_many(q)
            res["batched"].append((time.process_time() - t) / n * 1e9)
            lk = ix.lookup
            t = time.process_time()
            for k in single:
                lk(k)
            res["single"].append((time.process_time() - t) / len(single) * 1e9)
            t = time.perf_counter()
            check_crc(idx, ix._mm, h)
            res["crc_warm"].append(time.perf_counter() - t)
    for _ in range(a.runs):
        drop_cache(idx)
        with ShardIndex(idx, checksum="off") as ix:
            t = time.perf_counter()
            check_crc(idx, ix._mm, h)
            res["crc_cold"].append(time.perf_counter() - t)
        t = time.perf_counter()
        ShardIndex(idx, checksum="off").close()
        res["open"].append((time.perf_counter() - t) * 1e6)
        for mode, key in (("first-use", "first_crc"), ("off", "first_off")):
            drop_cache(idx)
            t = time.perf_counter()
            with ShardIndex(idx, checksum=mode) as ix:
                ix.lookup(single[0])
            res[key].append((time.perf_counter() - t) * 1e3)
        # per-block alternative: the distinct 64 KiB blocks one lookup touches, cold
        k = single[1]
        with ShardIndex(idx, checksum="off") as ix:
            seq = ix.lookup(k)
        assert seq is not None
        touched = {
            0,
            h["efk_s_off"] // BLOCK,
            h["efk_high_off"] // BLOCK,
            h["efk_low_off"] // BLOCK,
            h["efb_s_off"] // BLOCK,
            h["efb_high_off"] // BLOCK,
            h["efb_low_off"] // BLOCK,
            (h["bits_off"] + h["bits_len"] // 2) // BLOCK,
            (h["vals_off"] + h["vals_len"] // 2) // BLOCK,
        }
        drop_cache(idx)
        t = time.perf_counter()
        with open(idx, "rb") as f:
            for b in touched:
                f.seek(b * BLOCK)
                zlib.crc32(f.read(BLOCK))
        res["blocks"].append((time.perf_counter() - t) * 1e3)
    m = {k: statistics.median(v) for k, v in res.items()}
    print(f"lookup batched      {m['batched']:8.1f} ns/key (CPU)")
    print(f"lookup single       {m['single']:8.1f} ns/key (CPU, Python call)")
    print(f"crc warm            {m['crc_warm'] * 1e3:8.1f} ms  ({size / 2**20 / m['crc_warm']:.0f} MiB/s)")
    print(f"crc cold            {m['crc_cold'] * 1e3:8.1f} ms  ({size / 2**20 / m['crc_cold']:.0f} MiB/s)")
    print(f"open (no crc)       {m['open']:8.1f} us")
    print(f"first lookup, cold  {m['first_crc']:8.1f} ms with checksum=first-use, {m['first_off']:.2f} ms with off")
    print(f"per-block estimate  {m['blocks']:8.2f} ms cold for the {len(touched)} blocks of 64 KiB one lookup touches")


if __name__ == "__main__":
    main()
