"""Meta store (spec section 4): key names, encodings, atomic checkpoints, state machines."""

from __future__ import annotations

import json
import struct

import pytest

from rpcbackfill.errors import InputError, MetaStoreError
from rpcbackfill.meta.store import (
    Checkpoint,
    LedgerPhase,
    MetaStore,
    RangeState,
    TxHashPhase,
    resume_state,
)
from rpcbackfill.records import ChunkProgress

PENDING, INGESTING, TRANSITIONING = RangeState.PENDING, RangeState.INGESTING, RangeState.TRANSITIONING
COMPLETE, FAILED = RangeState.COMPLETE, RangeState.FAILED
WRITING_LFS, IMMUTABLE = LedgerPhase.WRITING_LFS, LedgerPhase.IMMUTABLE
COMPACTING, BUILDING_RECSPLIT = TxHashPhase.COMPACTING, TxHashPhase.BUILDING_RECSPLIT
VERIFYING_RECSPLIT, TX_COMPLETE = TxHashPhase.VERIFYING_RECSPLIT, TxHashPhase.COMPLETE

RS = 10_000


@pytest.fixture
def meta(tmp_path):
    m = MetaStore(tmp_path / "meta")
    yield m
    m.close()


def test_init_backfill_writes_spec_keys(meta):
    ids = meta.init_backfill(2, 3 * RS + 1, RS)
    assert ids == [0, 1, 2]
    d = meta.dump()
    assert d["global:mode"] == b"backfill"
    assert d["global:backfill_start_ledger"] == struct.pack(">I", 2)
    assert d["global:backfill_end_ledger"] == struct.pack(">I", 3 * RS + 1)
    for rid in ids:
        assert d[f"range:{rid}:state"] == b"PENDING"
        assert d[f"range:{rid}:start_ledger"] == struct.pack(">I", rid * RS + 2)
        assert d[f"range:{rid}:end_ledger"] == struct.pack(">I", (rid + 1) * RS + 1)
        ts = d[f"range:{rid}:created_at"].decode()
        assert len(ts) == 20 and ts[10] == "T" and ts.endswith("Z")
    assert meta.range_ids() == ids


def test_range_size_may_never_change(meta):
    meta.init_backfill(2, RS + 1, RS)
    with pytest.raises(InputError, match="range_size"):
        meta.init_backfill(2, 2 * 20_000 + 1, 20_000)


def test_extending_scope_keeps_existing_ranges(meta):
    meta.init_backfill(RS + 2, 2 * RS + 1, RS)
    meta.start_ingesting(1, "/x")
    ids = meta.init_backfill(2, 3 * RS + 1, RS)
    assert ids == [0, 1, 2]
    assert meta.range_info(1).state == INGESTING
    assert meta.range_info(0).state == PENDING
    g = meta.global_info()
    assert (g["backfill_start_ledger"], g["backfill_end_ledger"]) == (2, 3 * RS + 1)


def test_checkpoint_is_one_batch_with_exact_encodings(meta):
    meta.init_backfill(2, RS + 1, RS)
    meta.start_ingesting(0, "/active/txhash/0000")
    counts = [i * 7 for i in range(16)]
    meta.checkpoint(0, Checkpoint(1001, 1000, counts, ChunkProgress(0, 1000, 123456)))
    d = meta.dump()
    assert d["range:0:ledger:last_committed_ledger"] == struct.pack(">I", 1001)
    assert d["range:0:txhash:last_committed_ledger"] == struct.pack(">I", 1001)
    assert d["range:0:ledger:count"] == struct.pack(">Q", 1000)
    cf = json.loads(d["range:0:txhash:cf_counts"])
    assert list(cf) == list("0123456789abcdef") and [cf[k] for k in cf] == counts
    assert d["range:0:ledger:open_chunk_bytes"] == struct.pack(">Q", 123456)
    info = meta.range_info(0)
    assert info.open_chunk == ChunkProgress(0, 1000, 123456)
    assert info.cf_counts == counts and info.tx_count == sum(counts)
    # a checkpoint without an open chunk removes the open-chunk keys
    meta.checkpoint(0, Checkpoint(RS + 1, RS, counts, None))
    assert meta.range_info(0).open_chunk is None
    with pytest.raises(MetaStoreError, match="precedes"):
        meta.checkpoint(0, Checkpoint(5001, 5000, counts, None))


def test_checkpoint_survives_reopen(tmp_path):
    m = MetaStore(tmp_path / "meta")
    m.init_backfill(2, RS + 1, RS)
    m.start_ingesting(0, "/s")
    m.checkpoint(0, Checkpoint(2001, 2000, [1] * 16, ChunkProgress(0, 2000, 99)))
    m.close()
    m.close()  # idempotent
    ro = MetaStore(tmp_path / "meta", read_only=True)
    info = ro.range_info(0)
    assert (info.state, info.ledger_last_committed, info.ledger_count) == (INGESTING, 2001, 2000)
    with pytest.raises(MetaStoreError, match="read-only"):
        ro.set_attempts(0, 1)
    ro.close()


def test_state_machine_rejects_skips(meta):
    meta.init_backfill(2, RS + 1, RS)
    with pytest.raises(MetaStoreError, match="PENDING -> TRANSITIONING"):
        meta.set_range_state(0, TRANSITIONING)
    with pytest.raises(MetaStoreError, match="while PENDING"):
        meta.checkpoint(0, Checkpoint(1001, 1000, [0] * 16))
    meta.start_ingesting(0, "/s")
    with pytest.raises(MetaStoreError, match="INGESTING -> COMPLETE"):
        meta.complete_range(0)
    with pytest.raises(MetaStoreError, match="WRITING_LFS while the range is INGESTING"):
        meta.set_ledger_phase(0, WRITING_LFS)
    meta.start_transition(0)
    with pytest.raises(MetaStoreError, match="cannot complete"):
        meta.complete_range(0)
    info = meta.range_info(0)
    assert (info.state, info.ledger_phase, info.txhash_phase) == (TRANSITIONING, WRITING_LFS, COMPACTING)
    with pytest.raises(MetaStoreError, match="COMPACTING -> VERIFYING_RECSPLIT"):
        meta.set_txhash_phase(0, VERIFYING_RECSPLIT)
    with pytest.raises(MetaStoreError, match="during txhash phase COMPACTING"):
        meta.mark_shard(0, "built", "3", 10)
    for x in "0123456789abcdef":
        meta.mark_shard(0, "sorted", x, f"/sorted/{x}")
    meta.set_txhash_phase(0, BUILDING_RECSPLIT)
    meta.set_txhash_phase(0, VERIFYING_RECSPLIT)
    meta.set_txhash_phase(0, TX_COMPLETE, recsplit_path="/idx")
    meta.mark_chunks_verified(0, 1)
    meta.set_ledger_phase(0, IMMUTABLE, immutable_path="/imm")
    meta.complete_range(0)
    info = meta.range_info(0)
    assert info.state == COMPLETE and info.completed_at and info.recsplit_path == "/idx"
    assert info.immutable_path == "/imm" and len(info.shard_sorted) == 16
    with pytest.raises(MetaStoreError, match="COMPLETE"):
        meta.set_range_state(0, FAILED, error="x")


def test_failed_range_resumes_where_it_was(meta):
    meta.init_backfill(2, 2 * RS + 1, RS)
    meta.start_ingesting(0, "/s")
    meta.checkpoint(0, Checkpoint(1001, 1000, [0] * 16))
    meta.set_range_state(0, FAILED, error="disk full at /x")
    info = meta.range_info(0)
    assert info.error == "disk full at /x" and resume_state(info) == INGESTING
    meta.set_range_state(0, INGESTING)
    assert meta.range_info(0).error is None
    meta.start_transition(0)
    meta.set_range_state(0, FAILED, error="corrupt")
    assert resume_state(meta.range_info(0)) == TRANSITIONING
    meta.set_range_state(1, FAILED, error="source")
    assert resume_state(meta.range_info(1)) == PENDING


def test_mode_mismatch_refused(meta):
    meta._write({b"global:mode": b"streaming"})
    with pytest.raises(InputError, match="streaming"):
        meta.init_backfill(2, RS + 1, RS)


def test_states_are_enums_stored_as_their_names(meta):
    meta.init_backfill(2, RS + 1, RS)
    meta.start_ingesting(0, "/s")
    info = meta.range_info(0)
    assert info.state is RangeState.INGESTING and info.ledger_phase is LedgerPhase.INGESTING
    assert f"{info.state}" == str(info.state) == "INGESTING" and json.dumps(info.state) == '"INGESTING"'
    assert meta.dump()["range:0:state"] == b"INGESTING"
    meta._write({b"range:0:state": b"SLEEPING"})
    with pytest.raises(MetaStoreError, match="unknown range state 'SLEEPING'"):
        meta.range_info(0)


def test_attempts_written_by_the_coordinator_are_read_back(meta):
    meta.init_backfill(2, RS + 1, RS)
    assert meta.range_info(0).attempts == 0
    meta.set_attempts(0, 3)
    assert meta.dump()["range:0:attempts"] == struct.pack(">I", 3)
    assert meta.range_info(0).attempts == 3
