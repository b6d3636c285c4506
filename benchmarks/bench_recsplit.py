"""RecSplit txhash index vs peers (bbhash, libcmph), same keys, same run.

    python benchmarks/bench_recsplit.py                      # 1M keys, 3 runs (< 2 min)
    python benchmarks/bench_recsplit.py --sizes 1M,10M,50M --runs 1 --json out.json

Per size, one shard's worth of uniform 32-byte keys (first hex digit fixed, like a shard) with
ledgers spread over a 10M-ledger range.  Rows:

* ``recsplit``: ours.  ``compact`` = compact_shard (spill file -> bucket-ordered file),
  ``build`` = build_shard (file -> .idx, atomic write), ``bytes/key`` = .idx size / keys
  (includes the 4-byte value+fingerprint record), ``peak MiB`` = peak RSS of the build beyond
  the process baseline, ``extra B/key`` = that peak minus the output file, per key.
  ``lookup batched`` = ShardIndex.lookup_many over every key in random order,
  ``lookup single`` = ShardIndex.lookup from Python (includes ~50 ns of call overhead).
* ``bbhash`` (PyPI, BBHash gamma=1, 1 thread) over the keys' 64-bit prefixes: MPHF only, so its
  ``bytes/key`` adds the same 4-byte payload ours stores (``mphf bits/key`` shows it bare).
* ``cmph-chd`` / ``cmph-bdz`` (libcmph, Debian libcmph-dev): a small C driver
  (benchmarks/peers/cmph_peer.c) compiled at run time; MPHF only, payload added likewise;
  lookups are one cmph_search_packed call per key from C; ``peak MiB`` is the driver's peak RSS
  minus the key buffer it loads.

Build and lookup times are CPU seconds (so other load on the machine does not count) divided
by keys; every figure is the median of ``--runs`` runs.  Build memory is measured in a forked
child (ru_maxrss).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from common import add_common_args, format_machine, machine_info, median, print_table, write_json  # noqa: E402

from rpcbackfill import _recsplit  # noqa: E402  (imported here: children measure the build, not imports)
from rpcbackfill.index import ShardIndex, build_shard, compact_shard, verify_shard  # noqa: E402
from rpcbackfill.paths import index_shard_path, spill_shard_path  # noqa: E402
from rpcbackfill.records import HASH_SIZE, RECORD_SIZE, SEQ_SIZE  # noqa: E402

try:
    import bbhash
except ImportError:  # optional peer
    bbhash = None

RANGE_START = 10_000_002
PAYLOAD = 4  # bytes/key of value + fingerprint that every row stores


def parse_size(s: str) -> int:
    s = s.strip().upper()
    mult = {"K": 1_000, "M": 1_000_000}.get(s[-1], 1)
    return int(float(s[:-1] if s[-1] in "KM" else s) * mult)


def make_records(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    recs = np.empty((n, RECORD_SIZE), np.uint8)
    step = 1 << 22
    for i in range(0, n, step):
        m = min(step, n - i)
        recs[i : i + m, :HASH_SIZE] = rng.integers(0, 256, (m, HASH_SIZE), dtype=np.uint8)
        recs[i : i + m, HASH_SIZE:] = (
            rng.integers(RANGE_START, RANGE_START + 10_000_000, m).astype("<u4").view(np.uint8).reshape(m, SEQ_SIZE)
        )
    recs[:, 0] &= 0x0F  # shard 0: the first hex digit is fixed
    return recs


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _child_entry(conn, fn, args) -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:  # reset the high-water mark (Linux >= 4.0)
            f.write("5")
    except OSError:
        pass
    base = _status_kib("VmRSS")
    try:
        res = fn(*args)
        conn.send((res, _status_kib("VmHWM") - base, None))
    except BaseException as e:  # report, do not hang the parent
        conn.send((None, 0, repr(e)))


def in_child(fn, *args):
    """Run fn(*args) in a fresh (spawned) interpreter; return (result, peak RSS beyond its start).

    Spawned, not forked: a forked child would reuse the parent's free heap pages and hide its
    allocations from the RSS counters."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_child_entry, args=(child, fn, args))
    p.start()
    res, extra, err = parent.recv()
    p.join()
    if err:
        raise RuntimeError(err)
    return res, extra


# --- ours --------------------------------------------------------------------------------------


def _build(sorted_path, idx_path, n):
    c0 = cpu()
    st = build_shard(sorted_path, idx_path, RANGE_START, n)
    return cpu() - c0, st.bytes_per_key, st.mphf_bits_per_key


def run_ours(recs: np.ndarray, work: Path, runs: int) -> dict:
    n = recs.shape[0]
    spill = work / "spill"
    spill.mkdir(parents=True, exist_ok=True)
    shard0 = spill_shard_path(spill, 0)
    shard0.write_bytes(recs.tobytes()) if n * RECORD_SIZE < 1 << 30 else _write_big(shard0, recs)
    keys = np.ascontiguousarray(recs[:, :HASH_SIZE])
    want = np.ascontiguousarray(recs[:, HASH_SIZE:]).view("<u4").ravel()
    perm = np.random.default_rng(1).permutation(n)
    qkeys, qwant = np.ascontiguousarray(keys[perm]), want[perm]
    del keys
    out = {k: [] for k in ("compact", "build", "bpk", "bits", "peak", "extra", "batched", "single", "fp")}
    for _ in range(runs):
        c0 = cpu()
        sp = compact_shard(spill, 0, work / "sorted")
        out["compact"].append((cpu() - c0) / n * 1e9)
        idx = index_shard_path(work, 0)
        (secs, bpk, bits), extra = in_child(_build, sp, idx, n)
        size = idx.stat().st_size
        out["build"].append(secs / n * 1e9)
        out["bpk"].append(bpk)
        out["bits"].append(bits)
        out["peak"].append(extra / 2**20)
        out["extra"].append((extra - size) / n)
        verify_shard(idx, sp, RANGE_START, n)
        with ShardIndex(idx) as ix:
            c0 = cpu()
            got = ix.lookup_many(qkeys)
            out["batched"].append((cpu() - c0) / n * 1e9)
            assert np.array_equal(got, qwant), "lookup mismatch"
            m = min(n, 200_000)
            probe = [bytes(k) for k in qkeys[:m]]
            c0 = cpu()
            for k in probe:
                ix.lookup(k)
            out["single"].append((cpu() - c0) / m * 1e9)
            absent = np.random.default_rng(7).integers(0, 256, (min(n, 1_000_000), 32), dtype=np.uint8)
            absent[:, 0] &= 0x0F
            out["fp"].append(float(np.mean(ix.lookup_many(absent) != 0)))
        sp.unlink()
    return {k: median(v) for k, v in out.items()}


def _write_big(path: Path, recs: np.ndarray) -> None:
    with open(path, "wb") as f:
        for i in range(0, recs.shape[0], 1 << 22):
            f.write(recs[i : i + (1 << 22)].tobytes())


# --- bbhash ------------------------------------------------------------------------------------


def _bb_build(keys64):
    lst = keys64.tolist()
    c0 = cpu()
    m = bbhash.PyMPHF(lst, len(lst), 1, 1.0)
    secs = cpu() - c0
    fd, path = tempfile.mkstemp(suffix=".bbhash")
    os.close(fd)
    m.save(path)
    size = os.path.getsize(path)
    os.unlink(path)
    return secs, size


def run_bbhash(recs: np.ndarray, runs: int) -> dict | str:
    if bbhash is None:
        return "bbhash not installed (pip install bbhash)"
    n = recs.shape[0]
    keys64 = np.ascontiguousarray(recs[:, 8:16]).view("<u8").ravel()  # bytes 8..15: uniform, unfixed
    out = {k: [] for k in ("build", "bytes", "peak", "batched", "single")}
    for _ in range(runs):
        (secs, size), extra = in_child(_bb_build, keys64)
        out["build"].append(secs / n * 1e9)
        out["bytes"].append(size)
        out["peak"].append(extra / 2**20)
    m = bbhash.PyMPHF(keys64.tolist(), n, 1, 1.0)
    q = keys64[np.random.default_rng(1).permutation(n)]
    for _ in range(runs):
        c0 = cpu()
        m.lookup_many(q)
        out["batched"].append((cpu() - c0) / n * 1e9)
        probe = q[: min(n, 200_000)].tolist()
        c0 = cpu()
        for k in probe:
            m.lookup(k)
        out["single"].append((cpu() - c0) / len(probe) * 1e9)
    r = {k: median(v) for k, v in out.items()}
    r["bits"] = r["bytes"] * 8 / n
    r["bpk"] = r["bytes"] / n + PAYLOAD
    return r


# --- cmph --------------------------------------------------------------------------------------


def _compile_cmph(work: Path) -> Path | str:
    src = Path(__file__).resolve().parent / "peers" / "cmph_peer.c"
    if not Path("/usr/include/cmph.h").exists():
        return "libcmph-dev not installed (apt-get install libcmph-dev)"
    exe = work / "cmph_peer"
    r = subprocess.run(["cc", "-O2", str(src), "-o", str(exe), "-lcmph"], capture_output=True, text=True)
    if r.returncode:
        return f"cmph driver did not compile: {r.stderr.strip()[:200]}"
    return exe


def run_cmph(recs: np.ndarray, work: Path, runs: int, algo: str) -> dict | str:
    exe = _compile_cmph(work)
    if isinstance(exe, str):
        return exe
    import json

    n = recs.shape[0]
    kf = work / "keys.bin"
    if not kf.exists():
        with open(kf, "wb") as f:
            for i in range(0, n, 1 << 22):
                f.write(np.ascontiguousarray(recs[i : i + (1 << 22), :HASH_SIZE]).tobytes())
    out = {k: [] for k in ("build", "bytes", "peak", "single")}
    for _ in range(runs):
        r = subprocess.run([str(exe), str(kf), str(n), algo], capture_output=True, text=True)
        if r.returncode:
            return f"cmph {algo} failed: {r.stderr.strip()[:200]}"
        j = json.loads(r.stdout)
        if j["check"] != n * (n - 1) // 2:
            return f"cmph {algo} is not a minimal perfect hash on these keys"
        out["build"].append(j["build_ns"])
        out["single"].append(j["lookup_ns"])
        out["bytes"].append(j["bytes"])
        out["peak"].append((j["maxrss_kib"] * 1024 - j["key_bytes"]) / 2**20)  # minus the keys it loads
    r = {k: median(v) for k, v in out.items()}
    r["bits"] = r["bytes"] * 8 / n
    r["bpk"] = r["bytes"] / n + PAYLOAD
    return r


# --- main --------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1M", help="comma-separated key counts, e.g. 1M,10M,50M (default 1M)")
    ap.add_argument("--no-peers", action="store_true", help="skip bbhash and cmph")
    ap.add_argument("--work", default=None, help="scratch directory (default: a temp dir, removed)")
    add_common_args(ap, runs=3)
    args = ap.parse_args()

    info = machine_info()
    print(format_machine(info))
    print(f"recsplit seed search: {'AVX-512' if _recsplit.simd_enabled() else 'scalar'}")
    results = {"machine": info, "simd": _recsplit.simd_enabled(), "sizes": {}}
    rows = []
    for size in [parse_size(s) for s in args.sizes.split(",")]:
        work = Path(args.work or tempfile.mkdtemp(prefix="bench-recsplit-")) / f"n{size}"
        work.mkdir(parents=True, exist_ok=True)
        try:
            t0 = time.perf_counter()
            recs = make_records(size, seed=size)
            per = {"recsplit": run_ours(recs, work, args.runs)}
            if not args.no_peers:
                per["bbhash"] = run_bbhash(recs, args.runs)
                per["cmph-chd"] = run_cmph(recs, work, args.runs, "chd")
                per["cmph-bdz"] = run_cmph(recs, work, args.runs, "bdz")
            results["sizes"][size] = per
            for name, r in per.items():
                if isinstance(r, str):
                    rows.append([f"{size:,}", name] + ["n/a"] * 8 + [r])
                    continue
                rows.append(
                    [
                        f"{size:,}",
                        name,
                        r["bpk"],
                        r["bits"],
                        r.get("compact", "-"),
                        r["build"],
                        r["peak"],
                        r.get("extra", "-"),
                        r.get("batched", "-"),
                        r["single"],
                        f"fp={r['fp']:.4f}" if "fp" in r else "",
                    ]
                )
            print(f"  size {size:,} done in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
        finally:
            if not args.work:
                shutil.rmtree(work.parent, ignore_errors=True)
            else:
                shutil.rmtree(work, ignore_errors=True)
    print_table(
        rows,
        [
            "keys",
            "impl",
            "bytes/key",
            "mphf bits/key",
            "compact ns/key",
            "build ns/key",
            "build peak MiB",
            "extra B/key",
            "lookup batched ns",
            "lookup single ns",
            "note",
        ],
    )
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
