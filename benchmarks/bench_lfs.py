#!/usr/bin/env python
"""Benchmark of the LFS chunk store (spec section 7).

Measures, on the same payload bytes (real fixture ledgers, cycled to fill the chunk):
  * floor      bare ``zstandard.ZstdCompressor(level=3).compress`` of every ledger
  * write      ChunkWriter: append all ledgers, sync every 1000 (checkpoints), finish (fsync + renames);
               floor and writer alternate per 1000-ledger block so both see the same machine load
  * ratio      write throughput / floor throughput (1.0 = no overhead beyond compression);
               "append-only" times the append calls alone (no syncs, no publish); "CPU time"
               compares process CPU seconds, robust when other processes share the cores
               (excludes fsync waits, which the wall-clock ratio includes)
  * scan       ChunkReader sequential iteration (decompress every ledger)
  * get        ChunkReader.get / LedgerStore.get_ledger of random ledgers: median and p99 latency

Every number is the median over ``--runs`` runs.  Usage:
    python benchmarks/bench_lfs.py [--ledgers 10000] [--runs 5] [--gets 2000] [--dir D] [--json PATH]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rpcbackfill.ledgermath import CHUNK_SIZE, chunk_first_ledger  # noqa: E402
from rpcbackfill.stores import lfs  # noqa: E402
from tests.lib.records import split_record_marked  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def load_payloads() -> list[bytes]:
    """Real LedgerCloseMeta XDR from tests/fixtures/ (no XDR decoding needed)."""
    out = [base64.b64decode(x) for x in (FIXTURES / "ttp-ledgers-base64.txt").read_text().split()]
    for p in sorted(FIXTURES.glob("galexie-load-test*.xdr.zst*")):
        out += split_record_marked(zstandard.ZstdDecompressor().stream_reader(io.BytesIO(p.read_bytes())).read())
    for p in sorted((FIXTURES / "core-test-lcm").glob("*.xdr")):
        out += split_record_marked(p.read_bytes())
    return out


def bench_write(ledgers: list[bytes], root: Path, block: int = 1000) -> dict:
    """Write one chunk, interleaving with the floor so both see the same machine load.

    For each checkpoint block of ``block`` ledgers: bare level-3 compression of the block
    (the floor), then the same ledgers through ``ChunkWriter.append`` and a ``sync()``; then
    ``finish()``.  Returns wall and CPU seconds of each side.
    """
    shutil.rmtree(root, ignore_errors=True)
    first = chunk_first_ledger(0)
    pc, cpu = time.perf_counter, time.process_time
    c = zstandard.ZstdCompressor(level=3)
    r = dict(floor=0.0, floor_cpu=0.0, append=0.0, append_cpu=0.0, write=0.0, write_cpu=0.0)
    t, tc = pc(), cpu()
    w = lfs.ChunkWriter(root / "base", 0, root / "work")
    r["write"] += pc() - t
    r["write_cpu"] += cpu() - tc
    append, compress = w.append, c.compress
    for k0 in range(0, len(ledgers), block):
        ks = range(k0, min(k0 + block, len(ledgers)))
        t, tc = pc(), cpu()
        for k in ks:
            compress(ledgers[k])
        r["floor"] += pc() - t
        r["floor_cpu"] += cpu() - tc
        t, tc = pc(), cpu()
        for k in ks:
            append(first + k, ledgers[k])
        ta, tac = pc() - t, cpu() - tc
        w.sync()
        r["append"] += ta
        r["append_cpu"] += tac
        r["write"] += pc() - t
        r["write_cpu"] += cpu() - tc
    t, tc = pc(), cpu()
    r["stats"] = w.finish(allow_partial=len(ledgers) != CHUNK_SIZE)
    w.close()
    r["write"] += pc() - t
    r["write_cpu"] += cpu() - tc
    return r


def bench_scan(root: Path) -> float:
    t = time.perf_counter()
    with lfs.ChunkReader(root / "base", 0) as r:
        for _ in r:
            pass
    return time.perf_counter() - t


def bench_get(root: Path, n: int, gets: int, seed: int, store: bool) -> list[float]:
    first = chunk_first_ledger(0)
    rng = random.Random(seed)
    seqs = [first + rng.randrange(n) for _ in range(gets)]
    lat = []
    pc = time.perf_counter
    if store:
        with lfs.LedgerStore(root / "base") as s:
            s.get_ledger(first)  # open the reader once (steady state)
            for q in seqs:
                t = pc()
                s.get_ledger(q)
                lat.append(pc() - t)
    else:
        with lfs.ChunkReader(root / "base", 0) as r:
            for q in seqs:
                t = pc()
                r.get(q)
                lat.append(pc() - t)
    return lat


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ledgers", type=int, default=CHUNK_SIZE, help="ledgers in the chunk (<= 10000)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--gets", type=int, default=2000, help="random gets per run")
    ap.add_argument("--dir", type=Path, default=None, help="scratch directory (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=None, help="write results as JSON here")
    a = ap.parse_args(argv)
    if not 1 <= a.ledgers <= CHUNK_SIZE:
        ap.error("--ledgers must be in 1..10000")

    pay = load_payloads()
    ledgers = [pay[i % len(pay)] for i in range(a.ledgers)]
    raw_mb = sum(map(len, ledgers)) / 1e6
    scratch = Path(tempfile.mkdtemp(prefix="bench_lfs_", dir=a.dir))
    try:
        runs, scans, gets, sgets = [], [], [], []
        stats = None
        for run in range(a.runs):
            runs.append(bench_write(ledgers, scratch / "chunk"))
            stats = runs[-1]["stats"]
            scans.append(bench_scan(scratch / "chunk"))
            lat = bench_get(scratch / "chunk", a.ledgers, a.gets, run, store=False)
            gets.append((statistics.median(lat), pct(lat, 99)))
            lat = bench_get(scratch / "chunk", a.ledgers, a.gets, run, store=True)
            sgets.append((statistics.median(lat), pct(lat, 99)))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    def med(key):
        return statistics.median(r[key] for r in runs)

    floor, write, scan = med("floor"), med("write"), statistics.median(scans)
    # ratios per run (paired measurements), then the median
    ratio = statistics.median(r["floor"] / r["write"] for r in runs)
    ratio_append = statistics.median(r["floor"] / r["append"] for r in runs)
    ratio_cpu = statistics.median(r["floor_cpu"] / r["write_cpu"] for r in runs)
    ratio_append_cpu = statistics.median(r["floor_cpu"] / r["append_cpu"] for r in runs)
    res = {
        "ledgers": a.ledgers,
        "runs": a.runs,
        "raw_mb": round(raw_mb, 2),
        "data_mb": round(stats.data_bytes / 1e6, 2),
        "zstd_version": ".".join(map(str, zstandard.ZSTD_VERSION)),
        "floor_mb_s": raw_mb / floor,
        "floor_ledgers_s": a.ledgers / floor,
        "write_mb_s": raw_mb / write,
        "write_ledgers_s": a.ledgers / write,
        "write_over_floor": ratio,
        "append_only_over_floor": ratio_append,
        "write_over_floor_cpu": ratio_cpu,
        "append_only_over_floor_cpu": ratio_append_cpu,
        "scan_mb_s": raw_mb / scan,
        "scan_ledgers_s": a.ledgers / scan,
        "get_median_us": statistics.median(g[0] for g in gets) * 1e6,
        "get_p99_us": statistics.median(g[1] for g in gets) * 1e6,
        "store_get_median_us": statistics.median(g[0] for g in sgets) * 1e6,
        "store_get_p99_us": statistics.median(g[1] for g in sgets) * 1e6,
        "avg_ledger_kb": raw_mb * 1e3 / a.ledgers,
        "loadavg_1m_end": os.getloadavg()[0],
    }
    print(
        f"LFS chunk benchmark: {a.ledgers} ledgers, {raw_mb:.1f} MB raw -> {res['data_mb']:.1f} MB, "
        f"libzstd {res['zstd_version']}, median of {a.runs} runs, load average {res['loadavg_1m_end']:.1f} "
        f"on {os.cpu_count()} CPUs"
    )
    print(f"{'metric':<28}{'value':>14}")
    rows = [
        ("zstd-3 floor MB/s", res["floor_mb_s"]),
        ("zstd-3 floor ledgers/s", res["floor_ledgers_s"]),
        ("chunk write MB/s", res["write_mb_s"]),
        ("chunk write ledgers/s", res["write_ledgers_s"]),
        ("write / floor", res["write_over_floor"]),
        ("append-only / floor", res["append_only_over_floor"]),
        ("write / floor (CPU time)", res["write_over_floor_cpu"]),
        ("append-only / floor (CPU)", res["append_only_over_floor_cpu"]),
        ("sequential scan MB/s", res["scan_mb_s"]),
        ("sequential scan ledgers/s", res["scan_ledgers_s"]),
        ("get median us", res["get_median_us"]),
        ("get p99 us", res["get_p99_us"]),
        ("store get median us", res["store_get_median_us"]),
        ("store get p99 us", res["store_get_p99_us"]),
    ]
    for name, v in rows:
        print(f"{name:<28}{v:>14.3f}" if v < 10 else f"{name:<28}{v:>14.1f}")
    if a.json:
        a.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
