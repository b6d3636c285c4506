"""Chunk-parallel ingestion inside one range ([backfill] workers > 1, data-lake source).

One range of three chunks (range_size 30,000) from a generated lake.  The reference is the
same range ingested sequentially (workers = 1); a parallel run, and a parallel run killed
(-9, whole process tree) at each named point inside a chunk worker, at the orchestrator's
record of a chunk and at a random moment, must end with byte-identical chunk files, exact
counts in the meta store and every transaction hash resolving to its ledger.  A resume
redoes only the chunks not recorded done: published chunk files are never rewritten.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rpcbackfill.errors import MetaStoreError
from rpcbackfill.meta.store import MetaStore
from rpcbackfill.orchestration import api, faults
from rpcbackfill.sources.layout import object_key, read_manifest
from tests.lib.orchestration import (
    active_leftovers,
    check_backfill_result,
    kill_tree,
    make_config,
    make_lake,
    run_to_end,
    start_coordinator,
    store_digest,
    wait_group_gone,
    wait_held,
)
from tests.lib.procs import gone

RS3 = 30_000  # three chunks per range
LAST = RS3 + 1  # range 0: ledgers 2..30001


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    return make_lake(tmp_path_factory.getbasetemp() / "lake-3chunks", 2, LAST)


def _config(tmp: Path, lake: Path, workers: int, **kw):
    kw.setdefault("parallel_ranges", 1)
    return make_config(tmp / "data", lake, 2, LAST, range_size=RS3, workers=workers, **kw)


def _chunks(digest: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in digest.items() if "/chunks/" in k}


def _meta(cfg):
    m = MetaStore(cfg.meta_store.path, read_only=True)
    try:
        return m.range_info(0)
    finally:
        m.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, lake):
    """The sequential run (workers = 1) everything is compared with."""
    tmp = tmp_path_factory.mktemp("sequential")
    cfg = _config(tmp, lake, 1)
    assert run_to_end(tmp, cfg) == 0
    info = _meta(cfg)
    assert info.chunks_done == {}  # the sequential path records no chunks
    return cfg, store_digest(cfg), info


def _check_same_as_reference(cfg, lake, reference) -> None:
    ref_cfg, ref_digest, ref_info = reference
    digest = store_digest(cfg)
    assert _chunks(digest) == _chunks(ref_digest)
    assert len(_chunks(ref_digest)) == 6  # three chunks, .data + .index
    # the index too: its salts are a function of the keys, so every file is byte-identical
    assert digest == ref_digest
    assert sum(".idx" in k for k in ref_digest) == 16
    check_backfill_result(cfg, lake, 2, LAST)
    info = _meta(cfg)
    assert info.state == "COMPLETE"
    assert info.cf_counts == ref_info.cf_counts
    assert info.ledger_count == ref_info.ledger_count == RS3
    assert info.ledger_last_committed == ref_info.ledger_last_committed == LAST
    assert active_leftovers(cfg) == []


def test_parallel_run_matches_sequential(tmp_path, lake, reference):
    cfg = _config(tmp_path, lake, 2)
    p = start_coordinator(tmp_path, cfg, stderr=subprocess.PIPE)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert b"ingesting 3 chunks (2-30001) with 2 workers" in err
    _check_same_as_reference(cfg, lake, reference)
    info = _meta(cfg)
    assert sorted(info.chunks_done) == [0, 1, 2]
    assert [d.ledgers for d in info.chunks_done.values()] == [10_000] * 3
    per_chunk = [sum(d.cf_counts[i] for d in info.chunks_done.values()) for i in range(16)]
    assert per_chunk == info.cf_counts
    # hash links recorded: each chunk's first previousLedgerHash is the last hash of the one before
    assert info.chunks_done[1].first_prev_hash == info.chunks_done[0].last_hash is not None
    assert info.chunks_done[2].first_prev_hash == info.chunks_done[1].last_hash is not None


def _inodes(cfg) -> dict[str, tuple[int, int]]:
    base = Path(cfg.immutable_stores.ledgers_base)
    return {str(p): (p.stat().st_ino, p.stat().st_mtime_ns) for p in base.rglob("*") if p.is_file()}


def _resume_and_check(tmp_path, cfg, lake, reference) -> None:
    """Resume after a crash: only the chunks not recorded done are ingested again, and no
    published chunk file is rewritten."""
    info = _meta(cfg)
    before = _inodes(cfg)
    p = start_coordinator(tmp_path, cfg, stderr=subprocess.PIPE)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    wait_group_gone(p.pid)
    if info.state in ("PENDING", "INGESTING"):
        left = 3 - len(info.chunks_done)
        if left:
            assert f"ingesting {left} chunks".encode() in err or b"ingesting ledgers" in err, err
        else:
            assert b"ingestion already complete" in err, err
    after = _inodes(cfg)
    for path, ident in before.items():
        if path.endswith((".data", ".index")) and "/chunks/" in path and path in after:
            # A chunk is published once its .index exists (finish() renames .data, then .index).
            # A kill between the two renames leaves a lone .data: that chunk was not finished, and
            # its redo replaces the file (with the same bytes: _check_same_as_reference below).
            if path.rsplit(".", 1)[0] + ".index" not in before:
                continue
            assert after[path] == ident, f"{path} was rewritten on resume"
    _check_same_as_reference(cfg, lake, reference)


CHUNK_POINTS = [
    "chunk_finished",  # LFS chunk published, not yet verified, no spill
    "chunk_spill_synced",  # spill durable under its temp name
    "chunk_spilled",  # spill published, the chunk not yet reported
    "chunk_recorded",  # orchestrator: MarkChunkDone acknowledged
]


@pytest.mark.slow
@pytest.mark.parametrize("point", CHUNK_POINTS)
def test_kill9_at_chunk_points_then_resume(tmp_path, lake, reference, point):
    cfg = _config(tmp_path, lake, 2)
    crash_log = tmp_path / "crash.log"
    env = {faults.ENV: f"{point}:1", faults.LOG_ENV: str(crash_log)}
    p = start_coordinator(tmp_path, cfg, env=env, stderr=subprocess.DEVNULL)
    p.wait(timeout=300)
    wait_group_gone(p.pid)
    assert p.returncode == -9
    assert crash_log.read_text().split() == [point]
    info = _meta(cfg)
    assert info.state == "INGESTING"
    if point == "chunk_recorded":
        assert len(info.chunks_done) >= 1
    _resume_and_check(tmp_path, cfg, lake, reference)


@pytest.mark.slow
def test_kill9_at_random_moments_then_identical(tmp_path, lake, reference):
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    cfg = _config(tmp_path, lake, 2)
    for _ in range(3):
        p = start_coordinator(tmp_path, cfg, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 6.0))
        if p.poll() is not None:
            wait_group_gone(p.pid)
            break
        kill_tree(p)
        wait_group_gone(p.pid)
        try:
            info = _meta(cfg)
        except MetaStoreError:  # killed before the coordinator created the store or the range
            continue
        # COMPLETE too: the run may write its last key between the poll above and the kill
        assert info.state in ("PENDING", "INGESTING", "TRANSITIONING", "COMPLETE"), f"seed {seed}"
        if info.state == "COMPLETE":
            break
    _resume_and_check(tmp_path, cfg, lake, reference)


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _two_workers_held_at_ingest(tmp_path, lake, stderr):
    """A 2-worker run whose two chunk workers are held at their first ledger: (cfg, hold dir,
    coordinator, worker pids)."""
    hold = tmp_path / "hold"
    hold.mkdir()
    cfg = _config(tmp_path, lake, 2)
    p = start_coordinator(tmp_path, cfg, env=faults.hold_env(hold, "ingest:1"), stderr=stderr)
    try:
        return cfg, hold, p, wait_held(hold, "ingest", p, n=2)
    except BaseException:
        kill_tree(p)
        raise


def test_chunk_workers_die_with_their_orchestrator(tmp_path, lake, reference):
    import signal

    cfg, _, p, workers = _two_workers_held_at_ingest(tmp_path, lake, subprocess.DEVNULL)
    try:
        (orch,) = {_parent(w) for w in workers}  # children of one range process ...
        assert orch not in (p.pid, *workers) and _parent(orch) == p.pid  # ... itself a child of the coordinator
        os.kill(orch, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not all(gone(w) for w in workers):
            assert time.monotonic() < deadline, "chunk workers outlived their orchestrator"
            time.sleep(0.02)
    finally:
        kill_tree(p)
    _resume_and_check(tmp_path, cfg, lake, reference)


def test_a_chunk_worker_killed_alone_is_a_retried_failure(tmp_path, lake, reference):
    import signal

    cfg, hold, p, workers = _two_workers_held_at_ingest(tmp_path, lake, subprocess.PIPE)
    try:
        os.kill(workers[0], signal.SIGKILL)  # like the OOM killer picking one worker
        faults.release(hold, "ingest")  # the other worker goes on (and the retry's workers pass)
        _, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            kill_tree(p)
    assert p.returncode == 0, err
    assert b"a chunk worker process died" in err and b"range 0 attempt 1 failed" in err, err
    _check_same_as_reference(cfg, lake, reference)


def test_progress_counts_ledgers_of_chunks_in_flight(tmp_path, lake, monkeypatch):
    """One ProgressSnapshot per range: ledgers and hashes read by chunk workers count before their
    chunks are recorded; the source measurements of every chunk add up."""
    import threading

    from rpcbackfill.orchestration.orchestrator import OrchestratorOptions, RangeOrchestrator

    hold = tmp_path / "hold"
    hold.mkdir()
    # read by the spawned chunk workers when they import faults; this process's hooks stay off
    for k, v in faults.hold_env(hold, "chunk_spilled:1").items():
        monkeypatch.setenv(k, v)
    cfg = _config(tmp_path, lake, 2)
    snaps: list = []
    errors: list = []
    with MetaStore(cfg.meta_store.path) as m:
        m.init_backfill(2, LAST, RS3)
        orch = RangeOrchestrator(
            cfg,
            m.range_info(0),
            m,
            threading.Event(),
            progress=snaps.append,
            options=OrchestratorOptions(progress_every_s=0.0, workers=2),
        )

        def run():
            try:
                orch.run()
            except BaseException as e:  # reported below
                errors.append(e)

        t = threading.Thread(target=run)
        t.start()
        try:
            deadline = time.monotonic() + 240
            while len(faults.held(hold, "chunk_spilled")) < 2:  # both chunks read, neither reported
                assert t.is_alive() and time.monotonic() < deadline, errors
                time.sleep(0.02)
            n = len(snaps)
            while len(snaps) == n:  # the next report is taken while both are held
                assert t.is_alive() and time.monotonic() < deadline, errors
                time.sleep(0.02)
            inflight = snaps[-1]
            assert m.range_info(0).chunks_done == {}
        finally:
            faults.release(hold, "chunk_spilled")
            t.join(300)
        assert not errors, errors
        info = m.range_info(0)
    assert inflight.ledgers_done >= 2 * (10_000 - 64) and inflight.tx_count > 0
    done = [s for s in snaps if s.ledgers_done == RS3 and s.steps_done == 0]
    assert done, "no snapshot at the end of ingestion"
    # the last of them: ingestion's closing report, after every chunk result was taken in
    assert done[-1].tx_count == sum(info.cf_counts)
    assert done[-1].source is not None and done[-1].source.fetches == RS3
    ingest = [s.ledgers_done for s in snaps if s.steps_done == 0]
    assert ingest == sorted(ingest)
    assert info.state == "COMPLETE"


def _lake_file(lake: Path, seq: int) -> Path:
    return lake / object_key(seq, read_manifest(lake))


def test_chunk_failure_is_retried_then_fails_then_resumes(tmp_path, lake, reference):
    lake = Path(shutil.copytree(lake, tmp_path / "lake"))
    victim = _lake_file(lake, 15_000)  # inside chunk 1
    good = victim.read_bytes()
    victim.write_bytes(b"\x28\xb5\x2f\xfd" + b"\x00" * 40)  # a corrupt zstd frame: transient, retried
    cfg = _config(tmp_path, lake, 2, max_retries=1)
    p = start_coordinator(tmp_path, cfg, stderr=subprocess.PIPE)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 1, err
    assert err.count(b"range 0 attempt ") == 1, err  # 1 try + 1 retry, then FAILED
    assert b"(after 2 attempts)" in err
    (r,) = api.status(cfg).ranges
    assert r.state == "FAILED" and r.attempts == 2
    assert 1 not in _meta(cfg).chunks_done

    # a missing object inside the bounded range is fatal at once
    victim.unlink()
    p = start_coordinator(tmp_path, cfg, stderr=subprocess.PIPE)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 1 and b"range 0 attempt" not in err, err
    assert b"FAILED (not retryable)" in err
    (r,) = api.status(cfg).ranges
    assert r.attempts == 1

    victim.write_bytes(good)
    _resume_and_check(tmp_path, cfg, lake, reference)


def test_chunk_workers_import_the_coordinators_package_whatever_the_cwd(tmp_path, lake, reference):
    cwd = tmp_path / "checkout"
    (cwd / "rpcbackfill").mkdir(parents=True)
    (cwd / "rpcbackfill" / "__init__.py").write_text('raise ImportError("decoy rpcbackfill imported")\n')
    cfg = _config(tmp_path, lake, 2)
    p = start_coordinator(tmp_path, cfg, cwd=cwd, stderr=subprocess.PIPE)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert b"decoy" not in err
    assert b"with 2 workers" in err  # the pool really ran
    _check_same_as_reference(cfg, lake, reference)


def test_ingest_chunk_on_its_own_matches_the_reference(tmp_path, lake, reference, monkeypatch):
    """The work item needs only the configuration: chunk 1 ingested by a direct call.  The
    process lists the lake once: a later chunk reuses the layout the first one resolved."""
    from rpcbackfill.index.spill import shard_spill_inputs
    from rpcbackfill.orchestration import chunk_ingest
    from rpcbackfill.orchestration.chunk_ingest import chunk_tasks, ingest_chunk
    from rpcbackfill.sources.objstore.local import LocalStore

    listings = []
    real_list = LocalStore.list_keys

    def counted(self, *a, **kw):
        listings.append(self.url)
        return real_list(self, *a, **kw)

    monkeypatch.setattr(LocalStore, "list_keys", counted)
    monkeypatch.setattr(chunk_ingest, "_lake_schemas", {})
    ref_cfg, ref_digest, _ = reference
    cfg = _config(tmp_path, lake, 2)
    (task,) = chunk_tasks(cfg, 0, 2, LAST, [1])
    res = ingest_chunk(task)
    assert listings == [str(lake)]
    assert (res.chunk_id, res.ledgers, res.rewritten) == (1, 10_000, True)
    got = {k: v for k, v in _chunks(store_digest(cfg)).items() if "000001." in k}
    assert got == {k: v for k, v in _chunks(ref_digest).items() if "000001." in k} and len(got) == 2
    tdir = Path(cfg.active_stores.txhash_path) / "0000"
    for x in range(16):
        (f,) = shard_spill_inputs(tdir, x)
        assert f.stat().st_size == 36 * res.cf_counts[x]
    # again: the published chunk is compared with the source, not rewritten; same spill
    again = ingest_chunk(task)
    assert listings == [str(lake)]  # not listed again
    assert not again.rewritten and again.cf_counts == res.cf_counts
    assert again.last_hash == res.last_hash and again.first_prev_hash == res.first_prev_hash


# --- the pieces on their own: meta keys, spill inputs, compaction -------------------------------


def test_chunk_keys_and_prefix_checkpoint_in_one_batch(tmp_path):
    from rpcbackfill.errors import MetaStoreError
    from rpcbackfill.meta.store import Checkpoint, ChunkDone

    cf = tuple(range(16))
    with MetaStore(tmp_path / "meta") as m:
        m.init_backfill(2, LAST, RS3)
        m.start_ingesting(0, str(tmp_path / "spill"))
        c2 = ChunkDone(2, 10_000, cf, b"\x01" * 32, b"\x02" * 32)
        m.mark_chunk_done(0, c2)  # not contiguous with the start: no checkpoint
        info = m.range_info(0)
        assert info.chunks_done == {2: c2} and info.ledger_last_committed is None
        c0 = ChunkDone(0, 10_000, cf, None, None)
        m.mark_chunk_done(0, c0, Checkpoint(10_001, 10_000, list(cf)))
        info = m.range_info(0)
        assert info.chunks_done == {0: c0, 2: c2}
        assert (info.ledger_last_committed, info.txhash_last_committed, info.ledger_count) == (10_001, 10_001, 10_000)
        assert info.cf_counts == list(cf)
        raw = m.dump()
        assert json.loads(raw["range:0:chunk:2:done"]) == {
            "ledgers": 10_000,
            "cf_counts": {f"{i:x}": i for i in range(16)},
            "first_prev_hash": "01" * 32,
            "last_hash": "02" * 32,
        }
        with pytest.raises(MetaStoreError):  # the prefix never goes back
            m.mark_chunk_done(0, ChunkDone(1, 10_000, cf), Checkpoint(2, 1, list(cf)))
        assert 1 not in m.range_info(0).chunks_done  # refused batch: nothing of it written
        m.start_transition(0)
        with pytest.raises(MetaStoreError):
            m.mark_chunk_done(0, ChunkDone(1, 10_000, cf))


def test_mirror_of_mark_chunk_done_matches_the_store(tmp_path):
    from rpcbackfill.meta.store import Checkpoint, ChunkDone
    from rpcbackfill.orchestration.updates import ForwardingMeta

    with MetaStore(tmp_path / "meta") as m:
        m.init_backfill(2, LAST, RS3)
        m.start_ingesting(0, "x")
        mirror = m.range_info(0)
        sent = []
        fwd = ForwardingMeta(0, sent.append)
        fwd.mark_chunk_done(0, ChunkDone(0, 10_000, (1,) * 16), Checkpoint(10_001, 10_000, [1] * 16))
        for u in sent:
            u.apply(m, 0)
            u.mirror(mirror)
        assert mirror == m.range_info(0)


def _recs(seed: int, n: int, seq: int) -> bytes:
    import hashlib

    return b"".join(hashlib.sha256(f"{seed}-{i}".encode()).digest() + seq.to_bytes(4, "little") for i in range(n))


def test_compaction_reads_every_spill_input_and_checks_the_count(tmp_path):
    import numpy as np

    from rpcbackfill.errors import CorruptStoreError
    from rpcbackfill.index import compact_shard, sortedfile
    from rpcbackfill.index.spill import remove_shard_spill, shard_spill_inputs
    from rpcbackfill.paths import chunk_spill_dir, spill_shard_path

    tdir = tmp_path / "t"
    tdir.mkdir()
    spill_shard_path(tdir, 3).write_bytes(_recs(0, 50, 5))  # the sequential part
    for c, n in ((2, 30), (1, 20)):
        d = chunk_spill_dir(tdir, c)
        d.mkdir()
        spill_shard_path(d, 3).write_bytes(_recs(c, n, 10_000 * c + 7))
    (tdir / ".chunk-000009.tmp-1").mkdir()  # an unfinished chunk worker's temp dir: not an input
    spill_shard_path(tdir / ".chunk-000009.tmp-1", 3).write_bytes(_recs(9, 5, 1))
    ins = shard_spill_inputs(tdir, 3)
    assert [p.parent.name for p in ins] == ["t", "chunk-000001", "chunk-000002"]
    with pytest.raises(CorruptStoreError, match="meta store counts 99"):
        compact_shard(tdir, 3, tmp_path / "s", expect_records=99)
    for mem in (1 << 30, 70_000):  # in memory and partitioned
        p = compact_shard(tdir, 3, tmp_path / f"s{mem}", expect_records=100, mem_limit_bytes=mem)
        n, _ = sortedfile.read_header(p)
        body = np.frombuffer(p.read_bytes()[sortedfile.HEADER_SIZE :], np.uint8).reshape(-1, 36)
        want = {bytes(r) for r in np.frombuffer(b"".join(x.read_bytes() for x in ins), np.uint8).reshape(-1, 36)}
        assert n == 100 and {bytes(r) for r in body} == want
    remove_shard_spill(tdir, 3)
    assert shard_spill_inputs(tdir, 3) == []
    assert not chunk_spill_dir(tdir, 1).exists()  # emptied chunk spill dirs go too


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
