"""HTTP endpoint while a backfill runs: JSON-RPC 2.0 ``getHealth`` / ``getStatus`` (POST /),
plain ``GET /health`` and ``GET /status``.  Every other JSON-RPC method answers HTTP 503 with a
JSON-RPC error "Service in backfill mode" (queries are served only in streaming mode).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)

BACKFILL_MODE_MESSAGE = "Service in backfill mode"
# JSON-RPC 2.0 error codes: -32700 parse error, -32600 invalid request; -32000..-32099 server errors.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
UNAVAILABLE = -32003
MAX_BODY = 1 << 20  # requests are tiny; refuse anything larger


class StatusServer:
    """``StatusServer(port, health_fn, status_fn).start()``; ``close()`` idempotent; port 0 = any."""

    def __init__(self, port: int, health: Callable[[], dict], status: Callable[[], dict], host: str = "127.0.0.1"):
        self._health = health
        self._status = status
        handler = self._make_handler()
        self._srv = ThreadingHTTPServer((host, port), handler)
        self._srv.daemon_threads = True
        self.port = self._srv.server_address[1]
        self._thread: threading.Thread | None = None

    def start(self) -> StatusServer:
        self._thread = threading.Thread(target=self._srv.serve_forever, name="http-status", daemon=True)
        self._thread.start()
        log.info("status endpoint on http://127.0.0.1:%d (getHealth, getStatus)", self.port)
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._srv.shutdown()
            self._thread.join()
            self._thread = None
        self._srv.server_close()

    def _make_handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt, *args):  # route access logs to our logger at debug
                log.debug("http: " + fmt, *args)

            def _send(self, code: int, obj) -> None:
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path.rstrip("/") == "/health":
                    self._send(200, server._health())
                elif self.path.rstrip("/") == "/status":
                    self._send(200, server._status())
                else:
                    self._send(404, {"error": f"no such path {self.path}"})

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                if n > MAX_BODY:
                    self._send(413, _err(None, INVALID_REQUEST, "request too large"))
                    return
                try:
                    req = json.loads(self.rfile.read(n) or b"null")
                except ValueError:
                    self._send(400, _err(None, PARSE_ERROR, "parse error"))
                    return
                if not isinstance(req, dict) or req.get("jsonrpc") != "2.0" or not isinstance(req.get("method"), str):
                    rid = req.get("id") if isinstance(req, dict) else None
                    self._send(400, _err(rid, INVALID_REQUEST, "invalid request"))
                    return
                rid, method = req.get("id"), req["method"]
                if method == "getHealth":
                    self._send(200, {"jsonrpc": "2.0", "id": rid, "result": server._health()})
                elif method == "getStatus":
                    self._send(200, {"jsonrpc": "2.0", "id": rid, "result": server._status()})
                else:
                    self._send(503, _err(rid, UNAVAILABLE, BACKFILL_MODE_MESSAGE))

        return Handler


def _err(rid, code: int, message: str) -> dict:
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}
