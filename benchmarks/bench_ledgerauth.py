#!/usr/bin/env python3
"""Cost of ledger authentication (rpcbackfill.ledgerauth) per ledger, on generated ledgers.

    python benchmarks/bench_ledgerauth.py [--ledgers 300] [--runs 7] [--tx 30 300] [--json PATH]

For each density it builds ``--ledgers`` consecutive, hash-chained LedgerCloseMeta V1 ledgers
with the product's lake generator (real pubnet transactions, the ledgers a generated lake holds)
and reports, per ledger (median of ``--runs`` passes, thread CPU time, so a shared machine
distorts it little):

* ``tx_hashes``  -- the scan ingestion does anyway (baseline);
* ``auth_spans`` -- the validating scan that also locates the hashed spans;
* ``sha256``     -- hashing those spans (hashlib / OpenSSL, SHA-NI when the CPU has it);
* ``check``      -- ``HashChain.check``: authentication of a ledger on its own (auth_spans +
  sha256 + the chain link), as the orchestrator does for a source that did not authenticate;
* ``scan_batch`` / ``verify_batch`` -- per ledger of 8-ledger lake batches: the data-lake source's
  one parse without and with authentication (what ``check_ledger_hashes`` really adds there, in
  the source's reader threads), plus ``link`` (the orchestrator's 32-byte chain comparison).

The bytes hashed per ledger (header, transaction set, result set) are reported too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rpcbackfill import _lcm, lcm  # noqa: E402
from rpcbackfill.ledgerauth import HashChain, verify_batch  # noqa: E402
from rpcbackfill.sources import layout  # noqa: E402
from tests.lib.ledgers import ledger_bytes  # noqa: E402


def _cpu_ns_per(fn, items, runs: int) -> float:
    out = []
    for _ in range(runs):
        t = time.thread_time_ns()
        fn(items)
        out.append((time.thread_time_ns() - t) / len(items))
    return statistics.median(out)


def _hash_only(spans) -> None:
    for buf, s in spans:
        mv = memoryview(buf)
        hashlib.sha256(mv[s[6] : s[7]]).digest()
        hashlib.sha256(mv[s[8] : s[9]]).digest()
        hashlib.sha256(s[10]).digest()


def bench(tx: float, n: int, runs: int) -> dict:
    ledgers = ledger_bytes(2, n, versions=(1,), tx_per_ledger=tx)
    spans = [(b, _lcm.auth_spans(b)) for b in ledgers]

    def chain(items):
        c = HashChain()
        for b in items:
            c.check(b)

    res = {
        "tx_per_ledger": tx,
        "ledgers": n,
        "bytes_per_ledger": statistics.mean(len(b) for b in ledgers),
        "hashed_bytes_per_ledger": statistics.mean((s[7] - s[6]) + (s[9] - s[8]) + len(s[10]) for _, s in spans),
        "tx_hashes_ns": _cpu_ns_per(lambda xs: [lcm.tx_hashes(b) for b in xs], ledgers, runs),
        "auth_spans_ns": _cpu_ns_per(lambda xs: [_lcm.auth_spans(b) for b in xs], ledgers, runs),
        "sha256_ns": _cpu_ns_per(_hash_only, spans, runs),
        "check_ns": _cpu_ns_per(chain, ledgers, runs),
    }
    batches = [layout.encode_batch(2 + i, ledgers[i : i + 8]) for i in range(0, n - n % 8, 8)]
    per = 8

    def scan(bs):
        for b in bs:
            lcm.scan_batch(b)

    def verify(bs):
        for b in bs:
            verify_batch(b)

    found = [x for b in batches for x in verify_batch(b)[2]]

    def link(xs):
        c = HashChain()
        for seq, _, _, h, prev in xs:
            c.link(seq, h, prev)

    res["scan_batch_ns"] = _cpu_ns_per(scan, batches, runs) / per
    res["verify_batch_ns"] = _cpu_ns_per(verify, batches, runs) / per
    res["link_ns"] = _cpu_ns_per(link, found, runs)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ledgers", type=int, default=300)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--tx", type=float, nargs="+", default=[30.0, 300.0])
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    rows = [bench(tx, a.ledgers, a.runs) for tx in a.tx]
    print(
        f"{'tx/ledger':>9} {'KiB/ledger':>10} {'KiB hashed':>10} {'tx_hashes µs':>12} {'auth_spans µs':>13} "
        f"{'sha256 µs':>9} {'check µs':>8} {'hash MB/s':>9} {'scan_batch µs':>13} {'verify_batch µs':>15} "
        f"{'link ns':>7}"
    )
    for r in rows:
        print(
            f"{r['tx_per_ledger']:>9.0f} {r['bytes_per_ledger'] / 1024:>10.1f} {r['hashed_bytes_per_ledger'] / 1024:>10.1f} "
            f"{r['tx_hashes_ns'] / 1e3:>12.1f} {r['auth_spans_ns'] / 1e3:>13.1f} {r['sha256_ns'] / 1e3:>9.1f} "
            f"{r['check_ns'] / 1e3:>8.1f} {r['hashed_bytes_per_ledger'] / r['sha256_ns'] * 1e3:>9.0f} "
            f"{r['scan_batch_ns'] / 1e3:>13.1f} {r['verify_batch_ns'] / 1e3:>15.1f} {r['link_ns']:>7.0f}"
        )
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
