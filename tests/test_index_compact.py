"""Compaction: bounded-memory ordering by salted bucket hash, duplicate detection."""

from __future__ import annotations

import numpy as np
import pytest

from rpcbackfill import _recsplit
from rpcbackfill.errors import CorruptStoreError, DuplicateKeyError
from rpcbackfill.index import compact, compact_shard, sortedfile
from rpcbackfill.paths import spill_shard_path as shard_file


def _write_spill(d, shard, recs: np.ndarray):
    d.mkdir(parents=True, exist_ok=True)
    shard_file(d, shard).write_bytes(recs.tobytes())


def _records(rng, n):
    recs = np.zeros((n, 36), np.uint8)
    recs[:, :32] = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    recs[:, 32:] = rng.integers(2, 1 << 24, n).astype("<u4").view(np.uint8).reshape(n, 4)
    return recs


def _read_sorted(p):
    n, salt = sortedfile.read_header(p)
    body = p.read_bytes()[sortedfile.HEADER_SIZE :]
    return n, salt, np.frombuffer(body, np.uint8).reshape(-1, 36)


def _assert_sorted_permutation(out, recs, salt):
    h = _recsplit.key_hashes(np.ascontiguousarray(out[:, :32]).reshape(-1), salt)
    assert np.all(h[1:] >= h[:-1])
    assert sorted(map(bytes, out)) == sorted(map(bytes, recs))


@pytest.mark.parametrize("mem_limit", [1 << 30, 40_000])
def test_compaction_sorts_by_salted_bucket_hash(tmp_path, monkeypatch, mem_limit):
    rng = np.random.default_rng(1)
    recs = _records(rng, 5000)
    _write_spill(tmp_path / "spill", 5, recs)
    calls = []
    real = compact._partition_and_sort
    monkeypatch.setattr(compact, "_partition_and_sort", lambda *a: calls.append(a[1]) or real(*a))
    p = compact_shard(tmp_path / "spill", 5, tmp_path / "sorted", mem_limit_bytes=mem_limit)
    assert p == tmp_path / "sorted" / "cf-5.sorted"
    n, salt, out = _read_sorted(p)
    assert n == 5000
    _assert_sorted_permutation(out, recs, salt)
    if mem_limit < 5000 * compact.BYTES_PER_RECORD_IN_SORT:
        assert calls, "small memory limit must use the partitioned path"
        parts = list((tmp_path / "sorted").iterdir())
        assert parts == [p], "partition files must be cleaned up"
    else:
        assert not calls


def test_partitions_larger_than_limit_are_split_again(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    recs = _records(rng, 3000)
    _write_spill(tmp_path / "spill", 0, recs)
    depth = []
    real = compact._partition_and_sort
    monkeypatch.setattr(compact, "_partition_and_sort", lambda *a: depth.append(a[3]) or real(*a))
    # cap = 100 records but the first pass only gets 1 bit of partitioning -> recursion
    monkeypatch.setattr(compact, "BYTES_PER_RECORD_IN_SORT", 700)
    p = compact_shard(tmp_path / "spill", 0, tmp_path / "out", mem_limit_bytes=70_000)
    _, salt, out = _read_sorted(p)
    _assert_sorted_permutation(out, recs, salt)
    assert depth[0] == 0


@pytest.mark.parametrize("mem_limit", [1 << 30, 20_000])
@pytest.mark.parametrize("same_ledger", [False, True])
def test_duplicate_hash_is_rejected_naming_both_ledgers(tmp_path, mem_limit, same_ledger):
    rng = np.random.default_rng(3)
    recs = _records(rng, 2000)
    dup = recs[1234].copy()
    if not same_ledger:
        dup[32:] = np.array([7, 0, 0, 0], np.uint8)
    recs = np.insert(recs, 17, dup, axis=0)
    _write_spill(tmp_path / "spill", 1, recs)
    l1 = int.from_bytes(bytes(recs[1235, 32:]), "little")
    l2 = int.from_bytes(bytes(dup[32:]), "little")
    with pytest.raises(DuplicateKeyError) as ei:
        compact_shard(tmp_path / "spill", 1, tmp_path / "sorted", mem_limit_bytes=mem_limit)
    msg = str(ei.value)
    assert bytes(dup[:32]).hex() in msg and str(l1) in msg and str(l2) in msg
    assert not (tmp_path / "sorted" / "cf-1.sorted").exists()
    assert list((tmp_path / "sorted").iterdir()) == []


def test_empty_and_torn_spill(tmp_path):
    _write_spill(tmp_path / "spill", 0xF, np.zeros((0, 36), np.uint8))
    p = compact_shard(tmp_path / "spill", 15, tmp_path / "sorted")
    assert sortedfile.read_header(p)[0] == 0
    shard_file(tmp_path / "spill", 2).write_bytes(b"\x20" * 37)
    with pytest.raises(CorruptStoreError, match="multiple of 36"):
        compact_shard(tmp_path / "spill", 2, tmp_path / "sorted")
    with pytest.raises(ValueError):
        compact_shard(tmp_path / "spill", 16, tmp_path / "sorted")


@pytest.mark.parametrize("mem_limit", [1 << 30, 20_000])
def test_compaction_stops_at_checkpointed_count(tmp_path, mem_limit):
    rng = np.random.default_rng(4)
    recs = _records(rng, 1500)
    _write_spill(tmp_path / "spill", 3, recs)
    p = compact_shard(tmp_path / "spill", 3, tmp_path / "sorted", mem_limit_bytes=mem_limit, n_records=1200)
    n, salt, out = _read_sorted(p)
    assert n == 1200
    _assert_sorted_permutation(out, recs[:1200], salt)
    with pytest.raises(CorruptStoreError, match="1501"):
        compact_shard(tmp_path / "spill", 3, tmp_path / "sorted", n_records=1501)


def test_salt_is_a_function_of_content_and_identity(tmp_path):
    """Same records (in any order, either memory path) -> byte-identical output; any change of a
    key, the range start or the shard number -> a different salt."""
    rng = np.random.default_rng(5)
    recs = _records(rng, 3000)
    recs[:, 0] = (recs[:, 0] & 0x0F) | 0x70  # all in shard 7

    def run(name, rows, *, shard=7, range_start=20_000_002, mem_limit=1 << 30):
        d = tmp_path / name
        _write_spill(d / "spill", shard, rows)
        p = compact_shard(d / "spill", shard, d / "sorted", mem_limit_bytes=mem_limit, range_start=range_start)
        return p.read_bytes()

    ref = run("ref", recs)
    salt = sortedfile.HEADER.unpack(ref[: sortedfile.HEADER_SIZE])[4]
    assert run("again", recs) == ref
    assert run("shuffled", recs[rng.permutation(recs.shape[0])]) == ref
    assert run("partitioned", recs, mem_limit=40_000) == ref  # external path, same bytes
    other = recs.copy()
    other[100, 31] ^= 1
    changed = [
        run("key", other),
        run("start", recs, range_start=30_000_002),
        run("shard", recs, shard=8),
        run("fewer", recs[:-1]),
    ]
    salts = {sortedfile.HEADER.unpack(b[: sortedfile.HEADER_SIZE])[4] for b in changed}
    assert salt not in salts and len(salts) == len(changed)


def test_digest_ignores_record_order_and_ledgers_of_blocks():
    rng = np.random.default_rng(6)
    recs = _records(rng, 1000)
    whole = compact.keys_digest([recs])
    parts = compact.keys_digest([recs[500:].tobytes(), recs[:200], recs[200:500].tobytes()])
    assert whole == parts and len(whole) == 32
    assert compact.keys_digest([recs[:-1]]) != whole
