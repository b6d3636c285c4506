"""Damage is an error, never an answer: queries over a finished data dir whose files were
damaged, through the real ``stellar-rpc`` console script (issue 15).

One small backfill (2 ranges of 10,000 ledgers, generated lake) is built per session; every test
damages its own copy.  Exit codes: 0 answer, 1 damage (one ``error:`` line naming the file),
3 not found (only when no damage was met).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rpcbackfill import lcm
from rpcbackfill.paths import index_shard_path as shard_index_path
from rpcbackfill.stores.lfs import ChunkReader, LedgerStore, chunk_paths
from tests.lib.orchestration import RS, make_config, make_lake, run_to_end

REPO = Path(__file__).resolve().parents[1]
LAST = 2 * RS + 1


def _command() -> list[str]:
    script = Path(sys.executable).parent / "stellar-rpc"
    return [str(script)] if script.exists() else [sys.executable, "-m", "rpcbackfill"]


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STELLAR_RPC_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        _command() + ["--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.fixture(scope="session")
def finished(tmp_path_factory):
    """(data dir, {tx hash: ledger}) of a COMPLETE 2-range backfill."""
    base = tmp_path_factory.getbasetemp() / "integrity-finished"
    lake = make_lake(base / "lake", 2, LAST)
    cfg = make_config(base / "data", lake, 2, LAST)
    if not (base / "data" / "meta").exists():
        assert run_to_end(base, cfg) == 0
    truth = {}
    with LedgerStore(cfg.immutable_stores.ledgers_base) as store:
        for seq in list(range(2, 60)) + list(range(RS + 2, RS + 60)):
            _, hashes = lcm.tx_hashes(store.get_ledger(seq))
            for h in lcm.iter_hashes(hashes):
                truth[h] = seq
    assert truth
    return base / "data", truth


@pytest.fixture
def data(finished, tmp_path):
    src, truth = finished
    dst = tmp_path / "data"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock", "LOCK"))
    return dst, truth


def _pick(truth: dict, in_range: int, shard: int | None = None) -> tuple[bytes, int]:
    for h, seq in truth.items():
        if (seq - 2) // RS == in_range and (shard is None or h[0] >> 4 == shard):
            return h, seq
    raise AssertionError("no such hash in the sample")


def _flip(path: Path, pos: int, bit: int = 0) -> None:
    raw = bytearray(path.read_bytes())
    raw[pos] ^= 1 << bit
    path.write_bytes(bytes(raw))


def _error_line(r: subprocess.CompletedProcess) -> str:
    lines = r.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[-1]


def test_healthy_answers_and_absent_is_not_found(data):
    d, truth = data
    h, seq = _pick(truth, 1)
    r = cli(d, "get-transaction-by-hash", h.hex())
    assert r.returncode == 0, r.stderr
    assert f'"ledger_sequence": {seq}' in r.stdout
    r = cli(d, "get-transaction-by-hash", "5a" * 32)
    assert r.returncode == 3, r.stderr


def test_flipped_idx_bit_is_an_error_naming_the_shard(data):
    d, truth = data
    h, _ = _pick(truth, 0)
    shard = shard_index_path(d / "immutable" / "txhash" / "0000", h[0] >> 4)
    _flip(shard, shard.stat().st_size // 2, 3)  # inside the values/seeds: the header still parses
    r = cli(d, "get-transaction-by-hash", h.hex())
    assert r.returncode == 1, r.stderr
    line = _error_line(r)
    assert str(shard) in line and "checksum" in line


def test_flipped_idx_header_bit_is_an_error_not_a_crash(data):
    d, truth = data
    h, _ = _pick(truth, 0)
    shard = shard_index_path(d / "immutable" / "txhash" / "0000", h[0] >> 4)
    for pos in (20, 70, 110, 130, 180):  # n_keys, vals_off, efk_l, efk_high_off, efb_low_off
        _flip(shard, pos, 5)
        r = cli(d, "get-transaction-by-hash", h.hex())
        assert r.returncode == 1, (pos, r.returncode, r.stderr)
        assert str(shard) in _error_line(r)
        _flip(shard, pos, 5)


def test_damaged_range_does_not_break_a_healthy_range(data):
    d, truth = data
    h, seq = _pick(truth, 1)  # lives in range 1
    # the same shard of range 0 (asked first) is damaged, and a chunk of range 0 is gone
    bad = shard_index_path(d / "immutable" / "txhash" / "0000", h[0] >> 4)
    _flip(bad, bad.stat().st_size - 100, 1)
    r = cli(d, "get-transaction-by-hash", h.hex())
    assert r.returncode == 0, r.stderr
    assert f'"ledger_sequence": {seq}' in r.stdout
    # a sibling shard of range 1 being unreadable does not matter either
    sib = shard_index_path(d / "immutable" / "txhash" / "0001", (h[0] >> 4) ^ 1)
    sib.write_bytes(b"garbage")
    r = cli(d, "get-transaction-by-hash", h.hex())
    assert r.returncode == 0, r.stderr
    # an absent hash over damaged data is not "not found": the damage is reported
    absent = bytes([h[0]]) + b"\x5a" * 31
    r = cli(d, "get-transaction-by-hash", absent.hex())
    assert r.returncode == 1, r.stderr
    assert str(bad) in _error_line(r)


def test_deleted_chunk_is_an_error_naming_the_file(data):
    d, truth = data
    h, seq = _pick(truth, 0)
    data_file, _ = chunk_paths(d / "immutable" / "ledgers", (seq - 2) // 10_000)
    data_file.unlink()
    r = cli(d, "get-transaction-by-hash", h.hex())
    assert r.returncode == 1, r.stderr
    assert str(data_file) in _error_line(r)
    r = cli(d, "get-ledger-by-sequence", str(seq), "--base64")
    assert r.returncode == 1, r.stderr
    assert str(data_file) in _error_line(r)
    # a ledger no COMPLETE range holds is still "not found"
    r = cli(d, "get-ledger-by-sequence", str(LAST + 5), "--base64")
    assert r.returncode == 3, r.stderr


def test_corrupt_chunk_frame_is_an_error(data):
    """A flipped bit in the ledger's zstd frame: the frame's content checksum makes it an error
    (exit 1) for both queries -- never another ledger, never exit 3.  (A flip of a bit the decoder
    ignores would read back the identical ledger; these positions are not such bits.)"""
    d, truth = data
    h, seq = _pick(truth, 0)
    base = d / "immutable" / "ledgers"
    data_file, _ = chunk_paths(base, (seq - 2) // 10_000)
    with ChunkReader(base, (seq - 2) // 10_000) as r:
        offs = r.frame_offsets
        i = seq - r.first_ledger
    start, end = offs[i], offs[i + 1]
    for pos in (start + 6, start + (end - start) // 3, start + (end - start) // 2, end - 2):
        _flip(data_file, pos, 2)
        r1 = cli(d, "get-transaction-by-hash", h.hex())
        r2 = cli(d, "get-ledger-by-sequence", str(seq), "--base64")
        _flip(data_file, pos, 2)
        for r in (r1, r2):
            assert r.returncode == 1, (pos, r.returncode, r.stdout[:200], r.stderr)
            line = _error_line(r)
            assert str(data_file) in line and f"ledger {seq}" in line, line


def test_corrupt_meta_store_exits_1_naming_the_meta_dir(data):
    d, truth = data
    h, _ = _pick(truth, 0)
    meta = d / "meta" / "rocksdb"
    ssts = sorted(meta.glob("*.sst"))
    assert ssts, "the finished meta store has an SST file"
    _flip(ssts[0], 100, 4)
    for args in (["get-transaction-by-hash", h.hex()], ["status"]):
        r = cli(d, *args)
        assert r.returncode == 1, (args, r.stderr)
        line = _error_line(r)
        assert str(meta) in line and "\n" not in line


def test_no_meta_store_is_not_found(tmp_path):
    (tmp_path / "empty").mkdir()
    r = cli(tmp_path / "empty", "get-transaction-by-hash", "ab" * 32)
    assert r.returncode == 3, r.stderr
