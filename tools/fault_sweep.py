#!/usr/bin/env python3
"""Fault sweep over a finished data directory: damage one file at a time, ask the queries whose
answers are known, and count silent wrong answers and crashes (issue 15).

    python tools/fault_sweep.py [--work DIR] [--idx-bytes all|N] [--data-bytes N] [--index-bytes N]
                                [--sst-bytes N] [--seed S] [--json OUT]

Without --work a small lake and a 2-range backfill (range_size 10000) are generated under a
temporary directory (about 10 s).  The truth is read from the pristine directory first: the
ledger of a sample of transaction hashes and the SHA-256 of a sample of ledgers.  Faults, each
applied to the directory and undone before the next:

* ``idx``: one flipped bit in every byte (or N sampled bytes) of one shard ``.idx`` of range 0;
  queries: the sampled hashes of that shard, plus an absent hash of that shard;
* ``data`` / ``index``: one flipped bit at N sampled positions of chunk 0's ``.data`` / ``.index``;
  queries: the ledger whose frame holds the position (or the ledgers of the damaged offset), and
  a hash from it;
* ``sst``: one flipped bit at N sampled bytes of the meta store's SST files; queries: a hash;
* ``delete`` / ``truncate``: every file of range 0 (shards, chunks) and the meta store's SSTs,
  deleted or cut to half; queries as above.

Queries call ``rpcbackfill.orchestration.api`` in this process, like the CLI does; after a
deleted or truncated file of range 0, ``status`` must report the range as damaged, naming it.  Outcomes:
``ok`` (the right answer), ``error`` (a typed error with exit code 1 or 2), ``wrong`` (an answer
that differs from the truth, or "not found" for something that exists) and ``crash`` (any other
exception).  A segfault kills the sweep, which is then a crash too.  Exit status 1 if any
``wrong`` or ``crash`` was seen.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RS = 10_000
LAST = 2 * RS + 1


@dataclass
class Truth:
    config: object
    tx: dict[bytes, int]  # hash -> ledger
    ledgers: dict[int, str]  # seq -> sha256 of the stored ledger


@dataclass
class Result:
    counts: dict[str, Counter] = field(default_factory=dict)
    bad: list[str] = field(default_factory=list)  # descriptions of wrong answers and crashes

    def add(self, fault: str, what: str, outcome: str) -> None:
        self.counts.setdefault(fault, Counter())[outcome] += 1
        if outcome in ("wrong", "crash") and len(self.bad) < 50:
            self.bad.append(f"{fault}: {what}: {outcome}")


def build_data_dir(work: Path) -> object:
    """A finished 2-range data directory under ``work`` (generated once); returns its Config."""
    from tests.lib.orchestration import make_config, make_lake, run_to_end

    lake = make_lake(work / "lake", 2, LAST)
    cfg = make_config(work / "data", lake, 2, LAST)
    if not (work / "data" / "meta").exists() and run_to_end(work, cfg) != 0:
        raise SystemExit("fault_sweep: the backfill of the sample data directory failed")
    return cfg


def read_truth(cfg, per_range: int = 40) -> Truth:
    from rpcbackfill import lcm
    from rpcbackfill.stores.lfs import LedgerStore

    tx: dict[bytes, int] = {}
    ledgers: dict[int, str] = {}
    with LedgerStore(cfg.immutable_stores.ledgers_base) as store:
        for first in (2, RS + 2):
            for seq in range(first, first + per_range):
                raw = store.get_ledger(seq)
                ledgers[seq] = hashlib.sha256(raw).hexdigest()
                for h in lcm.iter_hashes(lcm.tx_hashes(raw)[1]):
                    tx[h] = seq
    return Truth(cfg, tx, ledgers)


def ask_tx(truth: Truth, h: bytes, expect: int | None) -> str:
    from rpcbackfill.errors import NotFoundError, RpcBackfillError
    from rpcbackfill.orchestration import api

    try:
        got = api.get_transaction_ledger(truth.config, h)
    except NotFoundError:
        return "ok" if expect is None else "wrong"
    except RpcBackfillError as e:
        return "error" if e.exit_code in (1, 2) else "wrong"
    except Exception:  # noqa: BLE001 - anything untyped is what the sweep looks for
        return "crash"
    return "ok" if got == expect else "wrong"


def ask_status(truth: Truth, damaged: Path) -> str:
    """``status`` after ``damaged`` (a final file of COMPLETE range 0) was deleted or truncated:
    the range must be reported with damage naming that file (or a typed error); a clean
    COMPLETE is a silent wrong answer."""
    from rpcbackfill.errors import RpcBackfillError
    from rpcbackfill.orchestration import api

    try:
        rep = api.status(truth.config)
    except RpcBackfillError as e:
        return "error" if e.exit_code in (1, 2) else "wrong"
    except Exception:  # noqa: BLE001
        return "crash"
    r0 = next((r for r in rep.ranges if r.id == 0), None)
    if r0 is None or rep.complete or 0 not in rep.damaged:
        return "wrong"
    named = any(d.get("path") in (str(damaged), str(damaged.parent)) for d in r0.damage)
    return "error" if named else "wrong"


def ask_ledger(truth: Truth, seq: int) -> str:
    from rpcbackfill.errors import NotFoundError, RpcBackfillError
    from rpcbackfill.orchestration import api

    try:
        raw = api.get_ledger(truth.config, seq)
    except NotFoundError:
        return "wrong"  # every sampled ledger exists
    except RpcBackfillError as e:
        return "error" if e.exit_code in (1, 2) else "wrong"
    except Exception:  # noqa: BLE001
        return "crash"
    return "ok" if hashlib.sha256(raw).hexdigest() == truth.ledgers[seq] else "wrong"


class Damage:
    """Apply a change to one file and restore it afterwards."""

    def __init__(self, path: Path):
        self.path = path
        self.orig = path.read_bytes()

    def flip(self, pos: int, bit: int) -> None:
        b = bytearray(self.orig)
        b[pos] ^= 1 << bit
        self.path.write_bytes(bytes(b))

    def truncate(self) -> None:
        self.path.write_bytes(self.orig[: len(self.orig) // 2])

    def delete(self) -> None:
        self.path.unlink()

    def restore(self) -> None:
        self.path.write_bytes(self.orig)


def _hashes_of_shard(truth: Truth, rid: int, shard: int) -> list[bytes]:
    return [h for h, s in truth.tx.items() if (s - 2) // RS == rid and h[0] >> 4 == shard]


def _positions(size: int, n: int | str, rng: random.Random) -> list[int]:
    if n == "all" or (isinstance(n, int) and n >= size):
        return list(range(size))
    return sorted(rng.sample(range(size), int(n)))


FAULTS = ("idx", "data", "index", "sst", "delete", "truncate")


def sweep(
    truth: Truth,
    *,
    idx_bytes: int | str = "all",
    data_bytes: int = 40,
    index_bytes: int = 40,
    sst_bytes: int = 40,
    seed: int = 1,
    progress: bool = False,
    faults=FAULTS,
) -> Result:
    from rpcbackfill.paths import index_shard_path as shard_index_path
    from rpcbackfill.stores.lfs import ChunkReader, chunk_paths

    cfg = truth.config
    rng = random.Random(seed)
    res = Result()
    txbase = Path(cfg.immutable_stores.txhash_base)
    lbase = Path(cfg.immutable_stores.ledgers_base)
    # the shard of range 0 holding the most sampled hashes
    shard = max(range(16), key=lambda x: len(_hashes_of_shard(truth, 0, x)))
    hs = _hashes_of_shard(truth, 0, shard)[:4]
    absent = bytes([shard << 4]) + hashlib.sha256(b"absent").digest()[1:]
    probe_other = next(h for h, s in truth.tx.items() if (s - 2) // RS == 1)

    def tx_queries(fault: str, what: str, hashes: list[bytes], with_absent: bool = True) -> None:
        for h in hashes:
            res.add(fault, what, ask_tx(truth, h, truth.tx[h]))
        if with_absent:
            res.add(fault, what, ask_tx(truth, absent, None))

    # idx: one bit per byte
    d = Damage(shard_index_path(txbase / "0000", shard))
    for pos in _positions(len(d.orig), idx_bytes, rng) if "idx" in faults else []:
        d.flip(pos, pos % 8)
        tx_queries("idx", f"{d.path} byte {pos}", hs)
        # range 1 must keep answering whatever range 0's shard holds
        res.add("idx", f"{d.path} byte {pos} (range 1)", ask_tx(truth, probe_other, truth.tx[probe_other]))
    d.restore()
    if progress:
        print("idx done", dict(res.counts.get("idx", {})), file=sys.stderr)

    # chunk 0 .data / .index
    data_path, index_path = chunk_paths(lbase, 0)
    r = ChunkReader(lbase, 0)
    offs = list(r._offl)
    r.close()

    def pristine(seq: int) -> None:
        """Record the truth for ledger ``seq`` (and its hashes) while the files are sound."""
        from rpcbackfill import lcm
        from rpcbackfill.orchestration import api

        if seq not in truth.ledgers:
            raw = api.get_ledger(cfg, seq)
            truth.ledgers[seq] = hashlib.sha256(raw).hexdigest()
            for h in lcm.iter_hashes(lcm.tx_hashes(raw)[1]):
                truth.tx.setdefault(h, seq)

    for kind, path, n in (("data", data_path, data_bytes), ("index", index_path, index_bytes)):
        d = Damage(path)
        for pos in _positions(len(d.orig), n, rng) if kind in faults else []:
            if kind == "data":  # the ledger whose frame holds the byte
                i = next(k for k in range(len(offs) - 1) if offs[k + 1] > pos)
                seqs = [2 + i]
            else:  # the ledgers around the damaged offset entry, and one far away
                i = min(len(offs) - 2, max(0, (pos - 8) // 4))
                seqs = sorted({2 + max(0, i - 1), 2 + i, 2 + rng.randrange(len(offs) - 1)})
            for seq in seqs:
                pristine(seq)
            d.flip(pos, rng.randrange(8))
            for seq in seqs:
                res.add(kind, f"{path} byte {pos} ledger {seq}", ask_ledger(truth, seq))
                hits = [h for h, s in truth.tx.items() if s == seq][:1]
                tx_queries(kind, f"{path} byte {pos} ledger {seq}", hits, with_absent=False)
            d.restore()
        if progress:
            print(kind, "done", dict(res.counts.get(kind, {})), file=sys.stderr)

    # meta store SSTs
    meta = Path(cfg.meta_store.path)
    for sst in sorted(meta.glob("*.sst")):
        d = Damage(sst)
        for pos in _positions(len(d.orig), sst_bytes, rng) if "sst" in faults else []:
            d.flip(pos, rng.randrange(8))
            tx_queries("sst", f"{sst} byte {pos}", hs[:1], with_absent=False)
        d.restore()

    # deleted / truncated files
    victims = [
        shard_index_path(txbase / "0000", shard),
        data_path,
        index_path,
        *sorted(meta.glob("*.sst")),
        meta / "CURRENT",
        *sorted(meta.glob("MANIFEST-*")),
    ]
    for v in victims:
        for how in [h for h in ("delete", "truncate") if h in faults]:
            d = Damage(v)
            getattr(d, how)()
            tx_queries(how, f"{v}", hs[:2])
            seq = truth.tx[hs[0]]
            res.add(how, f"{v} ledger {seq}", ask_ledger(truth, seq))
            if v.parent != meta:  # a final file of range 0: status must report the damage
                res.add(how, f"{v} status", ask_status(truth, v))
            d.restore()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=None, help="directory for the sample lake and data dir (kept)")
    ap.add_argument("--idx-bytes", default="all")
    ap.add_argument("--data-bytes", type=int, default=200)
    ap.add_argument("--index-bytes", type=int, default=200)
    ap.add_argument("--sst-bytes", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated subset of {','.join(FAULTS)}")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    import logging

    logging.disable(logging.WARNING)  # damaged ranges are logged at WARNING by design
    tmp = None
    work = Path(a.work) if a.work else Path(tmp := tempfile.mkdtemp(prefix="fault_sweep_"))
    try:
        cfg = build_data_dir(work)
        truth = read_truth(cfg)
        idx = a.idx_bytes if a.idx_bytes == "all" else int(a.idx_bytes)
        res = sweep(
            truth,
            idx_bytes=idx,
            data_bytes=a.data_bytes,
            index_bytes=a.index_bytes,
            sst_bytes=a.sst_bytes,
            seed=a.seed,
            progress=True,
            faults=a.faults.split(","),
        )
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    outcomes = ("ok", "error", "wrong", "crash")
    print(f"{'fault':10} " + " ".join(f"{o:>7}" for o in outcomes) + "   total")
    for fault, c in res.counts.items():
        print(f"{fault:10} " + " ".join(f"{c.get(o, 0):7d}" for o in outcomes) + f" {sum(c.values()):7d}")
    total = Counter()
    for c in res.counts.values():
        total.update(c)
    print(f"{'all':10} " + " ".join(f"{total.get(o, 0):7d}" for o in outcomes) + f" {sum(total.values()):7d}")
    for line in res.bad:
        print("  " + line)
    if a.json:
        Path(a.json).write_text(json.dumps({k: dict(v) for k, v in res.counts.items()}, indent=1))
    return 1 if any(c.get("wrong") or c.get("crash") for c in res.counts.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
