"""Record-marked LedgerCloseMeta streams: what captive stellar-core writes on its meta pipe.

Each frame is a 4-byte big-endian word with bit 31 set (the record mark) and the frame length in
the other 31 bits, followed by that many bytes of XDR.  The one splitter of the test suite,
the fake stellar-core and the benchmarks; the product's reader is
rpcbackfill.sources.captive_core (which these helpers are tested against, not built on).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import BinaryIO

RECORD_MARK = 0x80000000
_WORD = struct.Struct(">I")


def frame(payload: bytes) -> bytes:
    """One record-marked frame holding ``payload``."""
    if len(payload) >= RECORD_MARK:
        raise ValueError(f"frame of {len(payload)} bytes does not fit 31 bits")
    return _WORD.pack(RECORD_MARK | len(payload)) + payload


def join_record_marked(payloads: Iterable[bytes]) -> bytes:
    """A whole stream: ``frame`` of every payload, concatenated."""
    return b"".join(frame(p) for p in payloads)


def split_record_marked(stream: bytes) -> list[bytes]:
    """Every payload of a complete stream; ``ValueError`` on a missing mark or a cut frame."""
    out, pos = [], 0
    while pos < len(stream):
        if pos + 4 > len(stream):
            raise ValueError(f"truncated frame header at offset {pos}")
        (word,) = _WORD.unpack_from(stream, pos)
        if not word & RECORD_MARK:
            raise ValueError(f"record mark bit missing at offset {pos} (word 0x{word:08X})")
        n = word & ~RECORD_MARK
        if pos + 4 + n > len(stream):
            raise ValueError(f"frame at offset {pos} needs {n} bytes, {len(stream) - pos - 4} left")
        out.append(stream[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


def iter_record_marked(f: BinaryIO) -> Iterator[bytes]:
    """The payloads of a stream read from a binary file, one frame at a time (same checks)."""
    while True:
        head = f.read(4)
        if not head:
            return
        if len(head) < 4:
            raise ValueError("truncated frame header at the end of the stream")
        (word,) = _WORD.unpack(head)
        if not word & RECORD_MARK:
            raise ValueError(f"record mark bit missing (word 0x{word:08X})")
        n = word & ~RECORD_MARK
        payload = f.read(n)
        if len(payload) < n:
            raise ValueError(f"frame needs {n} bytes, the stream ends after {len(payload)}")
        yield payload
