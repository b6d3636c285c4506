"""rpcbackfill.lcm on the real ledgers of tests/fixtures/, against expected.json and stellar-sdk."""

from __future__ import annotations

import mmap
import struct

import pytest

from rpcbackfill import lcm
from rpcbackfill.devtools.lakegen import generate_ledgers
from rpcbackfill.errors import XdrError
from tests.lib import FIXTURES
from tests.lib.fixtures import zstd_decompress
from tests.lib.lcm_support import make_batch
from tests.lib.oracle import sdk_reference, sdk_split_batch


def test_fixture_set_is_the_expected_one(fixture_ledgers):
    # V0, V1 and V2 ledgers, several with fee bumps: otherwise the tests below prove less
    versions = {f.lcm[3] for f in fixture_ledgers}
    assert versions == {0, 1, 2}
    assert sum(f.expected_hashes is not None for f in fixture_ledgers) == 9


def test_tx_hashes_match_expected_json(fixture_ledgers):
    checked = 0
    for f in fixture_ledgers:
        if f.expected_hashes is None:
            continue
        seq, hashes = lcm.tx_hashes(f.lcm)
        assert seq == f.seq, f.source
        assert lcm.iter_hashes(hashes) == list(f.expected_hashes), f.source
        checked += 1
    assert checked == 9


def test_every_fixture_matches_sdk_decode(fixture_ledgers):
    inner = 0  # ledgers with at least one transaction
    for f in fixture_ledgers:
        seq, hashes, hh, prev = sdk_reference(f.lcm)
        assert lcm.tx_hashes(f.lcm) == (seq, hashes), f.source
        assert lcm.ledger_sequence(f.lcm) == seq == f.seq
        assert lcm.header_hashes(f.lcm) == (hh, prev)
        assert lcm.ledger_info(f.lcm) == (seq, hh, prev, hashes)
        assert lcm.lcm_length(f.lcm) == len(f.lcm)
        n = len(hashes) // 32
        buf = bytearray(n * 32 + 7)
        assert lcm.tx_hashes_into(f.lcm, buf, 7) == (seq, n)
        assert bytes(buf[7:]) == hashes
        inner += len(hashes) > 0
    assert inner > 0


def test_hash_chain_of_consecutive_fixture_ledgers(fixture_ledgers):
    # within one batch/stream, ledger N's previousLedgerHash is ledger N-1's hash
    by_seq = {(f.source.split(" frame")[0], f.seq): f for f in fixture_ledgers}
    linked = 0
    for (src, seq), f in by_seq.items():
        prev = by_seq.get((src, seq - 1))
        if prev is not None:
            assert lcm.header_hashes(f.lcm)[1] == lcm.header_hashes(prev.lcm)[0]
            linked += 1
    assert linked > 0


def test_buffer_types(fixture_ledgers):
    f = max(fixture_ledgers, key=lambda f: len(f.expected_hashes or ()))
    want = lcm.tx_hashes(f.lcm)
    ro = memoryview(f.lcm)
    assert ro.readonly
    assert lcm.tx_hashes(bytearray(f.lcm)) == want
    assert lcm.tx_hashes(ro) == want
    assert lcm.tx_hashes(memoryview(b"ab" + f.lcm + b"cd")[2:-2]) == want
    with mmap.mmap(-1, len(f.lcm)) as m:
        m.write(f.lcm)
        assert lcm.tx_hashes(m) == want
    with pytest.raises(TypeError):
        lcm.tx_hashes("not a buffer")


def test_lcm_length_with_offset_and_stream(fixture_ledgers):
    metas = [f.lcm for f in fixture_ledgers[:40]]
    stream = b"junk" + b"".join(metas)
    pos = 4
    for m in metas:
        n = lcm.lcm_length(stream, pos)
        assert n == len(m)
        pos += n
    assert pos == len(stream)
    with pytest.raises(XdrError):
        lcm.lcm_length(stream, len(stream))  # nothing there
    with pytest.raises(XdrError):
        lcm.lcm_length(stream, len(stream) + 1)
    with pytest.raises(XdrError):
        lcm.lcm_length(stream, -1)


def test_trailing_bytes_rejected(fixture_ledgers):
    f = fixture_ledgers[0]
    for fn in (lcm.tx_hashes, lcm.ledger_sequence, lcm.header_hashes, lcm.ledger_info):
        with pytest.raises(XdrError, match="trailing"):
            fn(f.lcm + b"\0\0\0\0")


def test_tx_hashes_into_too_small(fixture_ledgers):
    f = next(f for f in fixture_ledgers if f.expected_hashes)
    n = len(f.expected_hashes)
    buf = bytearray(32 * n - 1)
    with pytest.raises(ValueError, match="too small"):
        lcm.tx_hashes_into(f.lcm, buf)
    assert buf == bytearray(len(buf))  # nothing written
    with pytest.raises(ValueError):
        lcm.tx_hashes_into(f.lcm, bytearray(32 * n), 32 * n + 1)
    with pytest.raises(BufferError):
        lcm.tx_hashes_into(f.lcm, b"\0" * (32 * n))  # read-only output


def test_split_batch_fixture_files():
    files = sorted(p for p in FIXTURES.glob("*.xdr.zst*") if not p.name.startswith("galexie-load-test"))
    assert files
    for p in files:
        raw = zstd_decompress(p.read_bytes())
        assert lcm.split_batch(raw) == sdk_split_batch(raw)
        assert lcm.split_batch(memoryview(raw)) == sdk_split_batch(raw)


def _consecutive_run(fixture_ledgers, n):
    for i in range(len(fixture_ledgers) - n + 1):
        run = fixture_ledgers[i : i + n]
        if all(run[j + 1].seq == run[j].seq + 1 for j in range(n - 1)):
            return run
    pytest.fail("no consecutive fixture ledgers")


def test_split_batch_synthetic(fixture_ledgers):
    run = _consecutive_run(fixture_ledgers, 3)
    metas = [f.lcm for f in run]
    start = run[0].seq
    batch = make_batch(start, metas)
    assert lcm.split_batch(batch) == (start, start + 2, metas)
    assert lcm.split_batch(bytearray(batch)) == (start, start + 2, metas)


def _check_scan(batch, want_start: int, want_metas: list[bytes]) -> int:
    """scan_batch(batch) against stellar-sdk: same split as split_batch, each ledger's bytes a
    view of ``batch``, its sequence and tx hashes equal to the SDK's full decode.  Returns the
    number of hashes checked."""
    start, end, ledgers = lcm.scan_batch(batch)
    assert (start, end) == (want_start, want_start + len(want_metas) - 1)
    assert [bytes(view) for _, view, _ in ledgers] == want_metas
    n = 0
    for i, (seq, view, hashes) in enumerate(ledgers):
        assert isinstance(view, memoryview) and view.obj is memoryview(batch).obj  # no copy
        sdk_seq, sdk_hashes, _, _ = sdk_reference(want_metas[i])
        assert (seq, hashes) == (sdk_seq, sdk_hashes) == (start + i, lcm.tx_hashes(view)[1])
        n += len(hashes) // lcm.HASH_SIZE
    return n


def test_scan_batch_fixture_files():
    files = sorted(p for p in FIXTURES.glob("*.xdr.zst*") if not p.name.startswith("galexie-load-test"))
    for p in files:
        raw = zstd_decompress(p.read_bytes())
        start, _, metas = sdk_split_batch(raw)
        _check_scan(raw, start, metas)


def test_scan_batch_synthetic(fixture_ledgers):
    # several ledgers per batch: each one's hashes come out of one shared collection buffer
    run = _consecutive_run(fixture_ledgers, 3)
    metas = [f.lcm for f in run]
    _check_scan(make_batch(run[0].seq, metas), run[0].seq, metas)
    _check_scan(bytearray(make_batch(run[0].seq, metas)), run[0].seq, metas)
    # dense generated ledgers: the shared buffer grows past the scanner's on-stack 128 hashes
    dense = [x for _, x in generate_ledgers(1000, 1007, seed=3, tx_per_ledger=60)]
    assert _check_scan(make_batch(1000, dense), 1000, dense) > 128
    for f in run:
        if f.expected_hashes is not None:  # expected.json agrees too
            seq, _, hashes = lcm.scan_batch(make_batch(f.seq, [f.lcm]))[2][0]
            assert lcm.iter_hashes(hashes) == list(f.expected_hashes)


@pytest.mark.parametrize("split", [lcm.split_batch, lcm.scan_batch])
def test_split_batch_errors(fixture_ledgers, split):
    run = _consecutive_run(fixture_ledgers, 3)
    metas = [f.lcm for f in run]
    s = run[0].seq
    with pytest.raises(XdrError, match="3 ledgers for sequences"):
        split(make_batch(s, metas, end=s + 3))
    with pytest.raises(XdrError, match="ledgers for sequences"):
        split(make_batch(s, metas, end=s - 1))
    with pytest.raises(XdrError, match=r"ledger #1 has sequence"):
        split(make_batch(s, [metas[0], metas[2], metas[1]]))
    with pytest.raises(XdrError, match=r"ledger #0 has sequence"):
        split(make_batch(s + 1, metas))
    with pytest.raises(XdrError, match="trailing"):
        split(make_batch(s, metas) + b"\0\0\0\0")
    with pytest.raises(XdrError, match="truncated"):
        split(make_batch(s, metas)[:-1])
    with pytest.raises(XdrError, match="truncated"):
        split(b"\0" * 11)
    with pytest.raises(XdrError, match="cannot fit"):
        split(struct.pack(">III", 1, 0x7FFFFFFF, 0x7FFFFFFF))
    # empty batch cannot exist: end >= start means at least one ledger
    with pytest.raises(XdrError):
        split(struct.pack(">III", 5, 4, 0))


def test_concurrent_threads_agree(fixture_ledgers):
    # the GIL is released while parsing: threads scanning the same buffers must not interfere
    from concurrent.futures import ThreadPoolExecutor

    sample = fixture_ledgers[::7]
    want = [lcm.ledger_info(f.lcm) for f in sample]
    with ThreadPoolExecutor(4) as ex:
        for _ in range(3):
            assert list(ex.map(lambda f: lcm.ledger_info(f.lcm), sample)) == want
