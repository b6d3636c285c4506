"""Captive stellar-core ledger source (``ledger_backend = "captive_core"``, spec section 6).

``prepare_range(first, last)`` runs, with the working directory set to the cfg's directory::

    <binary> --conf <cfg> --console new-db
    <binary> --conf <cfg> --console catchup <last>/<last-first+1> --metadata-output-stream fd:3

and reads the meta stream from fd 3: frames of a 4-byte big-endian length with the high bit
(0x80000000) set, then that many bytes of ``LedgerCloseMeta`` XDR.  Core starts at a
checkpoint boundary, so ledgers before ``first`` are skipped.  Every delivered ledger must
follow the previous one by exactly 1 and (``check_hash_chain``) carry its hash as
``previousLedgerHash``.  Once ``last`` has been read core is stopped with SIGINT (SIGKILL
after ``stop_timeout``).  Core ending the stream before ``last`` raises ``CoreProcessError``
with its exit code and the tail of its output.

No orphans: core runs in its own process group, gets ``PR_SET_PDEATHSIG = SIGKILL`` (so it
dies with the thread that spawned it, even when the orchestrator is SIGKILLed) and is
spawned and reaped by a dedicated thread that lives as long as the child.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import os
import queue
import re
import select
import signal
import subprocess
import threading
import time
from pathlib import Path

from .. import lcm as lcm_scanner
from ..config import CaptiveCoreConfig
from ..errors import (
    Cancelled,
    CoreProcessError,
    LedgerSequenceError,
    RpcBackfillError,
    SourceConfigError,
    SourceError,
    XdrError,
)
from ..ledgerauth import verify_ledger
from .base import Ledger

log = logging.getLogger(__name__)

RECORD_MARK = 0x80000000
# Largest frame we accept (bytes).  Pubnet LedgerCloseMeta are a few MB; a length beyond
# this means the stream is garbage, not a ledger.
MAX_FRAME = 512 << 20
# Frames read ahead of the consumer (the reader thread blocks beyond this).
QUEUE_FRAMES = 64
# Linux prctl option: deliver a signal to this process when its parent thread dies.
PR_SET_PDEATHSIG = 1
# How often blocked calls re-check cancellation (seconds).
_POLL = 0.05
# Lines of core output kept for error messages.
_TAIL_LINES = 40
_READ_CHUNK = 1 << 20
# Try to enlarge the meta pipe (Linux F_SETPIPE_SZ) so core is not throttled by 64 KiB.
_F_SETPIPE_SZ = 1031
_PIPE_SIZE = 1 << 20

_libc = None


def _prctl():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc.prctl


class _Eof(Exception):
    pass


class CaptiveCoreSource:
    """``LedgerSource`` that runs a bounded catchup of captive stellar-core."""

    def __init__(
        self,
        config: CaptiveCoreConfig,
        cancel: threading.Event | None = None,
        *,
        network_passphrase: str | None = None,
        check_hash_chain: bool = True,
        authenticate: bool = False,
        stop_timeout: float = 10.0,
        new_db_timeout: float = 600.0,
        env: dict[str, str] | None = None,
    ):
        self.config = config
        self.cancel = cancel if cancel is not None else threading.Event()
        self.network_passphrase = network_passphrase
        self.check_hash_chain = check_hash_chain
        self.authenticate = authenticate  # check_ledger_hashes: verify each ledger in the reader thread
        self.stop_timeout = stop_timeout
        self.new_db_timeout = new_db_timeout
        self.env = env
        self._first = self._last = 0
        self._next_seq: int | None = None
        self._closed = False
        self._stopping = threading.Event()  # close() or end of range: no more reading
        self._q: queue.Queue = queue.Queue(maxsize=QUEUE_FRAMES)
        self._proc: subprocess.Popen | None = None
        self._threads: list[threading.Thread] = []
        self._rfd: int | None = None
        self._rbuf = bytearray()  # bytes read from the meta pipe, not yet parsed
        self._rpos = 0
        self._poller = select.poll()
        self._tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self._lock = threading.Lock()
        self._stop_sent = False
        self.pid: int | None = None  # catchup process id (tests, diagnostics)

    def __enter__(self) -> CaptiveCoreSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- setup ---------------------------------------------------------------------------------

    def _check_config(self) -> tuple[Path, Path]:
        problems = []
        b, c = self.config.binary_path, self.config.config_path
        if not b:
            problems.append("captive_core.binary_path is not set")
        elif not Path(b).is_file() or not os.access(b, os.X_OK):
            problems.append(f"captive_core.binary_path {b} is not an executable file")
        if not c:
            problems.append("captive_core.config_path is not set")
        elif not Path(c).is_file():
            problems.append(f"captive_core.config_path {c} does not exist")
        if problems:
            raise SourceConfigError("; ".join(problems))
        if self.network_passphrase:
            m = re.search(r'^\s*NETWORK_PASSPHRASE\s*=\s*"([^"]*)"', Path(c).read_text(errors="replace"), re.M)
            if m and m.group(1) != self.network_passphrase:
                raise SourceConfigError(
                    f"{c}: NETWORK_PASSPHRASE {m.group(1)!r} differs from the configured network "
                    f"{self.network_passphrase!r}"
                )
        return Path(b).resolve(), Path(c).resolve()

    def _argv(self, *args: str) -> list[str]:
        b, c = self._paths
        return [str(b), "--conf", str(c), "--console", *args]

    def prepare_range(self, first: int, last: int) -> None:
        if self._closed:
            raise SourceError("prepare_range on a closed CaptiveCoreSource")
        if self._next_seq is not None:
            raise SourceError("CaptiveCoreSource.prepare_range called twice (one bounded range per source)")
        if not (isinstance(first, int) and isinstance(last, int)) or first < 2 or last < first:
            raise SourceError(f"invalid ledger range [{first}, {last}]")
        self._paths = self._check_config()
        self._first, self._last = first, last
        self._run_new_db()
        self._start_catchup(first, last)
        self._next_seq = first

    def _run_new_db(self) -> None:
        argv = self._argv("new-db")
        log.info("captive core: %s", " ".join(argv))
        tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        proc = self._spawn_blocking(argv, with_meta=False, tail=tail)
        deadline = time.monotonic() + self.new_db_timeout
        while proc.poll() is None:
            if self.cancel.is_set() or time.monotonic() > deadline:
                self._kill_group(proc, signal.SIGKILL)
                proc.wait()
                if self.cancel.is_set():
                    raise Cancelled("captive core new-db cancelled")
                raise CoreProcessError(f"stellar-core new-db did not finish within {self.new_db_timeout:.0f} s")
            time.sleep(_POLL)
        self._join_output()
        if proc.returncode != 0:
            raise CoreProcessError(
                f"stellar-core new-db exited with code {proc.returncode}: {_fmt_tail(tail)}"
            )

    def _preexec(self, wfd: int | None, parent_pid: int):
        prctl = _prctl()

        def fn() -> None:  # runs in the child between fork and exec: keep it minimal
            os.setpgid(0, 0)
            prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
            if os.getppid() != parent_pid:  # parent already gone before prctl took effect
                os._exit(1)
            if wfd is not None:
                if wfd != 3:
                    os.dup2(wfd, 3)
                else:
                    os.set_inheritable(3, True)

        return fn

    def _spawn_blocking(self, argv: list[str], *, with_meta: bool, tail) -> subprocess.Popen:
        """Spawn from a dedicated thread (PDEATHSIG follows the spawning *thread*) that then
        waits for the child, so the child never outlives that thread's purpose."""
        result: dict = {}
        ready = threading.Event()
        wfd = None
        if with_meta:
            r, wfd = os.pipe()
            try:
                import fcntl

                fcntl.fcntl(r, _F_SETPIPE_SZ, _PIPE_SIZE)
            except OSError:
                pass
            self._rfd = r
            self._poller.register(r, select.POLLIN | select.POLLHUP | select.POLLERR)

        def run() -> None:
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=str(self._paths[1].parent),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    pass_fds=(3,) if with_meta else (),
                    preexec_fn=self._preexec(wfd, os.getpid()),
                    env=self.env,
                )
            except OSError as e:
                result["error"] = CoreProcessError(f"cannot start {argv[0]}: {e.strerror or e}")
                ready.set()
                return
            finally:
                if wfd is not None:
                    os.close(wfd)
            out = threading.Thread(target=self._drain_output, args=(proc, tail), name="core-output", daemon=True)
            out.start()
            self._out_thread = out  # set before the caller can ask for the output
            result["proc"] = proc
            ready.set()
            proc.wait()  # keep this thread (the child's PDEATHSIG parent) alive until the child exits

        t = threading.Thread(target=run, name=f"core-{argv[4] if len(argv) > 4 else 'run'}", daemon=True)
        t.start()
        self._threads.append(t)
        ready.wait()
        if "error" in result:
            raise result["error"]
        return result["proc"]

    def _drain_output(self, proc: subprocess.Popen, tail) -> None:
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            tail.append(line)
            log.debug("core[%d]: %s", proc.pid, line)
        proc.stdout.close()

    def _join_output(self) -> None:
        t = getattr(self, "_out_thread", None)
        if t is not None:
            t.join(5)

    def _start_catchup(self, first: int, last: int) -> None:
        argv = self._argv("catchup", f"{last}/{last - first + 1}", "--metadata-output-stream", "fd:3")
        log.info("captive core: %s", " ".join(argv))
        self._tail.clear()
        self._proc = self._spawn_blocking(argv, with_meta=True, tail=self._tail)
        self.pid = self._proc.pid
        t = threading.Thread(target=self._reader, name="core-meta-reader", daemon=True)
        t.start()
        self._threads.append(t)

    # --- meta stream -----------------------------------------------------------------------------

    def _read_exact(self, n: int) -> bytes:
        """Read exactly ``n`` bytes from the meta pipe; ``_Eof`` with the count read at EOF.

        Reads the pipe in chunks of up to 1 MiB into ``_rbuf`` (few syscalls per frame) and
        waits with poll() (no FD_SETSIZE limit, unlike select) so cancellation is noticed.
        """
        buf = self._rbuf
        while len(buf) - self._rpos < n:
            if self._stopping.is_set() or self.cancel.is_set():
                raise Cancelled("captive core source stopped")
            if not self._poller.poll(_POLL * 1000):
                continue
            chunk = os.read(self._rfd, _READ_CHUNK)
            if not chunk:
                raise _Eof(len(buf) - self._rpos)
            if self._rpos:
                del buf[: self._rpos]
                self._rpos = 0
            buf += chunk
        out = bytes(buf[self._rpos : self._rpos + n])
        self._rpos += n
        return out

    def _put(self, item) -> bool:
        while True:
            if self._stopping.is_set():
                return False
            try:
                self._q.put(item, timeout=_POLL)
                return True
            except queue.Full:
                if self.cancel.is_set():
                    return False

    def _reader(self) -> None:
        expect = self._first
        prev_hash: bytes | None = None  # hash of the last ledger read (delivered or skipped)
        prev_seq: int | None = None
        try:
            while True:
                try:
                    hdr = self._read_exact(4)
                except _Eof as e:
                    if e.args[0]:
                        raise self._died(
                            f"truncated frame header ({e.args[0]} of 4 bytes) before ledger {expect}"
                        ) from None
                    raise self._died(f"meta stream ended before ledger {expect}") from None
                word = int.from_bytes(hdr, "big")
                if not word & RECORD_MARK:
                    raise LedgerSequenceError(
                        f"captive core meta stream: bad frame header 0x{word:08X} (record mark bit missing) "
                        f"before ledger {expect}"
                    )
                n = word & ~RECORD_MARK
                if n == 0 or n > MAX_FRAME:
                    raise LedgerSequenceError(
                        f"captive core meta stream: implausible frame length {n} before ledger {expect}"
                    )
                try:
                    lcm = self._read_exact(n)
                except _Eof as e:
                    raise self._died(f"truncated frame ({e.args[0]} of {n} bytes) before ledger {expect}") from None
                try:  # the one parse of this ledger: sequence, header hashes and tx hashes
                    scan = verify_ledger if self.authenticate else lcm_scanner.ledger_info
                    seq, header_hash, prev_header_hash, tx_hashes = scan(lcm)
                except XdrError as e:
                    raise LedgerSequenceError(
                        f"captive core sent a malformed LedgerCloseMeta before ledger {expect}: {e}"
                    ) from None
                if prev_seq is not None and seq != prev_seq + 1:
                    raise LedgerSequenceError(
                        f"captive core sent ledger {seq} after ledger {prev_seq} (expected {prev_seq + 1})"
                    )
                if prev_seq is None and seq > self._first:
                    raise LedgerSequenceError(f"captive core started at ledger {seq}, after the first ledger {self._first}")
                if self.check_hash_chain:
                    if prev_hash is not None and prev_header_hash != prev_hash:
                        raise LedgerSequenceError(
                            f"ledger {seq}: previousLedgerHash {prev_header_hash.hex()} does not match the hash of "
                            f"ledger {seq - 1} ({prev_hash.hex()})"
                        )
                    prev_hash = header_hash
                prev_seq = seq
                if seq < self._first:
                    continue  # core replays from a checkpoint boundary: skip ledgers before the range
                if self.authenticate:
                    ledger = Ledger(seq, lcm, tx_hashes, header_hash, prev_header_hash)
                else:
                    ledger = Ledger(seq, lcm, tx_hashes)
                if not self._put(ledger):
                    if self.cancel.is_set():
                        self._stop_core()
                    return
                if seq == self._last:
                    log.info("captive core: reached ledger %d; stopping core", seq)
                    self._stop_core()
                    return
                expect = seq + 1
        except Cancelled:
            if self.cancel.is_set():
                self._stop_core()
            return
        except RpcBackfillError as e:
            self._put_error(e)
        except BaseException as e:  # never let the reader die silently
            self._put_error(SourceError(f"captive core reader failed: {type(e).__name__}: {e}"))

    def _put_error(self, e: BaseException) -> None:
        self._stop_core()
        # the queue may be full of ledgers the consumer will never take: make room
        while True:
            try:
                self._q.put_nowait(e)
                return
            except queue.Full:
                try:
                    self._q.get_nowait()
                except queue.Empty:
                    pass

    def _died(self, what: str) -> CoreProcessError:
        proc = self._proc
        code = None
        if proc is not None:
            try:
                code = proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._kill_group(proc, signal.SIGKILL)
                code = proc.wait()
        self._join_output()
        return CoreProcessError(f"stellar-core {what}; exit code {code}: {_fmt_tail(self._tail)}")

    # --- consumer -------------------------------------------------------------------------------

    def get_ledger(self, seq: int) -> Ledger:
        if self._next_seq is None:
            raise SourceError("get_ledger before prepare_range")
        if self._closed:
            raise SourceError("get_ledger on a closed CaptiveCoreSource")
        if seq != self._next_seq:
            raise LedgerSequenceError(f"get_ledger({seq}) out of order: expected ledger {self._next_seq}")
        if seq > self._last:
            raise SourceError(f"ledger {seq} is beyond the prepared range [{self._first}, {self._last}]")
        while True:
            if self.cancel.is_set():
                self._stop_core(wait=False)  # SIGINT now; close() waits for core to go
                raise Cancelled("captive core source cancelled")
            try:
                item = self._q.get(timeout=_POLL)
                break
            except queue.Empty:
                continue
        if isinstance(item, BaseException):
            raise item
        self._next_seq = seq + 1
        return item

    # --- stopping -------------------------------------------------------------------------------

    @staticmethod
    def _kill_group(proc: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                pass

    @property
    def returncode(self) -> int | None:
        """Exit status of the catchup process once it has exited (negative: killed by that signal)."""
        return None if self._proc is None else self._proc.poll()

    def _stop_core(self, wait: bool = True) -> None:
        """SIGINT core's process group (once), wait for it, SIGKILL after ``stop_timeout``.

        Meanwhile fd 3 is drained so core is never stuck writing meta while shutting down.
        """
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            first_call = not self._stop_sent
            self._stop_sent = True
        if first_call and proc.poll() is None:
            self._kill_group(proc, signal.SIGINT)
        if not wait:
            return
        deadline = time.monotonic() + self.stop_timeout
        drain = None  # a poll object of our own: poll objects must not be shared across threads
        if self._rfd is not None:
            drain = select.poll()
            drain.register(self._rfd, select.POLLIN | select.POLLHUP | select.POLLERR)
        while proc.poll() is None:
            try:
                if drain is None:
                    raise ValueError
                if drain.poll(_POLL * 1000) and not os.read(self._rfd, _READ_CHUNK):
                    drain = None  # EOF: core closed fd 3; just wait for it to exit
            except (OSError, ValueError, TypeError):
                time.sleep(_POLL)
            if time.monotonic() > deadline:
                log.warning("captive core pid %d ignored SIGINT for %.1f s; killing it", proc.pid, self.stop_timeout)
                self._kill_group(proc, signal.SIGKILL)
                proc.wait()
                break
        # the process group may still hold children of core: make sure they are gone too
        self._kill_group(proc, signal.SIGKILL)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        self._stop_core()
        for t in self._threads:
            t.join(5)
        self._join_output()
        if self._rfd is not None:
            try:
                os.close(self._rfd)
            except OSError:
                pass
            self._rfd = None
        while True:
            try:
                self._q.get_nowait()
            except queue.Empty:
                break


def _fmt_tail(tail) -> str:
    lines = [l for l in tail if l.strip()]
    if not lines:
        return "no output"
    return "output tail: " + " | ".join(lines[-10:])
