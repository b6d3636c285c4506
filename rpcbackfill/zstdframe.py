"""zstd as rpcbackfill stores and reads it: the compression level and one frame -> bytes.

Core module.  Both the LFS chunks (spec section 7) and the Galexie data-lake files (spec
section 5) hold one zstd frame per object, written at level 3 (the library default).
"""

from __future__ import annotations

import threading

import zstandard

# Spec section 7 and Galexie both compress at zstd level 3.
ZSTD_LEVEL = 3


# Largest declared content size decompressed in one shot: the output buffer is allocated up
# front, so a corrupt header must not reserve much.  Bigger (or undeclared) sizes stream.
# Pubnet ledgers and lake files are a few MB.
ONE_SHOT_MAX = 64 << 20
# Input slice fed to the streaming decoder when the output is bounded: the output can pass
# the bound by at most what one slice decompresses to before decoding stops.
_BOUNDED_SLICE = 4096

_tls = threading.local()


def _thread_dctx() -> zstandard.ZstdDecompressor:
    dctx = getattr(_tls, "dctx", None)
    if dctx is None:  # one decompression context per thread, reused across calls
        dctx = _tls.dctx = zstandard.ZstdDecompressor()
    return dctx


def decompress_frame(
    frame,
    where: str,
    error: type[Exception],
    *,
    max_size: int | None = None,
    dctx: zstandard.ZstdDecompressor | None = None,
) -> bytes:
    """The content of exactly one zstd frame (any buffer), with or without a declared size.

    Raises ``error(message)`` -- the caller's class: corrupt store data and a corrupt download
    are different failures -- when ``frame`` is not one complete zstd frame (bad header,
    corrupt or truncated data, bytes after the frame, a declared size the content does not
    match) or when the content exceeds ``max_size`` bytes.  ``dctx`` defaults to one
    decompressor per thread.
    """
    if dctx is None:
        dctx = _thread_dctx()
    try:
        size = zstandard.frame_content_size(frame)
    except zstandard.ZstdError as e:
        raise error(f"{where}: not a zstd frame ({e})") from None
    try:
        if size >= 0 and max_size is not None and size > max_size:
            raise error(f"{where}: frame declares {size} bytes, above the {max_size} limit")
        if 0 <= size <= ONE_SHOT_MAX:
            # Straight into an exactly sized buffer (streaming joins parts: one more copy).
            out = dctx.decompress(frame, allow_extra_data=False)
            if len(out) != size:
                raise error(f"{where}: frame decompressed to {len(out)} bytes, header says {size}")
            return out
        return _stream(dctx, memoryview(frame), where, error, max_size)
    except zstandard.ZstdError as e:
        raise error(f"{where}: corrupt zstd frame ({e})") from None


def _stream(
    dctx: zstandard.ZstdDecompressor, mv: memoryview, where: str, error: type[Exception], max_size: int | None
) -> bytes:
    obj = dctx.decompressobj()
    step = _BOUNDED_SLICE if max_size is not None else max(len(mv), 1)
    parts: list[bytes] = []
    total = 0
    for i in range(0, len(mv), step):
        out = obj.decompress(mv[i : i + step])
        if out:
            parts.append(out)
            total += len(out)
            if max_size is not None and total > max_size:
                raise error(f"{where}: frame decompresses beyond the {max_size} limit")
        if obj.eof:
            if i + step < len(mv) or obj.unused_data:
                raise error(f"{where}: bytes after the end of the zstd frame")
            break
    if not obj.eof:
        raise error(f"{where}: truncated zstd frame ({len(mv)} bytes read)")
    return parts[0] if len(parts) == 1 else b"".join(parts)
