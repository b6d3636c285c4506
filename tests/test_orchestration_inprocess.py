"""The range orchestrator in-process against a real MetaStore: cancellation and resume at
chosen ledgers, and a randomized walk of the meta-store state machine."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpcbackfill.errors import Cancelled, MetaStoreError
from rpcbackfill.meta.store import (
    LedgerPhase,
    MetaStore,
    RangeState,
    TxHashPhase,
    decode_cf_counts,
    decode_uint,
    encode_cf_counts,
    encode_u32,
    encode_u64,
)
from rpcbackfill.orchestration.orchestrator import RangeOrchestrator
from tests.lib.orchestration import RS, active_leftovers, check_backfill_result, make_config, make_lake


@pytest.fixture(scope="module")
def lake1(tmp_path_factory) -> Path:
    return make_lake(tmp_path_factory.getbasetemp() / "lake-1range", 2, RS + 1, seed=3, tx_per_ledger=2.0)


def test_cancel_at_ledgers_then_resume(tmp_path, lake1):
    cfg = make_config(tmp_path / "data", lake1, 2, RS + 1, checkpoint_interval=1000)
    meta = MetaStore(cfg.meta_store.path)
    try:
        meta.init_backfill(2, RS + 1, RS)
        stops = [2500, 7777]  # cancel mid-interval twice, then run to the end
        seen_checkpoints = []
        for stop_at in stops + [None]:
            info = meta.range_info(0)
            cancel = threading.Event()

            def progress(snap, stop_at=stop_at, cancel=cancel):
                if stop_at is not None and snap.ledgers_done >= stop_at - 1:
                    cancel.set()

            orch = RangeOrchestrator(cfg, info, meta, cancel, progress=progress)
            orch.options = type(orch.options)(progress_every_s=0.0)
            if stop_at is None:
                orch.run()
            else:
                with pytest.raises(Cancelled):
                    orch.run()
                after = meta.range_info(0)
                seen_checkpoints.append(after.ledger_last_committed)
                # the checkpoint never runs ahead of the cancel point and is on the interval
                assert after.ledger_last_committed is not None
                assert (after.ledger_last_committed - 1) % 1000 == 0
                assert after.ledger_last_committed < stop_at
                assert after.state == "INGESTING"
            # the orchestrator's record, kept by mirroring each acknowledged update, is the store's
            stored = meta.range_info(0)
            assert dataclasses.replace(orch.info, completed_at=None) == dataclasses.replace(stored, completed_at=None)
        assert seen_checkpoints == sorted(seen_checkpoints)
        info = meta.range_info(0)
        assert info.state == "COMPLETE" and info.ledger_count == RS
    finally:
        meta.close()
    n_ledgers, n_hashes = check_backfill_result(cfg, lake1, 2, RS + 1)
    assert n_ledgers == RS and n_hashes == info.tx_count
    assert active_leftovers(cfg) == []


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1), st.lists(st.integers(0, 2**40), min_size=16, max_size=16))
def test_encodings_roundtrip(u32, u64, counts):
    assert decode_uint(encode_u32(u32)) == u32 and len(encode_u32(u32)) == 4
    assert decode_uint(encode_u64(u64)) == u64 and len(encode_u64(u64)) == 8
    assert decode_cf_counts(encode_cf_counts(counts)) == counts


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["state", "ledger", "txhash"]),
        st.sampled_from(sorted({str(v) for e in (RangeState, LedgerPhase, TxHashPhase) for v in e})),
    ),
    max_size=25,
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_OPS)
def test_state_machine_random_walk(tmp_path_factory, ops):
    """Whatever sequence of updates is attempted, the stored states only move along the spec's
    arrows (one step at a time), and COMPLETE is reached only with both sub-flows done."""
    order = {
        "state": ["PENDING", "INGESTING", "TRANSITIONING", "COMPLETE"],
        "ledger": list(LedgerPhase),
        "txhash": list(TxHashPhase),
    }
    m = MetaStore(tmp_path_factory.mktemp("walk") / "meta")
    try:
        m.init_backfill(2, RS + 1, RS)
        m.start_ingesting(0, "/s")
        for kind, value in ops:
            before = m.range_info(0)
            try:
                if kind == "state":
                    m.set_range_state(0, value, error="e")
                elif kind == "ledger":
                    m.set_ledger_phase(0, value)
                else:
                    m.set_txhash_phase(0, value)
            except MetaStoreError:
                assert m.range_info(0) == before  # a refused update writes nothing
                continue
            after = m.range_info(0)
            cur = {
                "state": (before.state, after.state),
                "ledger": (before.ledger_phase, after.ledger_phase),
                "txhash": (before.txhash_phase, after.txhash_phase),
            }[kind]
            a, b = cur
            if kind == "state" and (b == "FAILED" or a == "FAILED"):
                assert a != "COMPLETE"
                continue
            assert order[kind].index(b) - order[kind].index(a) in (0, 1), (kind, a, b)
            if b == "COMPLETE" and kind == "state":
                assert after.ledger_phase == "IMMUTABLE" and after.txhash_phase == "COMPLETE"
    finally:
        m.close()
