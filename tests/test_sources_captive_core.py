"""Captive-core source (spec section 6) driven through tests/fake_stellar_core.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from rpcbackfill.config import PUBNET_PASSPHRASE, CaptiveCoreConfig, default_config
from rpcbackfill.errors import (
    Cancelled,
    CorePreflightError,
    CoreProcessError,
    LedgerSequenceError,
    SourceConfigError,
    SourceError,
)
from rpcbackfill.sources import Ledger, open_source
from rpcbackfill.sources.captive_core import CaptiveCoreSource
from rpcbackfill.sources.layout import LakeSchema, write_lake
from tests.lib.core import CORE_ENV, FAKE_CORE, make_archive
from tests.lib.ledgers import chain as make_chain
from tests.lib.oracle import sdk_reference
from tests.lib.procs import gone, wait_gone

HERE = Path(__file__).resolve().parent
FAKE = FAKE_CORE
NET = PUBNET_PASSPHRASE
ENV = CORE_ENV
ARCHIVE_LATEST = 319  # a checkpoint ledger after the chain's last (300)


@pytest.fixture(scope="module")
def chain():
    return dict(make_chain(2, 300))


@pytest.fixture(scope="module")
def lake(tmp_path_factory, chain):
    root = tmp_path_factory.mktemp("corelake")
    write_lake(root, sorted(chain.items()), LakeSchema(NET, 4, 16))
    return root


def core_cfg(tmp_path: Path, lake: Path, **fake) -> CaptiveCoreConfig:
    """A minimal operator file (no validators: the driver adds a placeholder quorum set) with the
    stand-in's FAKE_* settings; the history archive comes from history_archive_urls."""
    archive = make_archive(tmp_path / "archive", ARCHIVE_LATEST, NET)
    lines = [f'NETWORK_PASSPHRASE="{fake.pop("passphrase", NET)}"', f'FAKE_LAKE="{lake}"']
    lines += [f'{k.upper()}="{v}"' for k, v in fake.items()]
    cfgp = tmp_path / "captive-core.cfg"
    cfgp.write_text("\n".join(lines) + "\n")
    return CaptiveCoreConfig(
        binary_path=FAKE,
        config_path=cfgp,
        storage_path=tmp_path / "captive-core",
        history_archive_urls=(f"file://{archive}",),
    )


def source(cfg, cancel=None, **kw) -> CaptiveCoreSource:
    kw.setdefault("stop_timeout", 5.0)
    return CaptiveCoreSource(cfg, cancel, network_passphrase=NET, env=ENV, **kw)


@pytest.mark.parametrize("first,last", [(100, 150), (64, 70), (2, 40), (299, 301)])
def test_range(tmp_path, lake, chain, first, last):
    cfg = core_cfg(tmp_path, lake)
    with source(cfg) as src:
        src.prepare_range(first, last)
        work = src.work_dir
        assert work == tmp_path / "captive-core" / "0000"  # range 0 of the default range size
        assert (work / "stellar.db").exists() and (work / "buckets" / "stellar-core.lock").exists()
        assert (work / "stellar-core.cfg").exists()
        assert not list(work.glob("*.log"))  # LOG_FILE_PATH = "": core output is captured instead
        got = [src.get_ledger(q).lcm for q in range(first, last + 1)]
        pid = src.pid
    assert got == [chain[q] for q in range(first, last + 1)]
    assert not work.exists()  # the whole range was delivered: the private directory is gone
    assert wait_gone(pid)
    assert src.returncode == 0  # stopped by SIGINT (the stand-in exits 0 on it), not killed


def test_ledger_carries_its_scan(tmp_path, lake, chain):
    """The reader's one parse per ledger travels with it: sequence and tx hashes as stellar-sdk
    decodes them."""
    with source(core_cfg(tmp_path, lake)) as src:
        src.prepare_range(64, 70)
        for q in range(64, 71):
            ledger = src.get_ledger(q)
            sdk_seq, sdk_hashes, _, _ = sdk_reference(chain[q])
            assert ledger == Ledger(q, chain[q], sdk_hashes) and sdk_seq == q


def test_factory(tmp_path, lake, chain):
    c = default_config(tmp_path, ledger_backend="captive_core", captive_core=core_cfg(tmp_path, lake))
    with open_source(c, threading.Event()) as src:
        assert isinstance(src, CaptiveCoreSource)
        src.env = ENV
        src.prepare_range(10, 12)
        assert [src.get_ledger(q).lcm for q in (10, 11, 12)] == [chain[10], chain[11], chain[12]]


def test_core_exiting_on_its_own_after_last(tmp_path, lake, chain):
    with source(core_cfg(tmp_path, lake, fake_failure="exit_after_last")) as src:
        src.prepare_range(20, 30)
        assert [src.get_ledger(q).lcm for q in range(20, 31)] == [chain[q] for q in range(20, 31)]


def test_sigint_ignored_escalates_to_sigkill(tmp_path, lake, chain):
    with source(core_cfg(tmp_path, lake, fake_failure="ignore_sigint"), stop_timeout=0.5) as src:
        src.prepare_range(20, 25)
        assert [src.get_ledger(q).lcm for q in range(20, 26)] == [chain[q] for q in range(20, 26)]
        pid = src.pid
    assert wait_gone(pid)
    assert src.returncode == -signal.SIGKILL


@pytest.mark.parametrize(
    "failure,fail_at,exc,patterns",
    [
        (
            "early_exit",
            120,
            CoreProcessError,
            ["before ledger 120", "exit code 7", "simulated crash before ledger 120"],
        ),
        ("truncated_frame", 130, CoreProcessError, ["truncated frame", "before ledger 130", "exit code 9"]),
        ("truncated_header", 110, CoreProcessError, ["truncated frame header", "exit code 9"]),
        ("gap", 125, LedgerSequenceError, ["ledger 126 after ledger 124"]),
        ("gap", 90, LedgerSequenceError, ["ledger 91 after ledger 89"]),  # inside the skipped prefix
        ("garbage_header", 140, LedgerSequenceError, ["record mark bit missing", "before ledger 140"]),
        ("bad_hash", 111, LedgerSequenceError, ["ledger 111: previousLedgerHash"]),
    ],
)
def test_failures(tmp_path, lake, chain, failure, fail_at, exc, patterns):
    cfg = core_cfg(tmp_path, lake, fake_failure=failure, fake_fail_at=fail_at)
    with source(cfg) as src:
        src.prepare_range(100, 200)
        got = []
        with pytest.raises(exc) as ei:
            for q in range(100, 201):
                got.append(src.get_ledger(q).lcm)
        pid = src.pid
    for p in patterns:
        assert p in str(ei.value)
    # everything delivered before the failure was right
    assert got == [chain[q] for q in range(100, 100 + len(got))]
    assert len(got) <= max(0, fail_at - 100)
    assert wait_gone(pid)


def test_new_db_failure(tmp_path, lake):
    with source(core_cfg(tmp_path, lake, fake_failure="newdb_fail")) as src:
        with pytest.raises(CoreProcessError, match="new-db exited with code 3") as ei:
            src.prepare_range(10, 20)
    assert "database is locked" in str(ei.value)


def test_config_errors(tmp_path, lake):
    with pytest.raises(SourceConfigError, match="binary_path"):
        source(CaptiveCoreConfig(binary_path=tmp_path / "nope", config_path=tmp_path / "x")).prepare_range(2, 3)
    cfg = core_cfg(tmp_path, lake, passphrase="Test SDF Network ; September 2015")
    with pytest.raises(CorePreflightError, match="NETWORK_PASSPHRASE"):
        source(cfg).prepare_range(2, 3)


def test_out_of_order_and_close(tmp_path, lake, chain):
    src = source(core_cfg(tmp_path, lake))
    src.prepare_range(50, 80)
    assert src.get_ledger(50).lcm == chain[50]
    with pytest.raises(LedgerSequenceError, match="expected ledger 51"):
        src.get_ledger(52)
    pid = src.pid
    src.close()
    src.close()
    assert wait_gone(pid)
    with pytest.raises(SourceError, match="closed"):
        src.get_ledger(51)


def test_cancel_is_prompt(tmp_path, lake):
    cancel = threading.Event()
    src = source(core_cfg(tmp_path, lake, fake_failure="hang"), cancel)
    src.prepare_range(100, 200)
    threading.Timer(0.3, cancel.set).start()
    t0 = time.monotonic()
    with pytest.raises(Cancelled):
        src.get_ledger(100)
    assert time.monotonic() - t0 < 5
    pid = src.pid
    assert wait_gone(pid)
    src.close()


ORCHESTRATOR = textwrap.dedent(
    """
    import os, sys, threading, time
    sys.path[:0] = [{repo!r}, {tests!r}]
    from rpcbackfill.config import CaptiveCoreConfig
    from rpcbackfill.sources.captive_core import CaptiveCoreSource
    from pathlib import Path
    src = CaptiveCoreSource(CaptiveCoreConfig(binary_path={fake!r}, config_path={cfg!r},
                                              storage_path=Path({storage!r}), history_archive_urls={urls!r}),
                            threading.Event(), env={env!r})
    src.prepare_range(100, 200)
    print(src.pid, flush=True)
    time.sleep(600)
    """
)


def test_no_orphan_when_parent_is_sigkilled(tmp_path, lake):
    cfg = core_cfg(tmp_path, lake, fake_failure="hang")
    code = ORCHESTRATOR.format(
        repo=str(HERE.parent),
        tests=str(HERE),
        fake=str(FAKE),
        cfg=str(cfg.config_path),
        env=ENV,
        storage=str(cfg.storage_path),
        urls=cfg.history_archive_urls,
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=ENV)
    try:
        line = parent.stdout.readline()
        core_pid = int(line)
        assert not gone(core_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert wait_gone(core_pid), f"captive core {core_pid} survived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_cancel_while_consumer_idle_stops_core(tmp_path, lake, chain):
    cancel = threading.Event()
    src = source(core_cfg(tmp_path, lake), cancel)
    src.prepare_range(2, 300)
    assert src.get_ledger(2).lcm == chain[2]
    pid = src.pid
    cancel.set()  # nobody is inside get_ledger: the reader must stop core by itself
    assert wait_gone(pid, 5)
    with pytest.raises(Cancelled):
        src.get_ledger(3)
    src.close()


def test_cancel_while_reader_blocked_on_full_queue(tmp_path, lake, chain, monkeypatch):
    from rpcbackfill.sources import captive_core

    monkeypatch.setattr(captive_core, "QUEUE_FRAMES", 2)
    cancel = threading.Event()
    src = source(core_cfg(tmp_path, lake), cancel)
    src.prepare_range(2, 300)
    assert src.get_ledger(2).lcm == chain[2]
    deadline = time.monotonic() + 10
    while not src._q.full() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert src._q.full()  # the reader now waits for room
    pid = src.pid
    cancel.set()
    assert wait_gone(pid, 5)
    src.close()


def test_meta_pipe_above_fd_setsize(tmp_path, lake, chain):
    # a backfill process holds many files (RocksDB, chunks): fd 3's pipe may get a number > 1024
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        pytest.skip(f"open-file limit {soft} too low")
    fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        with source(core_cfg(tmp_path, lake)) as src:
            src.prepare_range(30, 40)
            assert src._meta_fd() > 1024
            assert [src.get_ledger(q).lcm for q in range(30, 41)] == [chain[q] for q in range(30, 41)]
    finally:
        for fd in fds:
            os.close(fd)


def test_failure_selected_by_environment(tmp_path, lake):
    # the stand-in also takes its failure mode from the environment (overrides the cfg)
    env = {**ENV, "FAKE_FAILURE": "early_exit", "FAKE_FAIL_AT": "33"}
    with CaptiveCoreSource(core_cfg(tmp_path, lake), network_passphrase=NET, env=env) as src:
        src.prepare_range(30, 40)
        assert src.get_ledger(30).lcm and src.get_ledger(31).lcm and src.get_ledger(32).lcm
        with pytest.raises(CoreProcessError, match="before ledger 33; exit code 7"):
            src.get_ledger(33)
