"""RecSplit shard index: build/lookup correctness, absent keys, adversarial keys, file safety."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpcbackfill import _recsplit
from rpcbackfill.errors import CorruptStoreError, IndexBuildError, UnsupportedFormatError
from rpcbackfill.index import (
    ShardIndex,
    TxHashIndex,
    TxHashSpill,
    build_shard,
    compact_shard,
    recsplit,
    sortedfile,
    verify_shard,
)
from rpcbackfill.paths import index_shard_path as shard_index_path
from rpcbackfill.paths import spill_shard_path as shard_file

RANGE_START = 20_000_002


def _records(keys: np.ndarray, seqs: np.ndarray) -> np.ndarray:
    n = keys.shape[0]
    recs = np.zeros((n, 36), np.uint8)
    recs[:, :32] = keys
    recs[:, 32:] = seqs.astype("<u4").view(np.uint8).reshape(n, 4)
    return recs


def _build(tmp_path, keys: np.ndarray, seqs: np.ndarray, name="s", **kw):
    """spill file -> compact -> build; returns (sorted path, idx path, stats)."""
    spill = tmp_path / f"{name}-spill"
    spill.mkdir(parents=True, exist_ok=True)
    shard_file(spill, 0).write_bytes(_records(keys, seqs).tobytes())
    sp = compact_shard(spill, 0, tmp_path / f"{name}-sorted")
    idx = tmp_path / f"{name}.idx"
    stats = build_shard(sp, idx, RANGE_START, keys.shape[0], **kw)
    return sp, idx, stats


def _random(rng, n):
    keys = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    keys = np.unique(keys, axis=0) if n > 1 else keys
    rng.shuffle(keys)
    seqs = rng.integers(RANGE_START, RANGE_START + (1 << 24), keys.shape[0]).astype(np.uint32)
    return keys, seqs


def _check_all(idx, keys, seqs):
    with ShardIndex(idx) as ix:
        assert ix.n_keys == keys.shape[0]
        batched = ix.lookup_many(keys)
        assert batched.dtype == np.uint32
        assert np.array_equal(batched, seqs)
        assert np.array_equal(ix.lookup_many(keys.tobytes()), seqs)
        step = max(1, keys.shape[0] // 2000)
        for i in range(0, keys.shape[0], step):
            assert ix.lookup(keys[i].tobytes()) == int(seqs[i])


SIZES = [0, 1, 2, 3, 7, 8, 9, 31, 32, 33, 95, 96, 97, 193, 999, 1000, 1001, 2500, 10_000]


@pytest.mark.parametrize("n", SIZES)
def test_every_key_resolves(tmp_path, n):
    keys, seqs = _random(np.random.default_rng(n), n)
    sp, idx, stats = _build(tmp_path, keys, seqs)
    assert stats.n_keys == keys.shape[0] and stats.attempts == 1
    _check_all(idx, keys, seqs)
    verify_shard(idx, sp, RANGE_START, keys.shape[0])


def test_200k_keys_size_and_false_positives(tmp_path):
    rng = np.random.default_rng(200)
    keys, seqs = _random(rng, 200_000)
    sp, idx, stats = _build(tmp_path, keys, seqs)
    _check_all(idx, keys, seqs)
    verify_shard(idx, sp, RANGE_START, keys.shape[0])
    assert stats.bytes_per_key < 4.3  # 4 bytes value+fingerprint + ~1.75 bits MPHF + header
    assert stats.mphf_bits_per_key < 2.0
    absent = rng.integers(0, 256, (100_000, 32), dtype=np.uint8)
    with ShardIndex(idx) as ix:
        fp = float(np.mean(ix.lookup_many(absent) != 0))
        single_fp = sum(ix.lookup(bytes(k)) is not None for k in absent[:5000]) / 5000
    assert 1 / 256 / 2 < fp < 2 / 256  # 8-bit fingerprint: ~1/256 of absent keys survive
    assert single_fp < 4 / 256


def test_adversarial_structured_keys(tmp_path):
    base = np.random.default_rng(5).integers(0, 256, 32, dtype=np.uint8)
    # keys differing only in the last byte, then only in the last two bytes
    k1 = np.repeat(base[None, :], 256, axis=0)
    k1[:, 31] = np.arange(256)
    k2 = np.repeat(base[None, :], 20_000, axis=0)
    v = np.arange(20_000, dtype=">u2").view(np.uint8).reshape(-1, 2)
    k2[:, 30:] = v
    k2[:, 0] ^= 0x0F  # distinct from k1, same first hex digit
    # keys that are all-zero except one bit
    k3 = np.zeros((256, 32), np.uint8)
    for i in range(256):
        k3[i, i // 8] = 1 << (i % 8)
    k3[:, 0] &= 0x0F
    keys = np.unique(np.concatenate([k1, k2, k3]), axis=0)
    seqs = (RANGE_START + np.arange(keys.shape[0]) % 5).astype(np.uint32)
    sp, idx, stats = _build(tmp_path, keys, seqs)
    assert stats.max_bucket < 3 * _recsplit.BUCKET_SIZE  # salted buckets stay balanced
    _check_all(idx, keys, seqs)


def test_salt_retry_after_collision(tmp_path):
    keys, seqs = _random(np.random.default_rng(11), 3000)
    sp, idx, stats = _build(tmp_path, keys, seqs, salt=42, forced_collisions=2)
    assert stats.attempts == 3 and stats.split_salt != 42
    _check_all(idx, keys, seqs)
    with pytest.raises(IndexBuildError, match="attempts"):
        build_shard(sp, tmp_path / "again.idx", RANGE_START, keys.shape[0], forced_collisions=recsplit.MAX_ATTEMPTS)
    assert not (tmp_path / "again.idx").exists()


def test_same_salt_gives_identical_file(tmp_path):
    keys, seqs = _random(np.random.default_rng(12), 5000)
    sp, idx, _ = _build(tmp_path, keys, seqs, salt=99)
    build_shard(sp, tmp_path / "b.idx", RANGE_START, keys.shape[0], salt=99)
    assert idx.read_bytes() == (tmp_path / "b.idx").read_bytes()


def test_default_salts_are_deterministic(tmp_path):
    """No salt given: the split salt derives from the sorted file's bucket salt, so a rebuild
    (e.g. after a crash) writes the same bytes; retries derive further salts the same way."""
    keys, seqs = _random(np.random.default_rng(14), 4000)
    sp, idx, st = _build(tmp_path, keys, seqs)
    st2 = build_shard(sp, tmp_path / "b.idx", RANGE_START, keys.shape[0])
    assert idx.read_bytes() == (tmp_path / "b.idx").read_bytes()
    assert st.split_salt == st2.split_salt == recsplit.derive_split_salt(st.bucket_salt, 1)
    r1 = build_shard(sp, tmp_path / "r1.idx", RANGE_START, keys.shape[0], forced_collisions=1)
    build_shard(sp, tmp_path / "r2.idx", RANGE_START, keys.shape[0], forced_collisions=1)
    assert r1.attempts == 2 and r1.split_salt == recsplit.derive_split_salt(st.bucket_salt, 2)
    assert (tmp_path / "r1.idx").read_bytes() == (tmp_path / "r2.idx").read_bytes()
    _check_all(tmp_path / "r1.idx", keys, seqs)


def test_count_value_and_order_errors(tmp_path):
    keys, seqs = _random(np.random.default_rng(13), 500)
    sp, idx, _ = _build(tmp_path, keys, seqs)
    with pytest.raises(CorruptStoreError, match="500"):
        build_shard(sp, tmp_path / "x.idx", RANGE_START, 499)
    with pytest.raises(CorruptStoreError):
        verify_shard(idx, sp, RANGE_START, 501)
    with pytest.raises(CorruptStoreError, match="range start"):
        verify_shard(idx, sp, RANGE_START + 1, 500)
    # ledger below the range start / beyond 2^24 ledgers after it
    for bad in (RANGE_START - 1, RANGE_START + (1 << 24)):
        s2 = seqs.copy()
        s2[100] = bad
        with pytest.raises(IndexBuildError, match=str(bad)):
            _build(tmp_path, keys, s2, name=f"bad{bad}")
    # records out of bucket order
    n, salt = sortedfile.read_header(sp)
    body = np.frombuffer(sp.read_bytes()[sortedfile.HEADER_SIZE :], np.uint8).reshape(-1, 36)[::-1]
    rev = tmp_path / "rev.sorted"
    rev.write_bytes(sortedfile.pack_header(n, salt) + body.tobytes())
    with pytest.raises(CorruptStoreError, match="order"):
        build_shard(rev, tmp_path / "rev.idx", RANGE_START, n)
    assert not (tmp_path / "x.idx").exists() and not (tmp_path / "rev.idx").exists()


def test_verify_detects_wrong_ledger_and_checksum(tmp_path):
    keys, seqs = _random(np.random.default_rng(14), 4000)
    sp, idx, _ = _build(tmp_path, keys, seqs)
    verify_shard(idx, sp, RANGE_START, 4000)
    # same keys, other ledgers: the index must disagree
    n, salt = sortedfile.read_header(sp)
    body = np.frombuffer(sp.read_bytes()[sortedfile.HEADER_SIZE :], np.uint8).reshape(-1, 36).copy()
    body[1234, 32] ^= 1
    other = tmp_path / "other.sorted"
    other.write_bytes(sortedfile.pack_header(n, salt) + body.tobytes())
    with pytest.raises(CorruptStoreError, match=bytes(body[1234, :32]).hex()):
        verify_shard(idx, other, RANGE_START, 4000)
    # flip one byte anywhere after the header -> checksum mismatch
    raw = bytearray(idx.read_bytes())
    for pos in (recsplit.HEADER_SIZE + 5, len(raw) // 2, len(raw) - 20):
        bad = bytearray(raw)
        bad[pos] ^= 0x40
        idx.write_bytes(bytes(bad))
        with pytest.raises(CorruptStoreError, match="checksum"):
            verify_shard(idx, sp, RANGE_START, 4000)
    idx.write_bytes(bytes(raw))
    verify_shard(idx, sp, RANGE_START, 4000)


def test_version_refused_and_truncation_never_crashes(tmp_path):
    keys, seqs = _random(np.random.default_rng(15), 3000)
    sp, idx, _ = _build(tmp_path, keys, seqs)
    raw = idx.read_bytes()
    v2 = bytearray(raw)
    struct.pack_into("<I", v2, 8, 2)
    idx.write_bytes(bytes(v2))
    with pytest.raises(UnsupportedFormatError, match="version 2"):
        ShardIndex(idx)
    idx.write_bytes(b"NOTANIDX" + raw[8:])
    with pytest.raises(CorruptStoreError, match="magic"):
        ShardIndex(idx)
    for cut in (0, 7, 12, 100, recsplit.HEADER_SIZE - 1, recsplit.HEADER_SIZE, len(raw) // 2, len(raw) - 1):
        idx.write_bytes(raw[:cut])
        with pytest.raises(CorruptStoreError):
            ShardIndex(idx)
    # header fields pointing outside the file are refused too
    bad = bytearray(raw)
    off = recsplit._HEADER.size - 4 - 8  # file_size field precedes crc32
    f = dict(zip([n for n, _ in recsplit._HEADER_FIELDS], recsplit._HEADER.unpack_from(raw, 0)))
    hdr = list(f.values())
    names = [n for n, _ in recsplit._HEADER_FIELDS]
    hdr[names.index("bits_off")] = len(raw) - 8
    bad[: recsplit._HEADER.size] = recsplit._HEADER.pack(*hdr)
    idx.write_bytes(bytes(bad))
    with pytest.raises(CorruptStoreError, match="section"):
        ShardIndex(idx)
    assert off > 0
    idx.write_bytes(raw)
    with ShardIndex(idx) as ix:
        assert ix.lookup(keys[0].tobytes()) == int(seqs[0])
    with pytest.raises(ValueError, match="closed"):
        ix.lookup(keys[0].tobytes())
    with pytest.raises(ValueError):
        ShardIndex(idx).lookup(b"short")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    keys=st.lists(st.binary(min_size=32, max_size=32), unique=True, max_size=400),
    data=st.data(),
)
def test_hypothesis_key_sets(tmp_path_factory, keys, data):
    tmp = tmp_path_factory.mktemp("hyp")
    seqs = data.draw(
        st.lists(st.integers(RANGE_START, RANGE_START + (1 << 24) - 1), min_size=len(keys), max_size=len(keys))
    )
    k = np.frombuffer(b"".join(keys), np.uint8).reshape(-1, 32)
    s = np.array(seqs, dtype=np.uint32)
    sp, idx, _ = _build(tmp, k, s)
    _check_all(idx, k, s)
    verify_shard(idx, sp, RANGE_START, len(keys))


def test_full_range_pipeline_with_real_hashes(tmp_path, fixture_ledgers):
    """Real transaction hashes of the fixture ledgers: spill -> compact -> build -> verify -> query."""
    ledgers = [(fl.seq, b"".join(fl.expected_hashes)) for fl in fixture_ledgers if fl.expected_hashes]
    by_range: dict[int, list] = {}
    for seq, hs in ledgers:  # one index covers one range: keep the range with most fixture ledgers
        by_range.setdefault((seq - 2) // 10_000_000, []).append((seq, hs))
    rid = max(by_range, key=lambda r: len(by_range[r]))
    ledgers = by_range[rid]
    seen, uniq = set(), []
    for seq, hs in sorted(ledgers):
        hs = b"".join(hs[i : i + 32] for i in range(0, len(hs), 32) if hs[i : i + 32] not in seen)
        seen.update(hs[i : i + 32] for i in range(0, len(hs), 32))
        uniq.append((seq, hs))
    assert seen, "fixtures carry no expected hashes"
    start = rid * 10_000_000 + 2
    rng = np.random.default_rng(16)
    extra = rng.integers(0, 256, (20_000, 32), dtype=np.uint8)  # pad the shards with synthetic keys
    with TxHashSpill(tmp_path / "active") as spill:
        for seq, hs in uniq:
            spill.add(seq, hs)
        for i in range(0, extra.shape[0], 500):
            spill.add(start + 1 + i // 500, extra[i : i + 500].tobytes())
        counts = spill.sync()
    for x in range(16):
        p = compact_shard(tmp_path / "active", x, tmp_path / "sorted", mem_limit_bytes=100_000)
        build_shard(p, shard_index_path(tmp_path, x), start, counts[x])
        verify_shard(shard_index_path(tmp_path, x), p, start, counts[x])
    with TxHashIndex(tmp_path, start) as ix:
        assert ix.n_keys == sum(counts)
        for seq, hs in uniq:
            for i in range(0, len(hs), 32):
                assert ix.lookup(hs[i : i + 32]) == seq
        got = ix.lookup_many(extra)
        assert np.array_equal(got, start + 1 + np.arange(extra.shape[0]) // 500)
        assert np.array_equal(ix.lookup_many(extra.tobytes()), got)


def test_scalar_and_simd_searches_write_identical_files(tmp_path):
    keys, seqs = _random(np.random.default_rng(17), 20_000)
    sp, idx, _ = _build(tmp_path, keys, seqs, salt=5)
    prev = _recsplit.set_simd(not _recsplit.simd_enabled())
    try:
        build_shard(sp, tmp_path / "other.idx", RANGE_START, keys.shape[0], salt=5)
    finally:
        _recsplit.set_simd(prev)
    assert (tmp_path / "other.idx").read_bytes() == idx.read_bytes()
    _check_all(tmp_path / "other.idx", keys, seqs)


def test_golomb_parameters_are_sane():
    # leaves need m^m/m! seeds on average: the Rice parameter grows with m, 8 keys ~ log2(416 ln2)
    ks = [_recsplit.golomb_params(m)[0] for m in range(2, _recsplit.LEAF + 1)]
    assert ks == sorted(ks) and 6 <= ks[-1] <= 10
    k, fixed, nodes = _recsplit.golomb_params(1000)
    assert nodes > 1000 // _recsplit.LEAF and fixed > k
    assert _recsplit.golomb_params(1) == (0, 0, 0)


# SHA-256 of (Rice parameter, fixed bits, nodes) of every bucket size 0..MAX_BUCKET, packed
# "<BII": the tables are computed at run time (exp, lgamma, log1p), are not stored in index files,
# and decide how a reader walks them, so a change of any entry -- a code change, or another libm
# rounding a near-tie the other way -- would make existing indexes unreadable.  Recorded with the
# full 48-step scan of rs_best_k, before it learned to stop at the minimum.
GOLOMB_TABLES_SHA256 = "010a237211129a3d779ad6d9a6d376f388abbb4dd04d93f259ce4a8c41896453"


def test_golomb_tables_are_pinned():
    import hashlib
    import struct

    h = hashlib.sha256()
    for m in range(_recsplit.MAX_BUCKET + 1):
        h.update(struct.pack("<BII", *_recsplit.golomb_params(m)))
    assert _recsplit.MAX_BUCKET == 65536
    assert h.hexdigest() == GOLOMB_TABLES_SHA256


def test_cancellation_leaves_no_partial_files(tmp_path):
    import threading

    from rpcbackfill.errors import Cancelled

    keys, seqs = _random(np.random.default_rng(18), 3000)
    sp, idx, _ = _build(tmp_path, keys, seqs)
    ev = threading.Event()
    ev.set()
    with pytest.raises(Cancelled):
        build_shard(sp, tmp_path / "c.idx", RANGE_START, 3000, cancel=ev)
    with pytest.raises(Cancelled):
        verify_shard(idx, sp, RANGE_START, 3000, cancel=ev)
    with pytest.raises(Cancelled):
        compact_shard(tmp_path / "s-spill", 0, tmp_path / "c-sorted", cancel=ev)
    leftovers = [p.name for p in tmp_path.rglob("*") if ".tmp-" in p.name or p.name == "c.idx"]
    assert leftovers == []
    assert not (tmp_path / "c-sorted" / "cf-0.sorted").exists()


def test_txhash_index_requires_every_shard(tmp_path):
    keys, seqs = _random(np.random.default_rng(19), 100)
    sp, idx, _ = _build(tmp_path, keys, seqs)
    (tmp_path / "r" / "index").mkdir(parents=True)
    for x in range(15):
        os.link(idx, shard_index_path(tmp_path / "r", x))
    with pytest.raises(CorruptStoreError, match="cf-f.idx is missing"):
        TxHashIndex(tmp_path / "r")
    os.link(idx, shard_index_path(tmp_path / "r", 15))
    with pytest.raises(CorruptStoreError, match="range start"):
        TxHashIndex(tmp_path / "r", RANGE_START + 10)
    with TxHashIndex(tmp_path / "r", RANGE_START) as ix:
        k = keys[0].tobytes()
        # every shard holds the same keys here; lookups route by the first hex digit
        assert ix.lookup(k) == int(seqs[0])
        with pytest.raises(ValueError):
            ix.lookup(k[:31])


def test_builder_rejects_duplicates_in_a_sorted_file(tmp_path):
    from rpcbackfill.errors import DuplicateKeyError

    keys, seqs = _random(np.random.default_rng(20), 2000)
    sp, idx, _ = _build(tmp_path, keys, seqs)
    n, salt = sortedfile.read_header(sp)
    body = np.frombuffer(sp.read_bytes()[sortedfile.HEADER_SIZE :], np.uint8).reshape(-1, 36)
    dup = body[700].copy()
    dup[32:] = np.frombuffer((RANGE_START + 77).to_bytes(4, "little"), np.uint8)
    body = np.insert(body, 701, dup, axis=0)
    bad = tmp_path / "dup.sorted"
    bad.write_bytes(sortedfile.pack_header(n + 1, salt) + body.tobytes())
    with pytest.raises(DuplicateKeyError, match=bytes(dup[:32]).hex()) as ei:
        build_shard(bad, tmp_path / "dup.idx", RANGE_START, n + 1)
    assert str(RANGE_START + 77) in str(ei.value)
