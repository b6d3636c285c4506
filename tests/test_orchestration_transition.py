"""The transition in-process against a real MetaStore and real stores: per-shard and per-chunk
work in parallel on the range's worker budget, bounded scratch (a shard's spill is deleted once
it is recorded sorted, its sorted file once it is recorded verified).

The spies below call the real functions; they only observe the disk and the meta store at the
moment a step starts, or make two steps meet (a barrier) to prove they overlap."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest

from rpcbackfill.meta.store import MetaStore
from rpcbackfill.orchestration import orchestrator as orch_mod
from rpcbackfill.orchestration.orchestrator import OrchestratorOptions, RangeOrchestrator
from rpcbackfill.paths import DataDirLayout
from rpcbackfill.records import SHARD_DIGITS
from tests.lib.orchestration import active_leftovers, check_backfill_result, make_config, make_lake

RS3 = 30_000  # three chunks per range
LAST = RS3 + 1
GUARD_S = 120  # only guards against a hang; the tests act on events


@pytest.fixture(scope="module")
def lake3c(tmp_path_factory) -> Path:
    return make_lake(tmp_path_factory.getbasetemp() / "lake-3chunks", 2, LAST, seed=5, tx_per_ledger=1.0)


class RecordingMeta:
    """The real MetaStore, recording the chunks_verified marks it is given."""

    def __init__(self, meta: MetaStore):
        self._meta = meta
        self.chunk_marks: list[int] = []

    def mark_chunks_verified(self, rid: int, n: int) -> None:
        self.chunk_marks.append(n)
        self._meta.mark_chunks_verified(rid, n)

    def __getattr__(self, name):
        return getattr(self._meta, name)


class SequentialIngest(RangeOrchestrator):
    """Ingests with one worker (so the transition verifies every chunk: chunk-parallel
    ingestion verifies its chunks itself), then runs the transition with two."""

    def _ingest(self) -> None:
        super()._ingest()
        self.options = dataclasses.replace(self.options, workers=2)


def _run(cfg, workers: int, cls: type[RangeOrchestrator] = RangeOrchestrator) -> RecordingMeta:
    meta = MetaStore(cfg.meta_store.path)
    rec = RecordingMeta(meta)
    try:
        meta.init_backfill(2, LAST, RS3)
        info = meta.range_info(0)
        opts = OrchestratorOptions(progress_every_s=0.0, workers=workers)
        cls(cfg, info, rec, threading.Event(), options=opts).run()
        assert meta.range_info(0).state == "COMPLETE"
    finally:
        meta.close()
    return rec


def test_scratch_is_deleted_as_shards_advance(tmp_path, lake3c, monkeypatch):
    """workers = 1: each step sees the scratch of the steps before it already gone."""
    cfg = make_config(tmp_path / "data", lake3c, 2, LAST, range_size=RS3)
    lay = DataDirLayout(cfg)
    orchs: list[RangeOrchestrator] = []
    seen = {"compact": 0, "build": 0, "verify": 0}
    real_init = RangeOrchestrator.__init__

    def init(self, *a, **kw):
        real_init(self, *a, **kw)
        orchs.append(self)

    monkeypatch.setattr(RangeOrchestrator, "__init__", init)

    def spills() -> set[int]:
        return {i for i in range(16) if lay.spill_shard(0, i).exists()}

    def sorteds() -> set[int]:
        return {i for i in range(16) if lay.sorted_shard(0, i).exists()}

    def recorded(step: str) -> set[int]:
        info = orchs[0].info
        marks = {"sorted": info.shard_sorted, "verified": info.shard_verified}[step]
        return {SHARD_DIGITS.index(x) for x in marks}

    real_compact, real_build, real_verify = orch_mod.compact_shard, orch_mod.build_shard, orch_mod.verify_shard

    def compact(tdir, i, *a, **kw):
        seen["compact"] += 1
        done = recorded("sorted")
        assert i in spills() and not (done & spills()), "spill of a sorted shard still on disk"
        assert sorteds() == done
        return real_compact(tdir, i, *a, **kw)

    def build(*a, **kw):
        seen["build"] += 1
        assert spills() == set() and sorteds() == set(range(16))
        return real_build(*a, **kw)

    def verify(idx, sorted_path, *a, **kw):
        seen["verify"] += 1
        assert Path(sorted_path).exists()
        assert sorteds() == set(range(16)) - recorded("verified"), "sorted file of a verified shard still on disk"
        return real_verify(idx, sorted_path, *a, **kw)

    monkeypatch.setattr(orch_mod, "compact_shard", compact)
    monkeypatch.setattr(orch_mod, "build_shard", build)
    monkeypatch.setattr(orch_mod, "verify_shard", verify)
    _run(cfg, workers=1)
    assert seen == {"compact": 16, "build": 16, "verify": 16}
    check_backfill_result(cfg, lake3c, 2, LAST)
    assert active_leftovers(cfg) == []


def _heavy_counter(monkeypatch):
    """Count the heavy steps running at once (wrapping the real functions); returns [now, max]."""
    lock = threading.Lock()
    active = [0, 0]

    def heavy(fn):
        def run(*a, **kw):
            with lock:
                active[0] += 1
                active[1] = max(active[1], active[0])
            try:
                return fn(*a, **kw)
            finally:
                with lock:
                    active[0] -= 1

        return run

    for name in ("compact_shard", "build_shard", "verify_shard", "verify_chunk"):
        monkeypatch.setattr(orch_mod, name, heavy(getattr(orch_mod, name)))
    return active


def test_shards_run_in_parallel_within_the_budget(tmp_path, lake3c, monkeypatch):
    """workers = 2: the first two compactions meet at a barrier (so they overlap) and never
    more than two heavy steps (of both sub-flows) run at once."""
    cfg = make_config(tmp_path / "data", lake3c, 2, LAST, range_size=RS3)
    meet = threading.Barrier(2, timeout=GUARD_S)
    lock = threading.Lock()
    compacts = [0]
    real_compact = orch_mod.compact_shard

    def compact(*a, **kw):
        with lock:
            compacts[0] += 1
            first_two = compacts[0] <= 2
        if first_two:
            meet.wait()  # BrokenBarrierError if the shards ran one after another
        return real_compact(*a, **kw)

    monkeypatch.setattr(orch_mod, "compact_shard", compact)
    active = _heavy_counter(monkeypatch)
    _run(cfg, workers=2)
    assert active[1] == 2 and compacts[0] == 16
    check_backfill_result(cfg, lake3c, 2, LAST)
    assert active_leftovers(cfg) == []


def test_chunks_verified_out_of_order_are_recorded_as_a_prefix(tmp_path, lake3c, monkeypatch):
    """Transition with workers = 2: chunk 0 finishes after chunk 1; chunks_verified (a prefix
    count, what a resume trusts) never says 1 chunk and never runs ahead of the chunks verified."""
    cfg = make_config(tmp_path / "data", lake3c, 2, LAST, range_size=RS3)
    chunk1_done = threading.Event()
    real_verify_chunk = orch_mod.verify_chunk
    verified: list[int] = []

    def verify_chunk(base, c, **kw):
        if c == 0:
            assert chunk1_done.wait(GUARD_S)
        real_verify_chunk(base, c, **kw)
        verified.append(c)
        if c == 1:
            chunk1_done.set()

    monkeypatch.setattr(orch_mod, "verify_chunk", verify_chunk)
    rec = _run(cfg, workers=1, cls=SequentialIngest)
    assert verified.index(1) < verified.index(0) and sorted(verified) == [0, 1, 2]
    assert rec.chunk_marks and rec.chunk_marks[0] >= 2 and rec.chunk_marks[-1] == 3
    assert rec.chunk_marks == sorted(set(rec.chunk_marks))
    check_backfill_result(cfg, lake3c, 2, LAST)


def test_compression_level_reaches_the_chunk_writer(tmp_path):
    """[immutable_stores] compression_level: the orchestrator's chunk writer compresses at the
    configured level -- level 19 stores the same ledgers in fewer bytes than level 1, and
    both read back exactly."""
    from rpcbackfill.ledgermath import chunk_first_ledger
    from rpcbackfill.stores.lfs import ChunkReader
    from tests.lib.ledgers import chain

    ledgers = chain(chunk_first_ledger(0), 12, tx_per_ledger=100.0)
    sizes = {}
    for level in (1, 19):
        cfg = make_config(tmp_path / f"data{level}", tmp_path, 2, RS3, range_size=RS3)
        cfg = dataclasses.replace(
            cfg, immutable_stores=dataclasses.replace(cfg.immutable_stores, compression_level=level)
        )
        meta = MetaStore(cfg.meta_store.path)
        try:
            meta.init_backfill(2, RS3 + 1, RS3)
            orch = RangeOrchestrator(cfg, meta.range_info(0), meta, threading.Event())
            w = orch._open_writer(0, ledgers[0][0], tmp_path / f"work{level}")
            assert w is not None
            for seq, raw in ledgers:
                w.append(seq, raw)
            sizes[level] = w.finish(allow_partial=True).data_bytes
        finally:
            meta.close()
        with ChunkReader(cfg.immutable_stores.ledgers_base, 0) as r:
            assert [r.get(seq) for seq, _ in ledgers] == [raw for _, raw in ledgers]
    assert sizes[19] < sizes[1]


def test_compression_level_reaches_the_chunk_workers(tmp_path, lake3c):
    """The chunk-parallel ingestion's work item writes its chunk at the configured level too."""
    from rpcbackfill.orchestration.chunk_ingest import ChunkTask, ingest_chunk
    from rpcbackfill.stores.lfs import ChunkReader
    from tests.lib.lake import lake_ledgers

    sizes = {}
    for level in (1, 9):
        cfg = make_config(tmp_path / f"data{level}", lake3c, 2, LAST, range_size=RS3)
        cfg = dataclasses.replace(
            cfg, immutable_stores=dataclasses.replace(cfg.immutable_stores, compression_level=level)
        )
        ingest_chunk(ChunkTask(cfg, 0, 1, 10_002, 20_001))
        lay = DataDirLayout(cfg)
        sizes[level] = lay.chunk_paths(1)[0].stat().st_size
        with ChunkReader(cfg.immutable_stores.ledgers_base, 1) as r:
            for seq, raw in lake_ledgers(lake3c, 10_002, 10_101):
                assert r.get(seq) == raw
    assert sizes[9] < sizes[1]
