"""``stellar-rpc rebuild-meta`` through the real CLI on a data directory made by a real backfill.

One generated lake (ledgers 2..20001, two ranges of 10,000) is backfilled once; each test
damages its own copy of the data directory (lost meta store, corrupt meta store, a missing
chunk) and recovers it with ``rebuild-meta`` and ``--backfill``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rpcbackfill import lcm
from rpcbackfill.ledgermath import chunk_of_ledger
from rpcbackfill.meta.store import MetaStore
from tests.lib.lake import lake_ledgers
from tests.lib.orchestration import make_lake
from tests.lib.orchestration import write_backfill_config as write_config
from tests.test_ops_verify import cli

FIRST, LAST = 2, 20001
TIMESTAMPS = ("created_at", "completed_at")


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("rebuild")
    lake = make_lake(base / "lake", FIRST, LAST, seed=13, tx_per_ledger=2.0)
    root = base / "pristine"
    root.mkdir()
    cfg = write_config(root, lake)
    r = backfill(cfg)
    assert r.returncode == 0, r.stderr[-3000:]
    return lake, root


@pytest.fixture()
def copy(backfilled, tmp_path) -> tuple[Path, Path, Path]:
    """(lake, config, data dir) of a private copy of the backfilled data directory."""
    lake, pristine = backfilled
    shutil.copytree(pristine / "data", tmp_path / "data")
    return lake, write_config(tmp_path, lake), tmp_path / "data"


def backfill(cfg: Path):
    return cli("--backfill", "--start-ledger", str(FIRST), "--end-ledger", str(LAST), "--config-path", str(cfg))


def rebuild(cfg: Path, *extra: str):
    return cli("rebuild-meta", "--config-path", str(cfg), *extra)


def meta_dump(data: Path) -> dict[str, bytes]:
    with MetaStore(data / "meta" / "rocksdb", read_only=True) as m:
        return m.dump()


def status(cfg: Path) -> dict:
    r = cli("status", "--config-path", str(cfg), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def states(cfg: Path) -> dict[int, str]:
    return {r["id"]: r["state"] for r in status(cfg)["ranges"]}


def some_tx(lake: Path, first: int) -> tuple[str, int]:
    """(hex hash, ledger) of the first transaction at or after ledger ``first``."""
    for seq, raw in lake_ledgers(lake, first, LAST):
        _, hashes = lcm.tx_hashes(raw)
        if hashes:
            return hashes[:32].hex(), seq
    raise AssertionError("the lake has no transactions")


def sans_timestamps(d: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in d.items() if not k.endswith(TIMESTAMPS)}


def test_lost_meta_store_is_rebuilt(backfilled, copy):
    lake, cfg, data = copy
    pristine = str(backfilled[1] / "data").encode()
    # the store of the copy still records the pristine directory's paths
    before = {k: v.replace(pristine, str(data).encode()) for k, v in meta_dump(data).items()}
    shutil.rmtree(data / "meta")
    r = rebuild(cfg, "--yes")
    assert r.returncode == 0, r.stderr
    assert "2 range(s) COMPLETE" in r.stdout and "partial" not in r.stdout
    assert states(cfg) == {0: "COMPLETE", 1: "COMPLETE"}
    # the same keys and values a normal run wrote (only the timestamps are new)
    assert sans_timestamps(meta_dump(data)) == sans_timestamps(before)
    for first in (FIRST, 10_002):
        h, seq = some_tx(lake, first)
        q = cli("get-transaction-by-hash", h, "--config-path", str(cfg))
        assert q.returncode == 0, q.stderr
        assert json.loads(q.stdout) == {"ledger_sequence": seq}


def corrupt_meta(data: Path) -> None:
    store = data / "meta" / "rocksdb"
    targets = sorted(store.glob("MANIFEST-*")) + sorted(store.glob("*.sst"))
    assert targets, "the meta store has no MANIFEST or SST file"
    for p in targets:
        b = bytearray(p.read_bytes())
        for i in range(0, len(b), 7):
            b[i] ^= 0x5A
        p.write_bytes(bytes(b))


def test_corrupt_meta_store_names_rebuild_meta_then_recovers(copy):
    _, cfg, data = copy
    digest_before = {p: p.stat().st_mtime_ns for p in (data / "immutable").rglob("*") if p.is_file()}
    corrupt_meta(data)
    r = backfill(cfg)
    assert r.returncode == 1, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "rebuild-meta" in last and str(data / "meta" / "rocksdb") in last
    assert "Traceback" not in r.stderr

    r = rebuild(cfg, "--yes")
    assert r.returncode == 0, r.stderr
    aside = list((data / "meta").glob("rocksdb.corrupt-*"))
    assert len(aside) == 1 and any(aside[0].glob("MANIFEST-*")), "the old store must be kept aside"
    assert str(aside[0]) in r.stdout
    assert states(cfg) == {0: "COMPLETE", 1: "COMPLETE"}

    r = backfill(cfg)
    assert r.returncode == 0, r.stderr[-2000:]
    # nothing was redone: every immutable file is the one the first run wrote
    after = {p: p.stat().st_mtime_ns for p in (data / "immutable").rglob("*") if p.is_file()}
    assert after == digest_before


def test_missing_chunk_range_is_left_out_and_redone(copy):
    lake, cfg, data = copy
    c = chunk_of_ledger(10_002)  # range 1's only chunk
    for p in (data / "immutable" / "ledgers" / "chunks").rglob(f"{c:06d}.*"):
        p.unlink()
    shutil.rmtree(data / "meta")
    r = rebuild(cfg, "--yes")
    assert r.returncode == 0, r.stderr
    assert "range 1 (ledgers 10002-20001): partial" in r.stdout
    assert f"chunk {c}" in r.stdout
    assert states(cfg) == {0: "COMPLETE"}  # range 1 is absent, not COMPLETE

    r = backfill(cfg)
    assert r.returncode == 0, r.stderr[-2000:]
    assert states(cfg) == {0: "COMPLETE", 1: "COMPLETE"}
    v = cli("verify", "--config-path", str(cfg), "--json")
    assert v.returncode == 0, v.stdout[-2000:]
    h, seq = some_tx(lake, 10_002)
    q = cli("get-transaction-by-hash", h, "--config-path", str(cfg))
    assert q.returncode == 0 and json.loads(q.stdout) == {"ledger_sequence": seq}


def test_refuses_without_yes_and_while_locked(copy):
    _, cfg, data = copy
    shutil.rmtree(data / "meta")
    r = rebuild(cfg)  # stdin is not a terminal: no silent replacement
    assert r.returncode == 2 and "--yes" in r.stderr
    assert not (data / "meta" / "rocksdb").exists()

    from rpcbackfill.orchestration.lock import DataDirLock

    with DataDirLock(data):
        r = rebuild(cfg, "--yes")
    assert r.returncode != 0 and "in use" in r.stderr
    assert not (data / "meta" / "rocksdb").exists()
