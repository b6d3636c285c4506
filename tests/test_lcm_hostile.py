"""Hostile bytes: every malformation gives XdrError with a specific message, never a crash or an
over-read; recursion depth and array counts are bounded; saved crashers are replayed."""

from __future__ import annotations

import random
import struct

import pytest

from rpcbackfill import _lcm, lcm
from rpcbackfill.errors import XdrError
from tests.lib.lcm_support import REGRESSIONS
from tests.lib.oracle import sdk_reference

u32 = lambda v: struct.pack(">I", v & 0xFFFFFFFF)  # noqa: E731


def _small(fixture_ledgers, limit):
    return [f for f in fixture_ledgers if len(f.lcm) <= limit]


def test_every_prefix_of_small_ledgers_raises(fixture_ledgers):
    # the whole LCM is validated: no prefix is accepted even if all hashes were already seen
    ledgers = sorted(_small(fixture_ledgers, 4000), key=lambda f: len(f.lcm))[:3]
    assert ledgers
    for f in ledgers:
        for n in range(len(f.lcm)):
            with pytest.raises(XdrError):
                lcm.tx_hashes(f.lcm[:n])
            with pytest.raises(XdrError):
                lcm.lcm_length(f.lcm[:n])


def test_random_prefixes_of_every_ledger_raise(fixture_ledgers):
    rnd = random.Random(1)
    for f in fixture_ledgers:
        for n in [len(f.lcm) - 1, len(f.lcm) - 4, *rnd.sample(range(len(f.lcm)), 8)]:
            with pytest.raises(XdrError, match="truncated|array count|trailing"):
                lcm.tx_hashes(f.lcm[:n])


def test_truncated_after_last_hash_still_raises(fixture_ledgers):
    f = next(f for f in fixture_ledgers if f.expected_hashes)
    last = f.lcm.rfind(f.expected_hashes[-1])
    assert last > 0
    with pytest.raises(XdrError, match="truncated"):
        lcm.tx_hashes(f.lcm[: last + 32 + 4])


def test_unknown_lcm_version(fixture_ledgers):
    f = fixture_ledgers[0]
    for v in (3, 0xFFFFFFFF, 0x80000000):
        with pytest.raises(XdrError, match=r"unknown union discriminant at byte 0 of \d+ \(in LedgerCloseMeta\)"):
            lcm.tx_hashes(u32(v) + f.lcm[4:])


def test_empty_and_tiny_inputs():
    for b in (b"", b"\0", b"\0\0\0\0", b"\0\0\0\x01", b"\0\0\0\x02"):
        for fn in (
            lcm.tx_hashes,
            lcm.ledger_sequence,
            lcm.header_hashes,
            lcm.ledger_info,
            lcm.lcm_length,
            lcm.split_batch,
            lcm.scan_batch,
        ):
            with pytest.raises(XdrError):
                fn(b)


def test_absurd_array_count():
    # LedgerEntryChanges = LedgerEntryChange<>: count x minimum element size must fit first
    with pytest.raises(XdrError, match="array count exceeds the remaining bytes at byte 0"):
        _lcm._skip_type("LedgerEntryChanges", u32(0xFFFFFFFF) + b"\0" * 64)
    # arrays of constant-size elements are skipped by multiplication: same check
    with pytest.raises(XdrError, match="array count exceeds"):
        _lcm._skip_type("FreezeBypassTxs", u32(1000) + b"\0" * 64)  # Hash txs<>


def test_length_above_xdr_bound():
    with pytest.raises(XdrError, match="length above its XDR bound"):
        _lcm._skip_type("string32", u32(33) + b"a" * 36)
    assert _lcm._skip_type("string32", u32(32) + b"a" * 32) == 36
    # AccountEntry.signers<MAX_SIGNERS=20>
    with pytest.raises(XdrError, match="length above its XDR bound"):
        _lcm._skip_type("ClaimPredicate", u32(1) + u32(3) + b"\0" * 64)  # andPredicates<2>


def test_opaque_length_past_end():
    with pytest.raises(XdrError, match="truncated"):
        _lcm._skip_type("Value", u32(0xFFFFFFFF) + b"x" * 16)
    with pytest.raises(XdrError, match="truncated"):
        _lcm._skip_type("Value", u32(5) + b"x" * 5)  # padding missing
    assert _lcm._skip_type("Value", u32(5) + b"x" * 5 + b"\0" * 3) == 12


def test_nonzero_padding():
    for pad in (b"\x01\0\0", b"\0\0\x01", b"\0\x80\0"):
        with pytest.raises(XdrError, match="non-zero padding byte at byte 9"):
            _lcm._skip_type("Value", u32(5) + b"x" * 5 + pad)
    # fixed-size opaque with padding: AssetCode12 is 12 (none); AlphaNum4's code is opaque[4] (none);
    # Thresholds opaque[4]; use a 1-byte-short string instead
    with pytest.raises(XdrError, match="padding"):
        _lcm._skip_type("string32", u32(1) + b"a\0\0\x07")


def test_bad_bool_enum_optional():
    with pytest.raises(XdrError, match="bool other than 0 or 1"):
        _lcm._skip_type("SCVal", u32(0) + u32(2))  # SCV_BOOL
    assert _lcm._skip_type("SCVal", u32(0) + u32(1)) == 8
    with pytest.raises(XdrError, match="optional flag other than 0 or 1"):
        _lcm._skip_type("ClaimPredicate", u32(3) + u32(2))  # CLAIM_PREDICATE_NOT
    with pytest.raises(XdrError, match="invalid enum value"):
        _lcm._skip_type("LedgerEntryType", u32(99))
    with pytest.raises(XdrError, match="unknown union discriminant"):
        _lcm._skip_type("SCVal", u32(999))


def _nested_vec(levels: int) -> bytes:
    # SCVal{SCV_VEC, present, SCVec<1>{ ... }} x levels, then SCV_VOID
    return (u32(16) + u32(1) + u32(1)) * levels + u32(1)


def test_recursion_depth_limit():
    from stellar_sdk import xdr

    ok = _nested_vec(200)  # 400 recursive levels (SCVal + SCVec per level) < MAX_DEPTH
    assert _lcm._skip_type("SCVal", ok) == len(ok)
    assert xdr.SCVal.from_xdr_bytes(ok).to_xdr_bytes() == ok  # the SDK accepts it too
    for levels in (257, 10_000, 1_000_000):
        with pytest.raises(XdrError, match="nesting deeper than the recursion limit"):
            _lcm._skip_type("SCVal", _nested_vec(levels))
    # ClaimPredicate NOT chains recurse through an optional
    chain = (u32(3) + u32(1)) * 100_000 + u32(0)
    with pytest.raises(XdrError, match="recursion limit"):
        _lcm._skip_type("ClaimPredicate", chain)


def test_deepest_allowed_nesting_fits_a_small_thread_stack():
    # 255 SCVal levels = 510 recursive-type levels, just under MAX_DEPTH: must work on a thread with
    # a 256 KiB stack (the scanner's frames are small; see docs/lcm-scanner.md)
    import threading

    assert lcm.MAX_DEPTH == 512
    deep = _nested_vec(255)
    result = []
    old = threading.stack_size(256 * 1024)
    try:
        t = threading.Thread(target=lambda: result.append(_lcm._skip_type("SCVal", deep)))
        t.start()
        t.join()
    finally:
        threading.stack_size(old)
    assert result == [len(deep)]
    with pytest.raises(XdrError, match="recursion limit"):
        _lcm._skip_type("SCVal", _nested_vec(256))  # 512 levels + the innermost SCVal


def test_deep_nesting_inside_a_ledger():
    # a real LCM with a hostile SCVal planted in a contract event: built from a random V2 ledger
    path = REGRESSIONS / "deep-scval-nesting.bin"
    data = path.read_bytes()
    with pytest.raises(XdrError, match="recursion limit"):
        lcm.tx_hashes(data)


def _replay(data: bytes) -> None:
    try:
        got = lcm.tx_hashes(data)
    except XdrError:
        got = None
    if got is not None:
        seq, hashes, _, _ = sdk_reference(data)  # accepted by us => accepted by the SDK, same answer
        assert got == (seq, hashes)
        assert lcm.lcm_length(data) == len(data)
    for fn in (lcm.split_batch, lcm.scan_batch, lcm.ledger_sequence, lcm.header_hashes):
        try:
            fn(data)
        except XdrError:
            pass


REGRESSION_FILES = sorted(REGRESSIONS.glob("*.bin"))


def test_regression_corpus_present():
    assert len(REGRESSION_FILES) >= 5


@pytest.mark.parametrize("path", REGRESSION_FILES, ids=[p.name for p in REGRESSION_FILES])
def test_regression_replay(path):
    _replay(path.read_bytes())
