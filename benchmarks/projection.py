"""Project a full-history backfill from measured per-ledger and per-transaction costs.

    python benchmarks/projection.py sparse.json dense.json [--scaling scaling.json] [--cores 8,32,64]

Each JSON is a ``benchmarks/harness.py --json`` result.  The model:

* **CPU.**  The CPU of one ``workers = 1`` backfill (``backfill x1 p1``: every process, user +
  system, ingestion and transition) divided by its ledgers gives a cost per ledger at the lake's
  density.  Two or more densities fit ``cpu_per_ledger = a + b * tx_per_ledger`` by least
  squares: ``a`` is the fixed cost of a ledger (read, decompress, frame, checkpoint share,
  start-up spread over the range), ``b`` the cost of one transaction (its bytes through zstd
  twice, its hash through the spill, compaction, RecSplit build and verify).  Full history
  costs ``L * a + T * b``.
* **Wall.**  Chunks of every range are independent work items, so the ingest part spreads over
  all cores; the model divides the CPU by ``cores * efficiency``.  ``efficiency`` is the
  measured utilisation of the cores by ``workers = 2`` on the 2-core harness machine (CPU seconds
  over wall seconds x 2, ``--scaling``: the harness's ``scaling`` stage), else ``--efficiency``.  A range's transition runs at most
  ``16`` shard tasks at once (one per index shard), so the last range's transition is added as
  a tail that cannot use more than 16 cores: its CPU is ``T / ranges * index_cost`` (the
  harness's ``index`` stage, ns per key from spill to verify) over ``min(16, cores)``.
* **Bytes.**  The lake's compressed bytes and the stored bytes scale with the transactions
  (both fitted like the CPU); the network rate a projected wall time needs is printed so the
  reader can check it against the link (an assumption, not measured here).

The defaults are pubnet's history at the end of 2026: about 60 million ledgers and 9.1 billion
transactions (6 ranges of 10 million ledgers).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

RANGE_LEDGERS = 10_000_000
INDEX_SHARDS = 16  # a range's transition runs one task per shard at most
GO_REFERENCE_32_CORES_H = 7 + 4 / 60  # the reference Go design: 7 h 04 m on 32 cores


@dataclass(frozen=True)
class Point:
    """One measured backfill: its density and its costs per ledger."""

    source: str
    tx_per_ledger: float
    cpu_ms_per_ledger: float
    lake_bytes_per_ledger: float
    stored_bytes_per_ledger: float
    index_ns_per_key: float | None


def _result(doc: dict, prefix: str) -> dict | None:
    for r in doc.get("results", []):
        if str(r.get("stage", "")).startswith(prefix):
            return r
    return None


def load_point(path: Path) -> Point:
    doc = json.loads(path.read_text())
    lake = doc.get("lake") or {}
    run = _result(doc, "backfill x1") or _result(doc, "backfill workers=1")
    if run is None or not lake.get("ledgers"):
        raise SystemExit(f"error: {path} has no workers=1 backfill result (run the harness with --stages backfill)")
    index = _result(doc, "index")
    ns = index.get("pipeline_ns_per_key") if index else None
    return Point(
        source=str(path),
        tx_per_ledger=lake["transactions"] / lake["ledgers"],
        cpu_ms_per_ledger=1000.0 * run["cpu_s"] / run["ledgers"],
        lake_bytes_per_ledger=lake["compressed_bytes"] / lake["ledgers"],
        stored_bytes_per_ledger=float(run.get("stored_bytes_per_ledger") or 0.0),
        index_ns_per_key=float(ns) if ns else None,
    )


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares ``y = a + b x``; a single point gives a line through the origin."""
    n = len(xs)
    if n == 1:
        return 0.0, ys[0] / xs[0] if xs[0] else 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise SystemExit("error: the measurements need at least two different densities")
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return my - b * mx, b


def _workers_result(doc: dict, n: int) -> dict | None:
    for r in doc.get("results", []):
        stage = str(r.get("stage", ""))
        if stage.endswith(f"workers={n}") and ("scaling" in stage or "backfill" in stage):
            return r
    return None


def scaling_efficiency(path: Path) -> float:
    """How busy ``workers = 2`` kept the 2 cores of the harness's ``scaling`` stage: CPU seconds
    over (wall seconds x 2).  Chunk work items have no ordering between them, so the same
    utilisation is assumed on N cores with N workers (see the module docstring)."""
    doc = json.loads(path.read_text())
    two = _workers_result(doc, 2)
    if two is None or _workers_result(doc, 1) is None:
        raise SystemExit(f"error: {path} has no workers=1/workers=2 pair (the harness's scaling stage)")
    return two["cpu_s"] / (two["wall_s"] * 2.0)


def hours(x: float) -> str:
    h = int(x)
    return f"{h} h {round((x - h) * 60):02d} m"


def project(points: list[Point], ledgers: float, txs: float, cores: list[int], efficiency: float) -> str:
    xs = [p.tx_per_ledger for p in points]
    a, b = fit(xs, [p.cpu_ms_per_ledger for p in points])
    la, lb = fit(xs, [p.lake_bytes_per_ledger for p in points])
    sa, sb = fit(xs, [p.stored_bytes_per_ledger for p in points])
    index_ns = [p.index_ns_per_key for p in points if p.index_ns_per_key]
    cpu_h = (ledgers * a + txs * b) / 1000.0 / 3600.0
    lake_bytes = ledgers * la + txs * lb
    stored = ledgers * sa + txs * sb
    ranges = math.ceil(ledgers / RANGE_LEDGERS)
    out = ["measured points:"]
    for p in points:
        out.append(
            f"  {p.tx_per_ledger:7.1f} tx/ledger: {p.cpu_ms_per_ledger:.3f} ms CPU/ledger, "
            f"{p.lake_bytes_per_ledger / 1e3:.1f} kB lake, {p.stored_bytes_per_ledger / 1e3:.1f} kB stored ({p.source})"
        )
    out += [
        f"fit: CPU per ledger = {a:.4f} ms + {b * 1000:.2f} us x tx/ledger",
        f"history: {ledgers / 1e6:.0f}M ledgers, {txs / 1e9:.2f}B transactions "
        f"({txs / ledgers:.0f} tx/ledger on average), {ranges} ranges",
        f"total CPU: {cpu_h:.1f} CPU-hours; lake read {lake_bytes / 1e12:.2f} TB; stored {stored / 1e12:.2f} TB",
        f"parallel efficiency per core: {efficiency:.2f}",
        "",
        "| cores | ingest + transition | last transition tail | projected wall | lake read rate needed |",
        "|---|---|---|---|---|",
    ]
    tail_cpu_h = 0.0
    if index_ns:
        tail_cpu_h = (txs / ranges) * (sum(index_ns) / len(index_ns)) / 1e9 / 3600.0
    for n in cores:
        body = cpu_h / (n * efficiency)
        tail = tail_cpu_h / min(INDEX_SHARDS, n)
        wall = body + tail
        rate = lake_bytes / (wall * 3600.0) / 1e6
        out.append(f"| {n} | {hours(body)} | {hours(tail)} | **{hours(wall)}** | {rate:.0f} MB/s |")
    out.append("")
    out.append(f"reference Go design on 32 cores: {hours(GO_REFERENCE_32_CORES_H)}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", type=Path, help="harness --json files at different densities")
    ap.add_argument("--scaling", type=Path, help="harness --json with the scaling stage (workers 1 vs 2)")
    ap.add_argument("--efficiency", type=float, default=0.9, help="parallel efficiency if --scaling is absent")
    ap.add_argument("--ledgers", type=float, default=60e6)
    ap.add_argument("--transactions", type=float, default=9.1e9)
    ap.add_argument("--cores", default="8,32,64")
    args = ap.parse_args(argv)
    points = [load_point(p) for p in args.results]
    eff = min(1.0, scaling_efficiency(args.scaling)) if args.scaling else args.efficiency
    cores = [int(c) for c in args.cores.split(",")]
    print(project(points, args.ledgers, args.transactions, cores, eff))
    return 0


if __name__ == "__main__":
    sys.exit(main())
