"""End-to-end backfills from captive core through the real ``stellar-rpc`` command line.

The stand-in core (tests/fake_stellar_core.py) makes real stellar-core's start-up checks: the
bucket-directory lock, the quorum rules, new-db before catchup, a history archive.  Its
ledgers come from a generated lake; its history archive is a directory with the archive state
file, served over HTTP on 127.0.0.1 (validators' ``curl`` HISTORY commands) or read as
file://.  ``FAKE_BARRIER`` makes every catchup wait, holding its bucket lock, until both
ranges' cores run: a backfill that passes has run two cores at the same time.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rpcbackfill.config import PUBNET_PASSPHRASE, load_config
from tests.lib.core import CORE_ENV, FAKE_CORE, make_archive, pubnet_shaped, serve_dir
from tests.lib.orchestration import RS, active_leftovers, check_backfill_result, make_lake

REPO = Path(__file__).resolve().parents[1]
NET = PUBNET_PASSPHRASE
LAST = 2 * RS + 1  # two ranges
LATEST_CHECKPOINT = 20031  # the archive's latest checkpoint (313 * 64 - 1), after LAST


@pytest.fixture(scope="session")
def lake3(tmp_path_factory) -> Path:
    # same arguments as tests/test_orchestration_backfill.py: one generated lake per session
    return make_lake(tmp_path_factory.getbasetemp() / "lake-3ranges", 2, 3 * RS + 1)


def rpc_config(d: Path, operator_cfg: Path, *, extra: str = "") -> Path:
    p = d / "stellar-rpc.toml"
    p.write_text(f"""
[service]
data_dir = "data"
http_port = 0
[backfill]
ledger_backend = "captive_core"
range_size = {RS}
checkpoint_interval = 1000
parallel_ranges = 2
max_retries = 0
[backfill.captive_core]
binary_path = "{FAKE_CORE}"
config_path = "{operator_cfg}"
{extra}
""")
    return p


def stellar_rpc(
    cfg: Path, env: dict[str, str], *, end: int = LAST, timeout: float = 300
) -> subprocess.CompletedProcess:
    e = {k: v for k, v in CORE_ENV.items() if not k.startswith(("STELLAR_RPC_", "FAKE_"))}
    e["PYTHONPATH"] = str(REPO)
    e.update(env)
    script = Path(sys.executable).parent / "stellar-rpc"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "rpcbackfill"]
    return subprocess.run(
        cmd + ["--backfill", "--start-ledger", "2", "--end-ledger", str(end), "--config-path", str(cfg)],
        capture_output=True,
        text=True,
        env=e,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def without_history(text: str) -> str:
    """Validators without HISTORY (LOW quality: real core wants an archive for HIGH ones)."""
    text = text.replace('QUALITY = "HIGH"', 'QUALITY = "LOW"')
    return "\n".join(line for line in text.splitlines() if not line.startswith("HISTORY")) + "\n"


def error_lines(r: subprocess.CompletedProcess) -> list[str]:
    return [line for line in r.stderr.splitlines() if line.startswith("error:")]


def test_pubnet_shaped_operator_config_two_ranges_in_parallel(tmp_path, lake3):
    archive = make_archive(tmp_path / "archive", LATEST_CHECKPOINT, NET)
    with serve_dir(archive) as url:
        operator = tmp_path / "captive-core.cfg"  # 5 orgs x 3 validators with HISTORY, no DATABASE/BUCKET_DIR_PATH
        operator.write_text(pubnet_shaped(f"curl -sf {url}/{{0}} -o {{1}}"))
        cfg = rpc_config(tmp_path, operator)
        # a crashed attempt's directory of range 1: cleaned, never used as it is
        stale = tmp_path / "data" / "captive-core" / "0001"
        (stale / "buckets").mkdir(parents=True)
        (stale / "buckets" / "stale-bucket.xdr").write_text("x")
        barrier = tmp_path / "barrier"
        r = stellar_rpc(cfg, {"FAKE_LAKE": str(lake3), "FAKE_BARRIER": str(barrier)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(list(barrier.iterdir())) == 2  # both ranges' cores ran at the same time
    assert "HTTP_PORT = 11626 in" in r.stderr and "FAILURE_SAFETY = 1 in" in r.stderr  # overrides are said
    config = load_config(cfg)
    n_ledgers, _ = check_backfill_result(config, lake3, 2, LAST)
    assert n_ledgers == LAST - 1
    assert list((tmp_path / "data" / "captive-core").iterdir()) == []  # COMPLETE ranges leave nothing
    assert active_leftovers(config) == []

    # a directory left behind by a COMPLETE range (crash after its catchup) goes at the next run
    (tmp_path / "data" / "captive-core" / "0000").mkdir()
    r = stellar_rpc(cfg, {})  # nothing to do: neither core nor the archive is needed
    assert r.returncode == 0, r.stderr[-2000:]
    assert list((tmp_path / "data" / "captive-core").iterdir()) == []


def test_shipped_example_config(tmp_path, lake3):
    """config/captive-core.example.toml as shipped; only its archive host is redirected to a local
    server (tests have no network), keeping the archive paths."""
    root = tmp_path / "history"
    for n in (1, 2, 3):
        make_archive(root / "prd" / "core-live" / f"core_live_00{n}", LATEST_CHECKPOINT, NET)
    with serve_dir(root) as url:
        text = (REPO / "config" / "captive-core.example.toml").read_text()
        assert text.count("https://history.stellar.org/") == 3
        operator = tmp_path / "captive-core.cfg"
        operator.write_text(text.replace("https://history.stellar.org", url))
        barrier = tmp_path / "barrier"
        r = stellar_rpc(rpc_config(tmp_path, operator), {"FAKE_LAKE": str(lake3), "FAKE_BARRIER": str(barrier)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(list(barrier.iterdir())) == 2
    n_ledgers, _ = check_backfill_result(load_config(tmp_path / "stellar-rpc.toml"), lake3, 2, LAST)
    assert n_ledgers == LAST - 1


@pytest.mark.parametrize("case", ["old_protocol", "beyond_archive", "owned_key", "file_archive_beyond"])
def test_preflight_failures_exit_1_before_any_range(tmp_path, case):
    latest = 10_047 if case in ("beyond_archive", "file_archive_beyond") else LATEST_CHECKPOINT
    archive = make_archive(tmp_path / "archive", latest, NET)
    env = {"FAKE_LAKE": str(tmp_path / "no-lake-needed")}
    extra = ""
    with serve_dir(archive) as url:
        history = f"curl -sf {url}/{{0}} -o {{1}}"
        operator = tmp_path / "captive-core.cfg"
        operator.write_text(
            pubnet_shaped(history, extra='BUCKET_DIR_PATH = "/var/lib/core/buckets"' if case == "owned_key" else "")
        )
        if case == "old_protocol":
            env["FAKE_PROTOCOL"] = "22"
        if case == "file_archive_beyond":  # a file without archives: history_archive_urls supply them
            operator.write_text(without_history(pubnet_shaped(history)))
            extra = f'history_archive_urls = ["file://{archive}"]'
        r = stellar_rpc(rpc_config(tmp_path, operator, extra=extra), env, timeout=30)
    errors = error_lines(r)
    assert r.returncode == 1, r.stderr
    assert len(errors) == 1, r.stderr
    expect = {
        "old_protocol": "ledger protocol 22; captive core needs protocol 23 or later",
        "beyond_archive": f"range 1 (ledgers 10002-20001) ends beyond ledger 10047, the latest checkpoint of "
        f"history archive {url}",
        "file_archive_beyond": f"ends beyond ledger 10047, the latest checkpoint of history archive file://{archive}",
        "owned_key": "sets BUCKET_DIR_PATH: rpcbackfill gives every range its own BUCKET_DIR_PATH",
    }[case]
    assert expect in errors[0]
    assert "Traceback" not in r.stderr
    # refused before work: no range started, no core directory, no active store
    assert not (tmp_path / "data" / "captive-core").exists()
    assert active_leftovers(load_config(tmp_path / "stellar-rpc.toml")) == []


def test_unreachable_archive_is_refused(tmp_path):
    operator = tmp_path / "captive-core.cfg"
    operator.write_text(pubnet_shaped(f"cp {tmp_path / 'missing-archive'}/{{0}} {{1}}"))
    r = stellar_rpc(rpc_config(tmp_path, operator), {}, timeout=30)
    errors = error_lines(r)
    assert r.returncode == 1 and len(errors) == 1, r.stderr
    assert "cannot read history archive state" in errors[0] and "missing-archive" in errors[0]


def test_history_archive_urls_fill_a_file_without_history(tmp_path, lake3):
    """history_archive_urls fill an operator file without HISTORY (validators of LOW quality);
    file:// archives become `cp` commands."""
    archive = make_archive(tmp_path / "archive", LATEST_CHECKPOINT, NET)
    operator = tmp_path / "captive-core.cfg"
    operator.write_text(without_history(pubnet_shaped("unused")))
    cfg = rpc_config(tmp_path, operator, extra=f'history_archive_urls = ["file://{archive}"]')
    r = stellar_rpc(cfg, {"FAKE_LAKE": str(lake3)}, end=RS + 1)
    assert r.returncode == 0, r.stderr[-3000:]
    check_backfill_result(load_config(cfg), lake3, 2, RS + 1)


def test_two_cores_in_one_directory_fail_on_the_bucket_lock(tmp_path):
    """The issue's failure, reproduced with the stand-in: what sharing one working directory did."""
    archive = make_archive(tmp_path / "archive", LATEST_CHECKPOINT, NET)
    cfg = tmp_path / "core.cfg"
    cfg.write_text(pubnet_shaped(f"cp {archive}/{{0}} {{1}}", extra='DATABASE = "sqlite3://stellar.db"', http_port=0))
    conf = [str(FAKE_CORE), "--conf", str(cfg), "--console"]
    catchup = ["catchup", "100/10", "--metadata-output-stream", "fd:3"]
    assert (
        subprocess.run(conf + ["new-db"], cwd=tmp_path, env=CORE_ENV, capture_output=True, check=False).returncode == 0
    )
    first = subprocess.Popen(
        conf + catchup,
        cwd=tmp_path,
        env={**CORE_ENV, "FAKE_FAILURE": "hang"},
        stderr=subprocess.PIPE,
        text=True,
        pass_fds=(),
    )
    try:
        assert first.stderr is not None
        for line in first.stderr:  # by this line the first core holds the bucket lock
            if "hanging before streaming" in line:
                break
        else:
            pytest.fail("the first core did not start")
        second = subprocess.run(conf + catchup, cwd=tmp_path, env=CORE_ENV, capture_output=True, text=True, check=False)
    finally:
        first.kill()
        first.wait()
    assert second.returncode == 1
    assert "unable to flock file: buckets/stellar-core.lock" in second.stderr
    assert "another stellar-core process already running" in second.stderr
