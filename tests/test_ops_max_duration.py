"""``[backfill] max_duration``: the run stops with exit 75 and re-running finishes with the same bytes.

No timing race decides the outcome: one object of the lake is replaced by a FIFO nobody writes
to, so the first run can never finish on its own -- only max_duration can end it.  The re-run
(real object back in place) must then produce chunks and index files byte-identical to an
uninterrupted run of the same lake (RecSplit salts derive from each shard's content).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rpcbackfill.config import format_duration, parse_duration
from rpcbackfill.sources import layout
from tests.lib.orchestration import backfill_command, check_backfill_result, cli_env, make_lake, write_backfill_config

FIRST, LAST = 2, 20001


def backfill(cfg: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        backfill_command(cfg, FIRST, LAST, *extra),
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=300,
        check=False,
    )


def digest(data: Path) -> dict[str, str]:
    base = data / "immutable"
    return {
        str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(base.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("6h", 21600),
        ("1h30m", 5400),
        ("2d", 172800),
        ("45", 45),
        ("1.5s", 1.5),
        (" 6H ", 21600),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["", "h", "6x", "1h30", "-5s", "6h 30", "m30"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_bad_max_duration_is_a_config_error(tmp_path):
    lake = tmp_path / "lake"
    lake.mkdir()
    r = backfill(write_backfill_config(tmp_path, lake), "--set", "backfill.max_duration=soon")
    assert r.returncode == 2
    assert "backfill.max_duration" in r.stderr and "duration" in r.stderr


def test_max_duration_stops_with_75_and_the_rerun_matches_an_uninterrupted_run(tmp_path):
    lake = make_lake(tmp_path / "lake", FIRST, LAST, seed=3, tx_per_ledger=2.0)
    # the reference: one uninterrupted run
    ref = tmp_path / "ref"
    ref.mkdir()
    r = backfill(write_backfill_config(ref, lake))
    assert r.returncode == 0, r.stderr[-3000:]

    # the object holding ledger 15000 becomes a FIFO: reading it blocks until the run is stopped
    obj = lake / layout.object_key(15000, layout.read_manifest(lake))
    saved = obj.read_bytes()
    obj.unlink()
    os.mkfifo(obj)
    run = tmp_path / "run"
    run.mkdir()
    cfg = write_backfill_config(run, lake)
    try:
        r = backfill(cfg, "--set", "backfill.max_duration=3s")
    finally:
        obj.unlink()
        obj.write_bytes(saved)
    assert r.returncode == 75, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: max_duration 3s elapsed") and "re-running the same command continues" in last
    assert "re-run the same command to continue" in r.stderr  # the log line says so too
    # not finished: range 1 cannot have completed
    st = subprocess.run(
        [sys.executable, "-m", "rpcbackfill", "status", "--json", "--config-path", str(cfg)],
        capture_output=True,
        text=True,
        check=False,
        env=cli_env(),
    )
    states = {x["id"]: x["state"] for x in json.loads(st.stdout)["ranges"]}
    assert states[1] != "COMPLETE"

    r = backfill(cfg)
    assert r.returncode == 0, r.stderr[-3000:]
    # chunks and index shards: byte-identical to the uninterrupted run
    got, want = digest(run / "data"), digest(ref / "data")
    assert sorted(got) == sorted(want) and len(want) == 2 * 2 + 2 * 16  # 2 chunks (.data/.index), 2 x 16 shards
    assert got == want
    from rpcbackfill.config import default_config

    cfg_obj = default_config(run / "data", range_size=10_000)
    n_ledgers, n_hashes = check_backfill_result(cfg_obj, lake, FIRST, LAST)
    assert n_ledgers == LAST - FIRST + 1 and n_hashes > 0
    shutil.rmtree(ref)
