"""LFS chunk reader, verifier and cross-chunk store over generated ledgers (tests.lib.ledgers)."""

from __future__ import annotations

import mmap
import random
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpcbackfill.errors import (
    Cancelled,
    CorruptStoreError,
    LedgerSequenceError,
    NotFoundError,
    StoreError,
    UnsupportedFormatError,
)
from rpcbackfill.ledgermath import CHUNK_SIZE, chunk_first_ledger, chunk_last_ledger
from rpcbackfill.paths import chunk_partial_paths
from rpcbackfill.stores import lfs
from rpcbackfill.stores.lfs import reader as lfs_reader
from tests.lib.ledgers import ledger_at
from tests.lib.lfs import copy_base, make_ledgers, write_chunk


def test_random_access(full_chunk):
    base, ledgers, _ = full_chunk
    first = chunk_first_ledger(3)
    rng = random.Random(7)
    with lfs.ChunkReader(base, 3) as r:
        assert (r.first_ledger, r.last_ledger, len(r)) == (first, chunk_last_ledger(3), CHUNK_SIZE)
        for i in [0, CHUNK_SIZE - 1, *rng.sample(range(CHUNK_SIZE), 300)]:
            assert r.get(first + i) == ledgers[i]
        offs = r.frame_offsets
        assert len(offs) == CHUNK_SIZE + 1 and offs[-1] == r.data_bytes
        with open(r.data_path, "rb") as f:  # ledger 5's stored frame is exactly its compression
            f.seek(offs[5])
            assert f.read(offs[6] - offs[5]) == lfs.compress_ledger(ledgers[5])
        for bad in (first - 1, chunk_last_ledger(3) + 1, 0):
            with pytest.raises(NotFoundError, match=str(bad)):
                r.get(bad)


def test_sequential_scan(full_chunk):
    base, ledgers, _ = full_chunk
    with lfs.ChunkReader(base, 3) as r:
        got = list(r)
    assert [s for s, _ in got] == list(range(chunk_first_ledger(3), chunk_last_ledger(3) + 1))
    assert [x for _, x in got] == ledgers


def test_reader_close_idempotent_and_closed_use(full_chunk):
    base, _, _ = full_chunk
    r = lfs.ChunkReader(base, 3)
    r.close()
    r.close()
    with pytest.raises(StoreError, match="closed"):
        r.get(chunk_first_ledger(3))


def test_reader_missing_chunk(tmp_path):
    with pytest.raises(NotFoundError, match="000009"):
        lfs.ChunkReader(tmp_path, 9)


def test_verify_full_chunk(full_chunk):
    base, ledgers, stats = full_chunk
    got = lfs.verify_chunk(base, 3)
    assert got == stats == lfs.ChunkStats(CHUNK_SIZE, stats.data_bytes, sum(map(len, ledgers)))


def test_verify_honours_cancel(full_chunk):
    ev = threading.Event()
    ev.set()
    with pytest.raises(Cancelled, match="chunk 3"):
        lfs.verify_chunk(full_chunk[0], 3, cancel=ev)


def test_verify_wrong_count(full_chunk):
    with pytest.raises(CorruptStoreError, match="expected 9999"):
        lfs.verify_chunk(full_chunk[0], 3, expect_ledgers=9999)


def test_verify_detects_wrong_sequence(tmp_path):
    ledgers = make_ledgers(chunk_first_ledger(4), 20)
    ledgers[13] = ledger_at(999)  # the writer stores bytes; the verifier reads the header
    write_chunk(tmp_path, tmp_path / "w", 4, ledgers)
    with pytest.raises(CorruptStoreError, match=f"sequence 999, expected {chunk_first_ledger(4) + 13}"):
        lfs.verify_chunk(tmp_path, 4, expect_ledgers=None)


def test_verify_detects_non_lcm_payload(tmp_path):
    ledgers = make_ledgers(chunk_first_ledger(4), 3) + [b"\x00\x00\x00\x07junk"]
    write_chunk(tmp_path, tmp_path / "w", 4, ledgers)
    with pytest.raises(CorruptStoreError, match="ledger 40005"):
        lfs.verify_chunk(tmp_path, 4, expect_ledgers=None)


def _raw_chunk(base, chunk_id, ledgers, checksum):
    """A chunk written frame by frame, as another tool would (zstd content checksum on or off)."""
    import zstandard

    c = zstandard.ZstdCompressor(level=3, write_checksum=checksum)
    frames = [c.compress(x) for x in ledgers]
    d, i = lfs.chunk_paths(base, chunk_id)
    d.parent.mkdir(parents=True, exist_ok=True)
    d.write_bytes(b"".join(frames))
    i.write_bytes(lfs.encode_index(np.cumsum([len(f) for f in frames])))
    return d, i


def test_verify_reads_header_only_when_the_checksum_proves_the_bytes(tmp_path):
    # a ledger cut after its header: the bounded header parse accepts it, the full scan does not
    first = chunk_first_ledger(4)
    ledgers = make_ledgers(first, 5)
    ledgers[2] = ledgers[2][: len(ledgers[2]) - 8]
    _raw_chunk(tmp_path / "ck", 4, ledgers, checksum=True)
    # with the checksum the frame decodes to exactly the bytes compressed: its position is checked
    st = lfs.verify_chunk(tmp_path / "ck", 4, expect_ledgers=None)
    assert st.ledgers == 5 and st.raw_bytes == sum(map(len, ledgers))
    # without it (or with the caller's own parser) every ledger is scanned in full
    _raw_chunk(tmp_path / "plain", 4, ledgers, checksum=False)
    with pytest.raises(CorruptStoreError, match=f"ledger {first + 2} is not a LedgerCloseMeta"):
        lfs.verify_chunk(tmp_path / "plain", 4, expect_ledgers=None)
    from rpcbackfill import lcm

    with pytest.raises(CorruptStoreError, match=f"ledger {first + 2} is not a LedgerCloseMeta"):
        lfs.verify_chunk(tmp_path / "ck", 4, expect_ledgers=None, ledger_sequence=lcm.ledger_sequence)


def test_verify_plain_frames_still_checks_sequences(tmp_path):
    first = chunk_first_ledger(4)
    ledgers = make_ledgers(first, 4)
    ledgers[1], ledgers[2] = ledgers[2], ledgers[1]
    _raw_chunk(tmp_path, 4, ledgers, checksum=False)
    with pytest.raises(CorruptStoreError, match=f"sequence {first + 2}, expected {first + 1}"):
        lfs.verify_chunk(tmp_path, 4, expect_ledgers=None)


# --- corruption of a finished full chunk ---------------------------------------------------------


@pytest.fixture
def damaged(tmp_path, full_chunk):
    base = copy_base(full_chunk[0], tmp_path / "b")
    d, i = lfs.chunk_paths(base, 3)
    return base, d, i


def _offsets(i):
    return np.frombuffer(i.read_bytes(), "<u4", offset=8).astype(np.int64)


@pytest.mark.parametrize("where", ["magic", "frame_header", "block_header", "content_checksum"])
def test_flipped_byte_in_frame_structure(damaged, where):
    base, d, i = damaged
    offs = _offsets(i)
    k = 4321
    pos = {"content_checksum": int(offs[k + 1]) - 2}.get(
        where, int(offs[k]) + {"magic": 1, "frame_header": 4, "block_header": 10}.get(where, 0)
    )
    b = bytearray(d.read_bytes())
    b[pos] ^= 0x40
    d.write_bytes(bytes(b))
    with pytest.raises(CorruptStoreError):
        lfs.verify_chunk(base, 3)


def test_truncated_data(damaged):
    base, d, _ = damaged
    with open(d, "r+b") as f:
        f.truncate(d.stat().st_size - 1)
    with pytest.raises(CorruptStoreError, match="data file size"):
        lfs.ChunkReader(base, 3)
    with pytest.raises(CorruptStoreError):
        lfs.verify_chunk(base, 3)


def test_truncated_index(damaged):
    base, _, i = damaged
    raw = i.read_bytes()
    i.write_bytes(raw[:-4])
    with pytest.raises(CorruptStoreError):
        lfs.verify_chunk(base, 3)
    i.write_bytes(raw[:-2])
    with pytest.raises(CorruptStoreError, match="multiple"):
        lfs.verify_chunk(base, 3)


def test_bad_index_version_and_width(damaged):
    base, _, i = damaged
    raw = i.read_bytes()
    i.write_bytes(b"\x02" + raw[1:])
    with pytest.raises(UnsupportedFormatError, match="version 2"):
        lfs.verify_chunk(base, 3)
    i.write_bytes(raw[:1] + b"\x08" + raw[2:])  # width 8 over width-4 offsets
    with pytest.raises(CorruptStoreError):
        lfs.verify_chunk(base, 3)
    i.write_bytes(raw[:1] + b"\x03" + raw[2:])
    with pytest.raises(CorruptStoreError, match="width 3"):
        lfs.verify_chunk(base, 3)


def test_non_canonical_width_rejected_by_verify(damaged):
    base, d, i = damaged
    offs = _offsets(i)
    i.write_bytes(bytes([1, 8, 0, 0, 0, 0, 0, 0]) + offs.astype("<u8").tobytes())
    with lfs.ChunkReader(base, 3) as r:  # the reader is lenient: offsets are consistent
        assert len(r) == CHUNK_SIZE
    with pytest.raises(CorruptStoreError, match="canonical"):
        lfs.verify_chunk(base, 3)


def test_non_monotonic_index(damaged):
    base, _, i = damaged
    offs = _offsets(i)
    offs[100], offs[101] = offs[101], offs[100]
    i.write_bytes(i.read_bytes()[:8] + offs.astype("<u4").tobytes())
    with pytest.raises(CorruptStoreError, match="strictly increasing at ledger #100 "):
        lfs.verify_chunk(base, 3)


def test_swapped_frames_detected(damaged):
    """Two frames exchanged (index adjusted so offsets stay consistent): sequences catch it."""
    base, d, i = damaged
    offs = _offsets(i)
    data = d.read_bytes()
    a = data[offs[10] : offs[11]]
    b = data[offs[11] : offs[12]]
    d.write_bytes(data[: offs[10]] + b + a + data[offs[12] :])
    offs[11] = offs[10] + len(b)
    i.write_bytes(i.read_bytes()[:8] + offs.astype("<u4").tobytes())
    with pytest.raises(CorruptStoreError, match="expected 30012"):
        lfs.verify_chunk(base, 3)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pos=st.integers(min_value=0), bit=st.integers(0, 7))
def test_random_bit_flip_never_crashes(tmp_path_factory, pos, bit):
    """A flip anywhere in .data: verify raises CorruptStoreError (the frames' content checksum),
    or the flip hit a bit the decoder ignores and every ledger reads back unchanged."""
    base = tmp_path_factory.mktemp("flip")
    ledgers = make_ledgers(chunk_first_ledger(1), 8)
    write_chunk(base, base / "w", 1, ledgers)
    d, _ = lfs.chunk_paths(base, 1)
    b = bytearray(d.read_bytes())
    b[pos % len(b)] ^= 1 << bit
    d.write_bytes(bytes(b))
    try:
        lfs.verify_chunk(base, 1, expect_ledgers=None)
    except CorruptStoreError:
        return
    with lfs.ChunkReader(base, 1) as r:
        assert [x for _, x in r] == ledgers


# --- LedgerStore ------------------------------------------------------------------------------


def test_ledger_store_across_chunks(tmp_path, full_chunk):
    base = copy_base(full_chunk[0], tmp_path / "b")
    small = {}
    for c in (0, 1, 7):
        small[c] = make_ledgers(chunk_first_ledger(c), 25 + c)
        write_chunk(base, tmp_path / "w", c, small[c])
    with lfs.LedgerStore(base, max_open=2) as store:
        for _ in range(3):  # cycles through more chunks than readers kept open
            for c, ls in small.items():
                assert store.get_ledger(chunk_first_ledger(c) + 3) == ls[3]
            assert store.get_ledger(chunk_last_ledger(3)) == full_chunk[1][-1]
            assert len(store._readers) <= 2
        with pytest.raises(NotFoundError, match="chunk 2 "):
            store.get_ledger(chunk_first_ledger(2))
        with pytest.raises(NotFoundError):
            store.get_ledger(chunk_first_ledger(0) + 25)  # past the end of short chunk 0
        with pytest.raises(NotFoundError):
            store.get_ledger(1)
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.get_ledger(chunk_first_ledger(0))


def test_ledger_store_threads(full_chunk):
    base, ledgers, _ = full_chunk
    first = chunk_first_ledger(3)
    errors = []
    with lfs.LedgerStore(base, max_open=1) as store:

        def worker(seed):
            rng = random.Random(seed)
            try:
                for _ in range(100):
                    i = rng.randrange(CHUNK_SIZE)
                    assert store.get_ledger(first + i) == ledgers[i]
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        ts = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    assert errors == []


# --- writer API contract -----------------------------------------------------------------------


def test_writer_sequence_rules(tmp_path):
    first = chunk_first_ledger(2)
    ls = make_ledgers(first, 3)
    with lfs.ChunkWriter(tmp_path, 2, tmp_path / "w") as w:
        assert w.next_ledger == first
        with pytest.raises(LedgerSequenceError, match=f"got ledger {first + 1}, expected {first}"):
            w.append(first + 1, ls[1])
        w.append(first, ls[0])
        with pytest.raises(LedgerSequenceError):
            w.append(first, ls[0])
        with pytest.raises(StoreError, match="after 1 ledgers"):
            w.finish()
        assert w.sync() == lfs.ChunkProgress(2, 1, len(lfs.compress_ledger(ls[0])))
        assert not lfs.chunk_exists(tmp_path, 2)


def test_writer_rejects_past_chunk_end(tmp_path, sample_ledgers):
    first = chunk_first_ledger(0)
    lcm = sample_ledgers[0]
    with lfs.ChunkWriter(tmp_path, 0, tmp_path / "w") as w:
        for s in range(first, first + CHUNK_SIZE):
            w.append(s, lcm)
        with pytest.raises(LedgerSequenceError, match="past its last ledger"):
            w.append(first + CHUNK_SIZE, lcm)
        stats = w.finish()
    assert stats.ledgers == CHUNK_SIZE
    assert lfs.chunk_exists(tmp_path, 0)


def test_writer_closed_and_empty(tmp_path):
    w = lfs.ChunkWriter(tmp_path, 2, tmp_path / "w")
    with pytest.raises(StoreError, match="no ledgers"):
        w.finish(allow_partial=True)
    w.close()
    w.close()
    with pytest.raises(StoreError, match="closed"):
        w.append(chunk_first_ledger(2), b"x")
    with pytest.raises(StoreError, match="closed"):
        w.sync()


def test_writer_abort_removes_partials(tmp_path, sample_ledgers):
    w = lfs.ChunkWriter(tmp_path, 2, tmp_path / "w")
    w.append(chunk_first_ledger(2), sample_ledgers[0])
    w.sync()
    dp, op = chunk_partial_paths(tmp_path / "w", 2)
    assert dp.exists() and op.exists()
    w.abort()
    assert not dp.exists() and not op.exists()
    assert not lfs.chunk_exists(tmp_path, 2)
    w.close()
    with pytest.raises(StoreError, match="aborted"):
        w.append(chunk_first_ledger(2) + 1, sample_ledgers[0])


def test_disk_full_is_typed(tmp_path, sample_ledgers):
    """A real ENOSPC: the data partial is /dev/full."""
    work = tmp_path / "w"
    work.mkdir()
    dp, _ = chunk_partial_paths(work, 2)
    dp.symlink_to("/dev/full")
    from rpcbackfill.errors import DiskFullError

    w = lfs.ChunkWriter(tmp_path, 2, work)
    with pytest.raises(DiskFullError, match="no space left"):
        for k in range(200):  # the 1 MiB write buffer spills to the device within these
            w.append(chunk_first_ledger(2) + k, sample_ledgers[k % len(sample_ledgers)])
        w.sync()
    with pytest.raises(StoreError):
        w.sync()
    w.close()


def test_oversized_frame_not_read(full_chunk, monkeypatch):
    """An index claiming a frame larger than any ledger is refused before reading it."""
    base, ledgers, _ = full_chunk
    monkeypatch.setattr(lfs_reader, "MAX_LEDGER_BYTES", 64)
    with lfs.ChunkReader(base, 3) as r:
        with pytest.raises(CorruptStoreError, match="frame of"):
            r.get(chunk_first_ledger(3))
        with pytest.raises(CorruptStoreError, match="frame of"):
            next(iter(r))


def test_reader_closed_during_iteration(full_chunk):
    base, ledgers, _ = full_chunk
    r = lfs.ChunkReader(base, 3)
    it = iter(r)
    assert next(it)[1] == ledgers[0]
    r.close()
    with pytest.raises(StoreError, match="closed"):
        for _ in it:  # the read-ahead block runs out, then the closed fd is noticed
            pass


def test_writer_check_frames_same_files_and_crc_check(tmp_path):
    """check_frames=True (chunk workers) publishes byte-identical files; the CRC read-back it ends
    with (check_frame_crcs) passes on them and names the ledger of a flipped byte or a short file."""
    from rpcbackfill.stores.lfs.format import PARTIAL_RECORD_DTYPE
    from rpcbackfill.stores.lfs.writer import check_frame_crcs

    first = chunk_first_ledger(1)
    ls = make_ledgers(first, 40)
    for check in (False, True):
        base = tmp_path / f"b{check}"
        with lfs.ChunkWriter(base, 1, tmp_path / f"w{check}", check_frames=check) as w:
            w.append_many(first, ls[:25])
            for i in range(25, 40):
                w.append(first + i, ls[i])
            recs = np.frombuffer(bytes(w._recs), dtype=PARTIAL_RECORD_DTYPE)
            w.finish(allow_partial=True)
        with lfs.ChunkReader(base, 1) as r:
            assert [x for _, x in r] == ls
    dpath = tmp_path / "bTrue"
    data = next(dpath.rglob("*.data"))
    assert data.read_bytes() == next((tmp_path / "bFalse").rglob("*.data")).read_bytes()
    ends, crcs = recs["end"].tolist(), recs["crc"].tolist()
    check_frame_crcs(data, ends, crcs, first, "chunk 1")  # intact
    raw = bytearray(data.read_bytes())
    raw[ends[6] + 3] ^= 0x10  # inside ledger first + 7's frame
    data.write_bytes(bytes(raw))
    with pytest.raises(CorruptStoreError, match=f"ledger {first + 7} frame fails its CRC"):
        check_frame_crcs(data, ends, crcs, first, "chunk 1")
    data.write_bytes(bytes(raw[: ends[-1] - 1]))
    with pytest.raises(CorruptStoreError, match="has .* bytes"):
        check_frame_crcs(data, ends, crcs, first, "chunk 1")


def test_crc_check_releasing_checked_pages(tmp_path, monkeypatch):
    """check_frame_crcs drops the pages it has checked from the mapping every _CRC_WINDOW bytes
    (a dense chunk is ~1.5 GB); with a window of one byte (a release after every frame) the
    frames are still all checked: intact passes, a flipped byte far past a release is named."""
    from rpcbackfill.stores.lfs import writer as lfs_writer
    from rpcbackfill.stores.lfs.format import PARTIAL_RECORD_DTYPE

    monkeypatch.setattr(lfs_writer, "_CRC_WINDOW", 1)
    first = chunk_first_ledger(2)
    ls = make_ledgers(first, 40)
    with lfs.ChunkWriter(tmp_path / "b", 2, tmp_path / "w", check_frames=True) as w:
        w.append_many(first, ls)
        recs = np.frombuffer(bytes(w._recs), dtype=PARTIAL_RECORD_DTYPE)
        w.finish(allow_partial=True)
    data = next((tmp_path / "b").rglob("*.data"))
    ends, crcs = recs["end"].tolist(), recs["crc"].tolist()
    assert ends[-1] > 4 * mmap.PAGESIZE  # releases happen before the last frames
    lfs_writer.check_frame_crcs(data, ends, crcs, first, "chunk 2")
    raw = bytearray(data.read_bytes())
    raw[ends[-2] + 1] ^= 0x01  # inside the last ledger's frame
    data.write_bytes(bytes(raw))
    with pytest.raises(CorruptStoreError, match=f"ledger {first + 39} frame fails its CRC"):
        lfs_writer.check_frame_crcs(data, ends, crcs, first, "chunk 2")


def test_writer_check_frames_rejects_a_frame_that_decodes_short(tmp_path):
    """The decode check compares each frame's decoded length with the ingested length: a frame
    of other bytes (what a compressor fault would produce) fails the append and the writer."""
    first = chunk_first_ledger(1)
    ls = make_ledgers(first, 3)
    w = lfs.ChunkWriter(tmp_path, 1, tmp_path / "w", check_frames=True)
    w.append(first, ls[0])
    real = w._compress
    w._compress = lambda lcm: real(bytes(lcm)[:-1])  # a compressor that drops the last byte
    with pytest.raises(CorruptStoreError, match=f"ledger {first + 1}: its new frame decodes to"):
        w.append(first + 1, ls[1])
    with pytest.raises(StoreError, match="failed"):
        w.append(first + 1, ls[1])
    w.close()
