"""Shared test fixtures: the real ledgers in tests/fixtures/ (read-only oracle)."""

from __future__ import annotations

import base64
import io
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"  # provenance: tests/fixtures/README.md


@dataclass(frozen=True)
class FixtureLedger:
    source: str  # file (and line/frame) it came from
    seq: int
    lcm: bytes  # raw LedgerCloseMeta XDR
    expected_hashes: tuple[bytes, ...] | None  # apply-order hashes (+inner) from expected.json, if listed


def _zstd_decompress(data: bytes) -> bytes:
    # frames may omit the content size: always stream
    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()


def split_record_marked(stream: bytes) -> list[bytes]:
    """Split a record-marked LCM stream (4-byte BE length with bit 31 set, then bytes)."""
    out, pos = [], 0
    while pos < len(stream):
        (hdr,) = struct.unpack_from(">I", stream, pos)
        assert hdr & 0x80000000, "record mark bit missing"
        n = hdr & 0x7FFFFFFF
        out.append(stream[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


def sdk_split_batch(batch: bytes) -> tuple[int, int, list[bytes]]:
    """Reference split of a LedgerCloseMetaBatch with stellar-sdk (slow; tests only)."""
    from stellar_sdk import xdr

    b = xdr.LedgerCloseMetaBatch.from_xdr_bytes(batch)
    return (
        b.start_sequence.uint32,
        b.end_sequence.uint32,
        [m.to_xdr_bytes() for m in b.ledger_close_metas],
    )


def sdk_ledger_seq(lcm: bytes) -> int:
    from stellar_sdk import xdr

    m = xdr.LedgerCloseMeta.from_xdr_bytes(lcm)
    body = {0: m.v0, 1: m.v1, 2: m.v2}[m.v]
    return body.ledger_header.header.ledger_seq.uint32


def _expected() -> dict[int, tuple[bytes, ...]]:
    out = {}
    for e in json.loads((FIXTURES / "expected.json").read_text()):
        hs = []
        for t in e["txs"]:
            hs.append(bytes.fromhex(t["hash"]))
            if "inner_hash" in t:
                hs.append(bytes.fromhex(t["inner_hash"]))
        out[e["ledger_seq"]] = (e["source"], tuple(hs))
    return out


def load_fixture_ledgers() -> list[FixtureLedger]:
    exp = _expected()
    ledgers: list[FixtureLedger] = []

    def add(source: str, lcm: bytes) -> None:
        seq = sdk_ledger_seq(lcm)
        e = exp.get(seq)
        ledgers.append(FixtureLedger(source, seq, lcm, e[1] if e and e[0] == source.split(" frame")[0] else None))

    for i, line in enumerate((FIXTURES / "ttp-ledgers-base64.txt").read_text().split()):
        add(f"ttp-ledgers-base64.txt line {i + 1}", base64.b64decode(line))
    for p in sorted(FIXTURES.glob("*.xdr.zst*")):
        raw = _zstd_decompress(p.read_bytes())
        if p.name.startswith("galexie-load-test"):
            for j, lcm in enumerate(split_record_marked(raw)):
                add(f"{p.name} frame {j}", lcm)
        else:
            _, _, metas = sdk_split_batch(raw)
            for lcm in metas:
                add(p.name, lcm)
    for p in sorted((FIXTURES / "core-test-lcm").glob("*.xdr")):
        for j, lcm in enumerate(split_record_marked(p.read_bytes())):
            add(f"core-test-lcm/{p.name} frame {j}", lcm)
    return ledgers


_CACHE: list[FixtureLedger] | None = None


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture(scope="session")
def fixture_ledgers(fixtures_dir) -> list[FixtureLedger]:
    """Every real ledger of tests/fixtures/, raw bytes plus expected hashes where known."""
    global _CACHE
    if _CACHE is None:
        _CACHE = load_fixture_ledgers()
    return _CACHE


@pytest.fixture
def restore_root_logging():
    """In-process CLI runs install a log handler on the root logger; take it away afterwards."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)
