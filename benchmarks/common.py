"""Shared helpers for ``benchmarks/*.py``: machine description, median timing, peak RSS, tables.

Every benchmark is a standalone script; import this module with the benchmarks directory on
``sys.path`` (scripts run as ``python benchmarks/bench_x.py`` have it there already)::

    from common import add_common_args, machine_info, format_machine, timed_runs, print_table, write_json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # benchmarks import the package from the checkout
    sys.path.insert(0, str(REPO))

MIB = 1 << 20
GIB = 1 << 30


# --- machine description -------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _version(mod: str) -> str:
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:
        return "absent"


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        if out.returncode == 0:
            return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, kernel, Python and library versions of this machine."""
    import psutil

    try:
        import zstandard

        zstd_lib = ".".join(map(str, zstandard.ZSTD_VERSION))
    except Exception:
        zstd_lib = "absent"
    flags = _cpu_flags()
    return {
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_features": sorted(f for f in ("avx2", "avx512f", "sha_ni", "aes") if f in flags),
        "ram_bytes": psutil.virtual_memory().total,
        "kernel": platform.release(),
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "libs": {
            "zstandard": _version("zstandard"),
            "libzstd": zstd_lib,
            "numpy": _version("numpy"),
            "stellar-sdk": _version("stellar-sdk"),
            "rocksdict": _version("rocksdict"),
            "Cython": _version("Cython"),
        },
        "rpcbackfill_commit": _git_commit(),
        "load_avg_1m": os.getloadavg()[0],
    }


def format_machine(info: dict[str, Any]) -> str:
    libs = ", ".join(f"{k} {v}" for k, v in info["libs"].items())
    return (
        f"machine: {info['cpu_model']}; {info['logical_cpus']} logical CPUs "
        f"({info['physical_cores']} physical, {info['usable_cpus']} usable); "
        f"{info['ram_bytes'] / GIB:.1f} GiB RAM; features {' '.join(info['cpu_features']) or '-'}\n"
        f"system: Linux {info['kernel']}; Python {info['python']}; {libs}\n"
        f"commit: {info['rpcbackfill_commit']}; load average at start {info['load_avg_1m']:.2f}"
    )


# --- timing ------------------------------------------------------------------------------------


@dataclass
class Timing:
    """Wall and CPU seconds of repeated runs; medians are what tables report."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)

    @property
    def wall_median(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)

    @property
    def wall_spread(self) -> float:
        """(max - min) / median of the wall times: how noisy the runs were."""
        m = self.wall_median
        return (max(self.wall) - min(self.wall)) / m if m > 0 else 0.0


def _cpu_now() -> float:
    """CPU seconds of this process and of its waited-for children."""
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def timed_runs(
    fn: Callable[[], Any], runs: int = 3, warmup: int = 0, setup: Callable[[], None] | None = None
) -> Timing:
    """Run ``fn`` ``warmup`` + ``runs`` times (``setup`` before each, untimed); keep wall + CPU times."""
    t = Timing()
    for i in range(warmup + runs):
        if setup is not None:
            setup()
        c0, w0 = _cpu_now(), time.perf_counter()
        r = fn()
        w1, c1 = time.perf_counter(), _cpu_now()
        if i >= warmup:
            t.wall.append(w1 - w0)
            t.cpu.append(c1 - c0)
            t.results.append(r)
    return t


def median(xs: Iterable[float]) -> float:
    return statistics.median(list(xs))


# --- memory and I/O ----------------------------------------------------------------------------


def peak_rss_self() -> int:
    """Peak resident set size of this process so far, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_rss_children() -> int:
    """Largest peak RSS of any waited-for descendant, in bytes."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


class SelfRssSampler:
    """Peak RSS of this process while the block runs, from /proc/self/statm every ``interval``
    s: a few microseconds per sample, so an in-process stage's CPU figure is not inflated the
    way ``TreeSampler`` (a walk of every process on the machine per sample) would inflate it."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.peak_rss = 0
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        try:
            with open("/proc/self/statm", "rb") as f:
                rss = int(f.read().split()[1]) * self._page
        except (OSError, ValueError, IndexError):
            return
        self.peak_rss = max(self.peak_rss, rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> SelfRssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


class TreeSampler:
    """Samples a process tree (RSS sum, disk writes, CPU) every ``interval`` s in a thread.

    ``peak_rss`` is the largest *sum* of RSS over the tree seen at one sample (what the
    machine must hold); ``write_bytes`` sums, per process, the last ``write_bytes`` counter seen
    (block-layer writes; a process's writes after its last sample are missed, so this is a
    lower bound -- combine with on-disk sizes).  Caveat: a process's counter also includes the
    children it has reaped, so for a tree whose parent waits for its children the sum counts
    the children twice; prefer ``getrusage(RUSAGE_CHILDREN).ru_oublock`` for whole trees.
    """

    def __init__(self, pid: int, interval: float = 0.05):
        import psutil

        self._psutil = psutil
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_rss = 0
        self.peak_procs = 0
        self._writes: dict[int, int] = {}
        self._cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)

    def _sample(self) -> None:
        ps = self._psutil
        try:
            procs = [self.root] + self.root.children(recursive=True)
        except ps.Error:
            return
        rss = 0
        for p in procs:
            try:
                with p.oneshot():
                    rss += p.memory_info().rss
                    key = (p.pid, p.create_time())
                    try:
                        self._writes[key] = p.io_counters().write_bytes
                    except (ps.AccessDenied, AttributeError):
                        pass
                    ct = p.cpu_times()
                    self._cpu[key] = ct.user + ct.system
            except ps.Error:
                continue
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_procs = max(self.peak_procs, len(procs))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    @property
    def write_bytes(self) -> int:
        return sum(self._writes.values())

    @property
    def cpu_seconds(self) -> float:
        """CPU seconds of the tree's processes as last sampled (lower bound)."""
        return sum(self._cpu.values())

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def dir_bytes(path: str | os.PathLike) -> int:
    """Bytes of all regular files under ``path`` (0 when absent)."""
    total = 0
    for dp, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dp, f)).st_size
            except OSError:
                pass
    return total


def drop_dir(path: str | os.PathLike) -> None:
    shutil.rmtree(path, ignore_errors=True)


# --- output ------------------------------------------------------------------------------------


def print_table(rows: Sequence[Sequence[Any]], headers: Sequence[str], file=None) -> str:
    """Plain-text table (also valid Markdown) printed to ``file`` (stdout) and returned."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells[1:]:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
    text = "\n".join(lines)
    print(text, file=file or sys.stdout, flush=True)
    return text


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 1:
            return f"{v:.2f}"
        return f"{v:.3g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def write_json(path: str | os.PathLike | None, data: dict[str, Any]) -> None:
    if not path:
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, p)


def add_common_args(parser: argparse.ArgumentParser, runs: int = 3) -> None:
    parser.add_argument("--runs", type=int, default=runs, help=f"timed runs per measurement (median; default {runs})")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON to PATH")
