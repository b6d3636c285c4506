"""The full-history projection model (benchmarks/projection.py) computes what it says."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _module():
    spec = importlib.util.spec_from_file_location("bench_projection", REPO / "benchmarks" / "projection.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_projection"] = mod
    spec.loader.exec_module(mod)
    return mod


def _harness_json(path: Path, tx_per_ledger: int, cpu_ms: float, ledgers: int = 10_000) -> Path:
    doc = {
        "lake": {
            "ledgers": ledgers,
            "transactions": tx_per_ledger * ledgers,
            "compressed_bytes": (1000 + 500 * tx_per_ledger) * ledgers,
        },
        "results": [
            {"stage": "index", "pipeline_ns_per_key": 900.0},
            {
                "stage": "backfill x1 p1",
                "cpu_s": cpu_ms * ledgers / 1000.0,
                "ledgers": ledgers,
                "wall_s": 10.0,
                "stored_bytes_per_ledger": 800 + 520 * tx_per_ledger,
            },
        ],
    }
    path.write_text(json.dumps(doc))
    return path


def test_fit_recovers_fixed_and_per_transaction_cost():
    m = _module()
    a, b = m.fit([5.0, 30.0, 300.0], [0.05 + 0.004 * x for x in (5.0, 30.0, 300.0)])
    assert a == pytest.approx(0.05)
    assert b == pytest.approx(0.004)


def test_projection_from_two_densities(tmp_path):
    m = _module()
    # 0.1 ms per ledger + 10 us per transaction, measured at 5 and 300 tx/ledger
    pts = [
        m.load_point(_harness_json(tmp_path / "s.json", 5, 0.1 + 0.01 * 5)),
        m.load_point(_harness_json(tmp_path / "d.json", 300, 0.1 + 0.01 * 300)),
    ]
    out = m.project(pts, ledgers=60e6, txs=9.0e9, cores=[30], efficiency=1.0)
    # CPU: 60e6 * 0.1 ms + 9e9 * 0.01 ms = 6,000 s + 90,000 s = 26.67 CPU-hours
    assert "total CPU: 26.7 CPU-hours" in out
    # on 30 cores: 0.889 h = 53 m of ingestion; tail: 1.5e9 keys * 900 ns / 16 = 84 s = 1 m
    assert "| 30 | 0 h 53 m | 0 h 01 m | **0 h 55 m** |" in out
    # lake bytes: 60e6 * 1000 + 9e9 * 500 = 4.56 TB
    assert "lake read 4.56 TB" in out


def test_scaling_efficiency_and_missing_results(tmp_path):
    m = _module()
    doc = {
        "results": [
            {"stage": "scaling 1 range x4 chunks, workers=1", "wall_s": 10.0, "cpu_s": 13.0},
            {"stage": "scaling 1 range x4 chunks, workers=2", "wall_s": 7.0, "cpu_s": 12.6},
        ]
    }
    p = tmp_path / "scaling.json"
    p.write_text(json.dumps(doc))
    assert m.scaling_efficiency(p) == pytest.approx(12.6 / (7.0 * 2))
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"results": []}))
    with pytest.raises(SystemExit, match="no workers=1 backfill result"):
        m.load_point(empty)
    with pytest.raises(SystemExit, match="no workers=1/workers=2 pair"):
        m.scaling_efficiency(empty)
