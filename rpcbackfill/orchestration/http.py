"""HTTP endpoints while a backfill runs.

``StatusServer`` (``[service] http_endpoint``): JSON-RPC 2.0 ``getHealth`` / ``getStatus``
(POST /), plain ``GET /health`` and ``GET /status``.  Every other JSON-RPC method answers HTTP
503 with a JSON-RPC error "Service in backfill mode" (queries are served only in streaming mode).

``MetricsServer`` (``[service] admin_endpoint``): ``GET /metrics`` in the Prometheus text format.

An address that cannot be bound (port in use, bad host) is ``EndpointError``: the run does not
start without the endpoints it was configured with.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

from ..errors import EndpointError
from ..jsonrpc import INTERNAL_ERROR, INVALID_REQUEST, PARSE_ERROR, error_reply, result_reply

log = logging.getLogger(__name__)

BACKFILL_MODE_MESSAGE = "Service in backfill mode"
# JSON-RPC 2.0 server errors of the backfill endpoint (the standard codes live in ``jsonrpc``).
UNAVAILABLE = -32003
UNHEALTHY = INTERNAL_ERROR  # stellar-rpc's getHealth answers internal error when unhealthy
MAX_BODY = 64 * 1024  # requests are tiny; anything larger answers HTTP 413
DRAIN_MAX = 1 << 20  # after a 413, the unread body read and dropped (at most this much) ...
DRAIN_S = 1.0  # ... for at most this long, so the close does not reset the connection
MAX_DEPTH = 64  # deeper JSON nesting is a parse error (the stdlib parser would recurse)
BACKLOG = 1024  # listen backlog: bursts of concurrent clients queue instead of being reset
CLIENT_TIMEOUT = 10.0  # seconds a connection may stay idle before its thread gives up on it


@dataclass(frozen=True)
class Health:
    """A ``getHealth`` answer.  ``error`` None: healthy.  ``result`` carries stellar-rpc's fields
    (``status``, ``latestLedger``, ``oldestLedger``, ``ledgerRetentionWindow``) and the
    backfill's; when unhealthy it is the error's ``data`` (a JSON string)."""

    error: str | None
    result: dict


_E = TypeVar("_E", bound="_Endpoint")


class _Endpoint:
    """A threaded HTTP endpoint: bound at construction (a port in use is a start-up error),
    served by one daemon thread from ``start()``; ``close()`` is idempotent."""

    _thread_name = "http"
    _announce = "endpoint on http://%s:%d"  # logged by start() with host and port

    def _listen(self, host: str, port: int, handler, key: str) -> None:
        self._srv = _bind(host, port, handler, key)
        self.host = host
        self.port = self._srv.server_address[1]
        self._thread: threading.Thread | None = None

    def start(self: _E) -> _E:
        self._thread = threading.Thread(target=self._srv.serve_forever, name=self._thread_name, daemon=True)
        self._thread.start()
        log.info(self._announce, self.host, self.port, extra={"endpoint": f"{self.host}:{self.port}"})
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._srv.shutdown()
            self._thread.join()
            self._thread = None
        self._srv.server_close()


class StatusServer(_Endpoint):
    """``StatusServer(port, health_fn, status_fn).start()``; ``close()`` idempotent; port 0 = any."""

    _thread_name = "http-status"
    _announce = "status endpoint on http://%s:%d (getHealth, getStatus)"

    def __init__(self, port: int, health: Callable[[], Health], status: Callable[[], dict], host: str = "127.0.0.1"):
        self._health = health
        self._status = status
        handler = self._make_handler()
        self._listen(host, port, handler, "[service] http_endpoint")

    def _make_handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt, *args):  # route access logs to our logger at debug
                log.debug("http: " + fmt, *args)

            def _send(self, code: int, obj) -> None:
                body = _dumps(obj)
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _drain(self, n: int) -> None:
                """Read and drop up to ``DRAIN_MAX`` bytes of an unread body (for at most
                ``DRAIN_S``): closing a socket with unread data makes the kernel reset the
                connection, and the client may then lose the answer already sent."""
                self.wfile.flush()
                left = min(n, DRAIN_MAX)
                try:
                    self.connection.settimeout(DRAIN_S)
                    while left > 0 and (chunk := self.rfile.read1(min(left, 65536))):
                        left -= len(chunk)
                except OSError:
                    pass

            def do_GET(self):
                if self.path.rstrip("/") == "/health":
                    h = server._health()
                    self._send(200 if h.error is None else 503, h.result)
                elif self.path.rstrip("/") == "/status":
                    self._send(200, server._status())
                else:
                    self._send(404, {"error": "no such path"})

            def do_POST(self):
                raw = self.headers.get("Content-Length")
                try:
                    n = int(raw) if raw is not None else 0
                except ValueError:
                    n = -1
                if n < 0:
                    self.close_connection = True
                    self._send(400, error_reply(None, INVALID_REQUEST, "bad Content-Length"))
                    return
                if n > MAX_BODY:
                    self.close_connection = True  # the body is not read: the connection cannot be reused
                    self._send(413, error_reply(None, INVALID_REQUEST, f"request larger than {MAX_BODY} bytes"))
                    self._drain(n)
                    return
                data = self.rfile.read(n)
                if len(data) < n:  # the client went away mid-body
                    log.debug("http: client %s went away mid-body", self.client_address)
                    self.close_connection = True
                    return
                req = _parse(data)
                if req is _BAD:
                    self._send(400, error_reply(None, PARSE_ERROR, "parse error"))
                    return
                rid = req.get("id") if isinstance(req, dict) else None
                if not _valid_id(rid):
                    self._send(400, error_reply(None, INVALID_REQUEST, "invalid request: bad id"))
                    return
                if not isinstance(req, dict) or req.get("jsonrpc") != "2.0" or not isinstance(req.get("method"), str):
                    self._send(400, error_reply(rid, INVALID_REQUEST, "invalid request"))
                    return
                method = req["method"]
                if method == "getHealth":
                    h = server._health()
                    if h.error is None:
                        self._send(200, result_reply(rid, h.result))
                    else:  # like stellar-rpc: an unhealthy service answers an error, with the details as data
                        err = error_reply(rid, UNHEALTHY, h.error)
                        err["error"]["data"] = json.dumps(h.result)  # a string, as clients expect
                        self._send(200, err)
                elif method == "getStatus":
                    self._send(200, result_reply(rid, server._status()))
                else:
                    self._send(503, error_reply(rid, UNAVAILABLE, BACKFILL_MODE_MESSAGE))

        return Handler


_BAD = object()  # _parse's "not JSON" marker


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _too_deep(data: bytes, limit: int = MAX_DEPTH) -> bool:
    """True if ``data`` nests arrays/objects deeper than ``limit`` (brackets inside strings ignored)."""
    depth = 0
    in_str = escaped = False
    for b in data:
        if in_str:
            if escaped:
                escaped = False
            elif b == 0x5C:  # backslash
                escaped = True
            elif b == 0x22:  # quote
                in_str = False
        elif b == 0x22:
            in_str = True
        elif b in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif b in (0x5D, 0x7D):
            depth -= 1
    return False


def _parse(data: bytes):
    """The JSON value of a request body, or ``_BAD`` (not UTF-8 JSON, NaN/Infinity, too deep)."""
    if _too_deep(data):
        return _BAD
    try:
        return json.loads(data or b"null", parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return _BAD


def _valid_id(rid) -> bool:
    """JSON-RPC 2.0 ids: string, number or null; floats must be finite, nothing nested."""
    if rid is None or isinstance(rid, str):
        return True
    if isinstance(rid, bool):
        return False
    if isinstance(rid, int):
        return abs(rid) < 10**64  # huge integers are not ids any client sends
    if isinstance(rid, float):
        return math.isfinite(rid)
    return False


def _dumps(obj) -> bytes:
    """Strict JSON (no NaN/Infinity); anything unserialisable becomes a JSON-RPC internal error."""
    try:
        return json.dumps(obj, allow_nan=False).encode()
    except (ValueError, TypeError, RecursionError) as e:
        log.debug("http: answer not serialisable as JSON: %s", e)
        return json.dumps(error_reply(None, INTERNAL_ERROR, "internal error")).encode()


class _Server(ThreadingHTTPServer):
    """A threaded server with a deep listen backlog, daemon threads, and connection errors logged as
    one debug line (the stdlib prints a traceback to stderr for a client that goes away)."""

    request_queue_size = BACKLOG
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request, client_address) -> None:
        e = sys.exc_info()[1]
        log.debug("http: connection from %s ended: %s: %s", client_address, type(e).__name__, e)


def _bind(host: str, port: int, handler, key: str) -> ThreadingHTTPServer:
    handler.timeout = CLIENT_TIMEOUT  # socket timeout per connection: slow clients cannot pin a thread
    try:
        srv = _Server((host, port), handler)
    except OSError as e:
        raise EndpointError(f"{key}: cannot listen on {host}:{port}: {e.strerror or e}") from None
    return srv


class MetricsServer(_Endpoint):
    """``GET /metrics`` of ``registry`` (a prometheus_client ``CollectorRegistry``) on host:port."""

    _thread_name = "http-metrics"
    _announce = "metrics endpoint on http://%s:%d/metrics"

    def __init__(self, host: str, port: int, registry, key: str = "[service] admin_endpoint"):
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt, *args):
                log.debug("http: " + fmt, *args)

            def do_GET(self):
                if self.path.split("?", 1)[0].rstrip("/") != "/metrics":
                    body, code, ctype = b"see /metrics\n", 404, "text/plain"
                else:
                    body, code, ctype = generate_latest(registry), 200, CONTENT_TYPE_LATEST
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._listen(host, port, Handler, key)
