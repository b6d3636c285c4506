"""Plumbing shared by the two HTTP faces of the tool: the status/metrics endpoints of a running
backfill (``orchestration/http.py``) and the JSON-RPC server of ``stellar-rpc serve``
(``rpc/server.py``).

- ``parse_host_port``: the ``HOST:PORT`` syntax of every ``*endpoint`` key (IPv6 as ``[::1]:8000``).
- The JSON-RPC 2.0 error codes and the two reply shapes (``result_reply``, ``error_reply``).
"""

from __future__ import annotations

from typing import Any

from .config import parse_ascii_int
from .errors import InputError

# JSON-RPC 2.0 error codes (-32000..-32099 are left to the server for its own errors).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603


def parse_host_port(value: str, key: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[::1]:8000``) -> (host, port); ``InputError`` naming ``key``.

    The port is ASCII digits only (``int()`` alone would take other scripts' digits)."""
    host, sep, port_s = value.rpartition(":")
    if not sep or not host:
        raise InputError(f"{key} must be HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = parse_ascii_int(port_s)
    except ValueError:
        raise InputError(f"{key}: port must be a number, got {port_s!r}") from None
    if not 0 <= port <= 65535:
        raise InputError(f"{key}: port must be within 0..65535, got {port}")
    return host, port


def result_reply(id_: Any, result: Any) -> dict:
    """A JSON-RPC 2.0 success reply."""
    return {"jsonrpc": "2.0", "id": id_, "result": result}


def error_reply(id_: Any, code: int, message: str) -> dict:
    """A JSON-RPC 2.0 error reply (callers may add ``["error"]["data"]``)."""
    return {"jsonrpc": "2.0", "id": id_, "error": {"code": code, "message": message}}
