"""The stand-in core refuses what real stellar-core v23 refuses at start-up (so the driver's
tests fail where real core would), and accepts what the driver generates."""

from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path

import pytest

from rpcbackfill.config import PUBNET_PASSPHRASE
from rpcbackfill.sources.core_config import CoreToml
from rpcbackfill.sources.core_runner import core_version
from tests.lib.core import CORE_ENV, FAKE_CORE, make_archive, pubnet_shaped

REPO = Path(__file__).resolve().parents[1]
NET = PUBNET_PASSPHRASE


def core(cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(FAKE_CORE), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**CORE_ENV, **(env or {})},
        stdin=subprocess.DEVNULL,
        check=False,
    )


def write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


@pytest.fixture
def archive(tmp_path):
    return make_archive(tmp_path / "archive", 1023, NET)


def history(archive: Path) -> str:
    return f"cp {archive}/{{0}} {{1}}"


def test_version_reports_the_ledger_protocol(tmp_path):
    r = core(tmp_path, "version")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0] == "v23.0.1-fake" and lines[1] == "ledger protocol version: 23"
    assert core_version(FAKE_CORE, env=CORE_ENV) == ("v23.0.1-fake", 23)
    assert core_version(FAKE_CORE, env={**CORE_ENV, "FAKE_PROTOCOL": "22"})[1] == 22


@pytest.mark.parametrize(
    "text, message",
    [
        ("HTTP_PORT = 0\n", "NETWORK_PASSPHRASE not configured"),
        (f'NETWORK_PASSPHRASE = "{NET}"\nHTTP_PROT = 0\n', "Unknown configuration entry: 'HTTP_PROT'"),
        (f'NETWORK_PASSPHRASE = "{NET}"\n', "no validators defined in VALIDATORS/QUORUM_SET"),
    ],
)
def test_refused_configs(tmp_path, text, message):
    r = core(tmp_path, "--conf", str(write(tmp_path / "c.cfg", text)), "--console", "new-db")
    assert r.returncode == 1 and message in r.stderr


def test_quorum_of_fewer_than_four_orgs_needs_unsafe_quorum(tmp_path, archive):
    # the shipped example before this driver: one home domain, no UNSAFE_QUORUM -> real core's refusal
    for orgs in (1, 3):
        cfg = write(
            tmp_path / "c.cfg",
            pubnet_shaped(history(archive), http_port=0, orgs=orgs).replace("FAILURE_SAFETY = 1\n", ""),
        )
        r = core(tmp_path, "--conf", str(cfg), "--console", "new-db")
        assert r.returncode == 1, r.stderr
        assert "Can't have FAILURE_SAFETY=0 unless you also set UNSAFE_QUORUM=true" in r.stderr
    cfg = write(
        tmp_path / "c.cfg", pubnet_shaped(history(archive), http_port=0, orgs=4).replace("FAILURE_SAFETY = 1\n", "")
    )
    assert core(tmp_path, "--conf", str(cfg), "--console", "new-db").returncode == 0
    cfg = write(
        tmp_path / "c.cfg",
        pubnet_shaped(history(archive), http_port=0, orgs=5, extra="").replace(
            "FAILURE_SAFETY = 1", "FAILURE_SAFETY = 0"
        ),
    )
    r = core(tmp_path, "--conf", str(cfg), "--console", "new-db")
    assert r.returncode == 1 and "FAILURE_SAFETY=0" in r.stderr
    cfg = write(
        tmp_path / "c.cfg",
        pubnet_shaped(history(archive), http_port=0, orgs=1, extra="UNSAFE_QUORUM = true").replace(
            "FAILURE_SAFETY = 1", "FAILURE_SAFETY = 0"
        ),
    )
    assert core(tmp_path, "--conf", str(cfg), "--console", "new-db").returncode == 0


def test_high_quality_validators_need_history_and_redundancy(tmp_path, archive):
    text = pubnet_shaped(history(archive), http_port=0, orgs=4)
    cfg = write(tmp_path / "c.cfg", text.replace(f'HISTORY = "{history(archive)}"\n', "", 1))
    r = core(tmp_path, "--conf", str(cfg), "--console", "new-db")
    assert r.returncode == 1 and "critical and high quality must have an archive" in r.stderr
    cfg = write(tmp_path / "c.cfg", pubnet_shaped(history(archive), http_port=0, orgs=4, per_org=2))
    r = core(tmp_path, "--conf", str(cfg), "--console", "new-db")
    assert r.returncode == 1 and "must have redundancy of at least 3" in r.stderr


def test_catchup_needs_new_db_archive_and_the_bucket_lock(tmp_path, archive):
    base = (
        # HTTP_PORT = 0: the default 11626 is shared by every suite running on this machine
        f'NETWORK_PASSPHRASE = "{NET}"\nHTTP_PORT = 0\nUNSAFE_QUORUM = true\nFAILURE_SAFETY = 0\nLOG_FILE_PATH = ""\n'
        f'DATABASE = "sqlite3://db.sqlite"\n[QUORUM_SET]\nTHRESHOLD_PERCENT = 100\n'
        f'VALIDATORS = ["GBU6VL6FNFBXQ3TIH7WU7YUSPVTHW54L4DOYBWENOCQCV2JSUYE7JAZB"]\n'
    )
    catchup = ("--console", "catchup", "100/10", "--metadata-output-stream", "fd:3")
    no_archive = write(tmp_path / "a.cfg", base)
    r = core(tmp_path, "--conf", str(no_archive), *catchup)
    assert r.returncode == 1 and "No DB schema version found, try stellar-core new-db" in r.stderr
    assert core(tmp_path, "--conf", str(no_archive), "--console", "new-db").returncode == 0
    r = core(tmp_path, "--conf", str(no_archive), *catchup)
    assert r.returncode == 1 and "No GET-enabled history archive in config" in r.stderr
    with_archive = write(tmp_path / "b.cfg", base + f'\n[HISTORY.h0]\nget = "{history(archive)}"\n')
    r = core(
        tmp_path, "--conf", str(with_archive), "--console", "catchup", "2000/10", "--metadata-output-stream", "fd:3"
    )
    assert r.returncode == 1 and "newer than the archive's latest checkpoint 1023" in r.stderr
    # another process holds the bucket lock: what two ranges sharing one directory ran into
    fd = os.open(tmp_path / "buckets" / "stellar-core.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = core(tmp_path, "--conf", str(with_archive), "--console", "new-db")
    finally:
        os.close(fd)
    assert r.returncode == 1
    assert "unable to flock file: buckets/stellar-core.lock" in r.stderr
    assert "another stellar-core process already running" in r.stderr


def test_log_file_in_the_working_directory_unless_disabled(tmp_path, archive):
    text = pubnet_shaped(history(archive), http_port=0, orgs=4)
    cfg = write(tmp_path / "c.cfg", text)
    (tmp_path / "w1").mkdir()
    assert core(tmp_path / "w1", "--conf", str(cfg), "--console", "new-db").returncode == 0
    logs = list((tmp_path / "w1").glob("stellar-core-*.log"))
    assert len(logs) == 1 and "creating database" in logs[0].read_text()
    cfg = write(tmp_path / "c.cfg", 'LOG_FILE_PATH = ""\n' + text)
    (tmp_path / "w2").mkdir()
    assert core(tmp_path / "w2", "--conf", str(cfg), "--console", "new-db").returncode == 0
    assert not list((tmp_path / "w2").glob("*.log"))


def test_generated_config_from_the_shipped_example_is_accepted(tmp_path):
    """Real core refuses the operator-side example alone (one home domain), and accepts what the
    driver generates from it."""
    example = REPO / "config" / "captive-core.example.toml"
    r = core(tmp_path, "--conf", str(example), "--console", "new-db")
    assert r.returncode == 1 and "Can't have FAILURE_SAFETY=0 unless you also set UNSAFE_QUORUM=true" in r.stderr
    gen = write(tmp_path / "gen.cfg", CoreToml.load(example, network_passphrase=NET).render())
    r = core(tmp_path, "--conf", str(gen), "--console", "new-db")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "stellar.db").exists() and (tmp_path / "buckets" / "stellar-core.lock").exists()


def test_every_key_the_driver_writes_is_a_real_core_entry(tmp_path):
    from rpcbackfill.sources.core_config import (
        DEFAULT_KEYS,
        FORCED_KEYS,
        META_FLAGS,
        REFUSED_KEYS,
    )

    known = {x for x in (Path(__file__).parent / "stellar_core_config_keys.txt").read_text().split() if x.isupper()}
    written = set(CoreToml.load(REPO / "config" / "captive-core.example.toml", network_passphrase=NET).for_range())
    written |= {*REFUSED_KEYS, *FORCED_KEYS, *META_FLAGS, *DEFAULT_KEYS, "HISTORY", "QUORUM_SET"}
    assert written - known == set()


def test_two_cores_on_one_http_port(tmp_path, archive):
    """Real core's command handler listens on HTTP_PORT (default 11626) from start-up: parallel
    cores need HTTP_PORT = 0 (which the driver sets)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = write(tmp_path / "c.cfg", pubnet_shaped(history(archive), http_port=port, extra='DATABASE = "sqlite3://db"'))
    assert core(tmp_path, "--conf", str(cfg), "--console", "new-db").returncode == 0
    (tmp_path / "w2").mkdir()
    first = subprocess.Popen(
        [str(FAKE_CORE), "--conf", str(cfg), "--console", "catchup", "100/10", "--metadata-output-stream", "fd:3"],
        cwd=tmp_path,
        env={**CORE_ENV, "FAKE_FAILURE": "hang"},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert first.stderr is not None
        for line in first.stderr:
            if "hanging before streaming" in line:
                break
        else:
            pytest.fail("the first core did not start")
        second = core(tmp_path / "w2", "--conf", str(cfg), "--console", "new-db")
    finally:
        first.kill()
        first.wait()
    assert second.returncode == 1 and "bind: Address already in use" in second.stderr
