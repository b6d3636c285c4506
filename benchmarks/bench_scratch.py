"""Peak scratch disk of one range's transition (issue 13 item 4): spill + sorted + partitions.

    python benchmarks/bench_scratch.py --lake DIR [--workers 2] [--mem-limit 1MiB] [--work DIR]

Runs one 10,000-ledger range (ledgers 2..10001 of a generated lake) through the real
orchestrator in-process and measures the bytes under the range's active txhash directory
(spill files, sorted files, compaction partition files) two ways:

* ``sampled``: a thread polls the directory tree every 1 ms and keeps the maximum;
* ``at steps``: the exact size at the moments the scratch is largest -- when each compaction
  returns (its sorted file complete, its spill not yet deleted) and, via the partition writer,
  when a compaction's partition files are complete (spill + partitions + sorted so far).

``--mem-limit`` caps each compaction's memory so the partitioned (external) sort runs, as it
does for production shards (a 10M-ledger range at 150 tx/ledger has ~94M records per shard,
far above compaction's 1 GiB).  Without deletion (the old behaviour) the peak would be
spill + sorted of every shard; the report prints that too for comparison.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import format_machine, machine_info  # noqa: E402

from rpcbackfill.config import BufferedStorageConfig, default_config  # noqa: E402
from rpcbackfill.index import compact  # noqa: E402
from rpcbackfill.meta.store import MetaStore  # noqa: E402
from rpcbackfill.orchestration import orchestrator as orch_mod  # noqa: E402
from rpcbackfill.orchestration.orchestrator import OrchestratorOptions, RangeOrchestrator  # noqa: E402
from rpcbackfill.paths import DataDirLayout  # noqa: E402

FIRST, LAST, RS = 2, 10_001, 10_000


def tree_bytes(d: Path) -> int:
    total = 0
    stack = [d]
    while stack:
        p = stack.pop()
        try:
            with os.scandir(p) as it:
                for e in it:
                    try:
                        if e.is_dir(follow_symlinks=False):
                            stack.append(Path(e.path))
                        else:
                            total += e.stat(follow_symlinks=False).st_size
                    except FileNotFoundError:
                        pass
        except FileNotFoundError:
            pass
    return total


def parse_size(s: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    s = s.lower().rstrip("ib").rstrip("b")
    return int(float(s[:-1]) * units[s[-1]]) if s[-1] in units else int(s)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lake", required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--mem-limit", default="1MiB", help="memory of one compaction (forces partitions)")
    ap.add_argument("--work", default=None)
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="bench-scratch-"))
    bs = BufferedStorageConfig(bucket_path=str(Path(a.lake).resolve()), buffer_size=64, num_workers=4)
    cfg = default_config(work / "data", start_ledger=FIRST, end_ledger=LAST, buffered_storage=bs, range_size=RS)
    tdir = DataDirLayout(cfg).active_txhash_dir(0)
    limit = parse_size(a.mem_limit)
    orch_mod.DEFAULT_MEM_LIMIT = orch_mod.MIN_COMPACT_MEM = limit  # type: ignore[misc]

    peak = {"sampled": 0, "steps": 0, "spill": 0, "sorted": 0}
    stop = threading.Event()
    transition = threading.Event()

    def sampler() -> None:
        while not stop.is_set():
            if transition.is_set():
                peak["sampled"] = max(peak["sampled"], tree_bytes(tdir))
            time.sleep(0.001)

    def at_step() -> None:
        peak["steps"] = max(peak["steps"], tree_bytes(tdir))

    real_compact = orch_mod.compact_shard

    def compact_shard(*args, **kw):
        transition.set()
        if not peak["spill"]:
            peak["spill"] = tree_bytes(tdir)  # every spill, nothing sorted yet
        p = real_compact(*args, **kw)
        at_step()
        peak["sorted"] += p.stat().st_size
        return p

    # the partitions of a compaction are complete when the first one is opened for sorting
    # (compact.py opens files through the module-level name ``open``): measure then
    def opening(path, mode="r", *oa, **okw):
        if "r" in mode and ".parts-" in Path(path).parent.name:
            at_step()
        return open(path, mode, *oa, **okw)

    orch_mod.compact_shard = compact_shard  # type: ignore[assignment]
    compact.open = opening  # type: ignore[attr-defined]
    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    meta = MetaStore(cfg.meta_store.path)
    t0 = time.perf_counter()
    try:
        meta.init_backfill(FIRST, LAST, RS)
        opts = OrchestratorOptions(progress_every_s=60.0, workers=a.workers)
        RangeOrchestrator(cfg, meta.range_info(0), meta, threading.Event(), options=opts).run()
        tx = meta.range_info(0).tx_count
    finally:
        stop.set()
        th.join()
        meta.close()
    secs = time.perf_counter() - t0
    ledgers = LAST - FIRST + 1
    per10m = 10_000_000 / ledgers
    print(format_machine(machine_info()))
    print(
        f"lake {a.lake}: {ledgers} ledgers, {tx} tx ({tx / ledgers:.1f}/ledger), workers {a.workers}, "
        f"compaction mem {limit} B, {secs:.1f} s"
    )
    old = peak["spill"] + peak["sorted"]
    for name, v in (
        ("spill (all shards)", peak["spill"]),
        ("peak sampled", peak["sampled"]),
        ("peak at steps", peak["steps"]),
        ("without deletion", old),
    ):
        print(f"  {name:20s} {v / 2**20:9.1f} MiB  -> per 10M ledgers {v * per10m / 1e9:7.1f} GB")
    print(f"  peak / spill = {max(peak['sampled'], peak['steps']) / peak['spill']:.3f}")


if __name__ == "__main__":
    main()
