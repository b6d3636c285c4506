"""The aiohttp application of ``stellar-rpc serve`` and its life cycle.

JSON-RPC 2.0 over HTTP POST on ``/`` (single requests and batches).  Methods run in a thread
pool (ledger reads: pread, zstd and the XDR walk release the GIL) under a per-request timeout;
the event loop only parses, dispatches and encodes.  Bad input never produces a traceback:
-32700 parse error, -32600 invalid request, -32601 unknown method, -32602 invalid params (with
the reason), -32603 internal error (damaged data names the ledger; a timeout says so).  The
reply's ``id`` is the request's when it is a string, an integer or a finite number, else null.

``serve(config)`` binds ``[service] endpoint``, refreshes the served ranges from the meta store
every ``refresh_interval_s`` and stops gracefully on SIGTERM/SIGINT: the listener closes,
in-flight requests get ``shutdown_timeout_s`` to finish, then the stores are closed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ..config import Config
from ..errors import InputError
from .methods import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    PARSE_ERROR,
    Limits,
    Methods,
    RpcError,
    safe_id,
)
from .reader import HistoryReader

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerOptions:
    max_request_bytes: int = 64 * 1024  # a JSON-RPC read request is a few hundred bytes
    max_batch: int = 20  # requests in one batch
    request_timeout_s: float = 30.0  # per JSON-RPC request (each request of a batch)
    workers: int = 4  # threads that read ledgers
    refresh_interval_s: float = 2.0  # how often newly COMPLETE ranges are looked for
    shutdown_timeout_s: float = 10.0
    limits: Limits = field(default_factory=Limits)


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` (IPv6 as ``[::1]:8000``) -> (host, port); InputError when malformed."""
    host, sep, port_s = endpoint.rpartition(":")
    if not sep or not host:
        raise InputError(f"[service] endpoint must be HOST:PORT, got {endpoint!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_s)
    except ValueError:
        raise InputError(f"[service] endpoint port must be a number, got {port_s!r}") from None
    if not 0 <= port <= 65535:
        raise InputError(f"[service] endpoint port must be within 0..65535, got {port}")
    return host, port


def _error(id_: Any, code: int, message: str) -> dict:
    return {"jsonrpc": "2.0", "id": id_, "error": {"code": code, "message": message}}


class RpcApp:
    """Request handling, independent of how the server is started."""

    def __init__(self, methods: Methods, options: ServerOptions, executor: ThreadPoolExecutor):
        self.methods = methods
        self.options = options
        self.executor = executor

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=self.options.max_request_bytes)
        app.router.add_post("/", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._reply(_error(None, INVALID_REQUEST,
                                      f"request larger than {self.options.max_request_bytes} bytes"), status=413)
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError) as e:  # bad JSON, bad UTF-8, too deep, too many digits
            msg = str(e) if not isinstance(e, RecursionError) else "nesting too deep"
            return self._reply(_error(None, PARSE_ERROR, f"parse error: {msg[:200]}"))
        if isinstance(doc, list):
            if not doc:
                return self._reply(_error(None, INVALID_REQUEST, "empty batch"))
            if len(doc) > self.options.max_batch:
                return self._reply(_error(None, INVALID_REQUEST,
                                          f"batch of {len(doc)} requests; at most {self.options.max_batch}"))
            out = await asyncio.gather(*(self._one(d) for d in doc))
            return self._reply(out)
        return self._reply(await self._one(doc))

    async def _one(self, req: Any) -> dict:
        if not isinstance(req, dict):
            return _error(None, INVALID_REQUEST, "a request must be a JSON object")
        id_ = safe_id(req.get("id"))
        if req.get("jsonrpc") != "2.0":
            return _error(id_, INVALID_REQUEST, 'jsonrpc must be "2.0"')
        method = req.get("method")
        if not isinstance(method, str):
            return _error(id_, INVALID_REQUEST, "method must be a string")
        params = req.get("params")
        loop = asyncio.get_running_loop()
        try:
            fut = loop.run_in_executor(self.executor, self.methods.call, method, params)
            result = await asyncio.wait_for(fut, self.options.request_timeout_s)
        except RpcError as e:
            return _error(id_, e.code, e.message)
        except asyncio.TimeoutError:
            log.warning("%s timed out after %ss", method, self.options.request_timeout_s)
            return _error(id_, INTERNAL_ERROR, f"request timed out after {self.options.request_timeout_s}s")
        except RuntimeError as e:  # executor shut down while stopping
            return _error(id_, INTERNAL_ERROR, f"server is stopping ({e})")
        except Exception as e:  # never a traceback to the client; the log has it
            log.exception("%s failed", method)
            return _error(id_, INTERNAL_ERROR, f"internal error: {type(e).__name__}")
        return {"jsonrpc": "2.0", "id": id_, "result": result}

    @staticmethod
    def _reply(doc: Any, status: int = 200) -> web.Response:
        return web.Response(body=json.dumps(doc, separators=(",", ":"), allow_nan=False).encode(),
                            status=status, content_type="application/json")


class Server:
    """A running server (``start``/``stop`` from inside an event loop)."""

    def __init__(self, config: Config, options: ServerOptions | None = None, reader: HistoryReader | None = None):
        self.config = config
        self.options = options or ServerOptions()
        self.host, self.port = parse_endpoint(config.service.endpoint)
        self.reader = reader or HistoryReader(config)
        self.executor = ThreadPoolExecutor(self.options.workers, thread_name_prefix="rpc")
        self.rpc = RpcApp(Methods(self.reader, self.options.limits), self.options, self.executor)
        self._runner: web.AppRunner | None = None
        self._refresher: asyncio.Task | None = None
        self.bound: tuple[str, int] | None = None

    async def start(self) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, self.reader.refresh)
        self._runner = web.AppRunner(self.rpc.make_app(), access_log=None,
                                     shutdown_timeout=self.options.shutdown_timeout_s)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        try:
            await site.start()
        except OSError as e:
            await self._runner.cleanup()
            raise InputError(f"cannot listen on {self.host}:{self.port}: {e.strerror or e}") from None
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        self.bound = sock.getsockname()[:2]
        self._refresher = asyncio.create_task(self._refresh_loop())
        log.info("JSON-RPC listening on http://%s:%d/ (ledgers %d-%d)", self.bound[0], self.bound[1],
                 self.reader.oldest_ledger, self.reader.latest_ledger)
        return self.bound

    async def _refresh_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.options.refresh_interval_s)
            try:
                await loop.run_in_executor(self.executor, self.reader.refresh)
            except Exception:  # keep serving what we have
                log.exception("refreshing the served ranges failed")

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            try:
                await self._refresher
            except asyncio.CancelledError:
                pass
            self._refresher = None
        if self._runner is not None:
            await self._runner.cleanup()  # stop listening, let in-flight requests finish
            self._runner = None
        self.executor.shutdown(wait=True)
        self.reader.close()
        log.info("JSON-RPC server stopped")


def serve(config: Config, options: ServerOptions | None = None,
          ready: Callable[[tuple[str, int]], None] | None = None,
          stop_event: threading.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or ``stop_event``, for in-process use); return the exit code 0."""

    async def main() -> None:
        server = Server(config, options)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        installed = []
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stopping.set)
                installed.append(sig)
        try:
            bound = await server.start()
            if ready is not None:
                ready(bound)
            if stop_event is not None:
                async def watch() -> None:
                    while not stop_event.is_set():
                        await asyncio.sleep(0.05)
                    stopping.set()

                watcher = asyncio.create_task(watch())
            await stopping.wait()
            log.info("stopping: finishing in-flight requests")
            if stop_event is not None:
                watcher.cancel()
        finally:
            await server.stop()
            for sig in installed:
                loop.remove_signal_handler(sig)

    asyncio.run(main())
    return 0
