"""The backfill's HTTP status endpoint against hostile and careless clients (issue 15 a).

The real ``StatusServer`` on 127.0.0.1; raw sockets send what no well-behaved client would.  Every
answer must be valid JSON (strict: no NaN), and neither the log nor stderr may show a traceback.
Waits are on log records the server emits (events), never on sleeps.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from stellar_sdk import SorobanServer

from rpcbackfill.orchestration import http
from rpcbackfill.orchestration.http import Health, StatusServer


class _Capture(logging.Handler):
    """Every formatted record (with exception text) of the package's loggers; events on substrings."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        with self._cond:
            self.lines.append(self.format(record))
            self._cond.notify_all()

    def wait_for(self, needle: str, timeout: float = 30.0) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: any(needle in x for x in self.lines), timeout), needle

    def text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)


@pytest.fixture
def server(monkeypatch, request):
    # 1 s: the idle-client test waits for it to pass.  A test whose clients stay idle on purpose
    # (connected, waiting for the others) sets its own with @pytest.mark.client_timeout(seconds).
    m = request.node.get_closest_marker("client_timeout")
    monkeypatch.setattr(http, "CLIENT_TIMEOUT", m.args[0] if m else 1.0, raising=False)
    cap = _Capture()
    lg = logging.getLogger("rpcbackfill")
    old = lg.level
    lg.setLevel(logging.DEBUG)
    lg.addHandler(cap)
    health = Health(None, {"status": "healthy", "latestLedger": 7, "oldestLedger": 2, "ledgerRetentionWindow": 0})
    srv = StatusServer(0, lambda: health, lambda: {"phase": "ingest", "ratio": 0.5}).start()
    try:
        yield srv, cap
    finally:
        srv.close()
        lg.removeHandler(cap)
        lg.setLevel(old)


def _raw(port: int, data: bytes) -> tuple[int, bytes]:
    """Send ``data``, read until the server closes; (HTTP status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    resp = b"".join(chunks)
    head, _, body = resp.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _post(port: int, body: bytes, extra: bytes = b"") -> tuple[int, bytes]:
    head = b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
    if not extra:
        extra = b"Content-Length: %d\r\n" % len(body)
    return _raw(port, head + extra + b"\r\n" + body)


def _strict(body: bytes):
    def no_constants(name):
        raise AssertionError(f"answer contains {name}")

    return json.loads(body, parse_constant=no_constants)


def _no_traceback(cap: _Capture, capfd) -> None:
    out, err = capfd.readouterr()
    assert "Traceback" not in cap.text() + out + err


@pytest.mark.parametrize("length", [b"abc", b"-5", b"1e3", b"99999999999999999999"])
def test_bad_content_length(server, capfd, length):
    srv, cap = server
    code, body = _post(srv.port, b"{}", extra=b"Content-Length: " + length + b"\r\n")
    assert code in (400, 413)
    assert _strict(body)["error"]["code"] == http.INVALID_REQUEST
    _no_traceback(cap, capfd)


def test_deep_nesting_is_a_parse_error(server, capfd):
    srv, cap = server
    for deep in (b"[" * 10_000 + b"]" * 10_000, b'{"a":' * 10_000 + b"1" + b"}" * 10_000):
        code, body = _post(srv.port, deep)
        assert code == 400
        ans = _strict(body)
        assert ans["error"]["code"] == http.PARSE_ERROR and ans["id"] is None
    _no_traceback(cap, capfd)


def test_brackets_inside_strings_do_not_count(server):
    srv, _ = server
    req = {"jsonrpc": "2.0", "id": "[" * 200, "method": "getStatus"}
    code, body = _post(srv.port, json.dumps(req).encode())
    assert code == 200 and _strict(body)["id"] == "[" * 200


@pytest.mark.parametrize(
    "rid",
    [b"NaN", b"Infinity", b"-Infinity", b"1" * 5000, b"1" * 80, b"[1,2]", b'{"a":1}', b"true", b"1e999"],
)
def test_any_id_gets_valid_json(server, capfd, rid):
    srv, cap = server
    code, body = _post(srv.port, b'{"jsonrpc":"2.0","method":"getHealth","id":' + rid + b"}")
    assert code == 400
    ans = _strict(body)
    assert ans["id"] is None
    assert ans["error"]["code"] in (http.PARSE_ERROR, http.INVALID_REQUEST)
    _no_traceback(cap, capfd)


def test_good_ids_are_echoed(server):
    srv, _ = server
    for rid in ("abc", 12, -3, 1.5, None, 10**30):
        req = {"jsonrpc": "2.0", "id": rid, "method": "getStatus"}
        code, body = _post(srv.port, json.dumps(req).encode())
        assert code == 200 and _strict(body)["id"] == rid


def test_oversize_body_is_413(server, capfd):
    srv, cap = server
    big = b'{"jsonrpc":"2.0","method":"getHealth","id":1,"pad":"' + b"x" * (http.MAX_BODY + 10) + b'"}'
    code, body = _post(srv.port, big)
    assert code == 413
    assert _strict(body)["error"]["code"] == http.INVALID_REQUEST
    _no_traceback(cap, capfd)


@pytest.mark.client_timeout(120.0)  # under CPU load, connecting 300 clients can take longer than 1 s
def test_300_concurrent_connections_all_answered(server, capfd):
    srv, cap = server
    n = 300
    barrier = threading.Barrier(n)

    def one(i: int) -> int:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=60)
        try:
            barrier.wait(timeout=60)  # every client is connected before any sends: the burst is real
            body = json.dumps({"jsonrpc": "2.0", "id": i, "method": "getStatus"}).encode()
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body))
            s.sendall(body)
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        finally:
            s.close()
        resp = b"".join(chunks)
        assert resp.startswith(b"HTTP/1.0 200") or resp.startswith(b"HTTP/1.1 200"), resp[:80]
        return _strict(resp.partition(b"\r\n\r\n")[2])["id"]

    with ThreadPoolExecutor(n) as pool:
        ids = list(pool.map(one, range(n)))
    assert ids == list(range(n))
    _no_traceback(cap, capfd)


def test_client_gone_mid_body(server, capfd):
    srv, cap = server
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
        s.sendall(b'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"jsonrpc":')
    cap.wait_for("went away mid-body")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Le")  # gone inside the headers
    code, _ = _post(srv.port, b'{"jsonrpc":"2.0","id":1,"method":"getStatus"}')
    assert code == 200
    _no_traceback(cap, capfd)


def test_client_gone_before_reading_the_answer(server, capfd):
    srv, cap = server
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "getStatus", "pad": "x" * 1000}).encode()
    for _ in range(20):  # reset (SO_LINGER 0) right after sending: the server's write may hit a dead socket
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        s.close()
    code, _ = _post(srv.port, b'{"jsonrpc":"2.0","id":1,"method":"getStatus"}')
    assert code == 200
    _no_traceback(cap, capfd)


def test_idle_client_is_dropped(server, capfd):
    srv, cap = server
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
        s.sendall(b"POST / HTTP/1.1\r\n")  # and then nothing
        assert s.recv(100) == b""  # the server's per-connection timeout closes it
    cap.wait_for("timed out")
    _no_traceback(cap, capfd)


def test_sdk_client_still_served(server):
    srv, _ = server
    h = SorobanServer(f"http://127.0.0.1:{srv.port}").get_health()
    assert h.status == "healthy" and h.latest_ledger == 7
