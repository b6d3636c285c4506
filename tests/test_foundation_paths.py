"""The data-directory layout (rpcbackfill.paths) and the shared record constants (rpcbackfill.records)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rpcbackfill import _recsplit, _spill, records
from rpcbackfill.config import default_config
from rpcbackfill.fsutil import TEMP_GLOB, atomic_write, temp_owner, temp_path
from rpcbackfill.index import TxHashSpill
from rpcbackfill.paths import (
    DataDirLayout,
    chunk_partial_paths,
    chunk_paths,
    index_shard_path,
    sorted_shard_path,
    spill_shard_path,
)


def test_native_modules_agree_with_records():
    # ext/txhash_record.h feeds both extensions; rpcbackfill.index refuses to import on a mismatch
    assert (_spill.NSHARDS, _spill.RECORD_SIZE) == (records.NSHARDS, records.RECORD_SIZE)
    assert _recsplit.RECORD_SIZE == records.RECORD_SIZE == records.HASH_SIZE + records.SEQ_SIZE


def test_shard_of_routes_like_the_spill(tmp_path):
    keys = [bytes([b]) + bytes(31) for b in (0x00, 0x1F, 0xA0, 0xFF)]
    spill = TxHashSpill(tmp_path)
    for i, k in enumerate(keys):
        spill.add(10 + i, k)
    counts = spill.sync()
    spill.close()
    want = [0] * records.NSHARDS
    for k in keys:
        want[records.shard_of(k)] += 1
    assert counts == want
    assert [records.shard_of(k) for k in keys] == [0, 1, 10, 15]
    assert records.shard_digit(10) == "a"
    with pytest.raises(ValueError):
        records.shard_digit(16)


def test_file_names(tmp_path):
    assert chunk_paths(tmp_path, 1234) == (
        tmp_path / "chunks" / "0001" / "001234.data",
        tmp_path / "chunks" / "0001" / "001234.index",
    )
    assert chunk_partial_paths(tmp_path, 7) == (tmp_path / "000007.data.partial", tmp_path / "000007.offsets.partial")
    assert spill_shard_path(tmp_path, 11) == tmp_path / "cf-b.spill"
    assert sorted_shard_path(tmp_path, 0) == tmp_path / "cf-0.sorted"
    assert index_shard_path(tmp_path, 15) == tmp_path / "index" / "cf-f.idx"
    with pytest.raises(ValueError):
        spill_shard_path(tmp_path, -1)


def test_layout_of_a_data_dir(tmp_path):
    cfg = default_config(tmp_path)
    lay = DataDirLayout(cfg)
    assert lay.active_ledger_dir(3) == Path(cfg.active_stores.ledger_path) / "0003"
    assert lay.spill_shard(3, 2) == Path(cfg.active_stores.txhash_path) / "0003" / "cf-2.spill"
    assert lay.sorted_shard(3, 2) == Path(cfg.active_stores.txhash_path) / "0003" / "sorted" / "cf-2.sorted"
    assert lay.index_shard(12, 10) == Path(cfg.immutable_stores.txhash_base) / "0012" / "index" / "cf-a.idx"
    assert lay.chunk_paths(5) == chunk_paths(cfg.immutable_stores.ledgers_base, 5)


def test_temp_names_round_trip_and_sweep(tmp_path):
    cfg = default_config(tmp_path)
    lay = DataDirLayout(cfg)
    data, _ = lay.chunk_paths(0)
    idx = lay.index_shard(0, 3)
    assert temp_owner(temp_path(data)) == data and temp_path(data).name.startswith(".")
    assert temp_owner(data) is None
    for final in (data, idx):
        final.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(data, b"kept")  # a published file is never reported
    stale = [data.with_name(f".{data.name}.tmp-99999"), idx.with_name(f".{idx.name}.tmp-4242")]
    other = data.with_name(".unrelated.tmp-1")  # not the temp of a file of this range
    for p in [*stale, other]:
        p.write_bytes(b"partial")
    assert sorted(lay.interrupted_writes(0, 2, 10_001)) == sorted(stale)
    assert other in data.parent.glob(TEMP_GLOB)
    assert lay.interrupted_writes(1, 10_000_002, 20_000_001) == []
    assert os.listdir(data.parent)  # nothing was deleted by the listing
