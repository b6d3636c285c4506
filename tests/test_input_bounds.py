"""Every input is bounded and checked before use: bad input exits 2 with one ``error:`` line
naming the cause, through the real ``stellar-rpc`` console script (issue 15)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rpcbackfill.config import KEYS, MAX_CONFIG_BYTES

REPO = Path(__file__).resolve().parents[1]


def _command() -> list[str]:
    script = Path(sys.executable).parent / "stellar-rpc"
    return [str(script)] if script.exists() else [sys.executable, "-m", "rpcbackfill"]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith("STELLAR_RPC_")}
    e["PYTHONPATH"] = str(REPO)
    e.update(env or {})
    return subprocess.run(
        _command() + list(args),
        capture_output=True,
        text=True,
        env=e,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def bad_input(r: subprocess.CompletedProcess, *fragments: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])


@pytest.fixture
def conf(tmp_path):
    def write(body: str) -> Path:
        p = tmp_path / "c.toml"
        p.write_text(f'[service]\ndata_dir = "{tmp_path / "data"}"\n{body}')
        return p

    return write


def test_config_path_dev_zero_fails_at_once():
    bad_input(cli("status", "--config-path", "/dev/zero"), "/dev/zero", "not a regular file")


def test_config_file_over_the_size_cap(conf):
    p = conf("")
    with p.open("a") as f:
        f.write("#" * MAX_CONFIG_BYTES + "\n")
    bad_input(cli("status", "--config-path", str(p)), str(p), "larger than 1 MiB")


def test_deeply_nested_toml(conf):
    depth = 50_000
    p = conf("[backfill]\nx = " + "[" * depth + "]" * depth + "\n")
    bad_input(cli("status", "--config-path", str(p)), "nested too deeply")


@pytest.mark.parametrize("data_dir", ["/proc/1/rpc", "/sys/rpc", "/dev/shm/../rpc"])
def test_data_dir_on_a_pseudo_filesystem(data_dir, tmp_path):
    r = cli(
        "--backfill",
        "--start-ledger",
        "2",
        "--end-ledger",
        "10000001",
        "--data-dir",
        data_dir,
        "--set",
        f"backfill.buffered_storage.bucket_path={tmp_path}",
    )
    bad_input(r, "service.data_dir", "pseudo filesystem")


def test_huge_block_cache(conf):
    p = conf("[rocksdb]\nblock_cache_mb = 1180591620717411303424\n")
    bad_input(cli("status", "--config-path", str(p)), "rocksdb.block_cache_mb", "between 1 and 65536")


def test_parallel_ranges_two_to_the_64(tmp_path):
    r = cli("status", "--data-dir", str(tmp_path), "--set", f"backfill.parallel_ranges={2**64}")
    bad_input(r, "backfill.parallel_ranges", "between 1 and 256")


NUMERIC = [k for k in KEYS if k.kind in ("int", "float", "duration")]


def test_every_numeric_key_has_an_upper_bound():
    assert NUMERIC
    assert [k.dotted for k in NUMERIC if k.maximum is None or k.minimum is None] == []


@pytest.mark.parametrize("key", NUMERIC, ids=[k.dotted for k in NUMERIC])
def test_one_past_the_upper_bound_is_refused(key, tmp_path):
    above = int(key.maximum + 1) if key.kind == "int" else key.maximum * 2
    r = cli("status", "--data-dir", str(tmp_path), "--set", f"{key.dotted}={above}")
    bad_input(r, key.dotted, "between")


@pytest.mark.parametrize(
    "args, env, fragment",
    [
        (["get-ledger-by-sequence", "\u0661\u0662\u0663", "--base64"], {}, "SEQ"),  # Arabic-Indic 123
        (["--backfill", "--start-ledger", "\u0662", "--end-ledger", "10000001"], {}, "--start-ledger"),
        (
            ["--backfill", "--start-ledger", "2", "--end-ledger", "\uff11\uff10\uff10\uff10\uff10\uff10\uff10\uff11"],
            {},
            "--end-ledger",
        ),  # fullwidth digits
        (["status"], {"STELLAR_RPC_BACKFILL_MAX_RETRIES": "\u0663"}, "backfill.max_retries"),
        (["status", "--set", "backfill.buffered_storage.retry_wait=\u0661.\u0665"], {}, "retry_wait"),
        (["status", "--set", "service.http_port=\u0968\u0966"], {}, "service.http_port"),  # Devanagari 80
        (["status", "--set", "backfill.max_duration=\u0666h"], {}, "backfill.max_duration"),  # Arabic-Indic 6
        (["serve", "--set", "service.endpoint=127.0.0.1:\u0968\u0966"], {}, "endpoint"),
    ],
)
def test_non_ascii_digits_are_not_numbers(args, env, fragment, tmp_path):
    r = cli(*args, "--data-dir", str(tmp_path), env=env)
    bad_input(r, fragment)


def test_ascii_digits_with_underscores_still_work(tmp_path):
    r = cli("show-config", "--data-dir", str(tmp_path), "--set", "backfill.parallel_ranges=1_6")
    assert r.returncode == 0, r.stderr
    assert '"parallel_ranges": 16' in r.stdout
