#!/usr/bin/env python3
"""Benchmark the native LedgerCloseMeta scanner (rpcbackfill.lcm) on the fixture ledgers of tests/fixtures/.

    python benchmarks/bench_lcm.py [--runs 7] [--min-time 0.3] [--sdk-time 3] [--threads 2] [--json PATH]

For each fixture group and for all ledgers together it reports the median (over --runs runs,
each looping for at least --min-time seconds) of MB/s (wall clock, and thread CPU time, which a
shared machine does not distort) and tx/s for tx_hashes, tx_hashes_into,
lcm_length and, for the whole set, split_batch; then stellar-sdk's full decode + hash extraction
on the same bytes (the speed-up column), and multi-threaded throughput (the GIL is released while
parsing).  tx/s counts extracted hashes (outer + fee-bump inner).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import struct
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rpcbackfill import lcm  # noqa: E402
from tests.lib.fixtures import load_fixture_ledgers  # noqa: E402


def _group(source: str) -> str:
    if source.startswith("ttp"):
        return "pubnet V0 (p2-p11)"
    if source.startswith("FCD285FF"):
        return "pubnet V1 (p21)"
    if source.startswith("FFFFFC"):
        return "testnet V1 (p20)"
    if source.startswith("galexie"):
        return "galexie V2 (p23)"
    return "core-test V2 (p23-27)"


def _timed(fn, ledgers, min_time: float) -> tuple[float, float]:
    """(wall, thread CPU) seconds per pass over ``ledgers`` (loops until min_time has elapsed)."""
    n, t0, c0 = 0, time.perf_counter(), time.thread_time()
    while True:
        for b in ledgers:
            fn(b)
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_time:
            return dt / n, (time.thread_time() - c0) / n


def _median_rate(fn, ledgers, runs: int, min_time: float, cpu: bool = False) -> float:
    """Median seconds per pass: wall clock, or thread CPU time (immune to a shared machine)."""
    return statistics.median(_timed(fn, ledgers, min_time)[1 if cpu else 0] for _ in range(runs))


def _median_both(fn, ledgers, runs: int, min_time: float) -> tuple[float, float]:
    ts = [_timed(fn, ledgers, min_time) for _ in range(runs)]
    return statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts)


def sdk_extract(b: bytes):
    from stellar_sdk import xdr

    m = xdr.LedgerCloseMeta.from_xdr_bytes(b)
    body = {0: m.v0, 1: m.v1, 2: m.v2}[m.v]
    out = []
    for t in body.tx_processing:
        out.append(t.result.transaction_hash.hash)
        inner = t.result.result.result.inner_result_pair
        if inner is not None:
            out.append(inner.transaction_hash.hash)
    return body.ledger_header.header.ledger_seq.uint32, b"".join(out)


def threaded_rate(ledgers, threads: int, min_time: float) -> float:
    """Aggregate seconds per pass with ``threads`` threads each scanning the full set."""
    passes = [0] * threads
    stop = threading.Event()

    def work(i):
        while not stop.is_set():
            for b in ledgers:
                lcm.tx_hashes(b)
            passes[i] += 1

    ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    time.sleep(min_time)
    stop.set()
    for t in ts:
        t.join()
    return (time.perf_counter() - t0) / max(1, sum(passes))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--min-time", type=float, default=0.3, help="seconds per run")
    ap.add_argument("--sdk-time", type=float, default=3.0, help="seconds of stellar-sdk decoding per group")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    ledgers = load_fixture_ledgers()
    groups: dict[str, list[bytes]] = {}
    for f in ledgers:
        groups.setdefault(_group(f.source), []).append(f.lcm)
    groups["ALL"] = [f.lcm for f in ledgers]

    results = []
    hdr = (
        f"{'group':<22} {'ledgers':>7} {'MB':>7} {'tx':>5} {'tx_hashes MB/s':>14} {'(cpu)':>7} {'tx/s':>9} "
        f"{'into MB/s':>10} {'length MB/s':>11} {'sdk MB/s':>9} {'speed-up':>9}"
    )
    print(hdr)
    print("-" * len(hdr))
    for name, ls in groups.items():
        size = sum(map(len, ls))
        ntx = sum(len(lcm.tx_hashes(b)[1]) // 32 for b in ls)
        out = bytearray(32 * max(1, ntx))
        t_hash, c_hash = _median_both(lcm.tx_hashes, ls, args.runs, args.min_time)
        t_into = _median_rate(lambda b, out=out: lcm.tx_hashes_into(b, out), ls, args.runs, args.min_time)
        t_len = _median_rate(lcm.lcm_length, ls, args.runs, args.min_time)
        # stellar-sdk: as many whole ledgers as fit in --sdk-time (it is ~1000x slower)
        n_sdk, sdk_bytes, t0 = 0, 0, time.perf_counter()
        while time.perf_counter() - t0 < args.sdk_time or n_sdk == 0:
            b = ls[n_sdk % len(ls)]
            assert sdk_extract(b) == lcm.tx_hashes(b)
            n_sdk += 1
            sdk_bytes += len(b)
        sdk_mbs = sdk_bytes / (time.perf_counter() - t0) / 1e6
        r = {
            "group": name,
            "ledgers": len(ls),
            "bytes": size,
            "tx": ntx,
            "tx_hashes_MBps": size / t_hash / 1e6,
            "tx_hashes_cpu_MBps": size / c_hash / 1e6,
            "tx_per_s": ntx / t_hash,
            "ledgers_per_s": len(ls) / t_hash,
            "tx_hashes_into_MBps": size / t_into / 1e6,
            "lcm_length_MBps": size / t_len / 1e6,
            "sdk_MBps": sdk_mbs,
            "speedup_vs_sdk": (size / t_hash / 1e6) / sdk_mbs,
        }
        results.append(r)
        print(
            f"{name:<22} {len(ls):>7} {size / 1e6:>7.2f} {ntx:>5} {r['tx_hashes_MBps']:>14.0f} "
            f"{r['tx_hashes_cpu_MBps']:>7.0f} {r['tx_per_s']:>9.3g} {r['tx_hashes_into_MBps']:>10.0f} {r['lcm_length_MBps']:>11.0f} "
            f"{sdk_mbs:>9.2f} {r['speedup_vs_sdk']:>8.0f}x"
        )

    # split_batch needs consecutive sequences: use the longest consecutive run of fixture ledgers
    runs, cur = [], [ledgers[0]]
    for f in ledgers[1:]:
        cur = cur + [f] if f.seq == cur[-1].seq + 1 else [f]
        runs.append(cur)
    best = max(runs, key=lambda r: (len(r), sum(len(f.lcm) for f in r)))

    batch = struct.pack(">III", best[0].seq, best[-1].seq, len(best)) + b"".join(f.lcm for f in best)
    t_split = _median_rate(lcm.split_batch, [batch], args.runs, args.min_time)
    split = {"ledgers": len(best), "bytes": len(batch), "split_batch_MBps": len(batch) / t_split / 1e6}
    print(f"\nsplit_batch: {len(best)} ledgers, {len(batch) / 1e6:.2f} MB: {split['split_batch_MBps']:.0f} MB/s")

    all_ls = groups["ALL"]
    size = sum(map(len, all_ls))
    t1 = statistics.median(threaded_rate(all_ls, 1, args.min_time * 2) for _ in range(3))
    tn = statistics.median(threaded_rate(all_ls, args.threads, args.min_time * 2) for _ in range(3))
    thr = {"threads": args.threads, "MBps_1": size / t1 / 1e6, "MBps_n": size / tn / 1e6}
    print(
        f"threads: 1 -> {thr['MBps_1']:.0f} MB/s, {args.threads} -> {thr['MBps_n']:.0f} MB/s "
        f"(x{t1 / tn:.2f}; machine shared with other work)"
    )

    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "benchmark": "lcm",
                    "python": platform.python_version(),
                    "machine": platform.machine(),
                    "runs": args.runs,
                    "min_time": args.min_time,
                    "groups": results,
                    "split_batch": split,
                    "threads": thr,
                },
                indent=1,
            )
        )
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
