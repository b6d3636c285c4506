"""Bounded native fuzzing in CI: fuzz/lcm_fuzz.c built with AddressSanitizer + UBSan (so an
over-read is caught even when it would not crash), seeded with every fixture ledger and the
regression corpus, run for LCM_FUZZ_SECONDS (default 20 s).  A crasher is written to
tests/regressions/lcm/crash-*.bin, where test_lcm_hostile.py replays it from then on."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.lib.lcm_support import REGRESSIONS, REPO

SECONDS = float(os.environ.get("LCM_FUZZ_SECONDS", "20"))


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory):
    cc = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    out = tmp_path_factory.mktemp("lcmfuzz") / "lcm_fuzz"
    base = [
        cc,
        "-g",
        "-O1",
        "-fsanitize=address,undefined",
        "-fno-sanitize-recover=all",
        "-DXS_STANDALONE",
        f"-I{REPO / 'ext'}",
        str(REPO / "fuzz" / "lcm_fuzz.c"),
        "-o",
        str(out),
    ]
    # coverage-guided if the compiler has gcc's trace-pc instrumentation, else blind mutation
    r = subprocess.run(base + ["-fsanitize-coverage=trace-pc", "-DXS_COVERAGE"], capture_output=True, text=True)
    if r.returncode != 0:
        r = subprocess.run(base, capture_output=True, text=True)
    if r.returncode != 0 and "sanitize" in r.stderr:
        pytest.skip(f"compiler lacks sanitizers: {r.stderr.strip()[:200]}")
    assert r.returncode == 0, r.stderr
    return out


def test_native_fuzz_bounded(fuzzer, fixture_ledgers, tmp_path):
    seeds = []
    for i, f in enumerate(fixture_ledgers):
        p = tmp_path / f"seed-{i:03d}.bin"
        p.write_bytes(f.lcm)
        seeds.append(str(p))
    seeds += [str(p) for p in sorted(REGRESSIONS.glob("*.bin"))]
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0", UBSAN_OPTIONS="print_stacktrace=1")
    r = subprocess.run(
        [str(fuzzer), str(SECONDS), "12345", str(REGRESSIONS), *seeds],
        capture_output=True,
        text=True,
        env=env,
        timeout=SECONDS + 120,
    )
    assert r.returncode == 0, f"fuzzer found a crash (input saved under {REGRESSIONS}):\n{r.stderr[-4000:]}"
    assert "no crash" in r.stdout
    n = int(r.stdout.split("lcm_fuzz: ")[1].split()[0])
    assert n > 0
