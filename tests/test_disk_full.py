"""A backfill that fills its disk ends with the one clear disk-full error (issue 15 b).

The data dir lives on a small tmpfs, so the run meets a real ENOSPC; RocksDB's flush when the
meta store closes then fails the same way and must not become a second, "unexpected", error.
Growing the tmpfs and re-running the same command finishes the backfill (nothing was lost).
Skipped, with the reason, where mounting a tmpfs is not permitted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lib.orchestration import RS, make_lake

REPO = Path(__file__).resolve().parents[1]
LAST = RS + 1


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def _run(cfg: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STELLAR_RPC_")}
    env["PYTHONPATH"] = str(REPO)
    cmd = [sys.executable, "-m", "rpcbackfill", "--backfill", "--start-ledger", "2", "--end-ledger", str(LAST)]
    return subprocess.run(
        [*cmd, "--config-path", str(cfg)], capture_output=True, text=True, env=env, timeout=300, check=False
    )


def test_disk_full_is_one_clear_error(tmp_path, small_disk):
    lake = make_lake(tmp_path / "lake", 2, LAST)  # ~20 MB of ledgers: more than the 6 MB disk holds
    cfg = tmp_path / "backfill.toml"
    cfg.write_text(
        f'[service]\ndata_dir = "{small_disk / "data"}"\nhttp_port = 0\n'  # no endpoint: no port shared with other runs
        "[backfill]\nrange_size = 10000\ncheckpoint_interval = 1000\nparallel_ranges = 1\n"
        f'[backfill.buffered_storage]\nbucket_path = "{lake}"\n'
    )
    r = _run(cfg)
    assert r.returncode == 1, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:") or " ERROR " in line]
    causes = [line for line in errors if "backfill failed; re-running" not in line]  # the closing advice
    assert causes and all("no space left on device" in line for line in causes), errors
    assert "unexpected" not in r.stderr and "Traceback" not in r.stderr

    remount = subprocess.run(["mount", "-o", "remount,size=128m", str(small_disk)], capture_output=True, text=True)
    assert remount.returncode == 0, remount.stderr
    again = _run(cfg)
    assert again.returncode == 0, again.stderr[-2000:]
