"""Crash tests: kill -9 of the whole process tree at random moments and at every phase.

After the final successful run the stores must equal those of an uninterrupted run: every
ledger chunk and every index file byte-identical (RecSplit salts derive from each shard's
content, docs/design.md), every transaction hash resolving to its ledger, exact counts in the
meta store, no active stores left behind.
"""

from __future__ import annotations

import random
import subprocess
import time
from pathlib import Path

import pytest

from rpcbackfill import lcm
from rpcbackfill.meta.store import MetaStore
from rpcbackfill.orchestration import api, faults
from rpcbackfill.paths import DataDirLayout
from tests.lib.orchestration import (
    RS,
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

LAST = 3 * RS + 1

# Every fault point of rpcbackfill.orchestration.faults; each one SIGKILLs the process group
# the first time an orchestrator passes it (the transition phases last milliseconds here,
# so random timing alone would rarely land in them).
FAULT_POINTS = [
    "checkpoint_synced",  # data durable, checkpoint not written
    "checkpoint_acked",
    "chunk_finished",  # chunk final files published, checkpoint not yet written
    # transition: the txhash sub-flow's steps first -- they take milliseconds and run beside
    # the (slower) chunk verification, which would otherwise finish them before it is killed
    "compact",
    "scratch_delete",  # a shard's mark durable, its spill (or sorted file) not yet deleted
    "build",
    "verify_shard",
    "verify_chunk",
    "before_delete",
    "before_complete",  # active stores deleted, COMPLETE not yet written
]


@pytest.fixture(scope="module")
def lake3(tmp_path_factory) -> Path:
    return make_lake(tmp_path_factory.getbasetemp() / "lake-3ranges", 2, LAST)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, lake3):
    """An uninterrupted run over the same lake."""
    tmp = tmp_path_factory.mktemp("reference")
    cfg = make_config(tmp / "data", lake3, 2, LAST)
    assert run_to_end(tmp, cfg) == 0
    return cfg


def _chunk_files(digest: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in digest.items() if "/chunks/" in k}


def _lake_counts(lake: Path) -> dict[int, tuple[int, list[int]]]:
    """Per range: ledgers and per-shard hash counts, straight from the lake."""
    from tests.lib.lake import lake_ledgers

    out = {}
    for seq, raw in lake_ledgers(lake, 2, LAST):
        rid = (seq - 2) // RS
        n, cf = out.setdefault(rid, [0, [0] * 16])
        out[rid][0] = n + 1
        _, hashes = lcm.tx_hashes(raw)
        for i in range(0, len(hashes), 32):
            cf[hashes[i] >> 4] += 1
    return out


@pytest.mark.slow
def test_kill9_loop_then_identical_stores(tmp_path, lake3, reference):
    rng = random.Random(20261123)
    cfg = make_config(tmp_path / "data", lake3, 2, LAST, parallel_ranges=2)
    kills = 0
    fault_kills = []

    fired_log = tmp_path / "fired.txt"

    def fault_run(*points: str) -> None:
        """Arm ``points`` (the first one reached fires) and record the point(s) that fired."""
        fired_log.write_text("")
        spec = ",".join(f"{pt}:1" for pt in points)
        p = start_coordinator(
            tmp_path, cfg, env={"RPCBACKFILL_TEST_CRASH_AT": spec, "RPCBACKFILL_TEST_CRASH_LOG": str(fired_log)}
        )
        code = p.wait(timeout=240)
        wait_group_gone(p.pid)
        fired = fired_log.read_text().split()
        if code == -9:
            # parallel ranges may reach armed points at the same moment: each one that fired is logged
            assert fired and set(fired) <= set(points), f"armed {points}, fired {fired}"
            fault_kills.extend(fired)
        else:
            assert not fired, f"armed {points}, fired {fired}, but the run exited {code}"

    # 1) a deterministic kill at each ingestion fault point (first checkpoint, first chunk)
    for point in FAULT_POINTS[:3]:
        fault_run(point)
    # 2) SIGKILLs of the process tree at random moments: each run is killed at the first
    #    status poll (random 20-120 ms apart) after the committed ledgers pass a random
    #    target, so the kill lands in ingestion, a checkpoint or a transition whatever the
    #    machine's speed; targets stay below 25,000 so range 2 still has work afterwards.
    for target in sorted(rng.randrange(3500, 25_000) for _ in range(6)):
        p = start_coordinator(tmp_path, cfg)
        while p.poll() is None:
            time.sleep(rng.uniform(0.02, 0.12))
            try:
                done = api.status(cfg).ledgers_done
            except Exception:  # meta store being created
                continue
            if done >= target:
                break
        if p.poll() is None:
            kill_tree(p)
            kills += 1
        else:
            wait_group_gone(p.pid)
    assert kills >= 5, f"only {kills} of the random kills happened before the run finished"
    # 3) a deterministic kill at each transition fault point (range 2 at the latest gets there).
    #    The two transition sub-flows run side by side, so under CPU contention one may finish its
    #    steps before the other is killed: a step may legitimately be past by its turn.  Each run
    #    therefore also arms every later point, so a step already past never lets the run finish
    #    and skip the remaining points; the log says which point actually fired.
    transition = FAULT_POINTS[3:]
    for i in range(len(transition)):
        fault_run(*transition[i:])
    # The ingestion points and the final two steps are always reached (no range can complete
    # while before_delete/before_complete are armed); which of the middle transition steps fire
    # here depends on thread scheduling -- each of them is reached deterministically in
    # test_crash_points_in_transition_of_single_range.
    must = FAULT_POINTS[:3] + FAULT_POINTS[-2:]
    assert set(must) <= set(fault_kills), f"fault points reached: {fault_kills}"
    # 4) the final run finishes
    assert run_to_end(tmp_path, cfg) == 0

    assert _chunk_files(store_digest(cfg)) == _chunk_files(store_digest(reference))
    assert store_digest(cfg) == store_digest(reference)  # same files and bytes (incl. 16 shards/range)
    check_backfill_result(cfg, lake3, 2, LAST)
    assert active_leftovers(cfg) == []
    expected = _lake_counts(lake3)
    m = MetaStore(cfg.meta_store.path, read_only=True)
    try:
        for rid, (n, cf) in expected.items():
            info = m.range_info(rid)
            assert info.state == "COMPLETE"
            assert info.ledger_count == n and info.cf_counts == cf
            assert info.shard_built == info.shard_verified == {x: cf[i] for i, x in enumerate("0123456789abcdef")}
    finally:
        m.close()


@pytest.mark.slow
def test_crash_points_in_transition_of_single_range(tmp_path, lake3, reference):
    """A kill at every transition point of one range in turn, each run resuming the last.  The
    two transition sub-flows run side by side; holding one of them at a point (it waits there
    until the kill) makes the armed point of the other one the next to fire, whatever the
    scheduling."""
    cfg = make_config(tmp_path / "data", lake3, 2, RS + 1, parallel_ranges=1)
    fired_log = tmp_path / "fired.txt"
    steps = [  # (kill at, hold at)
        ("chunk_finished:1", None),
        ("compact:5", "verify_chunk:1"),  # the chunk verification waits: txhash steps go first
        ("scratch_delete:2", "verify_chunk:1"),  # a shard recorded sorted, its spill still there
        ("build:3", "verify_chunk:1"),
        ("build:10", "verify_chunk:1"),
        ("verify_shard:9", "verify_chunk:1"),
        ("verify_chunk:1", "verify_shard:1"),  # the shard verification waits: the chunk goes first
        ("before_delete:1", None),
        ("before_complete:1", None),
    ]
    for i, (kill_at, hold_at) in enumerate(steps):
        fired_log.write_text("")
        env = {"RPCBACKFILL_TEST_CRASH_AT": kill_at, "RPCBACKFILL_TEST_CRASH_LOG": str(fired_log)}
        if hold_at:
            (tmp_path / f"hold{i}").mkdir()
            env.update(faults.hold_env(tmp_path / f"hold{i}", hold_at))
        p = start_coordinator(tmp_path, cfg, env=env)
        assert p.wait(timeout=240) == -9, kill_at
        wait_group_gone(p.pid)
        assert fired_log.read_text().split() == [kill_at.split(":")[0]]
        lay = DataDirLayout(cfg)
        m = MetaStore(cfg.meta_store.path, read_only=True)
        try:
            sorted_shards = set(m.range_info(0).shard_sorted)
        finally:
            m.close()
        spilled = {x for j, x in enumerate("0123456789abcdef") if lay.spill_shard(0, j).exists()}
        if kill_at.startswith("scratch_delete"):
            assert spilled & sorted_shards, "the kill left a recorded shard's spill behind"
        elif kill_at.startswith("build"):
            # the resumed run deleted it before anything else; every spill is gone once all are sorted
            assert spilled == set()
    st = api.status(cfg).ranges[0]
    assert st.state == "TRANSITIONING" and st.txhash_phase == "COMPLETE"
    # what an atomic writer killed mid-write leaves behind (pid 99999 is long gone)
    lay = DataDirLayout(cfg)
    stale = [p.with_name(f".{p.name}.tmp-99999") for p in (lay.index_shard(0, 3), lay.chunk_paths(0)[0])]
    for p in stale:
        p.write_bytes(b"partial")
    assert run_to_end(tmp_path, cfg) == 0
    check_backfill_result(cfg, lake3, 2, RS + 1)
    assert active_leftovers(cfg) == []
    assert not any(p.exists() for p in stale)
    assert not [k for k in store_digest(cfg) if ".tmp-" in k]
    # range 0 was compacted, built and verified across five killed runs: its files are the bytes
    # of the uninterrupted reference run (chunks and all 16 index shards)
    got = store_digest(cfg)
    want = {k: v for k, v in store_digest(reference).items() if k in got}
    assert len([k for k in got if k.endswith(".idx")]) == 16
    assert got == want


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


def test_disk_full_fails_fast_then_resumes(tmp_path, lake3):
    data = tmp_path / "small"
    if not _mount_tmpfs(data, "12m"):
        pytest.skip("cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN) to simulate a full disk")
    try:
        cfg = make_config(data, lake3, 2, RS + 1, max_retries=3)
        p = start_coordinator(tmp_path, cfg, stderr=subprocess.PIPE)
        _, err = p.communicate(timeout=180)
        assert p.returncode == 1, err
        assert b"range 0 attempt" not in err, "disk full must not be retried"
        (r,) = api.status(cfg).ranges
        assert r.state == "FAILED" and "space" in r.error.lower(), r.error
        subprocess.run(["mount", "-o", "remount,size=400m", str(data)], check=True)
        assert run_to_end(tmp_path, cfg) == 0
        check_backfill_result(cfg, lake3, 2, RS + 1)
        assert active_leftovers(cfg) == []
    finally:
        subprocess.run(["umount", "-l", str(data)], capture_output=True)


def test_orchestrators_die_with_their_coordinator(tmp_path, lake3):
    """SIGKILL of the coordinator alone: PR_SET_PDEATHSIG takes its orchestrators down too, and
    the data-dir lock (shared with them) is free only once they are gone."""
    import os
    import signal

    import psutil

    cfg = make_config(tmp_path / "data", lake3, 2, 2 * RS + 1, parallel_ranges=2)
    hold = tmp_path / "hold"
    hold.mkdir()
    p = start_coordinator(tmp_path, cfg, env=faults.hold_env(hold, "ingest:1"))
    pids = wait_held(hold, "ingest", p, n=2)  # both orchestrators alive, each at its first ledger
    kids = [c for c in psutil.Process(p.pid).children() if "orchestration.worker" in " ".join(c.cmdline())]
    assert sorted(k.pid for k in kids) == pids
    os.kill(p.pid, signal.SIGKILL)  # the coordinator only, not its group
    p.wait()
    gone, alive = psutil.wait_procs(kids, timeout=20)
    assert not alive, f"orchestrators outlived the coordinator: {[k.pid for k in alive]}"
    wait_group_gone(p.pid)
    assert run_to_end(tmp_path, cfg) == 0
    check_backfill_result(cfg, lake3, 2, 2 * RS + 1)


def test_captive_core_tree_killed_then_resumed(tmp_path, lake3):
    """Captive-core backend (the stand-in of tests/fake_stellar_core.py): kill -9 of the tree
    while core streams leaves no core process behind; the re-run resumes and completes."""
    import dataclasses
    import os
    import sys
    import time

    import psutil

    from rpcbackfill.config import PUBNET_PASSPHRASE, CaptiveCoreConfig
    from tests.lib.core import make_archive

    pid_file = tmp_path / "core.pid"
    core_cfg = tmp_path / "core.cfg"
    core_cfg.write_text(f'FAKE_LAKE = "{lake3}"\nFAKE_PID_FILE = "{pid_file}"\n')
    fake = Path(__file__).resolve().parent / "fake_stellar_core.py"
    archive = make_archive(tmp_path / "archive", RS + 63, PUBNET_PASSPHRASE)
    base = make_config(tmp_path / "data", lake3, 2, RS + 1, parallel_ranges=1)
    cfg = dataclasses.replace(
        base,
        backfill=dataclasses.replace(
            base.backfill,
            ledger_backend="captive_core",
            captive_core=CaptiveCoreConfig(
                binary_path=fake,
                config_path=core_cfg,
                storage_path=tmp_path / "data" / "captive-core",
                history_archive_urls=(f"file://{archive}",),
            ),
        ),
    )
    env = {"PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    hold = tmp_path / "hold"
    hold.mkdir()
    p = start_coordinator(tmp_path, cfg, env={**env, **faults.hold_env(hold, "checkpoint_acked:1")})
    wait_held(hold, "checkpoint_acked", p)  # core has streamed past the first checkpoint
    assert api.status(cfg).ranges[0].last_committed_ledger == 1001
    core_pid = int(pid_file.read_text())
    assert psutil.pid_exists(core_pid)
    kill_tree(p)
    deadline = time.monotonic() + 20
    while (
        time.monotonic() < deadline
        and psutil.pid_exists(core_pid)
        and psutil.Process(core_pid).status() != psutil.STATUS_ZOMBIE
    ):
        time.sleep(0.05)
    assert not psutil.pid_exists(core_pid) or psutil.Process(core_pid).status() == psutil.STATUS_ZOMBIE, (
        f"captive core {core_pid} outlived the killed backfill"
    )
    assert (tmp_path / "data" / "captive-core" / "0000").is_dir()  # the killed range's core directory
    assert run_to_end(tmp_path, cfg, env=env) == 0
    check_backfill_result(cfg, lake3, 2, RS + 1)
    assert active_leftovers(cfg) == []
    assert list((tmp_path / "data" / "captive-core").iterdir()) == []  # cleaned on resume, removed when done
