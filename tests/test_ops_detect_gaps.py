"""``stellar-rpc detect-gaps`` through the real CLI: a generated lake with objects removed, on a
local directory and on GCS (the real emulator, behind a proxy that counts the requests)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rpcbackfill.sources import layout
from tests.lib import REPO
from tests.lib.gcs_fault_proxy import FaultProxy
from tests.lib.orchestration import make_lake
from tests.lib.sources import Emulator, upload_lake

FIRST, LAST = 2, 3001  # 8 ledgers per object, 64 objects (512 ledgers) per partition: 6 partitions


def cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for k in [k for k in env if k.startswith("STELLAR_RPC_")]:
        del env[k]
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "rpcbackfill", *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


def detect_gaps_json(cfg: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """``detect-gaps --json`` over the whole test range [FIRST, LAST]."""
    return cli(
        "detect-gaps",
        "--start-ledger",
        str(FIRST),
        "--end-ledger",
        str(LAST),
        "--json",
        "--config-path",
        str(cfg),
        env_extra=env_extra,
    )


def write_config(root: Path, bucket_path: str) -> Path:
    cfg = root / "gaps.toml"
    cfg.write_text(
        f'[service]\ndata_dir = "data"\n[backfill.buffered_storage]\nbucket_path = {json.dumps(bucket_path)}\n'
    )
    return cfg


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return make_lake(tmp_path_factory.mktemp("gaps") / "lake", FIRST, LAST, seed=5, tx_per_ledger=0.5)


def remove(lake: Path) -> list[str]:
    """Delete three separate objects and one whole partition; return the removed keys."""
    schema = layout.read_manifest(lake)
    keys = [layout.object_key(s, schema) for s in (2, 100, 3001)]  # first file, a middle one, the last
    part = layout.partition_prefix(1100, schema)  # ledgers 1024-1535
    keys += sorted(f"{part}{p.name}" for p in (lake / part).iterdir())
    for k in keys[:3]:
        (lake / k).unlink()
    shutil.rmtree(lake / part)
    return keys


def ledgers_of(keys: list[str], lo: int, hi: int) -> set[int]:
    out: set[int] = set()
    for k in keys:
        start, end, _ = layout.parse_file_name(k.rsplit("/", 1)[-1])
        out.update(range(max(start, lo), min(end, hi) + 1))
    return out


def expand(missing: list[dict]) -> set[int]:
    return {s for r in missing for s in range(r["start"], r["end"] + 1)}


def test_complete_lake_has_no_gaps(pristine, tmp_path):
    r = detect_gaps_json(write_config(tmp_path, str(pristine)))
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["complete"] is True and rep["missing"] == [] and rep["missing_keys"] == []
    assert (
        rep["objects_expected"]
        == rep["objects_found"]
        == len(layout.batch_starts(FIRST, LAST, layout.read_manifest(pristine)))
    )
    assert rep["list_calls"] == 6


def test_removed_objects_are_found_exactly(pristine, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(pristine, lake)
    removed = remove(lake)
    cfg = write_config(tmp_path, str(lake))
    r = detect_gaps_json(cfg)
    assert r.returncode == 1, r.stderr
    assert r.stderr.splitlines()[-1].startswith("error: ") and "missing from the lake" in r.stderr
    rep = json.loads(r.stdout)
    assert sorted(rep["missing_keys"]) == sorted(removed)
    want = ledgers_of(removed, FIRST, LAST)
    assert expand(rep["missing"]) == want and rep["ledgers_missing"] == len(want)
    assert [(m["start"], m["end"]) for m in rep["missing"]] == [(2, 7), (96, 103), (1024, 1535), (3000, 3001)]
    # a sub-range starting and ending inside objects is clipped to the request
    r = cli("detect-gaps", "--start-ledger", "100", "--end-ledger", "1030", "--json", "--config-path", str(cfg))
    assert r.returncode == 1
    rep = json.loads(r.stdout)
    assert [(m["start"], m["end"]) for m in rep["missing"]] == [(100, 103), (1024, 1030)]
    assert rep["list_calls"] == 3  # partitions 0-511, 512-1023, 1024-1535
    # text output names the ranges and keys
    r = cli("detect-gaps", "--start-ledger", "200", "--end-ledger", "900", "--config-path", str(cfg))
    assert r.returncode == 0 and "none missing" in r.stdout


def test_bad_arguments_exit_2(pristine, tmp_path):
    cfg = write_config(tmp_path, str(pristine))
    r = cli("detect-gaps", "--start-ledger", "50", "--end-ledger", "10", "--config-path", str(cfg))
    assert r.returncode == 2 and "must not be less than" in r.stderr
    r = cli("detect-gaps", "--start-ledger", "1", "--end-ledger", "10", "--config-path", str(cfg))
    assert r.returncode == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    r = cli(
        "detect-gaps",
        "--start-ledger",
        "2",
        "--end-ledger",
        "10",
        "--config-path",
        str(write_config(tmp_path, str(empty))),
    )
    assert r.returncode == 2 and "manifest" in r.stderr


def test_gcs_lake_one_list_per_partition(pristine, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(pristine, lake)
    removed = remove(lake)
    emu = Emulator()
    proxy = None
    try:
        upload_lake(emu.client(), "gaps", "pubnet", lake)
        proxy = FaultProxy("127.0.0.1", emu.port)
        cfg = write_config(tmp_path, "gs://gaps/pubnet")
        r = detect_gaps_json(cfg, env_extra={"STORAGE_EMULATOR_HOST": proxy.host})
        assert r.returncode == 1, r.stderr
        rep = json.loads(r.stdout)
        assert sorted(rep["missing_keys"]) == sorted(removed)
        assert expand(rep["missing"]) == ledgers_of(removed, FIRST, LAST)
        lists = [p for m, p, _ in proxy.log if m == "GET" and p.split("?")[0].endswith("/o")]
        downloads = [p for m, p, _ in proxy.log if "alt=media" in p]
        assert len(lists) == 6  # one per partition (each holds < 1000 objects: one page)
        assert len(downloads) == 1 and layout.MANIFEST_NAME in downloads[0]  # nothing fetched per ledger
    finally:
        if proxy is not None:
            proxy.close()
        emu.close()


def test_lake_without_partitions_is_listed_once(tmp_path):
    from rpcbackfill.devtools.lakegen import generate_lake

    lake = tmp_path / "flat"
    generate_lake(lake, 2, 200, seed=2, tx_per_ledger=0.5, ledgers_per_batch=1, batches_per_partition=1, fsync=False)
    schema = layout.read_manifest(lake)
    gone = [layout.object_key(s, schema) for s in (2, 50, 51, 200)]
    for k in gone:
        (lake / k).unlink()
    r = cli(
        "detect-gaps",
        "--start-ledger",
        "2",
        "--end-ledger",
        "200",
        "--json",
        "--config-path",
        str(write_config(tmp_path, str(lake))),
    )
    assert r.returncode == 1, r.stderr
    rep = json.loads(r.stdout)
    assert rep["list_calls"] == 1 and sorted(rep["missing_keys"]) == sorted(gone)
    assert [(m["start"], m["end"]) for m in rep["missing"]] == [(2, 2), (50, 51), (200, 200)]


def _layout_config(root: Path, lake: Path, lpf: int | None, fpp: int | None) -> Path:
    cfg = write_config(root, str(lake))
    keys = "".join(f"{k} = {v}\n" for k, v in (("ledgers_per_file", lpf), ("files_per_partition", fpp)) if v)
    cfg.write_text(cfg.read_text() + keys)
    return cfg


def test_manifestless_lake_uses_the_configured_layout(pristine, tmp_path):
    """A lake without ``.config.json`` is read with ``ledgers_per_file``/``files_per_partition``
    (issue 11): detect-gaps lists it exactly as the backfill would read it."""
    lake = tmp_path / "lake"
    shutil.copytree(pristine, lake)
    removed = remove(lake)
    (lake / layout.MANIFEST_NAME).unlink()
    r = detect_gaps_json(_layout_config(tmp_path, lake, 8, 64))
    assert r.returncode == 1, r.stderr
    rep = json.loads(r.stdout)
    assert (rep["ledgers_per_batch"], rep["batches_per_partition"]) == (8, 64)
    assert sorted(rep["missing_keys"]) == sorted(removed) and rep["list_calls"] == 6
    assert expand(rep["missing"]) == ledgers_of(removed, FIRST, LAST)
    # without the keys there is no layout: bad input (exit 2) naming the keys to set
    r = detect_gaps_json(write_config(tmp_path, str(lake)))
    assert r.returncode == 2 and "ledgers_per_file and files_per_partition" in r.stderr.splitlines()[-1]
    # a wrong configured layout is not silently listed as "everything missing": with it, the
    # keys of this lake are named differently, and every expected object is reported absent
    r = detect_gaps_json(_layout_config(tmp_path, lake, 16, 64))
    assert r.returncode == 1 and json.loads(r.stdout)["ledgers_per_batch"] == 16


def test_configured_layout_must_agree_with_the_manifest(pristine, tmp_path):
    r = detect_gaps_json(_layout_config(tmp_path, pristine, 16, None))
    assert r.returncode == 2
    assert "ledgers_per_file = 16 in the configuration but ledgersPerBatch = 8" in r.stderr.splitlines()[-1]
    r = detect_gaps_json(_layout_config(tmp_path, pristine, 8, 64))
    assert r.returncode == 0, r.stderr
