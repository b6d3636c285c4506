"""A small fault-injecting HTTP proxy to put between google-cloud-storage and the emulator.

The GCS emulator has no fault injection, so tests point ``STORAGE_EMULATOR_HOST`` at this
proxy, which forwards every request to the real emulator unless a rule matches the
request's (URL-decoded) path and query.  Rules fire a limited number of times, so a test can
say "fail the next 2 downloads of this object with 503, then behave".

Faults:
  ``status``   answer with HTTP ``code`` (e.g. 500, 503, 404) and a small JSON error body
  ``slow``     wait ``delay`` seconds before forwarding (client read timeouts)
  ``truncate`` send the real headers (full Content-Length) but only half the body, then close
  ``short``    send half the body with a matching Content-Length (a silently short object)
  ``corrupt``  flip bytes in the middle of the body, keeping the length
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

# (fault, Rule keywords) a storage client must survive by retrying: the transient faults both
# bucket sources (GCS, S3) are tested against.
TRANSIENT_FAULTS = [
    ("status", {"code": 500}),
    ("status", {"code": 503}),
    ("truncate", {}),
    ("short", {}),
    ("corrupt", {}),
    ("status", {"code": 429}),
]

_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization"}


@dataclass
class Rule:
    match: str  # substring of the decoded path+query
    fault: str  # status | slow | truncate | short | corrupt
    times: int = 1  # how many requests it applies to (-1: forever)
    code: int = 503
    delay: float = 0.0
    method: str = "GET"
    hits: int = field(default=0)


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self.log: list[tuple[str, str, str]] = []  # (method, decoded path, fault or "")
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def _handle(self):
                try:
                    proxy._serve(self)
                except (BrokenPipeError, ConnectionResetError):
                    # the client gave up (e.g. its read timeout fired during a "slow" fault)
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.host = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()

    # --- rules ------------------------------------------------------------------------------

    def add(self, match: str, fault: str, **kw) -> Rule:
        r = Rule(match, fault, **kw)
        with self._lock:
            self._rules.append(r)
        return r

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
            self.log.clear()

    def _pick(self, method: str, target: str) -> Rule | None:
        with self._lock:
            for r in self._rules:
                if r.method == method and r.match in target and (r.times < 0 or r.hits < r.times):
                    r.hits += 1
                    return r
        return None

    # --- serving ----------------------------------------------------------------------------

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        target = unquote(h.path)
        n = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(n) if n else b""
        rule = self._pick(h.command, target)
        with self._lock:
            self.log.append((h.command, target, rule.fault if rule else ""))
        if rule and rule.fault == "status":
            payload = json.dumps({"error": {"code": rule.code, "message": "injected fault"}}).encode()
            h.send_response(rule.code)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(payload)
            return
        if rule and rule.fault == "slow":
            time.sleep(rule.delay)
        conn = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            headers = {k: v for k, v in h.headers.items() if k.lower() not in _HOP and k.lower() != "host"}
            headers["Host"] = f"{self.upstream[0]}:{self.upstream[1]}"
            conn.request(h.command, h.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            status, rheaders = resp.status, resp.getheaders()
        finally:
            conn.close()
        fault = rule.fault if rule else ""
        send = data
        length = len(data)
        if fault in ("truncate", "short") and len(data) > 1:
            send = data[: len(data) // 2]
            if fault == "short":
                length = len(send)
        elif fault == "corrupt" and len(data) > 16:
            mid = len(data) // 2
            send = data[:mid] + bytes(b ^ 0xFF for b in data[mid : mid + 8]) + data[mid + 8 :]
        h.send_response(status)
        for k, v in rheaders:
            if k.lower() in _HOP or k.lower() == "content-length":
                continue
            if fault == "short" and k.lower() in ("x-goog-hash", "x-goog-stored-content-length"):
                continue  # a silently short object: no metadata gives it away
            h.send_header(k, v)
        h.send_header("Content-Length", str(length))
        if fault == "truncate":
            h.send_header("Connection", "close")
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(send)
        if fault == "truncate":
            h.wfile.flush()
            h.close_connection = True

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
