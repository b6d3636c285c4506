"""The ``stellar-rpc`` command line, mostly through the real console script in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import rpcbackfill
from rpcbackfill import cli as climod
from rpcbackfill.config import example_config_text, load_config
from rpcbackfill.errors import NotFoundError, SourceError

REPO = Path(__file__).resolve().parents[1]
TX = "ab" * 32


def _command() -> list[str]:
    script = Path(sys.executable).parent / "stellar-rpc"
    # The console script when installed (CI: `pip install -e .`), else the same entry point via -m.
    return [str(script)] if script.exists() else [sys.executable, "-m", "rpcbackfill"]


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("STELLAR_RPC_")}
    base["PYTHONPATH"] = str(REPO)  # import this checkout whatever is installed
    base.update(extra or {})
    return base


def run_cli(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        _command() + [str(a) for a in args],
        capture_output=True,
        env=_env(env),
        cwd=cwd or REPO,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


pytestmark = pytest.mark.usefixtures("restore_root_logging")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    (d / "lake").mkdir()
    f = {
        "dir": d,
        "good": d / "good.toml",
        "bad": d / "bad.toml",
        "unknown": d / "unknown.toml",
        "captive": d / "captive.toml",
        "plain": d / "plain-file",
        "exists": d / "exists.toml",
    }
    f["good"].write_text(f'[service]\ndata_dir = "data"\n[backfill.buffered_storage]\nbucket_path = "{d / "lake"}"\n')
    f["bad"].write_text('[service]\ndata_dir = "data"\nhttp_port = = 3\n')
    f["unknown"].write_text('[service]\ndata_dir = "data"\nhttp_prot = 3\n[backfill]\nparallel_ranges = 0\n')
    f["captive"].write_text('[service]\ndata_dir = "data"\n[backfill]\nledger_backend = "captive_core"\n')
    f["plain"].write_text("not a directory\n")
    f["exists"].write_text("# already here\n")
    return f


BF = ["--backfill", "--start-ledger", "2", "--end-ledger", "10000001"]

# (id, args, env, exit code, fragment of the one stderr line). "{name}" is replaced by files[name].
INVALID = [
    ("no-args", [], {}, 2, "nothing to do"),
    (
        "bad-start",
        ["--backfill", "--start-ledger", "100", "--end-ledger", "10000001", "--config-path", "{good}"],
        {},
        2,
        "--start-ledger must be rangeFirstLedger(N) for some N (valid: 2, 10000002, ...)",
    ),
    (
        "bad-end",
        ["--backfill", "--start-ledger", "2", "--end-ledger", "10000000", "--config-path", "{good}"],
        {},
        2,
        "--end-ledger must be rangeLastLedger(N)",
    ),
    (
        "end-before-start",
        ["--backfill", "--start-ledger", "10000002", "--end-ledger", "10000001", "--config-path", "{good}"],
        {},
        2,
        "must be greater than --start-ledger",
    ),
    ("start-not-int", ["--backfill", "--start-ledger", "two", "--end-ledger", "10000001"], {}, 2, "'--start-ledger'"),
    ("missing-end", ["--backfill", "--start-ledger", "2", "--config-path", "{good}"], {}, 2, "needs --end-ledger"),
    ("start-without-backfill", ["--start-ledger", "2"], {}, 2, "apply only with --backfill"),
    ("backfill-plus-command", ["--backfill", "status"], {}, 2, "cannot be combined"),
    ("unknown-option", ["--frobnicate"], {}, 2, "No such option"),
    ("unknown-command", ["frobnicate"], {}, 2, "No such command"),
    ("bad-log-level", ["--log-level", "loud", "version"], {}, 2, "'--log-level'"),
    ("no-data-dir", ["status"], {}, 2, "service.data_dir is required"),
    ("missing-config", ["status", "--config-path", "{dir}/nope.toml"], {}, 2, "does not exist"),
    ("config-is-dir", ["status", "--config-path", "{dir}"], {}, 2, "is a directory"),
    ("malformed-toml", ["status", "--config-path", "{bad}"], {}, 2, "(at line 3, column"),
    ("unknown-key", ["status", "--config-path", "{unknown}"], {}, 2, "unknown key 'http_prot' in [service]"),
    ("env-config-path", ["status"], {"STELLAR_RPC_CONFIG_PATH": "{bad}"}, 2, "invalid TOML"),
    (
        "env-bad-int",
        ["status", "--config-path", "{good}"],
        {"STELLAR_RPC_BACKFILL_PARALLEL_RANGES": "many"},
        2,
        "backfill.parallel_ranges (from env STELLAR_RPC_BACKFILL_PARALLEL_RANGES) must be an integer",
    ),
    (
        "env-unknown",
        ["status", "--config-path", "{good}"],
        {"STELLAR_RPC_SERVICE_DATADIR": "x"},
        2,
        "unknown environment variable STELLAR_RPC_SERVICE_DATADIR",
    ),
    ("set-malformed", ["status", "--data-dir", "{dir}", "--set", "nonsense"], {}, 2, "--set expects SECTION.KEY=VALUE"),
    ("set-unknown", ["status", "--data-dir", "{dir}", "--set", "backfill.speed=9"], {}, 2, "'backfill.speed'"),
    ("data-dir-is-file", ["status", "--data-dir", "{plain}"], {}, 2, "exists and is not a directory"),
    ("captive-no-binary", BF + ["--config-path", "{captive}"], {}, 2, "binary_path is required"),
    ("no-bucket", BF + ["--data-dir", "{dir}"], {}, 2, "bucket_path is required"),
    ("hash-short", ["get-transaction-by-hash", "abc"], {}, 2, "must be 64 hex characters"),
    ("hash-not-hex", ["get-transaction-by-hash", "g" * 64], {}, 2, "must be 64 hex characters"),
    ("hash-missing", ["get-transaction-by-hash"], {}, 2, "Missing argument 'HEX'"),
    ("seq-too-small", ["get-ledger-by-sequence", "1"], {}, 2, "must be a ledger sequence between 2 and 4294967295"),
    ("seq-too-big", ["get-ledger-by-sequence", str(2**32)], {}, 2, "between 2 and 4294967295"),
    ("seq-not-int", ["get-ledger-by-sequence", "ten"], {}, 2, "must be a ledger sequence"),
    ("gen-config-exists", ["gen-config-file", "--output", "{exists}"], {}, 2, "pass --force"),
    ("gen-config-no-dir", ["gen-config-file", "--output", "{dir}/no/such/x.toml"], {}, 2, "does not exist"),
]


def _fill(value: str, files: dict[str, Path]) -> str:
    for name, path in files.items():
        value = value.replace("{" + name + "}", str(path))
    return value


@pytest.fixture(scope="module")
def invalid_results(files) -> dict[str, subprocess.CompletedProcess]:
    """Every INVALID case run once, a few at a time (each is a fresh interpreter)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(case):
        name, args, env, _, _ = case
        return name, run_cli([_fill(a, files) for a in args], env={k: _fill(v, files) for k, v in env.items()})

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(one, INVALID))


@pytest.mark.parametrize("case", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_input_one_line_no_traceback(invalid_results, case):
    name, _, _, code, fragment = case
    r = invalid_results[name]
    err = r.stderr.decode()
    assert r.returncode == code, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert fragment in lines[0]
    assert r.stdout == b""


def test_every_problem_at_once_on_one_line(files):
    r = run_cli(["--backfill", "--start-ledger", "7", "--end-ledger", "10000001", "--config-path", files["unknown"]])
    line = r.stderr.decode().strip()
    assert r.returncode == 2 and "\n" not in line
    assert line.startswith("error: invalid configuration: ")
    for fragment in ("http_prot", "backfill.parallel_ranges", "--start-ledger must be", "bucket_path is required"):
        assert fragment in line


def test_version():
    r = run_cli(["version"])
    assert r.returncode == 0
    assert r.stdout.decode().startswith(f"stellar-rpc {rpcbackfill.__version__} ")
    r = run_cli(["--version"])
    assert r.returncode == 0 and r.stdout.decode().strip() == f"stellar-rpc {rpcbackfill.__version__}"


def test_help_lists_commands():
    r = run_cli(["--help"])
    out = r.stdout.decode()
    assert r.returncode == 0
    for cmd in ("get-ledger-by-sequence", "get-transaction-by-hash", "status", "version", "gen-config-file", "dev"):
        assert cmd in out


def test_gen_config_file_round_trip(tmp_path):
    r = run_cli(["gen-config-file"])
    assert r.returncode == 0
    text = r.stdout.decode()
    assert text == example_config_text() == (REPO / "config" / "example.toml").read_text()
    out = tmp_path / "generated.toml"
    r = run_cli(["gen-config-file", "--output", out])
    assert r.returncode == 0 and out.read_text() == text
    assert not [p for p in tmp_path.iterdir() if p.name != "generated.toml"]  # no temp files left
    cfg = load_config(out, env={}, overrides={"service.data_dir": str(tmp_path / "d")})
    assert cfg.service.data_dir == tmp_path / "d"
    r = run_cli(["gen-config-file", "--output", out, "--force"])
    assert r.returncode == 0


def test_show_config_precedence(tmp_path):
    conf = tmp_path / "p.toml"
    conf.write_text(
        '[service]\ndata_dir = "from-file"\nhttp_port = 1000\nlog_level = "warning"\n'
        "[backfill]\nparallel_ranges = 3\nmax_retries = 7\n"
    )
    env = {
        "STELLAR_RPC_CONFIG_PATH": str(conf),
        "STELLAR_RPC_BACKFILL_PARALLEL_RANGES": "4",
        "STELLAR_RPC_SERVICE_LOG_LEVEL": "error",
        "STELLAR_RPC_BACKFILL_MAX_RETRIES": "8",
    }
    r = run_cli(["show-config", "--set", "backfill.parallel_ranges=5", "--log-level", "info"], env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["backfill"]["parallel_ranges"] == 5  # flag > env > file
    assert got["service"]["log_level"] == "info"  # flag > env > file
    assert got["backfill"]["max_retries"] == 8  # env > file
    assert got["service"]["http_port"] == 1000  # file > default
    assert got["backfill"]["checkpoint_interval"] == 1000  # default
    assert got["service"]["data_dir"] == str(tmp_path / "from-file")
    # group-level options work too, and the command's own win
    r = run_cli(["--data-dir", tmp_path / "g", "show-config"], cwd=tmp_path)
    assert json.loads(r.stdout)["service"]["data_dir"] == str(tmp_path / "g")
    r = run_cli(["--data-dir", tmp_path / "g", "show-config", "--data-dir", tmp_path / "c"], cwd=tmp_path)
    assert json.loads(r.stdout)["service"]["data_dir"] == str(tmp_path / "c")


def test_query_commands_on_empty_data_dir(files):
    # Arguments are valid, the data directory holds nothing: whatever the api answers, the CLI
    # must fail with one "error:" line and no traceback.
    data = files["dir"] / "empty-data"
    for args in (["status", "--json"], ["get-transaction-by-hash", TX], ["get-ledger-by-sequence", "2", "--base64"]):
        r = run_cli(args + ["--data-dir", data])
        err = r.stderr.decode()
        assert "Traceback" not in err, (args, err)
        assert r.returncode != 0 and r.stdout == b"", (args, r.returncode, r.stdout)
        assert err.strip().splitlines()[-1].startswith("error: "), (args, err)


def test_closed_stdout_exits_141_quietly():
    p = subprocess.Popen(
        _command() + ["gen-config-file"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), cwd=REPO
    )
    p.stdout.close()  # the reader goes away before the command writes
    err = p.stderr.read()
    p.stderr.close()
    assert p.wait(timeout=60) == 141
    assert err == b""


def test_dev_group_loaded_on_demand():
    r = run_cli(["dev", "--help"])
    assert r.returncode == 0, r.stderr
    assert b"generate-lake" in r.stdout
    # the operator's commands do not import the developer tools
    code = "import sys, rpcbackfill.cli; sys.exit('rpcbackfill.devtools.cli' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], env=_env(), cwd=REPO, timeout=60).returncode == 0


# --- the top-level handler, in process (the api placeholder is swapped for each outcome) --------------


@pytest.fixture
def data_args(tmp_path) -> list[str]:
    return ["--data-dir", str(tmp_path / "data")]


def _patch_api(monkeypatch, name, fn):
    from rpcbackfill.orchestration import api

    monkeypatch.setattr(api, name, fn)


def test_unexpected_exception_one_line_with_hint(monkeypatch, capfd, data_args):
    def boom(cfg):
        raise RuntimeError("disk on fire")

    _patch_api(monkeypatch, "status", boom)
    assert climod.run(["status", *data_args]) == 1
    err = capfd.readouterr().err
    assert err.strip().splitlines() == [
        "error: unexpected RuntimeError: disk on fire (run with --log-level debug for the traceback)"
    ]


def test_unexpected_exception_traceback_at_debug(monkeypatch, capfd, data_args):
    def boom(cfg):
        raise RuntimeError("disk on fire")

    _patch_api(monkeypatch, "status", boom)
    assert climod.run(["status", "--log-level", "debug", *data_args]) == 1
    err = capfd.readouterr().err
    assert "Traceback" in err and "disk on fire" in err
    assert err.strip().splitlines()[-1].startswith("error: unexpected RuntimeError")


def test_keyboard_interrupt_exits_130(monkeypatch, capfd, data_args):
    def interrupted(cfg):
        raise KeyboardInterrupt

    _patch_api(monkeypatch, "status", interrupted)
    assert climod.run(["status", *data_args]) == 130
    err = capfd.readouterr().err
    assert "error: interrupted" in err and "Traceback" not in err


def test_not_found_exits_3(monkeypatch, capfd, data_args):
    seen = []

    def absent(cfg, h):
        seen.append(h)
        raise NotFoundError(f"transaction {h.hex()} not found")

    _patch_api(monkeypatch, "get_transaction_ledger", absent)
    assert climod.run(["get-transaction-by-hash", TX.upper(), *data_args]) == 3
    assert seen == [bytes.fromhex(TX)]
    out = capfd.readouterr()
    assert out.out == "" and out.err == f"error: transaction {TX} not found\n"


def test_transaction_found_prints_json(monkeypatch, capfd, data_args):
    _patch_api(monkeypatch, "get_transaction_ledger", lambda cfg, h: 123456)
    assert climod.run(["get-transaction-by-hash", TX, *data_args]) == 0
    assert json.loads(capfd.readouterr().out) == {"ledger_sequence": 123456}


def test_get_ledger_raw_and_base64(monkeypatch, capfd, data_args):
    payload = bytes(range(256)) * 3
    calls = []

    def get(cfg, seq):
        calls.append((cfg.service.data_dir, seq))
        return payload

    _patch_api(monkeypatch, "get_ledger", get)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False, raising=False)
    assert climod.run(["get-ledger-by-sequence", "10002", "--base64", *data_args]) == 0
    import base64

    assert base64.b64decode(capfd.readouterr().out.strip()) == payload
    assert calls[0][1] == 10002 and calls[0][0] == Path(data_args[1])


def test_backfill_exit_code_passed_through(monkeypatch, capfd, tmp_path):
    lake = tmp_path / "lake"
    lake.mkdir()
    got = []

    def run_backfill(cfg):
        got.append(cfg)
        return 1

    _patch_api(monkeypatch, "run_backfill", run_backfill)
    args = [
        "--backfill",
        "--start-ledger",
        "2",
        "--end-ledger",
        "20001",
        "--data-dir",
        str(tmp_path / "d"),
        "--set",
        "backfill.range_size=10000",
        "--set",
        f"backfill.buffered_storage.bucket_path={lake}",
    ]
    assert climod.run(args) == 1
    (cfg,) = got
    assert (cfg.backfill.start_ledger, cfg.backfill.end_ledger, cfg.backfill.range_size) == (2, 20001, 10000)

    def failed(cfg):
        raise SourceError("range 1 FAILED: source error; re-run the same command to resume")

    _patch_api(monkeypatch, "run_backfill", failed)
    capfd.readouterr()
    assert climod.run(args) == 1
    assert capfd.readouterr().err.strip().splitlines()[-1] == (
        "error: range 1 FAILED: source error; re-run the same command to resume"
    )


def _report():
    from rpcbackfill.meta.store import LedgerPhase, RangeInfo, RangeState, TxHashPhase
    from rpcbackfill.orchestration.status import RangeStatus, StatusReport

    done = RangeInfo(
        0,
        RangeState.COMPLETE,
        2,
        10_000_001,
        ledger_phase=LedgerPhase.IMMUTABLE,
        txhash_phase=TxHashPhase.COMPLETE,
        ledger_last_committed=10_000_001,
        ledger_count=10_000_000,
        cf_counts=[5] * 16,
        completed_at="2026-11-30T10:00:00Z",
    )
    running = RangeInfo(
        1,
        RangeState.INGESTING,
        10_000_002,
        20_000_001,
        ledger_phase=LedgerPhase.INGESTING,
        txhash_phase=TxHashPhase.INGESTING,
        ledger_last_committed=10_020_001,
        ledger_count=20_000,
        attempts=2,
    )
    return StatusReport.of("backfill", 2, 20_000_001, 10_000_000, [RangeStatus.of(done), RangeStatus.of(running)])


def test_format_status_table():
    text = climod.format_status(_report())
    lines = text.splitlines()
    assert lines[:5] == [
        "mode: backfill",
        "ledgers: 2-20000001 (range size 10000000)",
        "complete: False",
        "ranges: 1 COMPLETE, 1 INGESTING",
        "progress: 10020000/20000000 ledgers, 80 tx hashes",
    ]
    header = lines[6].split()
    # table order; the all-empty ERROR column is left out
    assert header == [
        "ID",
        "STATE",
        "START",
        "END",
        "PERCENT",
        "LEDGERS",
        "LAST_COMMITTED",
        "LEDGER_PHASE",
        "TXHASH_PHASE",
        "TX",
        "ATTEMPTS",
        "COMPLETED_AT",
    ]
    assert lines[7].split() == [
        "0",
        "COMPLETE",
        "2",
        "10000001",
        "100",
        "10000000",
        "10000001",
        "IMMUTABLE",
        "COMPLETE",
        "80",
        "0",
        "2026-11-30T10:00:00Z",
    ]
    assert lines[8].split() == [
        "1",
        "INGESTING",
        "10000002",
        "20000001",
        "0.2",
        "20000",
        "10020001",
        "INGESTING",
        "INGESTING",
        "0",
        "2",
        "-",
    ]
    # numbers right-aligned under their header
    assert lines[7].index("10000001") + len("10000001") == lines[8].index("20000001") + len("20000001")


def test_format_status_without_ranges():
    from rpcbackfill.orchestration.status import StatusReport

    text = climod.format_status(StatusReport.of(None, None, None, None, []))
    assert text.splitlines()[-1] == "(no ranges)" and "ranges: none" in text


def test_status_json_is_the_report(monkeypatch, capfd, data_args):
    _patch_api(monkeypatch, "status", lambda cfg: _report())
    assert climod.run(["status", "--json", *data_args]) == 0
    got = json.loads(capfd.readouterr().out)
    assert got == _report().to_json()
    assert got["ranges"][1]["state"] == "INGESTING" and got["ranges"][1]["attempts"] == 2
