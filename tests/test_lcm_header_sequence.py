"""rpcbackfill.lcm.header_sequence: the bounded prefix parse the LFS verify pass uses instead of a
full scan.  On every real fixture ledger (V0, V1, V2) it agrees with the full scan and stellar-sdk;
every cut of the prefix raises XdrError; hostile bytes never escape as anything else."""

from __future__ import annotations

import random
import struct

import pytest

from rpcbackfill import lcm
from rpcbackfill.errors import XdrError
from tests.lib.lcm_support import REGRESSIONS
from tests.lib.oracle import sdk_reference


def _prefix_len(buf: bytes) -> int:
    """Bytes the parse needs: the shortest prefix it accepts (binary search; it is monotone)."""
    lo, hi = 0, len(buf)
    while lo < hi:
        mid = (lo + hi) // 2
        try:
            lcm.header_sequence(buf[:mid])
            hi = mid
        except XdrError:
            lo = mid + 1
    return lo


def test_agrees_with_full_scan_and_sdk_on_every_fixture(fixture_ledgers):
    versions = set()
    for f in fixture_ledgers:
        seq = sdk_reference(f.lcm)[0]
        assert lcm.header_sequence(f.lcm) == seq == lcm.ledger_sequence(f.lcm) == f.seq, f.source
        assert lcm.header_sequence(memoryview(f.lcm)) == seq
        versions.add(f.lcm[3])
    assert versions == {0, 1, 2}


def test_every_cut_of_the_prefix_raises_and_longer_ones_agree(fixture_ledgers):
    rnd = random.Random(7)
    for f in fixture_ledgers:
        n = _prefix_len(f.lcm)
        assert 4 + 32 + 4 + 32 + 32 + 8 + 4 + 4 + 64 + 4 <= n < len(f.lcm)  # at least the fixed fields
        for k in range(n):
            with pytest.raises(XdrError):
                lcm.header_sequence(f.lcm[:k])
        for k in rnd.sample(range(n, len(f.lcm) + 1), 5):
            assert lcm.header_sequence(f.lcm[:k]) == f.seq


def test_unknown_arm_and_bad_ext_raise(fixture_ledgers):
    f = fixture_ledgers[0]
    with pytest.raises(XdrError, match="union discriminant"):
        lcm.header_sequence(struct.pack(">I", 3) + f.lcm[4:])
    v1 = next(x for x in fixture_ledgers if x.lcm[3] == 1)
    bad = bytearray(v1.lcm)
    bad[4:8] = struct.pack(">I", 9)  # LedgerCloseMetaExt arm 9 does not exist
    with pytest.raises(XdrError):
        lcm.header_sequence(bytes(bad))


def test_hostile_inputs_only_raise_xdr_error(fixture_ledgers):
    rnd = random.Random(3)
    inputs = [p.read_bytes() for p in sorted(REGRESSIONS.glob("*.bin"))]
    for f in fixture_ledgers:
        head = bytearray(f.lcm[: _prefix_len(f.lcm)])
        for _ in range(200):  # flip bytes of the prefix: lengths, arms, counts
            b = bytearray(head)
            for _ in range(rnd.randint(1, 4)):
                b[rnd.randrange(len(b))] = rnd.randrange(256)
            inputs.append(bytes(b))
    inputs += [b"", b"\x00" * 3, b"\xff" * 64, struct.pack(">II", 1, 1) + b"\xff" * 40]
    for b in inputs:
        try:
            seq = lcm.header_sequence(b)
        except XdrError:
            continue
        assert 0 <= seq < 2**32
