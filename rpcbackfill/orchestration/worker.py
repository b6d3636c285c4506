"""Orchestrator process: ``python -m rpcbackfill.orchestration.worker FD PARENT_PID``.

Started by the coordinator with one end of a socketpair on ``FD`` (and the data-dir lock
descriptor inherited, so the directory stays locked while this process lives).  It receives
("start", config, range_info, options), runs the range's ``RangeOrchestrator`` and reports.

Lifetime: the process dies with the coordinator -- ``PR_SET_PDEATHSIG(SIGKILL)`` for a
coordinator killed outright, and EOF on the socket (cancel, then a hard exit after a grace
period) for one that closed it.  SIGINT/SIGTERM and a ("stop",) message cancel promptly.

Exit codes: 0 range COMPLETE, 1 failed (a ("failed", ...) message says why), 130 cancelled.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import signal
import socket
import sys
import threading

from ..errors import (
    Cancelled,
    CorruptStoreError,
    DiskFullError,
    DuplicateKeyError,
    InputError,
    LakeConfigError,
    LedgerAuthError,
    MetaStoreError,
    MissingLedgerError,
    RpcBackfillError,
    UnsupportedFormatError,
)
from .protocol import Channel, ChannelClosed

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # linux/prctl.h
EOF_GRACE_S = 5.0  # after the coordinator hung up: time to stop cleanly before a hard exit

# Errors retrying cannot fix: the range is marked FAILED at once (spec: disk-full and corruption
# fail fast; a ledger missing from a bounded lake and configuration problems stay missing).
FATAL_ERRORS = (
    DiskFullError,
    CorruptStoreError,
    DuplicateKeyError,
    UnsupportedFormatError,
    MissingLedgerError,
    LedgerAuthError,
    LakeConfigError,
    InputError,
    MetaStoreError,
)


def is_fatal(e: BaseException) -> bool:
    return isinstance(e, FATAL_ERRORS)


def set_parent_death_signal(parent_pid: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: rely on socket EOF
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


class Link:
    """Owns the socket: a reader thread routes acks to the caller, stop/EOF to ``cancel``."""

    def __init__(self, chan: Channel, cancel: threading.Event):
        self.chan = chan
        self.cancel = cancel
        self.acks: queue.Queue = queue.Queue()
        self.closed = False
        self._send_lock = threading.Lock()
        self._req = 0

    def start_reader(self) -> None:
        threading.Thread(target=self._read, name="coordinator-link", daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                m = self.chan.recv()
                if m[0] in ("ack", "err"):
                    self.acks.put(m)
                elif m[0] == "stop":
                    log.info("stop requested by the coordinator")
                    self.cancel.set()
        except ChannelClosed:
            self.closed = True
            self.cancel.set()
            self.acks.put(("eof", None, None))
            # The coordinator is gone: give the main thread a moment to stop, then go.
            t = threading.Timer(EOF_GRACE_S, lambda: os._exit(1))
            t.daemon = True
            t.start()

    def send(self, msg: tuple) -> None:
        with self._send_lock:
            self.chan.send(msg)

    def call(self, method: str, *args) -> None:
        with self._send_lock:
            self._req += 1
            rid = self._req
            self.chan.send(("call", rid, method, args))
        m = self.acks.get()
        if m[0] == "eof":
            raise Cancelled("coordinator went away")
        if m[1] != rid:
            raise MetaStoreError(f"protocol error: ack {m[1]} for request {rid}")
        if m[0] == "err":
            raise MetaStoreError(m[2])


class LinkLogHandler(logging.Handler):
    """Forwards log records to the coordinator as ("log", fields); stderr if the link is gone."""

    def __init__(self, link: Link, rid: int):
        super().__init__()
        self.link = link
        self.prefix = f"[range {rid} pid {os.getpid()}] "

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = {
                "name": record.name,
                "levelno": record.levelno,
                "levelname": record.levelname,
                "msg": self.prefix + record.getMessage(),
                "created": record.created,
                "msecs": record.msecs,
                "process": record.process,
                "threadName": record.threadName,
                "exc_text": logging.Formatter().formatException(record.exc_info) if record.exc_info else None,
            }
            if self.link.closed:
                raise ChannelClosed("link closed")
            self.link.send(("log", fields))
        except ChannelClosed:
            sys.stderr.write(f"{record.levelname} {self.prefix}{record.name}: {record.getMessage()}\n")
        except Exception:
            self.handleError(record)


class LinkMeta:
    """MetaStore-shaped proxy: each update is applied (and synced) by the coordinator."""

    def __init__(self, link: Link):
        self._link = link

    def __getattr__(self, name: str):
        from .protocol import ALLOWED_CALLS

        if name not in ALLOWED_CALLS:
            raise AttributeError(name)
        return lambda *args: self._link.call(name, *args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    fd, parent = int(argv[0]), int(argv[1])
    set_parent_death_signal(parent)
    chan = Channel(socket.socket(fileno=fd))
    cancel = threading.Event()

    def on_signal(signum, frame):
        cancel.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    start = chan.recv()
    if start[0] != "start":
        return 1
    _, config, info, opts = start
    from .orchestrator import OrchestratorOptions, RangeOrchestrator

    link = Link(chan, cancel)
    # This is a process entry point: its log records travel to the coordinator, which emits
    # them through the handlers the CLI configured (text or JSON), tagged with the range.
    root = logging.getLogger()
    root.setLevel(opts.get("log_level", logging.INFO))
    root.addHandler(LinkLogHandler(link, info.id))
    link.start_reader()
    orch = RangeOrchestrator(
        config,
        info,
        LinkMeta(link),
        cancel,
        progress=lambda snap: link.send(("progress", snap)),
        options=OrchestratorOptions(progress_every_s=opts.get("progress_every_s", 1.0)),
    )
    try:
        orch.run()
    except Cancelled as e:
        log.info("range %d: stopped (%s)", info.id, e)
        _try_send(link, ("cancelled", str(e)))
        return 130
    except RpcBackfillError as e:
        log.error("range %d failed: %s", info.id, e)
        _try_send(link, ("failed", type(e).__name__, str(e), is_fatal(e)))
        return 1
    except Exception as e:  # an unexpected bug: report it with its type, let the coordinator retry
        log.exception("range %d failed unexpectedly", info.id)
        _try_send(link, ("failed", type(e).__name__, f"{type(e).__name__}: {e}", False))
        return 1
    _try_send(link, ("done", None))
    return 0


def _try_send(link: Link, msg: tuple) -> None:
    try:
        link.send(msg)
    except ChannelClosed:
        pass


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown: source threads may still be winding down
