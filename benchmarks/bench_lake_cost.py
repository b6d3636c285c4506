"""What reading a data lake from object storage costs: objects, bytes and requests per ledger,
measured on a generated lake served by a local S3 server, extrapolated to 10M ledgers.

    python benchmarks/bench_lake_cost.py                       # 2,000 ledgers, pubnet layout
    python benchmarks/bench_lake_cost.py --ledgers 5000 --tx-per-ledger 163 --json out.json

The lake is written by the generator (``stellar-rpc dev generate-lake``: real pubnet transactions,
re-sequenced) in the pubnet lake's layout (1 ledger per file, 64,000 files per partition),
uploaded to moto's S3 server on 127.0.0.1 and read through the tests' counting proxy exactly as a
backfill reads it: the coordinator's pre-flight check, then one range (``prepare_range`` and
every ledger).  Requests are counted by kind from the proxy's log.  Bytes depend on the density:
``--tx-per-ledger`` (default 300, the generator's default); for comparison the real pubnet object
of ledger 53312000 (163 transactions) is 72,651 bytes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    add_common_args,
    format_machine,
    machine_info,
    print_table,
    write_json,
)

from rpcbackfill.config import PUBNET_PASSPHRASE, BufferedStorageConfig
from rpcbackfill.sources.checks import check_lake
from rpcbackfill.sources.datalake import DataLakeSource

PER = 10_000_000
FIRST = 2


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ledgers", type=int, default=2000)
    ap.add_argument("--tx-per-ledger", type=float, default=300.0)
    add_common_args(ap, runs=1)
    args = ap.parse_args()

    from rpcbackfill.devtools.lakegen import generate_lake
    from tests.lib.gcs_fault_proxy import FaultProxy
    from tests.lib.s3 import MotoS3, aws_env, upload_lake

    info = machine_info()
    print(format_machine(info))
    last = FIRST + args.ledgers - 1
    with tempfile.TemporaryDirectory(prefix="bench-lake-cost-") as work:
        lake = Path(work) / "lake"
        generate_lake(
            lake,
            FIRST,
            last,
            seed=1,
            tx_per_ledger=args.tx_per_ledger,
            ledgers_per_batch=1,
            batches_per_partition=64000,
            fsync=False,
        )
        files = [p for p in lake.rglob("*") if p.is_file() and p.name != ".config.json"]
        lake_bytes = sum(p.stat().st_size for p in files)
        server = MotoS3()
        proxy = FaultProxy("127.0.0.1", server.port)
        try:
            upload_lake(server.client(), "aws-public-blockchain", "v1.1/stellar/ledgers/pubnet", lake)
            for k, v in aws_env(Path(work), AWS_ENDPOINT_URL_S3=proxy.host).items():
                if v:
                    os.environ[k] = v
                else:
                    os.environ.pop(k, None)
            cfg = BufferedStorageConfig(
                bucket_path="s3://aws-public-blockchain/v1.1/stellar/ledgers/pubnet",
                num_workers=16,
                buffer_size=256,
                force_path_style=True,
            )
            check_lake(cfg, PUBNET_PASSPHRASE, FIRST, last)
            with DataLakeSource(cfg, PUBNET_PASSPHRASE, threading.Event()) as src:
                src.prepare_range(FIRST, last)
                for q in range(FIRST, last + 1):
                    src.get_ledger(q)
                downloaded = src.stats["bytes_downloaded"]
        finally:
            proxy.close()
            server.close()
    kinds: Counter[str] = Counter()
    for method, path, _ in proxy.log:
        if method == "GET" and "list-type=2" in path:
            kinds["LIST"] += 1
        elif method == "GET" and path.endswith(".config.json"):
            kinds["GET manifest"] += 1
        else:
            kinds[f"{method} object"] += 1
    n = args.ledgers
    scale = PER / n
    rows = [
        ["objects", len(files), f"{len(files) * scale:,.0f}"],
        ["object bytes", f"{lake_bytes / 1e6:.1f} MB", f"{lake_bytes * scale / 1e9:,.0f} GB"],
        ["bytes downloaded", f"{downloaded / 1e6:.1f} MB", f"{downloaded * scale / 1e9:,.0f} GB"],
    ]
    for k in sorted(kinds):
        # object GETs grow with the ledgers; the rest is a fixed cost per run and per range
        if k == "GET object":  # one per file, plus prepare_range's second read of the range's last file
            extra = kinds[k] - len(files)
            per10m = f"{len(files) * scale:,.0f} + {extra} per range"
        else:
            per10m = f"{kinds[k]} (fixed)"
        rows.append([f"requests: {k}", kinds[k], per10m])
    print(
        f"\n{n} ledgers at {args.tx_per_ledger:g} tx/ledger (generated), pubnet layout (1 ledger per file); "
        "pre-flight + one range"
    )
    print_table(rows, ["", f"measured ({n} ledgers)", "per 10M ledgers"])
    write_json(
        args.json,
        {
            "machine": info,
            "ledgers": n,
            "tx_per_ledger": args.tx_per_ledger,
            "objects": len(files),
            "object_bytes": lake_bytes,
            "bytes_downloaded": downloaded,
            "requests": dict(kinds),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
