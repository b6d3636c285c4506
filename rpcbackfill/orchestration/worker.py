"""The orchestrator process of ``SubprocessRunner``: runs one range and reports over a socket.

Started by the coordinator through ``subprocess_runner.BOOTSTRAP``, which pins ``sys.path`` to
the coordinator's before it imports this module and calls ``process_main([FD, PARENT_PID])``.
``FD`` is one end of a socketpair; the data-dir lock descriptor is inherited too, so the
directory stays locked while this process lives.  It receives ("start", WorkItem, options),
runs the range's ``RangeOrchestrator`` with a ``ForwardingMeta`` and reports (protocol.py).

Lifetime: the process dies with the coordinator -- ``PR_SET_PDEATHSIG(SIGKILL)`` for a
coordinator killed outright, and EOF on the socket (cancel, then a hard exit after a grace
period) for one that closed it.  SIGINT/SIGTERM and a ("stop",) message cancel promptly.

Exit codes: 0 range COMPLETE, 1 failed (the ("outcome", ...) message says why), 130 cancelled.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import sys
import threading

from ..errors import Cancelled, MetaStoreError, RpcBackfillError
from ..logsetup import extra_fields
from ..procutil import set_parent_death_signal
from .executor import Outcome, WorkItem
from .protocol import Channel, ChannelClosed
from .updates import ForwardingMeta, MetaUpdate

log = logging.getLogger(__name__)

EOF_GRACE_S = 5.0  # after the coordinator hung up: time to stop cleanly before a hard exit


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

    def update(self, update: MetaUpdate) -> None:
        """Send a meta-store update and wait for the coordinator's answer."""
        with self._send_lock:
            self._req += 1
            req = self._req
            self.chan.send(("update", req, update))
        m = self.acks.get()
        if m[0] == "eof":
            raise Cancelled("coordinator went away")
        if m[1] != req:
            raise MetaStoreError(f"protocol error: ack {m[1]} for request {req}")
        if m[0] == "err":
            raise MetaStoreError(m[2])


class LinkLogHandler(logging.Handler):
    """Forwards log records to the coordinator as ("log", fields); stderr if the link is gone."""

    def __init__(self, link: Link, rid: int, attempt: int = 1):
        super().__init__()
        self.link = link
        self.prefix = f"[range {rid} pid {os.getpid()}] "  # only for the stderr fallback
        # fields every record of this process carries (a call's own extra= wins)
        self.tags = {"range_id": rid, "pid": os.getpid(), "attempt": attempt}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = {
                "name": record.name,
                "levelno": record.levelno,
                "levelname": record.levelname,
                "msg": record.getMessage(),
                "created": record.created,
                "msecs": record.msecs,
                "process": record.process,
                "threadName": record.threadName,
                "exc_text": logging.Formatter().formatException(record.exc_info) if record.exc_info else None,
            }
            extras = {**self.tags, **extra_fields(record)}
            fields.update(
                {
                    k: v if isinstance(v, (str, int, float, bool, type(None))) else str(v)
                    for k, v in extras.items()
                    if k not in fields
                }
            )
            if self.link.closed:
                raise ChannelClosed("link closed")
            self.link.send(("log", fields))
        except ChannelClosed:
            sys.stderr.write(f"{record.levelname} {self.prefix}{record.name}: {record.getMessage()}\n")
        except Exception:
            self.handleError(record)


def main(argv: list[str]) -> int:
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
    _, item, opts = start
    assert isinstance(item, WorkItem)
    rid = item.rid
    link = Link(chan, cancel)
    # This is a process entry point: its log records travel to the coordinator, which emits
    # them through the handlers the CLI configured (text or JSON), tagged with the range.
    root = logging.getLogger()
    root.setLevel(opts.get("log_level", logging.INFO))
    root.addHandler(LinkLogHandler(link, rid, attempt=item.info.attempts + 1))
    link.start_reader()
    try:
        from .orchestrator import OrchestratorOptions, RangeOrchestrator

        orch = RangeOrchestrator(
            opts["config"],
            item.info,
            ForwardingMeta(rid, link.update),
            cancel,
            progress=lambda snap: link.send(("progress", snap)),
            options=OrchestratorOptions(
                progress_every_s=opts.get("progress_every_s", 1.0), workers=opts.get("workers", 1)
            ),
        )
        orch.run()
    except Cancelled as e:
        log.info("range %d: stopped (%s)", rid, e, extra={"error_class": type(e).__name__})
        return _report(link, Outcome.cancelled(rid, str(e)), 130)
    except RpcBackfillError as e:
        log.error("range %d failed: %s", rid, e, extra={"error_class": type(e).__name__})
        return _report(link, Outcome.failed(rid, e), 1)
    except Exception as e:  # a bug, or a broken installation (ImportError: never retried)
        log.exception("range %d failed unexpectedly", rid, extra={"error_class": type(e).__name__})
        return _report(link, Outcome.failed(rid, e, unexpected=True), 1)
    return _report(link, Outcome.done(rid), 0)


def _report(link: Link, outcome: Outcome, code: int) -> int:
    try:
        link.send(("outcome", outcome))
    except ChannelClosed:
        pass
    return code


def process_main(argv: list[str]) -> None:
    """Entry point of the process (see subprocess_runner.BOOTSTRAP); never returns."""
    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown: source threads may still be winding down
