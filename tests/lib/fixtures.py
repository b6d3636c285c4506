"""The real ledgers of tests/fixtures/ (provenance: tests/fixtures/README.md), each with its
sequence (decoded by stellar-sdk) and, for the 9 ledgers listed in expected.json, the expected
transaction hashes."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from functools import lru_cache

import zstandard

from . import FIXTURES
from .oracle import sdk_ledger_seq, sdk_split_batch
from .records import split_record_marked


@dataclass(frozen=True)
class FixtureLedger:
    source: str  # file (and line/frame) it came from
    seq: int
    lcm: bytes  # raw LedgerCloseMeta XDR
    expected_hashes: tuple[bytes, ...] | None  # apply-order hashes (+inner) from expected.json, if listed


def zstd_decompress(data: bytes) -> bytes:
    """Streaming decompression: lake frames may omit the content size."""
    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()


def _expected() -> dict[int, tuple[str, tuple[bytes, ...]]]:
    out = {}
    for e in json.loads((FIXTURES / "expected.json").read_text()):
        hs = []
        for t in e["txs"]:
            hs.append(bytes.fromhex(t["hash"]))
            if "inner_hash" in t:
                hs.append(bytes.fromhex(t["inner_hash"]))
        out[e["ledger_seq"]] = (e["source"], tuple(hs))
    return out


@lru_cache(maxsize=1)
def _load() -> tuple[FixtureLedger, ...]:
    exp = _expected()
    ledgers: list[FixtureLedger] = []

    def add(source: str, lcm: bytes) -> None:
        seq = sdk_ledger_seq(lcm)
        e = exp.get(seq)
        ledgers.append(FixtureLedger(source, seq, lcm, e[1] if e and e[0] == source.split(" frame")[0] else None))

    for i, line in enumerate((FIXTURES / "ttp-ledgers-base64.txt").read_text().split()):
        add(f"ttp-ledgers-base64.txt line {i + 1}", base64.b64decode(line))
    for p in sorted(FIXTURES.glob("*.xdr.zst*")):
        raw = zstd_decompress(p.read_bytes())
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
    return tuple(ledgers)


def load_fixture_ledgers() -> list[FixtureLedger]:
    """Every real fixture ledger (decoded once per process; a fresh list each call)."""
    return list(_load())
