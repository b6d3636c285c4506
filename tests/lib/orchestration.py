"""Shared helpers for the orchestration and crash tests.

Also a tiny entry point: ``python -m tests.lib.orchestration CONFIG.pickle`` runs a
coordinator over a pickled (Config, CoordinatorOptions) and exits with its code -- the crash
tests start it in its own session so that ``killpg(SIGKILL)`` kills the whole process tree.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from . import REPO
from .lake import lake_ledgers

RS = 10_000  # range_size used by the tests: 1 chunk per range


def make_lake(root: Path, first: int, last: int, *, seed: int = 7, tx_per_ledger: float = 3.0) -> Path:
    """A generated Galexie lake (8 ledgers per file, 64 files per partition) at ``root``."""
    from rpcbackfill.devtools.lakegen import generate_lake

    if not (root / ".config.json").exists():
        generate_lake(
            root,
            first,
            last,
            seed=seed,
            tx_per_ledger=tx_per_ledger,
            ledgers_per_batch=8,
            batches_per_partition=64,
            fsync=False,
        )
    return root


_CONFIG_DEFAULTS: dict[str, dict[str, object]] = {
    "service": {"data_dir": "data", "http_port": 0},
    "backfill": {"range_size": RS, "checkpoint_interval": 1000, "parallel_ranges": 2},
    "backfill.buffered_storage": {"num_workers": 2},
}


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))  # a JSON string is a TOML basic string


def write_backfill_config(
    root: Path,
    lake: Path,
    *,
    name: str = "backfill.toml",
    service: dict[str, object] | None = None,
    backfill: dict[str, object] | None = None,
    storage: dict[str, object] | None = None,
) -> Path:
    """A backfill config file ``root/name`` reading the local lake ``lake``; its path.

    Defaults: data directory ``data``, HTTP endpoint off (``http_port = 0``), 10,000-ledger
    ranges, two in parallel, checkpoints every 1,000 ledgers, two download workers.  ``service``,
    ``backfill`` and ``storage`` (``[backfill.buffered_storage]``) add or replace keys; a value
    of None removes one.  Naming ``http_endpoint`` drops the default ``http_port`` (which would
    override its port)."""
    sections = {k: dict(v) for k, v in _CONFIG_DEFAULTS.items()}
    sections["backfill.buffered_storage"]["bucket_path"] = str(lake)
    if service and "http_endpoint" in service:
        sections["service"].pop("http_port")
    for sect, over in (("service", service), ("backfill", backfill), ("backfill.buffered_storage", storage)):
        sections[sect].update(over or {})
    text = "".join(
        f"[{sect}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in keys.items() if v is not None)
        for sect, keys in sections.items()
    )
    cfg = root / name
    cfg.write_text(text)
    return cfg


def backfill_command(cfg: Path, first: int, last: int, *extra: str, before: tuple[str, ...] = ()) -> list[str]:
    """``python -m rpcbackfill [before...] --backfill --start-ledger FIRST --end-ledger LAST
    --config-path CFG [extra...]`` with this interpreter."""
    return [
        sys.executable,
        "-m",
        "rpcbackfill",
        *before,
        "--backfill",
        "--start-ledger",
        str(first),
        "--end-ledger",
        str(last),
        "--config-path",
        str(cfg),
        *extra,
    ]


def cli_env(extra: dict[str, str] | None = None, *, inherit: bool = False) -> dict[str, str]:
    """The environment of a ``stellar-rpc`` subprocess: this checkout first on ``PYTHONPATH``;
    the caller's ``STELLAR_RPC_*`` config overrides and ``RPCBACKFILL_TEST_*`` fault hooks are
    dropped unless ``inherit`` (benchmarks pass the operator's environment on); ``extra`` last."""
    drop = () if inherit else ("STELLAR_RPC_", "RPCBACKFILL_TEST_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra or {})
    return env


def start_backfill(
    cfg: Path,
    first: int,
    last: int,
    *extra: str,
    env: dict[str, str] | None = None,
    before: tuple[str, ...] = (),
    **popen,
) -> subprocess.Popen:
    """``stellar-rpc --backfill`` over FIRST..LAST in a new session (its own process group, so
    ``kill_tree`` reaches every range process), stdout discarded unless ``popen`` says else."""
    popen.setdefault("stdout", subprocess.DEVNULL)
    popen.setdefault("start_new_session", True)
    return subprocess.Popen(backfill_command(cfg, first, last, *extra, before=before), env=cli_env(env), **popen)


class LoggedBackfill:
    """``start_backfill`` with its stderr read line by line in a thread (the pipe never fills
    up), for tests that act on what the run logs.  Leaving the ``with`` block kills the whole
    tree of a run still going."""

    def __init__(self, cfg: Path, first: int, last: int, *extra: str, **kw):
        self.proc = start_backfill(cfg, first, last, *extra, stderr=subprocess.PIPE, text=True, **kw)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_line(self, match, after: int = 0, timeout: float = 180.0) -> int:
        """Index of the first line at or after ``after`` for which ``match(line)`` holds."""

        def find() -> int | None:
            return next((i for i in range(after, len(self.lines)) if match(self.lines[i])), None)

        return poll_until(find, self.proc, "the log line", timeout)

    def wait(self, timeout: float = 240.0) -> int:
        """The exit code, once the run has ended and every line of it is read."""
        rc = self.proc.wait(timeout)
        self._reader.join(30)
        return rc

    def __enter__(self) -> LoggedBackfill:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            kill_tree(self.proc)


def make_config(data_dir: Path, lake: Path, start: int, end: int, **backfill):
    from rpcbackfill.config import BufferedStorageConfig, default_config

    bs = BufferedStorageConfig(bucket_path=str(lake), buffer_size=64, num_workers=4, retry_limit=2, retry_wait=0.01)
    backfill.setdefault("parallel_ranges", 2)
    backfill.setdefault("range_size", RS)
    cfg = default_config(data_dir, start_ledger=start, end_ledger=end, buffered_storage=bs, **backfill)
    return with_port(cfg, 0)  # HTTP off unless a test asks for it (tests may run side by side)


def with_port(config, port: int):
    return dataclasses.replace(config, service=dataclasses.replace(config.service, http_port=port))


def fast_options(**kw):
    from rpcbackfill.orchestration.coordinator import CoordinatorOptions

    kw.setdefault("retry_backoff_s", 0.05)
    kw.setdefault("progress_interval_s", 0.5)
    kw.setdefault("worker_progress_s", 0.1)
    kw.setdefault("stop_grace_s", 20.0)
    kw.setdefault("progress_bar", False)
    return CoordinatorOptions(**kw)


def start_coordinator(
    tmp: Path,
    config,
    options=None,
    env: dict | None = None,
    log_level: str = "INFO",
    stderr=None,
    cwd: Path | None = None,
) -> subprocess.Popen:
    """The coordinator in a new session (its own process group), as ``stellar-rpc`` would run."""
    blob = tmp / f"coord-{time.monotonic_ns()}.pickle"
    blob.write_bytes(pickle.dumps((config, options or fast_options(), log_level)))
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e.pop("RPCBACKFILL_TEST_CRASH_AT", None)
    e.update(env or {})
    # ``-m`` would put the working directory first on sys.path (a test may run the coordinator
    # from a directory holding a decoy package): run the module without it.
    return subprocess.Popen(
        [sys.executable, "-c", _RUN_MODULE, str(blob)],
        env=e,
        cwd=cwd,
        start_new_session=True,
        stderr=stderr,
        stdout=subprocess.DEVNULL,
    )


_RUN_MODULE = "import runpy, sys; sys.path.remove(''); runpy.run_module('tests.lib.orchestration', run_name='__main__')"


def poll_until(check, proc: subprocess.Popen | None, what: str, timeout: float = 120.0, interval: float = 0.02):
    """``check()`` until it returns something other than None, and that value.  The run
    ``proc`` must stay alive meanwhile; the deadline only guards against a hang (the test acts on
    the state it waited for, never on the time it took)."""
    deadline = time.monotonic() + timeout
    while (value := check()) is None:
        assert proc is None or proc.poll() is None, f"the run exited ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout}s"
        time.sleep(interval)
    return value


def wait_held(hold_dir: Path, point: str, proc: subprocess.Popen, n: int = 1, timeout: float = 120.0) -> list[int]:
    """Until ``n`` range processes hold at fault point ``point`` (see faults.py); the deadline
    only guards against a hang, the test acts on the hold itself."""
    from rpcbackfill.orchestration import faults

    def held() -> list[int] | None:
        pids = faults.held(hold_dir, point)
        return pids if len(pids) >= n else None

    return poll_until(held, proc, f"{n} range(s) held at {point}", timeout)


def wait_group_gone(pgid: int, timeout: float = 20.0) -> None:
    """Until no process of group ``pgid`` is left (workers die with their coordinator)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    raise AssertionError(f"process group {pgid} still alive after {timeout}s")


def kill_tree(proc: subprocess.Popen) -> None:
    """kill -9 of the whole process tree, then wait until every member is gone."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    wait_group_gone(proc.pid)


def run_to_end(tmp: Path, config, options=None, env=None, timeout: float = 240) -> int:
    p = start_coordinator(tmp, config, options, env)
    try:
        return p.wait(timeout)
    finally:
        if p.poll() is None:
            kill_tree(p)
        else:
            wait_group_gone(p.pid)


def store_digest(config) -> dict[str, str]:
    """sha256 of every file under the immutable stores, by relative path."""
    out = {}
    for base in (Path(config.immutable_stores.ledgers_base), Path(config.immutable_stores.txhash_base)):
        if not base.exists():
            continue
        for p in sorted(base.rglob("*")):
            if p.is_file():
                out[str(p.relative_to(config.service.data_dir))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def check_backfill_result(config, lake: Path, first: int, last: int, api_samples: int = 5) -> tuple[int, int]:
    """Every ledger byte-identical to the lake, every tx hash resolves to its ledger through the
    range indexes; a few hashes and ledgers also through the public query API.  Returns
    (ledgers, hashes)."""
    import numpy as np

    from rpcbackfill import lcm
    from rpcbackfill.index import TxHashIndex
    from rpcbackfill.ledgermath import range_first_ledger, range_of_ledger
    from rpcbackfill.orchestration import api
    from rpcbackfill.paths import DataDirLayout
    from rpcbackfill.stores.lfs import LedgerStore

    rs = config.backfill.range_size
    n_ledgers = n_hashes = 0
    pending: dict[int, list] = {}
    samples = []
    with LedgerStore(config.immutable_stores.ledgers_base) as store:
        for seq, raw in lake_ledgers(lake, first, last):
            assert store.get_ledger(seq) == raw, f"ledger {seq} differs from the lake"
            n_ledgers += 1
            _, hashes = lcm.tx_hashes(raw)
            if hashes:
                pending.setdefault(range_of_ledger(seq, rs), []).append((seq, hashes))
                if len(samples) < api_samples and seq % 997 == 0:
                    samples.append((seq, hashes[:32]))
    for rid, items in pending.items():
        keys = b"".join(h for _, h in items)
        want = np.concatenate([np.full(len(h) // 32, s, dtype=np.uint32) for s, h in items])
        idx = TxHashIndex(DataDirLayout(config).txhash_range_dir(rid), range_start=range_first_ledger(rid, rs))
        try:
            assert idx.n_keys == len(want), f"range {rid}: index holds {idx.n_keys} keys, lake has {len(want)}"
            got = idx.lookup_many(keys)
        finally:
            idx.close()
        bad = np.nonzero(got != want)[0]
        assert bad.size == 0, (
            f"range {rid}: {bad.size} hashes resolve wrongly, first {keys[bad[0] * 32 : bad[0] * 32 + 32].hex()}"
        )
        n_hashes += len(want)
    for seq, h in samples:
        assert api.get_transaction_ledger(config, h) == seq
        assert api.get_ledger(config, seq) == store_get(config, seq)
    return n_ledgers, n_hashes


def store_get(config, seq: int) -> bytes:
    from rpcbackfill.ledgermath import chunk_of_ledger
    from rpcbackfill.stores.lfs import ChunkReader

    with ChunkReader(config.immutable_stores.ledgers_base, chunk_of_ledger(seq)) as r:
        return r.get(seq)


def active_leftovers(config) -> list[str]:
    out = []
    for base in (Path(config.active_stores.ledger_path), Path(config.active_stores.txhash_path)):
        if base.exists():
            out += [str(p) for p in base.iterdir()]
    return out


def _main() -> int:
    import logging

    config, options, level = pickle.loads(Path(sys.argv[1]).read_bytes())
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s [coordinator] %(name)s: %(message)s"
    )
    from rpcbackfill.errors import RpcBackfillError
    from rpcbackfill.orchestration.coordinator import Coordinator

    try:
        return Coordinator(config, options).run()
    except RpcBackfillError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(_main())
