"""Damage of COMPLETE ranges (issue 15): ``status`` reports it, a re-run of ``--backfill``
repairs it (or says exactly what to do), crash-safe.

One generated lake (ledgers 2..20001, two ranges of one chunk each) is backfilled once through
the real CLI; each test damages its own copy of the data directory and runs the real CLI again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rpcbackfill.orchestration import faults
from tests.lib import REPO
from tests.lib.orchestration import make_lake, wait_group_gone, wait_held, write_backfill_config

FIRST, LAST = 2, 20001


def _env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for k in [k for k in env if k.startswith("STELLAR_RPC_") or k.startswith("RPCBACKFILL_TEST_")]:
        del env[k]
    env.update(extra or {})
    return env


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rpcbackfill", *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
        check=False,
    )


def backfill(cfg: Path, *extra: str) -> subprocess.CompletedProcess:
    return cli("--backfill", "--start-ledger", str(FIRST), "--end-ledger", str(LAST), "--config-path", str(cfg), *extra)


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("repair")
    lake = make_lake(base / "lake", FIRST, LAST, seed=5, tx_per_ledger=2.0)
    root = base / "pristine"
    root.mkdir()
    r = backfill(write_backfill_config(root, lake))
    assert r.returncode == 0, r.stderr[-3000:]
    return lake, root / "data"


@pytest.fixture()
def copy(backfilled, tmp_path) -> tuple[Path, Path, Path]:
    """(config, data dir, pristine data dir) of a private copy."""
    lake, pristine = backfilled
    import shutil

    shutil.copytree(pristine, tmp_path / "data")
    return write_backfill_config(tmp_path, lake), tmp_path / "data", pristine


def chunk_files(data: Path, c: int) -> tuple[Path, Path]:
    from rpcbackfill.paths import chunk_paths

    return chunk_paths(data / "immutable" / "ledgers", c)


def shard_file(data: Path, rid: int, x: int) -> Path:
    return data / "immutable" / "txhash" / f"{rid:04d}" / "index" / f"cf-{x:x}.idx"


def status(cfg: Path) -> tuple[int, dict, str]:
    r = cli("status", "--json", "--config-path", str(cfg))
    return r.returncode, json.loads(r.stdout), r.stderr


def verify_clean(cfg: Path) -> None:
    r = cli("verify", "--config-path", str(cfg), "--json")
    assert r.returncode == 0, r.stdout[-3000:]


def test_layout_of_the_fixture(copy):
    _, data, _ = copy
    assert all(p.is_file() for p in chunk_files(data, 0) + chunk_files(data, 1))
    assert shard_file(data, 1, 15).is_file()


def test_status_clean_then_damaged(copy):
    cfg, data, _ = copy
    rc, rep, err = status(cfg)
    assert rc == 0, err
    assert rep["complete"] is True and rep["damaged"] == []
    assert all(r["damage"] == [] for r in rep["ranges"])

    shard_file(data, 0, 3).unlink()
    idx = chunk_files(data, 1)[1]
    idx.write_bytes(idx.read_bytes()[:1000])
    rc, rep, err = status(cfg)
    assert rc == 1
    assert rep["complete"] is False and rep["damaged"] == [0, 1]
    r0, r1 = rep["ranges"]
    assert r0["state"] == r1["state"] == "COMPLETE"
    assert [(d["shard"], "missing" in d["message"]) for d in r0["damage"]] == [("3", True)]
    assert r0["damage"][0]["path"] == str(shard_file(data, 0, 3))
    assert [d["chunk"] for d in r1["damage"]] == [1]
    assert "000001.index is truncated" in r1["damage"][0]["message"] and r1["damage"][0]["path"] == str(idx)
    # one error line on stderr, exit 1, no traceback
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "2 damaged or missing files" in lines[0] and "--backfill" in lines[0]
    assert "Traceback" not in err
    # the text table shows the damage in the state column
    r = cli("status", "--config-path", str(cfg))
    assert r.returncode == 1
    assert "COMPLETE (damaged: index shard 3: index shard file is missing)" in r.stdout
    assert "COMPLETE (damaged: chunk 1:" in r.stdout


def test_status_finds_a_corrupt_shard_header_and_a_truncated_data_file(copy):
    cfg, data, _ = copy
    sh = shard_file(data, 1, 7)
    b = bytearray(sh.read_bytes())
    b[0] ^= 0xFF  # magic
    sh.write_bytes(bytes(b))
    d = chunk_files(data, 0)[0]
    d.write_bytes(d.read_bytes()[:-10])
    rc, rep, _ = status(cfg)
    assert rc == 1
    r0, r1 = rep["ranges"]
    assert [x["chunk"] for x in r0["damage"]] == [0] and "000000.data is truncated" in r0["damage"][0]["message"]
    assert [x["shard"] for x in r1["damage"]] == ["7"]


def test_rerun_repairs_a_chunk_and_shards(copy):
    cfg, data, pristine = copy
    d0, i0 = chunk_files(data, 0)
    d0.write_bytes(d0.read_bytes()[: d0.stat().st_size // 2])
    shard_file(data, 1, 5).unlink()
    sh = shard_file(data, 1, 9)
    sh.write_bytes(sh.read_bytes()[:300])
    r = backfill(cfg)
    assert r.returncode == 0, r.stderr[-3000:]
    # it said what it found and did
    assert f"chunk 0 ({i0}) is damaged" in r.stderr and "re-ingesting ledgers 2-10001" in r.stderr
    assert "index shard 5" in r.stderr and "index shard 9" in r.stderr and "rebuilding it" in r.stderr
    assert "range 1: repaired (0 chunk(s) re-ingested, 2 index shard(s) rebuilt)" in r.stderr
    # the chunk is the same bytes again (frames are deterministic); the shards answer every key
    for got, want in zip(chunk_files(data, 0), chunk_files(pristine, 0), strict=True):
        assert got.read_bytes() == want.read_bytes()
    verify_clean(cfg)
    rc, rep, err = status(cfg)
    assert rc == 0 and rep["complete"] is True, err
    # no scratch left behind
    assert not (data / "immutable" / "ledgers" / ".repair").exists()
    assert not (data / "immutable" / "txhash" / "0001" / ".repair").exists()
    # a second re-run finds nothing to repair
    r = backfill(cfg)
    assert r.returncode == 0 and "is damaged" not in r.stderr, r.stderr[-2000:]


def test_repair_impossible_without_the_source_says_what_to_do(copy, tmp_path):
    cfg, data, _ = copy
    d0, i0 = chunk_files(data, 0)
    i0.unlink()
    before = d0.read_bytes()
    empty = tmp_path / "empty-lake"
    empty.mkdir()
    cfg2 = tmp_path / "nolake.toml"
    cfg2.write_text(cfg.read_text().replace(json.dumps(str(copy_lake(cfg))), json.dumps(str(empty))))
    r = backfill(cfg2)
    assert r.returncode == 1
    lines = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 1, r.stderr[-2000:]
    assert "chunk 0 of COMPLETE range 0 is damaged" in lines[0] and "could not be re-ingested" in lines[0]
    assert "make the source readable and re-run the same command" in lines[0]
    assert "Traceback" not in r.stderr
    # nothing was deleted on the way
    assert d0.read_bytes() == before and not i0.exists()


def copy_lake(cfg: Path) -> str:
    import tomllib

    return tomllib.loads(cfg.read_text())["backfill"]["buffered_storage"]["bucket_path"]


def test_verify_complete_finds_and_repairs_a_flipped_frame_bit(copy):
    """A flipped bit inside a frame passes the structural check (sizes agree); only the full
    check finds it, so it is opt-in: --verify-complete."""
    cfg, data, pristine = copy
    d1 = chunk_files(data, 1)[0]
    b = bytearray(d1.read_bytes())
    b[len(b) // 2] ^= 0x10
    d1.write_bytes(bytes(b))
    r = backfill(cfg)
    assert r.returncode == 0 and "is damaged" not in r.stderr  # the default check is structural only
    r = backfill(cfg, "--verify-complete")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "full verification" in r.stderr and "chunk 1 (" in r.stderr and "re-ingesting" in r.stderr
    assert d1.read_bytes() == chunk_files(pristine, 1)[0].read_bytes()
    verify_clean(cfg)


def _killed_at(cfg: Path, point: str, tmp: Path, while_held=None) -> None:
    """Run the backfill until it holds at fault point ``point`` (then call ``while_held()``),
    then kill -9 its process group."""
    hold = tmp / f"hold-{point}"
    hold.mkdir()
    p = subprocess.Popen(
        [sys.executable, "-m", "rpcbackfill", "--backfill", "--start-ledger", str(FIRST), "--end-ledger", str(LAST)]
        + ["--config-path", str(cfg)],
        env=_env(faults.hold_env(hold, f"{point}:1")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_held(hold, point, p)
        if while_held is not None:
            while_held()
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        wait_group_gone(p.pid)


def test_kill_between_deleting_and_publishing_a_chunk_then_rerun(copy, tmp_path):
    cfg, data, pristine = copy
    d0, i0 = chunk_files(data, 0)
    i0.write_bytes(i0.read_bytes()[:-4])
    _killed_at(cfg, "repair_swap", tmp_path)
    assert not d0.exists() and not i0.exists()  # killed with the bad files gone, the new not yet in
    rc, rep, _ = status(cfg)
    assert rc == 1 and "missing" in rep["ranges"][0]["damage"][0]["message"]
    r = backfill(cfg)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "chunk 0" in r.stderr and "missing" in r.stderr
    for got, want in zip(chunk_files(data, 0), chunk_files(pristine, 0), strict=True):
        assert got.read_bytes() == want.read_bytes()
    verify_clean(cfg)


def test_kill_after_building_a_shard_then_rerun(copy, tmp_path):
    cfg, data, _ = copy
    sh = shard_file(data, 0, 2)
    sh.unlink()
    _killed_at(cfg, "repair_shard_built", tmp_path)
    assert not sh.exists()
    r = backfill(cfg)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "index shard 2" in r.stderr
    verify_clean(cfg)
    assert status(cfg)[0] == 0


def test_getstatus_shows_the_damage_while_the_repair_runs(copy, tmp_path):
    """The HTTP status of the running backfill has the same ``damage`` fields as ``status``."""
    import urllib.request

    from tests.lib.net import free_port

    cfg, data, _ = copy
    port = free_port()
    cfg.write_text(cfg.read_text().replace("http_port = 0\n", f'http_endpoint = "127.0.0.1:{port}"\n'))
    shard_file(data, 1, 4).unlink()
    seen: dict = {}

    def ask() -> None:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "getStatus"}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            seen.update(json.loads(r.read())["result"])

    _killed_at(cfg, "repair_shard_built", tmp_path, while_held=ask)
    assert seen["run_state"] == "repairing" and seen["damaged"] == [1] and seen["complete"] is False
    r1 = seen["ranges"][1]
    assert r1["state"] == "COMPLETE" and [(d["shard"], d["kind"]) for d in r1["damage"]] == [("4", "shard")]
    assert seen["ranges"][0]["damage"] == []
