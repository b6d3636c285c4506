"""Where a chunk worker's CPU goes above the zstd floor: the integrity checks and the rest (issue 13).

    python benchmarks/bench_chunk_worker.py [--tx-per-ledger 5] [--runs 5] [--work DIR]

One process, one chunk (ledgers 10,002-20,001 of a generated lake, 1 ledger per file), ingested
in-process by ``chunk_ingest.ingest_chunk`` -- what a worker of the chunk pool runs -- in four
modes taken in turn in every round, so that each round compares figures measured within seconds
of each other (this machine's speed drifts by tens of percent within minutes):

* ``floor``: the issue's floor over the same files (read + one-shot decompress + level-3
  compress, ``harness.floor_run``);
* ``full``: the worker as shipped (``check_ledger_hashes = true``, frames decode-checked);
* ``auth off``: ``check_ledger_hashes = false`` (the source still scans each ledger once for
  its sequence and transaction hashes);
* ``checks off``: authentication off and the writer's decode check off (``check_frames=False``,
  a switch the product never turns off; measured here only to price it).

Each round gives, per mode, CPU microseconds per ledger; the table reports medians over rounds
of each mode and of each round's difference to the floor (paired).  The start-up of the
measuring process and the first chunk (layout resolved, modules warm) are outside the timings.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import harness  # noqa: E402
from common import format_machine, machine_info  # noqa: E402

from rpcbackfill.ledgermath import CHUNK_SIZE  # noqa: E402
from rpcbackfill.orchestration.chunk_ingest import ChunkTask, ingest_chunk  # noqa: E402
from rpcbackfill.stores.lfs import writer as lfs_writer  # noqa: E402
from tests.lib.orchestration import make_config  # noqa: E402

MODES = ("floor", "full", "auth off", "checks off")
FIRST = harness.FIRST  # ledger 2: chunk 0 is 2..10001, the measured chunk 1 is 10002..20001


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tx-per-ledger", type=float, default=harness.SPARSE_TX)
    ap.add_argument("--runs", type=int, default=5, help="rounds of the four modes (default 5)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/rpcbackfill-bench"))
    a = ap.parse_args(argv)
    if a.runs < 1:
        ap.error("--runs must be >= 1")
    a.work.mkdir(parents=True, exist_ok=True)
    n_lake = 3 * CHUNK_SIZE  # chunks 0-2 of range 0 (the range must extend past the chunk)
    lake, _ = harness.ensure_lake(a.work, n_lake, a.tx_per_ledger, seed=0)
    first, last = FIRST + CHUNK_SIZE, FIRST + 2 * CHUNK_SIZE - 1
    floor = harness.floor_run(harness.lake_paths(lake, first, last))
    data = a.work / "chunk-worker-data"
    plain_init = lfs_writer.ChunkWriter.__init__

    def unchecked_init(self, *args, **kw):
        kw["check_frames"] = False
        plain_init(self, *args, **kw)

    def ingest(check_hashes: bool, check_frames: bool) -> None:
        shutil.rmtree(data, ignore_errors=True)
        cfg = make_config(data, lake, FIRST, FIRST + n_lake - 1, range_size=n_lake, check_ledger_hashes=check_hashes)
        lfs_writer.ChunkWriter.__init__ = plain_init if check_frames else unchecked_init  # type: ignore[method-assign]
        try:
            ingest_chunk(ChunkTask(cfg, 0, 1, first, last))
        finally:
            lfs_writer.ChunkWriter.__init__ = plain_init  # type: ignore[method-assign]

    runs = {
        "floor": floor,
        "full": lambda: ingest(True, True),
        "auth off": lambda: ingest(False, True),
        "checks off": lambda: ingest(False, False),
    }
    floor()  # page cache and decoder warm
    ingest(True, True)  # modules, allocator and the worker's lake-layout cache warm
    per: dict[str, list[float]] = {m: [] for m in MODES}
    for r in range(a.runs):
        for m in MODES:
            t = time.process_time()
            runs[m]()
            per[m].append((time.process_time() - t) / CHUNK_SIZE * 1e6)
        harness.log(f"round {r + 1}/{a.runs}: " + ", ".join(f"{m} {per[m][-1]:.1f}" for m in MODES) + " us/ledger")
    med = {m: statistics.median(v) for m, v in per.items()}
    above = {m: statistics.median(x - f for x, f in zip(per[m], per["floor"])) for m in MODES[1:]}
    print(format_machine(machine_info()))
    print(f"\nchunk worker vs floor, {a.tx_per_ledger:g} tx/ledger, {CHUNK_SIZE} ledgers, medians of {a.runs} rounds\n")
    print("| mode | CPU us/ledger | above the floor (paired) | floor / mode |")
    print("|---|---|---|---|")
    for m in MODES:
        if m == "floor":
            print(f"| floor | {med[m]:.1f} | - | - |")
        else:
            ratio = statistics.median(f / x for x, f in zip(per[m], per["floor"]))
            print(f"| {m} | {med[m]:.1f} | {above[m]:.1f} | {ratio:.2f} |")
    print(
        f"\nauthentication: {above['full'] - above['auth off']:.1f} us/ledger; decode check: "
        f"{above['auth off'] - above['checks off']:.1f} us/ledger; the rest above the floor: {above['checks off']:.1f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
