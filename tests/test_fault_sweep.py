"""Sampled fault sweep (tools/fault_sweep.py) over a small finished data dir: flipped bits in an
index shard, a chunk's .data and .index and the meta store's SSTs, deleted and truncated files
-> 0 silent wrong answers and 0 crashes (issue 15).  The full sweep (every byte of the shard,
hundreds of sampled bytes elsewhere) is ``python tools/fault_sweep.py``."""

from __future__ import annotations

import importlib.util
import logging
import shutil
import sys

import pytest

from tests.lib import REPO


def _sweep_module():
    spec = importlib.util.spec_from_file_location("fault_sweep", REPO / "tools" / "fault_sweep.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fault_sweep"] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


fault_sweep = _sweep_module()


@pytest.fixture(scope="module")
def truth(tmp_path_factory):
    base = tmp_path_factory.getbasetemp() / "integrity-finished"  # shared with test_integrity_queries
    fault_sweep.build_data_dir(base)
    work = tmp_path_factory.mktemp("sweep")
    shutil.copytree(base, work, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".lock", "LOCK", "*.pickle"))
    return fault_sweep.read_truth(fault_sweep.build_data_dir(work), per_range=20)


def test_sampled_fault_sweep_has_no_wrong_answer_and_no_crash(truth, caplog):
    caplog.set_level(logging.ERROR)
    faults = ("idx", "index", "sst", "delete", "truncate")
    res = fault_sweep.sweep(truth, idx_bytes=400, index_bytes=40, sst_bytes=20, seed=7, faults=faults)
    assert res.bad == [], "\n".join(res.bad)
    assert set(res.counts) == set(faults)
    # the sweep did detect damage (and still answered where the damage did not matter)
    assert res.counts["idx"]["error"] > 0 and res.counts["idx"]["ok"] > 0
    assert res.counts["delete"]["error"] > 0


def test_sampled_data_faults_have_no_wrong_answer(truth, caplog):
    """Frames carry zstd's content checksum: a flipped bit in .data is an error, or a bit the
    decoder ignores (the ledger reads back identical) -- never another ledger."""
    caplog.set_level(logging.ERROR)
    res = fault_sweep.sweep(truth, data_bytes=40, seed=7, faults=("data",))
    assert res.counts["data"]["error"] > 0
    assert res.bad == [], "\n".join(res.bad)
