#!/usr/bin/env python3
"""Coverage-guided fuzzing of rpcbackfill.lcm with atheris (libFuzzer), differential vs stellar-sdk.

    python fuzz/fuzz_lcm.py -max_total_time=600 [-jobs=1] [libFuzzer flags...] [corpus_dir]

Each input is fed to tx_hashes / lcm_length / split_batch and to stellar-sdk's decoder (which is
instrumented, so libFuzzer's coverage signal is the SDK's walk of the same XDR grammar: union arms,
array loops, ...).  Properties checked:
  * only XdrError escapes (anything else is a bug);
  * whatever tx_hashes accepts, stellar-sdk's decoder accepts with the same sequence and hashes;
  * whatever stellar-sdk accepts, we accept too unless we rejected it for one of our deliberate
    strictness rules (non-zero padding, bool/optional flag not 0/1, length above its XDR bound,
    recursion limit);
  * lcm_length of an accepted ledger equals its length; split_batch results re-join to the input;
    scan_batch agrees with split_batch + tx_hashes.
If no corpus directory is given, a temporary one is seeded with every fixture ledger and
tests/regressions/lcm/*.bin.  A failing input is written to tests/regressions/lcm/crash-<sha1>.bin
(then replayed by tests/test_lcm_hostile.py).

The compiled scanner is not instrumented for coverage (only Python is), so libFuzzer mostly
mutates blindly around the seeds; fuzz/lcm_fuzz.c (AddressSanitizer) is the memory-safety fuzzer.
"""

from __future__ import annotations

import hashlib
import struct
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import atheris  # noqa: E402

with atheris.instrument_imports():
    import stellar_sdk.xdr  # noqa: F401  (coverage signal: the SDK's decoder)

    from rpcbackfill import lcm
    from rpcbackfill.errors import XdrError

# reasons for which we may reject what stellar-sdk (xdrlib3) tolerates
STRICTER = ("non-zero padding", "bool other than", "optional flag other than", "above its XDR bound", "recursion limit")

REGRESSIONS = REPO / "tests" / "regressions" / "lcm"


def _save(data: bytes) -> None:
    p = REGRESSIONS / f"crash-{hashlib.sha1(data).hexdigest()}.bin"
    p.write_bytes(data)
    print(f"fuzz_lcm: failing input saved to {p}", file=sys.stderr)


def _sdk(data: bytes):
    from tests.lib.oracle import sdk_reference

    try:
        return sdk_reference(data)
    except Exception:
        return None


def test_one_input(data: bytes) -> None:
    try:
        err = None
        try:
            got = lcm.tx_hashes(data)
        except XdrError as e:
            got, err = None, str(e)
        ref = _sdk(data)
        if got is not None:
            if ref is None or (ref[0], ref[1]) != got:
                raise AssertionError(f"differs from stellar-sdk: ours={got!r} sdk={ref!r}")
        elif ref is not None and not any(r in err for r in STRICTER):
            raise AssertionError(f"stellar-sdk accepts what we reject: {err}")
            if lcm.lcm_length(data) != len(data):
                raise AssertionError("lcm_length disagrees with tx_hashes")
        try:
            start, end, metas = lcm.split_batch(data)
        except XdrError:
            pass
        else:
            if struct.pack(">III", start, end, len(metas)) + b"".join(metas) != data:
                raise AssertionError("split_batch pieces do not re-join to the input")
            s2, e2, ledgers = lcm.scan_batch(data)
            if (
                (s2, e2) != (start, end)
                or [bytes(v) for _, v, _ in ledgers] != metas
                or [(q, h) for q, _, h in ledgers] != [(start + i, lcm.tx_hashes(m)[1]) for i, m in enumerate(metas)]
            ):
                raise AssertionError("scan_batch disagrees with split_batch + tx_hashes")
    except XdrError:
        pass
    except BaseException:
        _save(data)
        raise


def _seed_dir() -> str:
    from tests.lib.fixtures import load_fixture_ledgers

    d = Path(tempfile.mkdtemp(prefix="fuzz_lcm_corpus_"))
    for i, f in enumerate(load_fixture_ledgers()):
        (d / f"fixture-{i:03d}").write_bytes(f.lcm)
    for p in REGRESSIONS.glob("*.bin"):
        (d / p.name).write_bytes(p.read_bytes())
    return str(d)


def main() -> None:
    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):
        argv.append(_seed_dir())
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
