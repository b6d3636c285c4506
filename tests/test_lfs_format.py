"""Byte-exact format of LFS chunks (spec section 7): paths, index header, offsets, width, .data."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpcbackfill.errors import CorruptStoreError, NotFoundError, UnsupportedFormatError
from rpcbackfill.ledgermath import CHUNK_SIZE, chunk_first_ledger
from rpcbackfill.stores import lfs
from rpcbackfill.stores.lfs import format as lfs_format
from tests.lib.lfs import make_ledgers, write_chunk


def test_chunk_paths_layout(tmp_path):
    assert lfs.chunk_paths(tmp_path, 0) == (
        tmp_path / "chunks" / "0000" / "000000.data",
        tmp_path / "chunks" / "0000" / "000000.index",
    )
    d, i = lfs.chunk_paths(str(tmp_path), 1234)
    assert d == tmp_path / "chunks" / "0001" / "001234.data"
    assert i == tmp_path / "chunks" / "0001" / "001234.index"
    d, _ = lfs.chunk_paths(tmp_path, 999)
    assert d.parent.name == "0000"
    d, _ = lfs.chunk_paths(tmp_path, 1000)
    assert d.parent.name == "0001" and d.name == "001000.data"
    with pytest.raises(ValueError):
        lfs.chunk_paths(tmp_path, -1)


def test_chunk_exists_needs_both_files(tmp_path):
    d, i = lfs.chunk_paths(tmp_path, 7)
    assert not lfs.chunk_exists(tmp_path, 7)
    d.parent.mkdir(parents=True)
    d.write_bytes(b"x")
    assert not lfs.chunk_exists(tmp_path, 7)
    i.write_bytes(b"y")
    assert lfs.chunk_exists(tmp_path, 7)
    d.unlink()
    assert not lfs.chunk_exists(tmp_path, 7)


def test_index_width_boundary():
    assert lfs.index_width(0) == 4
    assert lfs.index_width(12345) == 4
    assert lfs.index_width(2**32 - 1) == 4  # largest size whose last offset fits in 32 bits
    assert lfs.index_width(2**32) == 8  # exactly 4 GiB: last offset needs 33 bits
    assert lfs.index_width(2**32 + 1) == 8
    assert lfs.index_width(2**40) == 8
    with pytest.raises(ValueError):
        lfs.index_width(-1)


def test_encode_index_width4_bytes():
    raw = lfs.encode_index([10, 25, 4_000_000_000])
    assert raw[:8] == bytes([1, 4, 0, 0, 0, 0, 0, 0])
    assert raw[8:] == struct.pack("<4I", 0, 10, 25, 4_000_000_000)
    assert len(raw) == 8 + 4 * 4  # N+1 entries for N=3


def test_encode_index_width8_bytes_and_roundtrip():
    ends = [100, 2**32 - 1, 2**32 + 5]
    raw = lfs.encode_index(ends)
    assert raw[:8] == bytes([1, 8, 0, 0, 0, 0, 0, 0])
    assert raw[8:] == struct.pack("<4Q", 0, *ends)
    offs = lfs.decode_index(raw, 2**32 + 5)
    assert offs.tolist() == [0, *ends]
    # exactly 4 GiB of data also needs width 8
    assert lfs.encode_index([7, 2**32])[1] == 8
    assert lfs.encode_index([7, 2**32 - 1])[1] == 4


def test_finished_chunk_bytes_exact(tmp_path):
    """.data == concat(ZstdCompressor(level=3).compress(lcm)); .index == header + LE offsets."""
    ledgers = make_ledgers(chunk_first_ledger(5), 37)
    stats = write_chunk(tmp_path / "b", tmp_path / "w", 5, ledgers)
    frames = [zstandard.ZstdCompressor(level=3, write_checksum=True).compress(x) for x in ledgers]
    d, i = lfs.chunk_paths(tmp_path / "b", 5)
    data = d.read_bytes()
    assert data == b"".join(frames)
    ends = np.cumsum([len(f) for f in frames]).tolist()
    assert i.read_bytes() == bytes([1, 4, 0, 0, 0, 0, 0, 0]) + struct.pack(f"<{len(ends) + 1}I", 0, *ends)
    assert stats == lfs.ChunkStats(37, len(data), sum(map(len, ledgers)))
    for f, x in zip(frames, ledgers):
        p = zstandard.get_frame_parameters(f)
        assert p.content_size == len(x)  # a Go reader can size its buffer from the header
        assert p.has_checksum  # a flipped bit is a decompression error, not another ledger
        assert zstandard.ZstdDecompressor().decompress(f) == x


def test_real_fixture_ledgers_bytes_exact(tmp_path, fixture_ledgers):
    """Every real fixture ledger (incl. the 1-2 MB ones, all three LedgerCloseMeta versions)
    round-trips byte-exactly.  They keep their own (scattered) sequences, which the writer does not
    read; the verifier, which does, is tested on generated chains."""
    ledgers = [f.lcm for f in fixture_ledgers]
    write_chunk(tmp_path / "b", tmp_path / "w", 0, ledgers)
    d, _ = lfs.chunk_paths(tmp_path / "b", 0)
    assert d.read_bytes() == b"".join(lfs.compress_ledger(x) for x in ledgers)
    with lfs.ChunkReader(tmp_path / "b", 0) as r:
        assert [x for _, x in r] == ledgers


def _zstd_cli_version():
    exe = shutil.which("zstd")
    if not exe:
        return None
    m = re.search(r"v(\d+)\.(\d+)\.(\d+)", subprocess.run([exe, "--version"], capture_output=True, text=True).stdout)
    return tuple(map(int, m.groups())) if m else None


@pytest.mark.skipif(
    _zstd_cli_version() != tuple(zstandard.ZSTD_VERSION),
    reason="zstd CLI absent or built on another libzstd release (block output differs across releases)",
)
def test_frames_match_zstd_cli(tmp_path, fixture_ledgers):
    """The spec's "zstd -3": the CLI (from a file, so the size is known; with its default content
    checksum, as our frames) produces the very frames we store."""
    seen = set()
    for f in fixture_ledgers:
        if f.lcm in seen or len(seen) >= 12:
            continue
        seen.add(f.lcm)
        p = tmp_path / "l.xdr"
        p.write_bytes(f.lcm)
        cli = subprocess.run(["zstd", "-3", "-q", "-c", "--check", str(p)], capture_output=True, check=True).stdout
        assert cli == lfs.compress_ledger(f.lcm), f.source


# --- index decoding: every rule, then hostile bytes ------------------------------------------


def test_decode_index_rejections():
    good = lfs.encode_index([5, 9])
    assert lfs.decode_index(good, 9).tolist() == [0, 5, 9]
    with pytest.raises(UnsupportedFormatError, match="version 2"):
        lfs.decode_index(bytes([2]) + good[1:], 9)
    with pytest.raises(UnsupportedFormatError):
        lfs.decode_index(bytes([0]) + good[1:], 9)
    with pytest.raises(CorruptStoreError, match="width 5"):
        lfs.decode_index(good[:1] + bytes([5]) + good[2:], 9)
    with pytest.raises(CorruptStoreError, match="reserved"):
        lfs.decode_index(good[:7] + b"\x01" + good[8:], 9)
    with pytest.raises(CorruptStoreError, match="shorter"):
        lfs.decode_index(good[:7], 9)
    with pytest.raises(CorruptStoreError, match="multiple"):
        lfs.decode_index(good + b"\x00", 9)
    with pytest.raises(CorruptStoreError, match="at least 1"):
        lfs.decode_index(good[:12], 0)
    with pytest.raises(CorruptStoreError, match="first offset"):
        lfs.decode_index(good[:8] + struct.pack("<3I", 1, 5, 9), 9)
    with pytest.raises(CorruptStoreError, match="strictly increasing"):
        lfs.decode_index(good[:8] + struct.pack("<4I", 0, 5, 5, 9), 9)
    with pytest.raises(CorruptStoreError, match="strictly increasing"):
        lfs.decode_index(good[:8] + struct.pack("<4I", 0, 7, 5, 9), 9)
    with pytest.raises(CorruptStoreError, match="data file size"):
        lfs.decode_index(good, 10)
    too_many = lfs.encode_index(list(range(1, CHUNK_SIZE + 2)))
    with pytest.raises(CorruptStoreError, match="at most"):
        lfs.decode_index(too_many, CHUNK_SIZE + 1)
    huge = bytes([1, 8, 0, 0, 0, 0, 0, 0]) + struct.pack("<3Q", 0, 5, 2**64 - 1)
    with pytest.raises(CorruptStoreError):
        lfs.decode_index(huge, 9)


@pytest.fixture(scope="module")
def small_chunk_bytes(tmp_path_factory):
    """(.data bytes, .index bytes) of a finished 6-ledger chunk 2."""
    base = tmp_path_factory.mktemp("small") / "b"
    write_chunk(base, base.parent / "work", 2, make_ledgers(chunk_first_ledger(2), 6))
    d, i = lfs.chunk_paths(base, 2)
    return d.read_bytes(), i.read_bytes()


def _place(tmp_path_factory, data: bytes, index: bytes):
    base = tmp_path_factory.mktemp("h") / "b"
    d, i = lfs.chunk_paths(base, 2)
    d.parent.mkdir(parents=True)
    d.write_bytes(data)
    i.write_bytes(index)
    return base


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(index=st.binary(max_size=120), data_extra=st.integers(0, 3))
def test_hostile_index_bytes(tmp_path_factory, small_chunk_bytes, index, data_extra):
    """Arbitrary index bytes: the reader either rejects them with a typed error or serves
    only ledgers whose frames decode; it never raises anything else or over-reads."""
    base = _place(tmp_path_factory, small_chunk_bytes[0] + b"\0" * data_extra, index)
    try:
        r = lfs.ChunkReader(base, 2)
    except (CorruptStoreError, UnsupportedFormatError):
        return
    with r:
        assert 1 <= len(r) <= CHUNK_SIZE
        for seq in (r.first_ledger, r.last_ledger):
            try:
                assert isinstance(r.get(seq), bytes)
            except CorruptStoreError:
                pass
        with pytest.raises(NotFoundError):
            r.get(r.last_ledger + 1)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_hostile_offsets_over_real_data(tmp_path_factory, small_chunk_bytes, data):
    """Plausible-looking but wrong offsets over a real .data: typed errors only, and the
    verifier always notices (the true frame boundaries are the only valid ones)."""
    blob, good_index = small_chunk_bytes
    size = len(blob)
    cuts = sorted(data.draw(st.lists(st.integers(1, size - 1), max_size=8, unique=True)))
    width = data.draw(st.sampled_from([4, 8]))
    index = bytes([1, width, 0, 0, 0, 0, 0, 0]) + np.array([0, *cuts, size], dtype=f"<u{width}").tobytes()
    if index == good_index:
        return
    base = _place(tmp_path_factory, blob, index)
    with lfs.ChunkReader(base, 2) as r:
        assert len(r) == len(cuts) + 1
        for seq in range(r.first_ledger, r.last_ledger + 1):
            try:
                r.get(seq)
            except CorruptStoreError:
                pass
        with pytest.raises(CorruptStoreError):
            lfs.verify_chunk(base, 2, expect_ledgers=None)


@settings(max_examples=100, deadline=None)
@given(frame=st.binary(max_size=64))
def test_hostile_frames_decompress_or_typed_error(frame):
    dctx = zstandard.ZstdDecompressor()
    try:
        out = lfs_format.decompress_ledger(dctx, frame, "test")
    except CorruptStoreError:
        return
    assert isinstance(out, bytes)


def test_frames_without_content_size_are_read(tmp_path):
    """A chunk written by a tool that omits the content size (streaming zstd) still reads."""
    ledgers = make_ledgers(chunk_first_ledger(1), 5)
    cctx = zstandard.ZstdCompressor(level=3, write_content_size=False)
    frames = []
    for x in ledgers:
        frames.append(cctx.compress(x))
        assert zstandard.frame_content_size(frames[-1]) == -1
    d, i = lfs.chunk_paths(tmp_path, 1)
    d.parent.mkdir(parents=True)
    d.write_bytes(b"".join(frames))
    i.write_bytes(lfs.encode_index(np.cumsum([len(f) for f in frames])))
    with lfs.ChunkReader(tmp_path, 1) as r:
        assert [r.get(chunk_first_ledger(1) + k) for k in range(5)] == ledgers
        assert [x for _, x in r] == ledgers
    assert lfs.verify_chunk(tmp_path, 1, expect_ledgers=5).ledgers == 5


def test_trailing_bytes_in_frame_detected():
    x = b"ledger" * 100
    f = lfs.compress_ledger(x)
    dctx = zstandard.ZstdDecompressor()
    assert lfs_format.decompress_ledger(dctx, f, "t") == x
    with pytest.raises(CorruptStoreError):
        lfs_format.decompress_ledger(dctx, f + b"\0\0", "t")
    nocs = zstandard.ZstdCompressor(level=3, write_content_size=False).compress(x)
    assert lfs_format.decompress_ledger(dctx, nocs, "t") == x
    with pytest.raises(CorruptStoreError):
        lfs_format.decompress_ledger(dctx, nocs + b"\0", "t")
    with pytest.raises(CorruptStoreError):
        lfs_format.decompress_ledger(dctx, nocs[:-3], "t")


def test_declared_size_limit(monkeypatch):
    x = b"a" * 5000
    monkeypatch.setattr(lfs_format, "MAX_LEDGER_BYTES", 4096)
    dctx = zstandard.ZstdDecompressor()
    with pytest.raises(CorruptStoreError, match="limit"):
        lfs_format.decompress_ledger(dctx, lfs.compress_ledger(x), "t")
    nocs = zstandard.ZstdCompressor(level=3, write_content_size=False).compress(x)
    with pytest.raises(CorruptStoreError, match="limit"):
        lfs_format.decompress_ledger(dctx, nocs, "t")


def test_full_chunk_index_layout(full_chunk):
    base, ledgers, stats = full_chunk
    d, i = lfs.chunk_paths(base, 3)
    raw = i.read_bytes()
    assert len(raw) == 8 + 4 * (CHUNK_SIZE + 1)
    assert raw[:8] == b"\x01\x04" + b"\0" * 6
    offs = np.frombuffer(raw, "<u4", offset=8)
    assert offs[0] == 0 and offs[-1] == d.stat().st_size == stats.data_bytes
    assert stats.ledgers == CHUNK_SIZE and stats.raw_bytes == sum(map(len, ledgers))
    assert set(os.listdir(d.parent)) == {"000003.data", "000003.index"}  # no temp files left


@pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd CLI not installed")
def test_zstd_cli_decodes_data_file(tmp_path, fixture_ledgers):
    """A non-Python decoder (the zstd CLI, any release) reads our .data: the concatenated
    frames decompress to the concatenated ledgers."""
    ledgers = [f.lcm for f in fixture_ledgers[:40]]  # the writer stores bytes (sequences not read)
    write_chunk(tmp_path / "b", tmp_path / "w", 0, ledgers)
    d, _ = lfs.chunk_paths(tmp_path / "b", 0)
    out = subprocess.run(["zstd", "-d", "-q", "-c", str(d)], capture_output=True, check=True).stdout
    assert out == b"".join(ledgers)
