#!/usr/bin/env python3
"""Write the hand-made hostile index files of tests/regressions/recsplit/.

    python fuzz/make_recsplit_regressions.py

Each starts from a real seed index (fuzz/recsplit_seeds.py, 200 or 2600 keys) and breaks one
thing that the header checks cannot see or that once crashed the reader; the CRC is recomputed,
so only the structural checks and bounded reads stand in the way.  Named after what they break.
"""

from __future__ import annotations

import struct
import sys
import tempfile
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "fuzz")]

from recsplit_seeds import write_seeds  # noqa: E402

from rpcbackfill.index import recsplit  # noqa: E402

OUT = REPO / "tests" / "regressions" / "recsplit"


def _fields(raw: bytes) -> dict:
    return dict(zip((n for n, _ in recsplit._HEADER_FIELDS), recsplit._HEADER.unpack_from(raw, 0)))


def _with_crc(buf: bytearray) -> bytes:
    struct.pack_into("<I", buf, recsplit.CRC_OFFSET, 0)
    struct.pack_into("<I", buf, recsplit.CRC_OFFSET, zlib.crc32(bytes(buf)))
    return bytes(buf)


def _set(raw: bytes, **values: int) -> bytes:
    f = _fields(raw)
    f.update(values)
    buf = bytearray(raw)
    buf[: recsplit._HEADER.size] = recsplit._HEADER.pack(*f.values())
    return _with_crc(buf)


def _fill(raw: bytes, off: int, length: int, byte: int) -> bytes:
    buf = bytearray(raw)
    buf[off : off + length] = bytes([byte]) * length
    return _with_crc(buf)


def cases(small: bytes, big: bytes) -> dict[str, bytes]:
    fs, fb = _fields(small), _fields(big)
    return {
        # header offsets/lengths that once sent the reader outside the mapping
        "samples-offset-past-end": _set(small, efk_s_off=fs["file_size"] + 4096),
        "high-length-huge": _set(small, efb_high_len=1 << 62),
        "n-keys-huge": _set(small, n_keys=1 << 62, n_buckets=(1 << 62) // 1000),
        "seed-bits-beyond-section": _set(small, seed_bits=fs["bits_len"] * 8),
        "ef-low-width-63": _set(small, efk_l=63),
        # bodies the header cannot vouch for
        "ef-sample-points-far": _fill(big, fb["efk_s_off"], 8, 0x7F),
        "ef-high-all-zero": _fill(big, fb["efb_high_off"], fb["efb_high_len"], 0),
        "ef-high-all-ones": _fill(big, fb["efk_high_off"], fb["efk_high_len"], 0xFF),
        "seeds-all-zero": _fill(big, fb["bits_off"], fb["bits_len"], 0),
        "seeds-all-ones": _fill(big, fb["bits_off"], fb["bits_len"], 0xFF),
        "ef-low-all-ones": _fill(big, fb["efk_low_off"], fb["efk_low_len"], 0xFF),
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        seeds = {p.name: p.read_bytes() for p in write_seeds(tmp, sizes=(200, 2600))}
    for name, data in cases(seeds["seed-200.idx"], seeds["seed-2600.idx"]).items():
        (OUT / f"{name}.idx").write_bytes(data)
        print(OUT / f"{name}.idx")


if __name__ == "__main__":
    main()
