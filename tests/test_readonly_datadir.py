"""Queries over a finished data dir on a read-only filesystem (issue 15 c).

A small finished backfill is bind-mounted read-only (``mount --bind`` + ``remount,ro,bind``; tests
run as root, where ``chmod a-w`` would not stop writes).  ``status``, ``get-ledger-by-sequence``
and ``get-transaction-by-hash`` must answer exactly as on the writable original.  Skipped, with
the reason, where mounting is not permitted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rpcbackfill import lcm
from rpcbackfill.stores.lfs import LedgerStore
from tests.lib.orchestration import RS, make_config, make_lake, run_to_end

REPO = Path(__file__).resolve().parents[1]
LAST = RS + 1


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STELLAR_RPC_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "rpcbackfill", "--data-dir", str(data_dir), *args],
        capture_output=True,
        env=env,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def ro_data(tmp_path):
    """(writable data dir, the same data dir seen through a read-only bind mount)."""
    src = tmp_path / "src"
    lake = make_lake(src / "lake", 2, LAST)
    cfg = make_config(src / "data", lake, 2, LAST)
    assert run_to_end(src, cfg) == 0
    view = tmp_path / "ro"
    view.mkdir()
    r = _mount("--bind", str(src), str(view))
    if r.returncode != 0:
        pytest.skip(f"bind mount not permitted here: {r.stderr.strip()}")
    try:
        r = _mount("-o", "remount,ro,bind", str(view))
        if r.returncode != 0:
            pytest.skip(f"read-only remount not permitted here: {r.stderr.strip()}")
        probe = view / "data" / "probe"
        with pytest.raises(OSError):
            probe.write_bytes(b"x")  # the view really is read-only
        yield src / "data", view / "data"
    finally:
        subprocess.run(["umount", str(view)], check=False)


def test_queries_on_read_only_data_dir(ro_data):
    rw, ro = ro_data
    with LedgerStore(rw / "immutable" / "ledgers") as store:
        raw = store.get_ledger(77)
    _, hashes = lcm.tx_hashes(raw)
    tx = next(iter(lcm.iter_hashes(hashes)))

    st = cli(ro, "status", "--json")
    assert st.returncode == 0, st.stderr
    assert json.loads(st.stdout) == json.loads(cli(rw, "status", "--json").stdout)
    assert json.loads(st.stdout)["complete"] is True

    got = cli(ro, "get-ledger-by-sequence", "77")
    assert got.returncode == 0, got.stderr
    assert got.stdout == raw

    found = cli(ro, "get-transaction-by-hash", tx.hex())
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout) == {"ledger_sequence": 77}

    missing = cli(ro, "get-ledger-by-sequence", str(LAST + 5))
    assert missing.returncode == 3  # beyond the data: not found, and no traceback
    assert b"Traceback" not in missing.stderr + st.stderr + got.stderr + found.stderr
