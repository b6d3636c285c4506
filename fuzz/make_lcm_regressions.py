#!/usr/bin/env python3
"""(Re)create the hand-made hostile inputs of tests/regressions/lcm/ from the test fixtures (tests/fixtures/).

Fuzzer crashers are added to the same directory by fuzz/fuzz_lcm.py (``crash-*.bin``); this script
only writes the ``*.bin`` files named below and is deterministic.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rpcbackfill import _lcm  # noqa: E402
from tests.lib.fixtures import load_fixture_ledgers  # noqa: E402

OUT = REPO / "tests" / "regressions" / "lcm"
u32 = lambda v: struct.pack(">I", v & 0xFFFFFFFF)  # noqa: E731


def tx_processing_offset(lcm: bytes) -> int:
    """Offset of the txProcessing count of a V0 LedgerCloseMeta."""
    assert lcm[:4] == u32(0)
    p = 4
    p += _lcm._skip_type("LedgerHeaderHistoryEntry", lcm, p)
    p += _lcm._skip_type("TransactionSet", lcm, p)
    return p


def deep_scval_ledger(v2: bytes) -> bytes:
    from stellar_sdk import xdr

    m = xdr.LedgerCloseMeta.from_xdr_bytes(v2)
    marker = xdr.SCVal(xdr.SCValType.SCV_SYMBOL, sym=xdr.SCSymbol(b"MARKERMARKER"))
    key = xdr.LedgerKey(
        xdr.LedgerEntryType.CONTRACT_DATA,
        contract_data=xdr.LedgerKeyContractData(
            contract=xdr.SCAddress(
                xdr.SCAddressType.SC_ADDRESS_TYPE_CONTRACT, contract_id=xdr.ContractID(xdr.Hash(b"\1" * 32))
            ),
            key=marker,
            durability=xdr.ContractDataDurability.PERSISTENT,
        ),
    )
    m.v2.evicted_keys.append(key)
    raw = m.to_xdr_bytes()
    enc = marker.to_xdr_bytes()
    assert raw.count(enc) == 1
    deep = (u32(16) + u32(1) + u32(1)) * 10_000 + u32(1)  # SCV_VEC(present, 1 elem) x 10k, SCV_VOID
    return raw.replace(enc, deep)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    ledgers = load_fixture_ledgers()
    v0 = next(f.lcm for f in ledgers if f.lcm[3] == 0 and f.expected_hashes)
    v2 = min((f.lcm for f in ledgers if f.lcm[3] == 2), key=len)
    off = tx_processing_offset(v0)
    files = {
        "deep-scval-nesting.bin": deep_scval_ledger(v2),
        "absurd-txprocessing-count.bin": v0[:off] + u32(0xFFFFFFFF) + v0[off + 4 :],
        "txprocessing-count-plus-one.bin": v0[:off] + u32(struct.unpack_from(">I", v0, off)[0] + 1) + v0[off + 4 :],
        "unknown-lcm-version.bin": u32(3) + v2[4:],
        "truncated-one-byte.bin": v0[:-1],
        "empty.bin": b"",
        "batch-count-mismatch.bin": u32(1) + u32(5) + u32(2) + v0 + v0,
        "batch-huge-count.bin": u32(0) + u32(0xFFFFFFFE) + u32(0xFFFFFFFF) + v0,
    }
    for name, data in files.items():
        (OUT / name).write_bytes(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
