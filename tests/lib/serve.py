"""Shared helpers of the ``stellar-rpc serve`` tests: a backfilled data directory and servers.

``backfilled(base)`` generates a sparse lake of two ranges (range_size 10,000) and backfills it
with the real coordinator (once per test session: the directories are reused when present).
``ServerProcess`` runs ``stellar-rpc serve`` as a real process on an ephemeral port (read from
its log line); ``InThreadServer`` runs the same server in a thread of the test process.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

from .orchestration import RS, make_config, make_lake, run_to_end

FIRST, LAST = 2, 2 * RS + 1
SEED = 11
DENSITY = 0.4  # transactions per ledger: sparse, with runs of empty ledgers
LISTEN_RE = re.compile(r"JSON-RPC listening on http://([^:/]+):(\d+)/")


def backfilled(base: Path):
    """(config, lake) of a data directory holding COMPLETE ranges 0 and 1 of the generated lake."""
    lake = make_lake(base / "serve-lake", FIRST, LAST, seed=SEED, tx_per_ledger=DENSITY)
    cfg = make_config(base / "serve-data", lake, FIRST, LAST)
    done = base / "serve-data" / ".backfilled"
    if not done.exists():
        assert run_to_end(base, cfg) == 0
        done.write_text("ok")
    return with_endpoint(cfg, "127.0.0.1:0"), lake


def with_endpoint(cfg, endpoint: str):
    return dataclasses.replace(cfg, service=dataclasses.replace(cfg.service, endpoint=endpoint))


def lake_ledgers():
    """The generated ledgers, regenerated from the seed (the ground truth, independent of the stores)."""
    from rpcbackfill.devtools.lakegen import generate_ledgers

    return generate_ledgers(FIRST, LAST, seed=SEED, tx_per_ledger=DENSITY)


def post(url: str, body: bytes | str, timeout: float = 30) -> tuple[int, object]:
    """POST raw bytes; (HTTP status, parsed JSON -- NaN/Infinity refused, so the reply is strict JSON)."""
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()

    def no_constants(name):
        raise ValueError(f"reply contains {name}")

    return status, json.loads(raw, parse_constant=no_constants)


def rpc(url: str, method: str, params=None, id_=1):
    body = {"jsonrpc": "2.0", "id": id_, "method": method}
    if params is not None:
        body["params"] = params
    return post(url, json.dumps(body))[1]


class InThreadServer:
    """The server in a thread of this process (``stop()`` = graceful shutdown)."""

    def __init__(self, cfg, options=None):
        from rpcbackfill.rpc.server import serve

        self._stop = threading.Event()
        self._bound: list = []
        self._ready = threading.Event()
        self.error: BaseException | None = None

        def run():
            try:
                serve(cfg, options, ready=self._on_ready, stop_event=self._stop)
            except BaseException as e:  # noqa: BLE001 -- surfaced by start()/stop()
                self.error = e
                self._ready.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        self._ready.wait(60)
        if self.error is not None:
            raise self.error
        host, port = self._bound[0]
        self.url = f"http://{host}:{port}/"

    def _on_ready(self, bound):
        self._bound.append(bound)
        self._ready.set()

    def stop(self):
        self._stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error


def serve_command(data_dir, endpoint: str, *extra: str) -> list[str]:
    """``python -m rpcbackfill serve --data-dir DATA_DIR --set service.endpoint=ENDPOINT [extra...]``."""
    return [
        sys.executable,
        "-m",
        "rpcbackfill",
        "serve",
        "--data-dir",
        str(data_dir),
        "--set",
        f"service.endpoint={endpoint}",
        *extra,
    ]


def run_serve_until_exit(data_dir, endpoint: str, *extra: str) -> subprocess.CompletedProcess:
    """``stellar-rpc serve`` that is expected to stop by itself (bad input, a port in use)."""
    return subprocess.run(serve_command(data_dir, endpoint, *extra), capture_output=True, text=True, timeout=60)


class ServerProcess:
    """``stellar-rpc serve`` as a real process; ``url`` from its "listening" log line."""

    def __init__(self, cfg, extra_args=()):
        args = serve_command(
            cfg.service.data_dir,
            cfg.service.endpoint,
            "--set",
            f"service.network_passphrase={cfg.service.network_passphrase}",
            *extra_args,
        )
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        for line in self.proc.stderr:  # the server logs the bound address once it listens
            self.log.append(line)
            m = LISTEN_RE.search(line)
            if m:
                self.url = f"http://{m.group(1)}:{m.group(2)}/"
                break
        else:
            self.proc.wait()
            raise AssertionError(f"server exited {self.proc.returncode} before listening:\n{''.join(self.log)}")
        self._drain = threading.Thread(target=self._read_rest, daemon=True)
        self._drain.start()

    def _read_rest(self):
        for line in self.proc.stderr:
            self.log.append(line)

    def terminate(self, timeout: float = 60) -> int:
        self.proc.terminate()
        rc = self.proc.wait(timeout)
        self._drain.join(10)
        return rc
