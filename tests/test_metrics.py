"""Prometheus metrics on ``[service] admin_endpoint``, scraped during a real backfill run.

The run is the real CLI in a subprocess over a small generated lake.  Fault holds
(orchestration/faults.py) stop the range process at two known points -- after its first
acknowledged checkpoint, then in the transition before the first index shard is marked
verified -- so each scrape sees a known state, without timing races.  Every update before a
hold was acknowledged by the coordinator, and progress snapshots travel on the same ordered
channel, so what the scrape shows is exactly what the worker had reported.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from rpcbackfill.orchestration import faults
from rpcbackfill.sources import layout
from tests.lib.net import free_port
from tests.lib.orchestration import kill_tree, make_lake, start_backfill, wait_held, write_backfill_config

FIRST, LAST = 2, 10001
P = "stellar_rpc_backfill_"


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.status == 200
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def lake_bytes(lake: Path) -> int:
    """Bytes of the objects holding FIRST..LAST, the last one twice: ``prepare_range`` downloads
    it once up front to check the range's end exists, and the workers fetch it again in turn."""
    schema = layout.read_manifest(lake)
    keys = {layout.object_key(s, schema) for s in range(FIRST, LAST + 1)}
    return sum((lake / k).stat().st_size for k in keys) + (lake / layout.object_key(LAST, schema)).stat().st_size


def test_metrics_scraped_during_a_real_backfill(tmp_path):
    lake = make_lake(tmp_path / "lake", FIRST, LAST, seed=11, tx_per_ledger=2.0)
    port = free_port()
    hold = tmp_path / "hold"
    hold.mkdir()
    log = (tmp_path / "stderr.txt").open("wb")
    cfg = write_backfill_config(
        tmp_path,
        lake,
        service={"http_endpoint": "127.0.0.1:0", "admin_endpoint": f"127.0.0.1:{port}"},
        backfill={"parallel_ranges": 1},
    )
    p = start_backfill(cfg, FIRST, LAST, env=faults.hold_env(hold, "checkpoint_acked:1", "verify_shard:1"), stderr=log)
    try:
        wait_held(hold, "checkpoint_acked", p)
        m1 = scrape(port)
        r0 = (("range", "0"),)
        assert m1[(P + "last_checkpoint_ledger", r0)] == FIRST + 1000 - 1
        assert m1[(P + "ledgers_ingested_total", r0)] >= 1000
        assert m1[(P + "range_state", (("range", "0"), ("state", "INGESTING")))] == 1
        assert m1[(P + "range_state", (("range", "0"), ("state", "COMPLETE")))] == 0
        assert m1[(P + "range_attempts_total", r0)] == 0

        faults.release(hold, "checkpoint_acked")
        wait_held(hold, "verify_shard", p)
        m2 = scrape(port)
        assert m2[(P + "ledgers_ingested_total", r0)] == LAST - FIRST + 1 > m1[(P + "ledgers_ingested_total", r0)]
        assert m2[(P + "transactions_indexed_total", r0)] > 0
        assert m2[(P + "range_state", (("range", "0"), ("state", "TRANSITIONING")))] == 1
        ph = (("phase", "VERIFYING_RECSPLIT"), ("range", "0"), ("subflow", "txhash"))
        assert m2[(P + "range_phase", ph)] == 1
        be = (("backend", "buffered_storage"),)
        # every ledger of the range went through the metered get_ledger exactly once
        assert m2[(P + "source_fetch_seconds_count", be)] == LAST - FIRST + 1
        assert (
            m2[(P + "source_fetch_seconds_bucket", (("backend", "buffered_storage"), ("le", "+Inf")))]
            == LAST - FIRST + 1
        )
        assert m2[(P + "source_fetch_seconds_sum", be)] > 0
        # the bytes counted are the downloads of the lake objects the range needed
        assert m2[(P + "source_bytes_total", be)] == lake_bytes(lake)
        assert not [k for k in m2 if k[0] == P + "errors_total"]

        faults.release(hold, "verify_shard")
        assert p.wait(timeout=240) == 0
    finally:
        if p.poll() is None:
            kill_tree(p)
        log.close()
