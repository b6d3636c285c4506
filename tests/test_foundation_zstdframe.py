"""rpcbackfill.zstdframe: the one zstd frame decoder the LFS reader and the data-lake source share."""

from __future__ import annotations

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from rpcbackfill import zstdframe
from rpcbackfill.errors import CorruptStoreError, TransientSourceError

DATA = b"".join(i.to_bytes(4, "little") for i in range(5000))


def _frames():
    with_size = zstandard.ZstdCompressor(level=zstdframe.ZSTD_LEVEL).compress(DATA)
    without = zstandard.ZstdCompressor(level=zstdframe.ZSTD_LEVEL, write_content_size=False).compress(DATA)
    assert zstandard.frame_content_size(without) == -1
    return with_size, without


@pytest.mark.parametrize("error", [CorruptStoreError, TransientSourceError])
@pytest.mark.parametrize("bounded", [None, len(DATA)])
def test_round_trip_and_caller_error_class(error, bounded):
    for frame in _frames():
        assert zstdframe.decompress_frame(frame, "t", error, max_size=bounded) == DATA
        assert zstdframe.decompress_frame(memoryview(frame), "t", error, max_size=bounded) == DATA
        for bad, why in (
            (frame + b"\0\0", "after the end|corrupt"),
            (frame[:-3], "truncated|corrupt"),
            (b"\0" * 8, "not a zstd frame"),
        ):
            with pytest.raises(error, match=why):
                zstdframe.decompress_frame(bad, "where", error, max_size=bounded)


def test_size_limit_declared_or_not():
    for frame in _frames():
        with pytest.raises(CorruptStoreError, match="limit"):
            zstdframe.decompress_frame(frame, "t", CorruptStoreError, max_size=len(DATA) - 1)


def test_large_declared_size_streams(monkeypatch):
    monkeypatch.setattr(zstdframe, "ONE_SHOT_MAX", 100)  # forces the streaming path with a declared size
    frame = _frames()[0]
    assert zstdframe.decompress_frame(frame, "t", ValueError) == DATA
    with pytest.raises(ValueError, match="after the end|corrupt"):
        zstdframe.decompress_frame(frame + b"\x28", "t", ValueError)


@settings(max_examples=200, deadline=None)
@given(frame=st.binary(max_size=64))
def test_hostile_input_is_typed_error_or_bytes(frame):
    try:
        out = zstdframe.decompress_frame(frame, "t", TransientSourceError, max_size=1 << 20)
    except TransientSourceError:
        return
    assert isinstance(out, bytes)
