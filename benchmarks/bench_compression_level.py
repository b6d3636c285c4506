"""zstd level of the LFS chunk frames (``[immutable_stores] compression_level``): CPU vs bytes.

    python benchmarks/bench_compression_level.py [--lake DIR] [--ledgers 60] [--runs 3]

For levels 1, 3, 6, 9 and 19, compresses every ledger exactly as the chunk writer does
(``stores.lfs.compress_ledger``: one frame per ledger, content checksum) and reports CPU ms per
ledger to compress (process time, median of --runs), CPU ms per ledger to decompress (what
every read and the transition's verify pass pay) and stored bytes per ledger.  Two inputs:
``--ledgers`` consecutive ledgers of a generated lake (``--lake``) and the real pubnet/testnet
ledgers of tests/fixtures (9 ledgers; each is compressed 10 times per run).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
import zstandard  # noqa: E402
from common import format_machine, machine_info  # noqa: E402

from rpcbackfill.stores.lfs import compress_ledger  # noqa: E402

LEVELS = (1, 3, 6, 9, 19)


def measure(ledgers: list[bytes], level: int, runs: int, repeat: int) -> tuple[float, float, float]:
    comp, decomp = [], []
    frames: list[bytes] = []
    dctx = zstandard.ZstdDecompressor()
    for _ in range(runs):
        t = time.process_time()
        for _ in range(repeat):
            frames = [compress_ledger(raw, level) for raw in ledgers]
        comp.append((time.process_time() - t) / (repeat * len(ledgers)))
        t = time.process_time()
        for _ in range(repeat):
            for f in frames:
                dctx.decompress(f)
        decomp.append((time.process_time() - t) / (repeat * len(ledgers)))
    stored = sum(map(len, frames)) / len(ledgers)
    return statistics.median(comp) * 1e3, statistics.median(decomp) * 1e3, stored


def report(name: str, ledgers: list[bytes], runs: int, repeat: int) -> None:
    raw = sum(map(len, ledgers)) / len(ledgers)
    print(f"\n{name}: {len(ledgers)} ledgers, {raw / 1e3:.1f} kB/ledger raw")
    print("| level | compress CPU ms/ledger | decompress CPU ms/ledger | stored kB/ledger | ratio |")
    print("|---|---|---|---|---|")
    for level in LEVELS:
        c, d, s = measure(ledgers, level, runs, repeat)
        print(f"| {level} | {c:.2f} | {d:.2f} | {s / 1e3:.1f} | {raw / s:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lake", default=None)
    ap.add_argument("--ledgers", type=int, default=60)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    print(format_machine(machine_info()))
    if a.lake:
        from tests.lib.lake import lake_ledgers

        lake = [raw for _, raw in lake_ledgers(Path(a.lake), 1002, 1001 + a.ledgers)]
        report(f"generated lake {a.lake}", lake, a.runs, 1)
    from tests.lib.fixtures import load_fixture_ledgers

    real = [f.lcm for f in load_fixture_ledgers() if not f.source.startswith(("core-test", "galexie"))]
    report("real pubnet/testnet ledgers (tests/fixtures)", real, a.runs, 10)


if __name__ == "__main__":
    main()
