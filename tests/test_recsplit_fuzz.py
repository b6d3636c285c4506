"""The RecSplit index reader against hostile files.

* Regression files (tests/regressions/recsplit/) replayed natively under AddressSanitizer+UBSan
  and through ShardIndex.
* Every single-bit flip of a real index: detected before any answer (CRC on first use), and
  never a crash with the checksum off (structural checks and bounded reads only).
* A bounded native fuzzing session (RECSPLIT_FUZZ_SECONDS, default 15 s) of fuzz/recsplit_fuzz.c:
  libFuzzer when clang has it, else gcc's sanitizers with the stand-alone driver
  (fuzz/fuzz_driver.h), coverage-guided when the compiler has trace-pc.  A crasher is written to
  tests/regressions/recsplit/ and replayed from then on.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess

import pytest

from rpcbackfill.errors import CorruptStoreError, UnsupportedFormatError
from rpcbackfill.index import ShardIndex
from tests.lib import REPO

SECONDS = float(os.environ.get("RECSPLIT_FUZZ_SECONDS", "15"))
REGRESSIONS = REPO / "tests" / "regressions" / "recsplit"
FUZZ_KEYS = 160  # recsplit_fuzz.c


def _seeds_module():
    spec = importlib.util.spec_from_file_location("recsplit_seeds", REPO / "fuzz" / "recsplit_seeds.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


seeds_mod = _seeds_module()


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return seeds_mod.write_seeds(tmp_path_factory.mktemp("recsplit_seeds"))


def _compile(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    """(path, kind): kind 'libfuzzer' or 'standalone'."""
    out = tmp_path_factory.mktemp("recsplit_fuzz") / "recsplit_fuzz"
    src = [f"-I{REPO / 'ext'}", f"-I{REPO / 'fuzz'}", str(REPO / "fuzz" / "recsplit_fuzz.c"), "-o", str(out), "-lm"]
    clang = shutil.which("clang")
    if clang and os.environ.get("RECSPLIT_FUZZ_DRIVER", "") != "standalone":
        r = _compile([clang, "-g", "-O1", "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all", *src])
        if r.returncode == 0:
            return out, "libfuzzer"
    cc = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    base = [cc, "-g", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-DRS_STANDALONE", *src]
    r = _compile(base[:1] + ["-fsanitize-coverage=trace-pc", "-DFUZZ_COVERAGE"] + base[1:])
    if r.returncode != 0:
        r = _compile(base)
    if r.returncode != 0 and "sanitize" in r.stderr:
        pytest.skip(f"compiler lacks sanitizers: {r.stderr.strip()[:200]}")
    assert r.returncode == 0, r.stderr
    return out, "standalone"


def _env():
    return dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0", UBSAN_OPTIONS="print_stacktrace=1")


def _regression_files():
    return sorted(p for p in REGRESSIONS.iterdir() if p.is_file() and p.name != "README.md")


def test_regression_files_exist():
    names = {p.stem for p in _regression_files()}
    assert {"samples-offset-past-end", "seeds-all-zero", "ef-sample-points-far"} <= names


def test_regressions_replay_natively(harness, seeds):
    exe, kind = harness
    files = [str(p) for p in _regression_files()] + [str(p) for p in seeds]
    if kind == "libfuzzer":
        cmd = [str(exe), *files]
    else:
        cmd = [str(exe), "0", "1", str(REGRESSIONS), *files]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-4000:]


def _replay_python(path) -> str:
    """Open with the checksum off and look up every fuzz key: returns what happened."""
    try:
        ix = ShardIndex(path, checksum="off")
    except (CorruptStoreError, UnsupportedFormatError):
        return "refused"
    with ix:
        keys = b"".join(seeds_mod.fuzz_key(i) for i in range(FUZZ_KEYS))
        try:
            ix.lookup_many(keys)
        except CorruptStoreError:
            return "damage"
        for i in range(0, FUZZ_KEYS, 16):
            try:
                ix.lookup(seeds_mod.fuzz_key(i))
            except CorruptStoreError:
                return "damage"
    return "answered"


def test_regressions_replay_through_shardindex():
    outcomes = {p.stem: _replay_python(p) for p in _regression_files()}
    # header damage is refused on open, body damage met by a lookup is reported
    assert outcomes["samples-offset-past-end"] == "refused"
    assert outcomes["n-keys-huge"] == "refused"
    assert outcomes["seeds-all-zero"] == "damage"
    assert set(outcomes.values()) <= {"refused", "damage", "answered"}


def test_every_bit_flip_is_detected_before_an_answer(seeds, tmp_path):
    """CRC-32 catches every single-bit error: with the default checksum="first-use" no flipped
    file answers; with the checksum off none crashes the process."""
    src = next(p for p in seeds if p.name == "seed-40.idx")  # 848 bytes, like the shard
    raw = src.read_bytes()
    key = seeds_mod.fuzz_key(7)
    with ShardIndex(src) as ix:
        want = ix.lookup(key)
    assert want is not None
    p = tmp_path / "cf-0.idx"
    outcomes: dict[str, int] = {}
    for pos in range(len(raw)):
        for bit in range(8):
            bad = bytearray(raw)
            bad[pos] ^= 1 << bit
            p.write_bytes(bad)
            try:
                with ShardIndex(p) as ix:
                    got = ix.lookup(key)
                raise AssertionError(f"flip of bit {bit} at byte {pos} answered {got} (sound file: {want})")
            except UnsupportedFormatError:
                outcomes["unsupported"] = outcomes.get("unsupported", 0) + 1
            except CorruptStoreError:
                outcomes["corrupt"] = outcomes.get("corrupt", 0) + 1
            what = _replay_python(p)
            outcomes[what] = outcomes.get(what, 0) + 1
    assert outcomes["corrupt"] + outcomes.get("unsupported", 0) == len(raw) * 8
    assert outcomes["refused"] > 0 and outcomes["answered"] > 0


def test_native_fuzz_bounded(harness, seeds, tmp_path):
    exe, kind = harness
    if kind == "libfuzzer":
        corpus = tmp_path / "corpus"
        corpus.mkdir()
        cmd = [
            str(exe),
            "-max_len=16384",
            "-timeout=10",
            "-rss_limit_mb=2048",
            f"-max_total_time={int(SECONDS)}",
            f"-artifact_prefix={REGRESSIONS}/",
            "-print_final_stats=1",
            str(corpus),
            str(seeds[0].parent),
        ]
    else:
        cmd = [str(exe), str(SECONDS), "4242", str(REGRESSIONS), *map(str, seeds), *map(str, _regression_files())]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=SECONDS + 300, check=False)
    assert r.returncode == 0, f"fuzzer found a crash (input saved under {REGRESSIONS}):\n{r.stderr[-4000:]}"
    if kind == "libfuzzer":
        runs = int(r.stderr.split("stat::number_of_executed_units:")[1].split()[0])
    else:
        assert "no crash" in r.stdout
        runs = int(r.stdout.split("recsplit_fuzz: ")[1].split()[0])
    assert runs > 0
