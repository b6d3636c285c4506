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

With ``processes`` > 1 (default: one per CPU, at most 4) the parent binds the socket and forks
that many server processes sharing it (the kernel spreads connections over them), so Python
work -- HTTP parsing, JSON, envelope hashing -- runs on every core instead of under one GIL.
The parent only supervises: SIGTERM/SIGINT is passed on to the children, which stop
gracefully; a child dying on its own stops the others and the parent exits 1.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ..config import Config
from ..errors import InputError
from ..jsonrpc import INTERNAL_ERROR, INVALID_REQUEST, PARSE_ERROR, error_reply, parse_host_port, result_reply
from .methods import LargeResult, Limits, Methods, RawJSON, RpcError, safe_id
from .reader import HistoryReader

log = logging.getLogger(__name__)


GIL_SWITCH_INTERVAL_S = 0.0005


@dataclass(frozen=True)
class ServerOptions:
    max_request_bytes: int = 64 * 1024  # a JSON-RPC read request is a few hundred bytes
    max_batch: int = 20  # requests in one batch
    request_timeout_s: float = 30.0  # per JSON-RPC request (each request of a batch)
    workers: int = 2  # threads per process that read ledgers (zstd and the XDR walk release the GIL)
    refresh_interval_s: float = 2.0  # how often newly COMPLETE ranges are looked for
    shutdown_timeout_s: float = 10.0
    processes: int = field(default_factory=lambda: max(1, min(os.cpu_count() or 1, 4)))
    limits: Limits = field(default_factory=Limits)


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``[service] endpoint`` -> (host, port); InputError when malformed."""
    return parse_host_port(endpoint, "[service] endpoint")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def encode_pieces(obj: Any, out: list[bytes], depth: int = 5) -> None:
    """JSON of ``obj`` as a list of byte strings; ``RawJSON`` values are copied in as they are.

    RawJSON may only sit ``depth`` containers deep (batch -> reply -> result -> ledgers ->
    ledger); deeper values are encoded by ``json.dumps`` in one piece."""
    if isinstance(obj, RawJSON):
        out.extend(obj.parts)
    elif depth <= 0 or not isinstance(obj, (dict, list)) or not obj:
        out.append(_dumps(obj))
    elif isinstance(obj, dict):
        sep = b"{"
        for k, v in obj.items():
            out.append(sep + _dumps(str(k)) + b":")
            encode_pieces(v, out, depth - 1)
            sep = b","
        out.append(b"}")
    else:
        sep = b"["
        for v in obj:
            out.append(sep)
            encode_pieces(v, out, depth - 1)
            sep = b","
        out.append(b"]")


def _has_large(doc: Any) -> bool:
    docs = doc if isinstance(doc, list) else [doc]
    return any(isinstance(d, dict) and isinstance(d.get("result"), LargeResult) for d in docs)


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

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._reply(
                error_reply(None, INVALID_REQUEST, f"request larger than {self.options.max_request_bytes} bytes"),
                status=413,
            )
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError) as e:  # bad JSON, bad UTF-8, too deep, too many digits
            msg = str(e) if not isinstance(e, RecursionError) else "nesting too deep"
            return self._reply(error_reply(None, PARSE_ERROR, f"parse error: {msg[:200]}"))
        if isinstance(doc, list):
            if not doc:
                return self._reply(error_reply(None, INVALID_REQUEST, "empty batch"))
            if len(doc) > self.options.max_batch:
                return self._reply(
                    error_reply(
                        None, INVALID_REQUEST, f"batch of {len(doc)} requests; at most {self.options.max_batch}"
                    )
                )
            out = await asyncio.gather(*(self._one(d) for d in doc))
            return await self._reply_async(request, list(out))
        return await self._reply_async(request, await self._one(doc))

    async def _one(self, req: Any) -> dict:
        if not isinstance(req, dict):
            return error_reply(None, INVALID_REQUEST, "a request must be a JSON object")
        id_ = safe_id(req.get("id"))
        if req.get("jsonrpc") != "2.0":
            return error_reply(id_, INVALID_REQUEST, 'jsonrpc must be "2.0"')
        method = req.get("method")
        if not isinstance(method, str):
            return error_reply(id_, INVALID_REQUEST, "method must be a string")
        params = req.get("params")
        loop = asyncio.get_running_loop()
        try:
            fut = loop.run_in_executor(self.executor, self.methods.call, method, params)
            result = await asyncio.wait_for(fut, self.options.request_timeout_s)
        except RpcError as e:
            return error_reply(id_, e.code, e.message)
        except asyncio.TimeoutError:
            log.warning("%s timed out after %ss", method, self.options.request_timeout_s)
            return error_reply(id_, INTERNAL_ERROR, f"request timed out after {self.options.request_timeout_s}s")
        except RuntimeError as e:  # executor shut down while stopping
            return error_reply(id_, INTERNAL_ERROR, f"server is stopping ({e})")
        except Exception as e:  # never a traceback to the client; the log has it
            log.exception("%s failed", method)
            return error_reply(id_, INTERNAL_ERROR, f"internal error: {type(e).__name__}")
        return result_reply(id_, result)

    async def _reply_async(self, request: web.Request, doc: Any) -> web.StreamResponse:
        if not _has_large(doc):
            return self._reply(doc)
        pieces: list[bytes] = []
        encode_pieces(doc, pieces)  # large base64 values are not copied again
        resp = web.StreamResponse(status=200)
        resp.content_type = "application/json"
        resp.content_length = sum(len(p) for p in pieces)
        await resp.prepare(request)
        for i in range(0, len(pieces), 64):
            await resp.write(b"".join(pieces[i : i + 64]))
        await resp.write_eof()
        return resp

    @staticmethod
    def _reply(doc: Any, status: int = 200) -> web.Response:
        return web.Response(body=_dumps(doc), status=status, content_type="application/json")


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

    async def start(self, sock: socket.socket | None = None) -> tuple[str, int]:
        """Start serving on ``sock`` (already listening, shared by forked processes) or bind the endpoint."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, self.reader.refresh)
        self._runner = web.AppRunner(
            self.rpc.make_app(), access_log=None, shutdown_timeout=self.options.shutdown_timeout_s
        )
        await self._runner.setup()
        site: web.BaseSite
        if sock is not None:
            site = web.SockSite(self._runner, sock)
        else:
            site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        try:
            await site.start()
        except OSError as e:
            await self._runner.cleanup()
            raise InputError(f"cannot listen on {self.host}:{self.port}: {e.strerror or e}") from None
        lsock = sock if sock is not None else site._server.sockets[0]  # type: ignore[union-attr]
        self.bound = lsock.getsockname()[:2]
        self._refresher = asyncio.create_task(self._refresh_loop())
        log.info(
            "JSON-RPC %s on http://%s:%d/ (ledgers %d-%d)",
            "process ready" if sock is not None else "listening",
            self.bound[0],
            self.bound[1],
            self.reader.oldest_ledger,
            self.reader.latest_ledger,
        )
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


def serve(
    config: Config,
    options: ServerOptions | None = None,
    ready: Callable[[tuple[str, int]], None] | None = None,
    stop_event: threading.Event | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (or ``stop_event``, for in-process use: always one process);
    return the exit code (0 after a graceful stop)."""
    options = options or ServerOptions()
    if stop_event is None and options.processes > 1 and hasattr(os, "fork"):
        return _serve_forked(config, options, ready)
    return _serve_one(config, options, ready, stop_event)


def _serve_one(
    config: Config,
    options: ServerOptions,
    ready: Callable[[tuple[str, int]], None] | None = None,
    stop_event: threading.Event | None = None,
    sock: socket.socket | None = None,
) -> int:
    async def main() -> None:
        server = Server(config, options)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        installed = []
        watcher = None
        if threading.current_thread() is threading.main_thread():
            # a server process: hand the GIL over sooner than the default 5 ms, so the event
            # loop is not kept waiting behind a worker thread's Python work
            sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stopping.set)
                installed.append(sig)
        try:
            bound = await server.start(sock)
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
            if watcher is not None:
                watcher.cancel()
        finally:
            await server.stop()
            for sig in installed:
                loop.remove_signal_handler(sig)

    asyncio.run(main())
    return 0


def _serve_forked(config: Config, options: ServerOptions, ready: Callable[[tuple[str, int]], None] | None) -> int:
    host, port = parse_endpoint(config.service.endpoint)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=1024)
    except OSError as e:
        raise InputError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    bound = sock.getsockname()[:2]
    rfd, wfd = os.pipe()  # each child writes one byte once it serves
    pids: list[int] = []
    for _ in range(options.processes):
        pid = os.fork()
        if pid == 0:  # child: serve on the shared socket, never return into the caller
            code = 1
            try:
                os.close(rfd)

                def serving(_bound: tuple[str, int]) -> None:
                    os.write(wfd, b"r")
                    os.close(wfd)  # the parent sees EOF once every child has answered or died

                code = _serve_one(config, options, ready=serving, sock=sock)
            except BaseException:  # the child must reach os._exit
                log.exception("server process failed")
            finally:
                logging.shutdown()
                os._exit(code)
        pids.append(pid)
    sock.close()  # the children hold it
    os.close(wfd)
    started = 0
    while started < len(pids):
        b = os.read(rfd, len(pids) - started)
        if not b:  # every child closed the pipe: at least one died before serving
            break
        started += len(b)
    os.close(rfd)
    if started == len(pids):
        log.info("JSON-RPC listening on http://%s:%d/ (%d processes)", bound[0], bound[1], len(pids))
        if ready is not None:
            ready(bound)
    else:
        log.error("a server process exited before serving; stopping")
    stopping = False

    def stop_children(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for p in list(alive):
            try:
                os.kill(p, signal.SIGTERM)
            except ProcessLookupError:
                pass

    alive = set(pids)
    old = {sig: signal.signal(sig, stop_children) for sig in (signal.SIGTERM, signal.SIGINT)}
    rc = 0
    if started < len(pids):
        rc = 1
        stop_children(signal.SIGTERM, None)
    try:
        while alive:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            alive.discard(pid)
            code = os.waitstatus_to_exitcode(status)
            if not stopping:
                log.error("server process %d exited with %d; stopping the others", pid, code)
                rc = 1
                stop_children(signal.SIGTERM, None)
            elif code != 0:
                rc = 1
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
    log.info("JSON-RPC server stopped")
    return rc
