"""``stellar-rpc verify`` through the real CLI on a data directory made by a real backfill.

One generated lake (ledgers 2..20001, two ranges of 10,000) is backfilled once by
``stellar-rpc --backfill``; each damage test works on its own copy of the data directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lib import REPO
from tests.lib.orchestration import make_lake, write_backfill_config

FIRST, LAST = 2, 20001


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for k in [k for k in env if k.startswith("STELLAR_RPC_")]:
        del env[k]
    return subprocess.run(
        [sys.executable, "-m", "rpcbackfill", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory) -> tuple[Path, Path]:
    """(lake, pristine root holding backfill.toml and data/) after a real backfill."""
    base = tmp_path_factory.mktemp("verify")
    lake = make_lake(base / "lake", FIRST, LAST, seed=11, tx_per_ledger=2.0)
    root = base / "pristine"
    root.mkdir()
    cfg = write_backfill_config(root, lake)
    r = cli("--backfill", "--start-ledger", str(FIRST), "--end-ledger", str(LAST), "--config-path", str(cfg))
    assert r.returncode == 0, r.stderr[-3000:]
    return lake, root


@pytest.fixture()
def copy(backfilled, tmp_path) -> tuple[Path, Path]:
    """(config, data dir) of a private copy of the backfilled data directory."""
    lake, pristine = backfilled
    shutil.copytree(pristine / "data", tmp_path / "data")
    return write_backfill_config(tmp_path, lake), tmp_path / "data"


def verify(cfg: Path, *extra: str) -> tuple[int, dict, str]:
    r = cli("verify", "--config-path", str(cfg), "--json", *extra)
    return r.returncode, json.loads(r.stdout), r.stderr


def test_clean_data_dir_passes_every_check(copy):
    cfg, _ = copy
    rc, rep, err = verify(cfg)
    assert rc == 0, err[-2000:]
    assert rep["clean"] is True and rep["problems"] == []
    assert [r["range"] for r in rep["ranges"]] == [0, 1]
    for r in rep["ranges"]:
        assert r["ok"] and r["chunks_checked"] == 1 and r["ledgers_checked"] == 10_000
        assert r["shards_checked"] == 16
        assert r["keys_found"] > 1000 and r["keys_checked"] == r["keys_found"]
        assert r["meta_state"] == "COMPLETE"
    # progress and a summary are logged
    assert "verify: range 0" in err and "verify: range 1" in err and "verify: done" in err
    # the text report says so too
    r = cli("verify", "--config-path", str(cfg))
    assert r.returncode == 0 and "clean: every check passed" in r.stdout


def test_sample_and_against_source_on_a_clean_dir(copy):
    cfg, _ = copy
    rc, rep, err = verify(cfg, "--sample", "3", "--against-source")
    assert rc == 0, err[-2000:]
    assert rep["sample"] == 3 and rep["against_source"] is True
    for r in rep["ranges"]:
        assert r["keys_checked"] == 16 * 3  # every shard holds more than 3 keys here
        assert r["ledgers_compared"] == 10_000


def test_verify_does_not_need_the_meta_store(copy):
    cfg, data = copy
    shutil.rmtree(data / "meta")
    rc, rep, err = verify(cfg)
    assert rc == 0, err[-2000:]
    assert [r["range"] for r in rep["ranges"]] == [0, 1]
    assert all(r["meta_state"] is None and r["ledgers_checked"] == 10_000 for r in rep["ranges"])


def _only(rep: dict, kind: str) -> list[dict]:
    return [p for p in rep["problems"] if p["kind"] == kind]


def test_truncated_data_file_is_named(copy):
    cfg, data = copy
    path = data / "immutable/ledgers/chunks/0000/000000.data"
    os.truncate(path, path.stat().st_size - 1000)
    rc, rep, err = verify(cfg)
    assert rc == 1
    assert "error: verify found 1 problems" in err
    [p] = rep["problems"]
    assert p["kind"] == "chunk" and p["chunk"] == 0 and p["range"] == 0
    assert p["path"] == str(path) and "truncated" in p["message"]
    assert [r["ok"] for r in rep["ranges"]] == [False, True]
    # the text report names it as well
    r = cli("verify", "--config-path", str(cfg))
    assert r.returncode == 1 and "chunk 0:" in r.stdout and "000000.data is truncated" in r.stdout


def test_flipped_byte_in_an_index_shard_is_named(copy):
    cfg, data = copy
    path = data / "immutable/txhash/0001/index/cf-3.idx"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    rc, rep, _ = verify(cfg, "--sample", "2")
    assert rc == 1
    [p] = rep["problems"]
    assert (p["kind"], p["range"], p["shard"], p["path"]) == ("shard", 1, "3", str(path))
    assert "checksum" in p["message"]


def test_deleted_chunk_is_named(copy):
    cfg, data = copy
    for ext in ("data", "index"):
        (data / f"immutable/ledgers/chunks/0000/000001.{ext}").unlink()
    rc, rep, _ = verify(cfg)
    assert rc == 1
    [p] = rep["problems"]
    assert (p["kind"], p["chunk"], p["range"]) == ("chunk", 1, 1)
    assert "missing" in p["message"] and "10002-20001" in p["message"]


def test_deleted_chunk_is_found_without_the_meta_store_too(copy):
    cfg, data = copy
    shutil.rmtree(data / "meta")
    for ext in ("data", "index"):
        (data / f"immutable/ledgers/chunks/0000/000001.{ext}").unlink()
    rc, rep, _ = verify(cfg)
    assert rc == 1
    assert [(p["kind"], p["chunk"]) for p in rep["problems"]] == [("chunk", 1)]


def test_corrupt_frame_names_the_ledger(copy):
    cfg, data = copy
    from rpcbackfill.stores.lfs import decode_index

    chunk = data / "immutable/ledgers/chunks/0000/000000"
    offsets = decode_index(chunk.with_suffix(".index").read_bytes(), chunk.with_suffix(".data").stat().st_size)
    start = int(offsets[4999])  # first byte of ledger 2 + 4999 = 5001
    path = data / "immutable/ledgers/chunks/0000/000000.data"
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(b"\0" * 8)  # destroys the zstd magic of that frame
    rc, rep, _ = verify(cfg)
    assert rc == 1
    ledgers = [p["ledger"] for p in _only(rep, "ledger")]
    assert ledgers == [5001]
    assert rep["ranges"][0]["ledgers_checked"] == 9_999


def test_against_source_names_a_ledger_that_differs(backfilled, tmp_path):
    lake, pristine = backfilled
    shutil.copytree(pristine / "data", tmp_path / "data")
    # a lake whose ledger 777 is another ledger with the same sequence (different seed)
    from rpcbackfill.devtools.lakegen import generate_lake
    from rpcbackfill.sources import layout

    other = generate_lake(
        tmp_path / "other",
        777,
        777,
        seed=99,
        tx_per_ledger=2.0,
        ledgers_per_batch=8,
        batches_per_partition=64,
        fsync=False,
    )
    assert other.ledgers == 1
    lake2 = tmp_path / "lake2"
    shutil.copytree(lake, lake2)
    schema = layout.read_manifest(lake2)
    key = layout.object_key(777, schema)
    # the file boundary holds 776..783; rebuild it with 777 swapped
    from tests.lib.lake import lake_ledgers

    lcms = [raw for _, raw in lake_ledgers(lake2, 776, 783)]
    mine = [raw for _, raw in lake_ledgers(tmp_path / "other", 777, 777)]
    lcms[777 - 776] = mine[0]
    (lake2 / key).write_bytes(layout.compress_batch(layout.encode_batch(776, lcms)))
    cfg2 = write_backfill_config(tmp_path, lake2)
    rc, rep, err = verify(cfg2, "--sample", "1", "--against-source")
    assert rc == 1, err[-2000:]
    assert [(p["kind"], p["ledger"]) for p in rep["problems"]] == [("source", 777)]
    assert rep["ranges"][0]["ledgers_compared"] == 10_000


def test_swapped_shards_fail_the_key_checks(copy):
    """Two intact shard files of the same range swapped: checksums pass, the key checks do not."""
    cfg, data = copy
    d = data / "immutable/txhash/0000/index"
    a, b = d / "cf-3.idx", d / "cf-4.idx"
    tmp = d / "swap"
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    rc, rep, _ = verify(cfg)
    assert rc == 1
    kinds = {(p["kind"], p.get("shard")) for p in rep["problems"]}
    assert kinds == {("key", "3"), ("key", "4"), ("shard", "3"), ("shard", "4")}
    counts = [p for p in rep["problems"] if p["kind"] == "shard"]
    assert all("keys but the range's ledgers have" in p["message"] for p in counts)
    assert rep["ranges"][0]["shards_checked"] == 16 and rep["ranges"][1]["ok"]


def test_unfinished_range_and_range_size_mismatch(copy):
    cfg, data = copy
    from rpcbackfill.meta.store import MetaStore

    meta = MetaStore(data / "meta" / "rocksdb")
    try:
        meta.init_backfill(2, 30001, 10_000)  # range 2 recorded, nothing on disk yet
    finally:
        meta.close()
    rc, rep, _ = verify(cfg, "--sample", "1")
    assert rc == 1
    assert [r["range"] for r in rep["ranges"]] == [0, 1, 2] and rep["ranges"][2]["meta_state"] == "PENDING"
    problems = [(p["kind"], p.get("chunk"), p.get("shard")) for p in rep["problems"]]
    assert problems[0] == ("range", None, None) and "not finished" in rep["problems"][0]["message"]
    assert ("chunk", 2, None) in problems and sum(k == "shard" for k, _, _ in problems) == 16
    assert all(p["range"] == 2 for p in rep["problems"])
    # a configuration with another range_size is refused before any check
    r = cli("verify", "--config-path", str(cfg), "--set", "backfill.range_size=20000")
    assert r.returncode == 2 and "range_size 10000" in r.stderr
