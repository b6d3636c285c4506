"""Throughput of the ledger sources: ledgers/s and MB/s from a local lake, from the GCS
emulator, from moto's S3 server (anonymous boto3 client), and from captive core (the stand-in in tests/, serving a pre-recorded meta stream).

    python benchmarks/bench_sources.py                      # quick (< 2 min)
    python benchmarks/bench_sources.py --ledgers 100000 --gcs-ledgers 10000 --kind pubnet --json out.json

Ledgers are a consecutive hash chain from the product's generator (tests/lib/ledgers.py:
rpcbackfill.devtools.lakegen templated from real pubnet transactions).  ``--kind small`` has 2
transactions per ledger on average (~6 KB); ``--kind pubnet`` 163, as many as pubnet ledger
53312000 (~450 KB).

Columns: ``xdr MB/s`` counts LedgerCloseMeta bytes delivered to the consumer, ``zst MB/s`` the
compressed lake bytes read.  ``cpu s/Kledger`` is CPU time (this process and its children)
per 1,000 ledgers: it does not depend on how many cores were free.  The emulator is a
single-threaded Python server, so its row measures the client path, not GCS; the same holds for
the moto S3 row (``--gcs-ledgers`` ledgers too).  The captive-core
row is bounded by the stand-in's own speed (a Python script copying frames).
Every figure is the median of ``--runs`` runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, add_common_args, format_machine, machine_info, print_table, timed_runs, write_json  # noqa: E402

TESTS = REPO / "tests"

from rpcbackfill.config import PUBNET_PASSPHRASE, BufferedStorageConfig, CaptiveCoreConfig  # noqa: E402
from rpcbackfill.sources.captive_core import CaptiveCoreSource  # noqa: E402
from rpcbackfill.sources.datalake import DataLakeSource  # noqa: E402
from rpcbackfill.sources.layout import LakeSchema, write_lake  # noqa: E402

NET = PUBNET_PASSPHRASE
FIRST = 2


# Mean transactions per generated ledger: "small" test ledgers, or as dense as pubnet ledger 53312000.
TX_PER_LEDGER = {"small": 2.0, "pubnet": 163.0}


def ledgers(kind: str, count: int):
    """``count`` consecutive, hash-chained generated ledgers from FIRST on."""
    from tests.lib.ledgers import iter_chain

    return iter_chain(FIRST, count, tx_per_ledger=TX_PER_LEDGER[kind])


def consume(src, first: int, last: int) -> int:
    src.prepare_range(first, last)
    n = 0
    for q in range(first, last + 1):
        n += len(src.get_ledger(q).lcm)
    return n


def bench_lake(name, bucket_path, n, args, schema, zst_bytes, cfg_kw=None, **kw):
    cfg = BufferedStorageConfig(
        bucket_path=bucket_path,
        buffer_size=args.buffer,
        num_workers=args.workers,
        retry_limit=2,
        retry_wait=0.1,
        **(cfg_kw or {}),
    )

    def run():
        with DataLakeSource(cfg, NET, threading.Event(), **kw) as src:
            return consume(src, FIRST, FIRST + n - 1)

    t = timed_runs(run, runs=args.runs)
    return row(name, n, t, zst_bytes, f"{schema.ledgers_per_batch}/file, {args.workers} workers")


def row(name, n, t, zst_bytes, note):
    xdr = t.results[0]
    w = t.wall_median
    return {
        "source": name,
        "ledgers": n,
        "ledgers_per_s": n / w,
        "xdr_mb_per_s": xdr / w / 1e6,
        "zst_mb_per_s": (zst_bytes / w / 1e6) if zst_bytes else None,
        "cpu_s_per_kledger": t.cpu_median / n * 1000,
        "wall_s": w,
        "spread": t.wall_spread,
        "note": note,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ledgers", type=int, default=10000, help="ledgers per local run (default 10000)")
    ap.add_argument("--gcs-ledgers", type=int, default=300, help="ledgers per emulator run (default 300)")
    ap.add_argument("--core-ledgers", type=int, default=3000, help="ledgers per captive-core run (default 3000)")
    ap.add_argument("--kind", choices=("small", "pubnet"), default="small")
    ap.add_argument("--workers", type=int, default=8, help="num_workers (default 8)")
    ap.add_argument("--buffer", type=int, default=100, help="buffer_size in files (default 100)")
    ap.add_argument("--skip", default="", help="comma list of: local,batch64,gcs,s3,core")
    add_common_args(ap)
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if args.kind == "pubnet":
        args.ledgers = min(args.ledgers, 2000)
        args.gcs_ledgers = min(args.gcs_ledgers, 300)
        args.core_ledgers = min(args.core_ledgers, 2000)

    from tests.lib.records import frame
    from tests.lib.sources import Emulator, upload_lake

    info = machine_info()
    print(format_machine(info))
    n_max = max(args.ledgers, args.gcs_ledgers, args.core_ledgers)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-sources-") as work:
        work = Path(work)
        lakes = {}
        for name, lpb in (("lake1", 1), ("lake64", 64)):
            s = LakeSchema(NET, lpb, 64000)
            st = write_lake(work / name, ledgers(args.kind, n_max), s, fsync=False)
            lakes[name] = (s, st)
        per_ledger_zst = lakes["lake1"][1].compressed_bytes / n_max

        if "local" not in skip:
            s, _ = lakes["lake1"]
            rows.append(
                bench_lake("local lake", str(work / "lake1"), args.ledgers, args, s, per_ledger_zst * args.ledgers)
            )
        if "batch64" not in skip:
            s, st = lakes["lake64"]
            rows.append(
                bench_lake(
                    "local lake",
                    str(work / "lake64"),
                    args.ledgers,
                    args,
                    s,
                    st.compressed_bytes / n_max * args.ledgers,
                )
            )
        if "gcs" not in skip:
            emu = Emulator()
            try:
                gl = work / "gcslake"
                s = LakeSchema(NET, 1, 64000)
                write_lake(gl, ledgers(args.kind, args.gcs_ledgers), s, fsync=False)
                upload_lake(emu.client(), "bench", "pubnet", gl)
                os.environ["STORAGE_EMULATOR_HOST"] = emu.host
                rows.append(
                    bench_lake(
                        "GCS emulator",
                        "gs://bench/pubnet",
                        args.gcs_ledgers,
                        args,
                        s,
                        per_ledger_zst * args.gcs_ledgers,
                    )
                )
            finally:
                os.environ.pop("STORAGE_EMULATOR_HOST", None)
                emu.close()
        if "s3" not in skip:
            from tests.lib.s3 import MotoS3, aws_env
            from tests.lib.s3 import upload_lake as upload_s3

            server = MotoS3()
            saved = dict(os.environ)
            try:
                sl = work / "s3lake"
                s = LakeSchema(NET, 1, 64000)
                write_lake(sl, ledgers(args.kind, args.gcs_ledgers), s, fsync=False)
                upload_s3(server.client(), "bench", "pubnet", sl)
                for k, v in aws_env(work, AWS_ENDPOINT_URL_S3=server.host).items():
                    if v:
                        os.environ[k] = v
                    else:
                        os.environ.pop(k, None)
                rows.append(
                    bench_lake(
                        "S3 (moto server)",
                        "s3://bench/pubnet",
                        args.gcs_ledgers,
                        args,
                        s,
                        per_ledger_zst * args.gcs_ledgers,
                        cfg_kw={"force_path_style": True},
                    )
                )
            finally:
                os.environ.clear()
                os.environ.update(saved)
                server.close()
        if "core" not in skip:
            stream = work / "meta.stream"
            with open(stream, "wb") as f:
                for _, lcm in ledgers(args.kind, args.core_ledgers):
                    f.write(frame(lcm))
            cfgp = work / "core.cfg"
            cfgp.write_text(f'NETWORK_PASSPHRASE="{NET}"\nFAKE_STREAM="{stream}"\n')
            env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
            archive = work / "archive" / ".well-known"
            archive.mkdir(parents=True, exist_ok=True)
            (archive / "stellar-history.json").write_text('{"currentLedger": 4294967295}')
            cc = CaptiveCoreConfig(
                binary_path=TESTS / "fake_stellar_core.py",
                config_path=cfgp,
                storage_path=work / "captive-core",
                history_archive_urls=(f"file://{archive.parent}",),
            )

            def run():
                with CaptiveCoreSource(cc, threading.Event(), network_passphrase=NET, env=env) as src:
                    return consume(src, FIRST, FIRST + args.core_ledgers - 1)

            t = timed_runs(run, runs=args.runs)
            rows.append(row("captive core (stand-in)", args.core_ledgers, t, 0, "fd:3 frames, hash chain checked"))

    print(f"\nledger kind: {args.kind}; median of {args.runs} runs")
    print_table(
        [
            [
                r["source"],
                r["note"],
                r["ledgers"],
                round(r["ledgers_per_s"]),
                round(r["xdr_mb_per_s"], 1),
                "-" if r["zst_mb_per_s"] is None else round(r["zst_mb_per_s"], 1),
                round(r["cpu_s_per_kledger"], 3),
                f"{r['spread']:.0%}",
            ]
            for r in rows
        ],
        ["source", "layout", "ledgers", "ledgers/s", "xdr MB/s", "zst MB/s", "cpu s/Kledger", "spread"],
    )
    write_json(args.json, {"benchmark": "sources", "machine": info, "kind": args.kind, "runs": args.runs, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
