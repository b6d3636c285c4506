"""TxHashSpill: routing, durability counts, resume/truncate, corruption."""

from __future__ import annotations

import os

import numpy as np
import pytest

from rpcbackfill.errors import CorruptStoreError
from rpcbackfill.index import SpillConfig, TxHashSpill
from rpcbackfill.paths import spill_shard_path as shard_file
from rpcbackfill.records import RECORD_SIZE as RECORD


def _ledgers(rng, n_ledgers, first=1000):
    out = []
    for i in range(n_ledgers):
        k = int(rng.integers(0, 40))
        out.append((first + i, rng.integers(0, 256, (k, 32), dtype=np.uint8).tobytes()))
    return out


def _expected(ledgers):
    per = [bytearray() for _ in range(16)]
    for seq, hashes in ledgers:
        for j in range(0, len(hashes), 32):
            h = hashes[j : j + 32]
            per[h[0] >> 4] += h + seq.to_bytes(4, "little")
    return per


def _contents(d):
    return [shard_file(d, i).read_bytes() for i in range(16)]


def test_round_trip_routes_every_hash(tmp_path):
    rng = np.random.default_rng(7)
    ledgers = _ledgers(rng, 300)
    sp = TxHashSpill(tmp_path, config=SpillConfig(flush_bytes=4096))  # small: forces mid-run flushes
    for seq, hs in ledgers:
        sp.add(seq, hs)
    counts = sp.sync()
    sp.close()
    sp.close()  # idempotent
    exp = _expected(ledgers)
    assert counts == [len(e) // RECORD for e in exp]
    assert sum(counts) == sum(len(h) // 32 for _, h in ledgers)
    assert _contents(tmp_path) == [bytes(e) for e in exp]
    for i, data in enumerate(_contents(tmp_path)):
        assert all(data[j] >> 4 == i for j in range(0, len(data), RECORD))


def test_resume_truncates_to_checkpointed_counts(tmp_path):
    rng = np.random.default_rng(8)
    ledgers = _ledgers(rng, 200)
    sp = TxHashSpill(tmp_path)
    for seq, hs in ledgers[:100]:
        sp.add(seq, hs)
    checkpoint = sp.sync()
    for seq, hs in ledgers[100:150]:  # written but never checkpointed ("crash")
        sp.add(seq, hs)
    sp.close()
    assert sum(len(c) for c in _contents(tmp_path)) > sum(checkpoint) * RECORD
    sp = TxHashSpill(tmp_path, counts=checkpoint)
    assert sp.counts == checkpoint
    assert _contents(tmp_path) == [bytes(e) for e in _expected(ledgers[:100])]
    for seq, hs in ledgers[100:]:
        sp.add(seq, hs)
    final = sp.sync()
    sp.close()
    assert _contents(tmp_path) == [bytes(e) for e in _expected(ledgers)]
    assert final == [len(e) // RECORD for e in _expected(ledgers)]


def test_shorter_shard_than_checkpoint_is_corrupt(tmp_path):
    rng = np.random.default_rng(9)
    sp = TxHashSpill(tmp_path)
    for seq, hs in _ledgers(rng, 50):
        sp.add(seq, hs)
    counts = sp.sync()
    sp.close()
    victim = max(range(16), key=lambda i: counts[i])
    p = shard_file(tmp_path, victim)
    os.truncate(p, p.stat().st_size - RECORD - 5)
    with pytest.raises(CorruptStoreError, match=f"cf-{victim:x}.spill"):
        TxHashSpill(tmp_path, counts=counts)


def test_fresh_store_discards_old_files_and_validates_input(tmp_path):
    shard_file(tmp_path, 3).write_bytes(b"\x30" * RECORD * 2)
    with TxHashSpill(tmp_path) as sp:
        assert sp.counts == [0] * 16
        with pytest.raises(ValueError):
            sp.add(5, b"\x00" * 31)
        with pytest.raises(ValueError):
            sp.add(-1, b"\x00" * 32)
        sp.add(5, b"")
        assert sp.sync() == [0] * 16
    assert shard_file(tmp_path, 3).stat().st_size == 0
    with pytest.raises(ValueError):
        TxHashSpill(tmp_path, counts=[0] * 15)
    with pytest.raises(ValueError, match="closed"):
        sp.add(5, b"\x00" * 32)


def test_remove_shard_spill_deletes_one_shard_idempotently(tmp_path):
    from rpcbackfill.index.spill import remove_shard_spill

    rng = np.random.default_rng(9)
    with TxHashSpill(tmp_path) as s:
        for seq, hashes in _ledgers(rng, 50):
            s.add(seq, hashes)
        s.sync()
    before = {i: shard_file(tmp_path, i).read_bytes() for i in range(16)}
    remove_shard_spill(tmp_path, 3)
    assert not shard_file(tmp_path, 3).exists()
    assert {i: shard_file(tmp_path, i).read_bytes() for i in range(16) if i != 3} == {
        i: b for i, b in before.items() if i != 3
    }
    remove_shard_spill(tmp_path, 3)  # a resume repeats it after a crash: no error
    remove_shard_spill(tmp_path / "gone", 0)  # nor when the whole store is already deleted
