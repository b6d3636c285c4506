"""Captive stellar-core ledger source (``ledger_backend = "captive_core"``, spec section 6).

Each range gets a private working directory ``<storage_path>/<range:04d>`` holding the
configuration generated from the operator's file (``core_config.CoreToml``), core's database
and its bucket directory, so ranges running in parallel never share state or the bucket lock.
``prepare_range(first, last)`` empties that directory, writes the configuration, then runs
(``core_runner.CoreRunner``, working directory = the private directory)::

    <binary> --conf stellar-core.cfg --console new-db
    <binary> --conf stellar-core.cfg --console catchup <last>/<last-first+1> --metadata-output-stream fd:3

and reads the meta stream from fd 3: frames of a 4-byte big-endian length with the high bit
(0x80000000) set, then that many bytes of ``LedgerCloseMeta`` XDR.  Core starts at a
checkpoint boundary, so ledgers before ``first`` are skipped.  Every delivered ledger must
follow the previous one by exactly 1 and (``check_hash_chain``) carry its hash as
``previousLedgerHash``.  Once ``last`` has been read core is stopped with SIGINT (SIGKILL
after ``stop_timeout``).  Core ending the stream before ``last`` raises ``CoreProcessError``
with its exit code and the tail of its output.  ``close()`` removes the private directory
once ``last`` was delivered; after a failure it stays for inspection until the range's next
attempt empties it.

``preflight(config, ranges)`` runs once, before any range starts (the coordinator calls it).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from .. import lcm as lcm_scanner
from ..config import PUBNET_PASSPHRASE, CaptiveCoreConfig, Config
from ..errors import (
    Cancelled,
    CorePreflightError,
    CoreProcessError,
    LedgerSequenceError,
    RpcBackfillError,
    SourceConfigError,
    SourceError,
    XdrError,
)
from ..ledgerauth import verify_ledger
from ..ledgermath import DEFAULT_RANGE_SIZE, range_of_ledger
from .base import POLL_S, Ledger, _BoundedSource
from .core_config import CONFIG_NAME, CoreToml
from .core_runner import (
    META_FD,
    THREAD_JOIN_S,
    CoreProcess,
    CoreRunner,
    core_version,
)

log = logging.getLogger(__name__)

RECORD_MARK = 0x80000000
# Largest frame we accept (bytes).  Pubnet LedgerCloseMeta are a few MB; a length beyond
# this means the stream is garbage, not a ledger.
MAX_FRAME = 512 << 20
# Frames read ahead of the consumer (the reader thread blocks beyond this).
QUEUE_FRAMES = 64
_READ_CHUNK = 1 << 20
# The oldest stellar-core this driver supports (ledger protocol; meta flags of protocol 23).
MIN_CORE_PROTOCOL = 23
# Seconds allowed for `stellar-core version`, and for reading the archive's state file: the
# whole pre-flight answers well within 30 s even when a host does not.
PREFLIGHT_TIMEOUT_S = 10.0
# The history archive state file: its currentLedger is the latest published checkpoint.
ARCHIVE_STATE_PATH = ".well-known/stellar-history.json"


class _Eof(Exception):
    pass


class CaptiveCoreSource(_BoundedSource):
    """``LedgerSource`` that runs a bounded catchup of captive stellar-core."""

    _name = "CaptiveCoreSource"

    def __init__(
        self,
        config: CaptiveCoreConfig,
        cancel: threading.Event | None = None,
        *,
        network_passphrase: str = PUBNET_PASSPHRASE,
        range_size: int = DEFAULT_RANGE_SIZE,
        check_hash_chain: bool = True,
        authenticate: bool = False,
        stop_timeout: float = 10.0,
        new_db_timeout: float = 600.0,
        env: dict[str, str] | None = None,
    ):
        self.config = config
        self.cancel = cancel if cancel is not None else threading.Event()
        self.network_passphrase = network_passphrase
        self.range_size = range_size
        self.check_hash_chain = check_hash_chain
        self.authenticate = authenticate  # check_ledger_hashes: verify each ledger in the reader thread
        self.stop_timeout = stop_timeout
        self.new_db_timeout = new_db_timeout
        self.env = env
        self._first = self._last = 0
        self._next_seq: int | None = None
        self._closed = False
        self._delivered_last = False  # the whole range went to the consumer: the directory can go
        self._stopping = threading.Event()  # close() or end of range: no more reading
        self._q: queue.Queue = queue.Queue(maxsize=QUEUE_FRAMES)
        self._core: CoreProcess | None = None  # the catchup process
        self._reader_thread: threading.Thread | None = None
        self._rbuf = bytearray()  # bytes read from the meta pipe, not yet parsed
        self._rpos = 0
        self._poller = select.poll()
        self._lock = threading.Lock()
        self._stop_sent = False
        self.work_dir: Path | None = None  # this range's private directory
        self.pid: int | None = None  # catchup process id (tests, diagnostics)

    def __enter__(self) -> CaptiveCoreSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- setup ---------------------------------------------------------------------------------

    def prepare_range(self, first: int, last: int) -> None:
        self._check_prepare(first, last)
        binary = core_binary(self.config)
        toml = load_core_toml(self.config, self.network_passphrase)
        for note in toml.notes:
            log.debug("captive core config: %s", note)
        rid = range_of_ledger(first, self.range_size)
        self.work_dir = work_dir = range_work_dir(self.config, rid)
        reset_work_dir(work_dir)  # whatever an earlier attempt left is never reused
        conf = work_dir / CONFIG_NAME
        conf.write_text(toml.render(f"range {rid}, ledgers {first}-{last}"), encoding="utf-8")
        runner = CoreRunner(binary, conf, work_dir, self.env)
        self._first, self._last = first, last
        runner.run("new-db", timeout=self.new_db_timeout, cancel=self.cancel)
        self._core = core = runner.start(
            "catchup", f"{last}/{last - first + 1}", "--metadata-output-stream", f"fd:{META_FD}", meta_pipe=True
        )
        self.pid = core.pid
        assert core.meta_fd is not None
        self._poller.register(core.meta_fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        self._reader_thread = threading.Thread(target=self._reader, name="core-meta-reader", daemon=True)
        self._reader_thread.start()
        self._next_seq = first

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
            if not self._poller.poll(POLL_S * 1000):
                continue
            chunk = os.read(self._meta_fd(), _READ_CHUNK)
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
                self._q.put(item, timeout=POLL_S)
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
                    raise LedgerSequenceError(
                        f"captive core started at ledger {seq}, after the first ledger {self._first}"
                    )
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

    def _meta_fd(self) -> int:
        core = self._core
        if core is None or core.meta_fd is None:
            raise Cancelled("captive core meta stream closed")
        return core.meta_fd

    def _died(self, what: str) -> CoreProcessError:
        core = self._core
        assert core is not None
        code = core.wait(self.stop_timeout)
        if code is None:
            code = core.kill()
        core.join()
        return CoreProcessError(f"stellar-core {what}; exit code {code}: {core.output_tail()}")

    # --- consumer -------------------------------------------------------------------------------

    def get_ledger(self, seq: int) -> Ledger:
        self._check_get(seq)
        while True:
            if self.cancel.is_set():
                self._stop_core(wait=False)  # SIGINT now; close() waits for core to go
                raise Cancelled("captive core source cancelled")
            try:
                item = self._q.get(timeout=POLL_S)
                break
            except queue.Empty:
                continue
        if isinstance(item, BaseException):
            raise item
        self._next_seq = seq + 1
        self._delivered_last = seq == self._last
        return item

    # --- stopping -------------------------------------------------------------------------------

    @property
    def returncode(self) -> int | None:
        """Exit status of the catchup process once it has exited (negative: killed by that signal)."""
        return None if self._core is None else self._core.returncode

    def _stop_core(self, wait: bool = True) -> None:
        """SIGINT core's process group (once), wait for it, SIGKILL after ``stop_timeout``.

        Meanwhile fd 3 is drained so core is never stuck writing meta while shutting down.
        """
        with self._lock:
            core = self._core
            if core is None:
                return
            first_call = not self._stop_sent
            self._stop_sent = True
        if first_call and core.returncode is None:
            core.signal_group(signal.SIGINT)
        if not wait:
            return
        deadline = time.monotonic() + self.stop_timeout
        drain = None  # a poll object of our own: poll objects must not be shared across threads
        fd = core.meta_fd
        if fd is not None:
            drain = select.poll()
            drain.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        while core.returncode is None:
            try:
                if drain is None or fd is None:
                    raise ValueError
                if drain.poll(POLL_S * 1000) and not os.read(fd, _READ_CHUNK):
                    drain = None  # EOF: core closed fd 3; just wait for it to exit
            except (OSError, ValueError, TypeError):
                time.sleep(POLL_S)
            if time.monotonic() > deadline:
                log.warning("captive core pid %d ignored SIGINT for %.1f s; killing it", core.pid, self.stop_timeout)
                core.kill()
                break
        # the process group may still hold children of core: make sure they are gone too
        core.signal_group(signal.SIGKILL)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        self._stop_core()
        if self._reader_thread is not None:
            self._reader_thread.join(THREAD_JOIN_S)
        if self._core is not None:
            self._core.join()
            self._core.close_meta()
        while True:
            try:
                self._q.get_nowait()
            except queue.Empty:
                break
        if self._delivered_last and self.work_dir is not None:
            remove_work_dir(self.work_dir)  # the range no longer needs core: free the bucket list


# --- configuration and private working directories ----------------------------------------------


def core_binary(config: CaptiveCoreConfig) -> Path:
    b = config.binary_path
    if not b:
        raise SourceConfigError("captive_core.binary_path is not set")
    if not Path(b).is_file() or not os.access(b, os.X_OK):
        raise SourceConfigError(f"captive_core.binary_path {b} is not an executable file")
    return Path(b).resolve()


def load_core_toml(config: CaptiveCoreConfig, network_passphrase: str) -> CoreToml:
    """The operator's file merged with what the driver owns (``CorePreflightError`` if unusable)."""
    if not config.config_path:
        raise SourceConfigError("captive_core.config_path is not set")
    return CoreToml.load(
        config.config_path, network_passphrase=network_passphrase, history_archive_urls=config.history_archive_urls
    )


def range_work_dir(config: CaptiveCoreConfig, rid: int) -> Path:
    """The private working directory of range ``rid``."""
    if config.storage_path is None:
        raise SourceConfigError("captive_core.storage_path is not set")
    return Path(config.storage_path) / f"{rid:04d}"


def reset_work_dir(d: Path) -> None:
    """An empty ``d`` (a leftover of a crashed attempt is deleted, never reused)."""
    if d.exists():
        log.info("captive core: removing %s left by an earlier attempt", d)
        shutil.rmtree(d)
    d.mkdir(parents=True)


def remove_work_dir(d: Path) -> None:
    try:
        shutil.rmtree(d)
    except FileNotFoundError:
        pass
    except OSError as e:
        log.warning("captive core: cannot remove %s: %s", d, e.strerror or e)
    else:
        log.info("captive core: removed %s", d)


# --- pre-flight ----------------------------------------------------------------------------------


class RangeLike(Protocol):
    """What ``preflight`` needs of a range (``meta.store.RangeInfo`` has it)."""

    id: int
    start_ledger: int
    end_ledger: int
    state: Any  # a state name, or an enum whose value is one


def _state(r: RangeLike) -> str | None:
    return getattr(r.state, "value", r.state)


# Range states whose ledgers still come from core (a TRANSITIONING range only reads local stores).
_NEEDS_CORE = (None, "PENDING", "INGESTING")


def preflight(config: Config, ranges: Iterable[RangeLike]) -> None:
    """Checks made once before any range starts; ``CorePreflightError`` (one line, exit 1) when
    captive core cannot do this backfill.  A no-op unless ``ledger_backend = "captive_core"``;
    only the directory sweep when no range still needs core.

    - the operator's stellar-core file is readable and sets no key the driver owns;
    - ``stellar-core version`` reports ledger protocol >= ``MIN_CORE_PROTOCOL``;
    - no range still to ingest (PENDING/INGESTING) ends beyond the latest checkpoint of the first
      history archive (its ``.well-known/stellar-history.json``; http(s):// and file:// archives);
    - private directories left by ranges past ingestion (TRANSITIONING, COMPLETE) are removed.
    """
    if config.backfill.ledger_backend != "captive_core":
        return
    cc = config.backfill.captive_core
    ranges = list(ranges)
    for r in ranges:
        if _state(r) not in _NEEDS_CORE and cc.storage_path is not None:
            d = range_work_dir(cc, r.id)
            if d.exists():
                remove_work_dir(d)
    todo = [r for r in ranges if _state(r) in _NEEDS_CORE]
    if not todo:
        return
    try:
        binary = core_binary(cc)
        toml = load_core_toml(cc, config.service.network_passphrase)
    except SourceConfigError as e:
        raise CorePreflightError(str(e)) from None
    for note in toml.notes:
        log.warning("captive core config: %s", note)
    try:
        build, protocol = core_version(binary, timeout=PREFLIGHT_TIMEOUT_S)
    except CoreProcessError as e:
        raise CorePreflightError(str(e)) from None
    if protocol < MIN_CORE_PROTOCOL:
        raise CorePreflightError(
            f"{binary} is stellar-core {build} with ledger protocol {protocol}; captive core needs "
            f"protocol {MIN_CORE_PROTOCOL} or later (stellar-core v{MIN_CORE_PROTOCOL}+)"
        )
    log.info("captive core: %s (%s, ledger protocol %d)", binary, build, protocol)
    if toml.archive_url is None:
        log.warning(
            "captive core: cannot tell the first history archive's URL from its command in %s; "
            "ranges are not checked against it",
            toml.source,
        )
        return
    latest = archive_latest_ledger(toml.archive_url, config.service.network_passphrase)
    beyond = [r for r in todo if r.end_ledger > latest]
    if beyond:
        r = beyond[0]
        more = f" (and {len(beyond) - 1} more)" if len(beyond) > 1 else ""
        raise CorePreflightError(
            f"range {r.id} (ledgers {r.start_ledger}-{r.end_ledger}){more} ends beyond ledger {latest}, the latest "
            f"checkpoint of history archive {toml.archive_url}; captive core cannot replay it yet"
        )
    log.info("captive core: history archive %s has ledgers up to %d", toml.archive_url, latest)


def archive_latest_ledger(url: str, network_passphrase: str, timeout: float = PREFLIGHT_TIMEOUT_S) -> int:
    """``currentLedger`` of the archive's ``.well-known/stellar-history.json`` (its latest
    checkpoint); an archive of another network (``networkPassphrase``, when present) is refused."""
    where = f"{url.rstrip('/')}/{ARCHIVE_STATE_PATH}"
    try:
        if url.startswith("file://"):
            raw = Path(where[len("file://") :]).read_bytes()
        else:
            req = urllib.request.Request(where, headers={"User-Agent": "rpcbackfill"})
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read(1 << 20)
        state = json.loads(raw)
        latest = state["currentLedger"]
        if not isinstance(latest, int) or isinstance(latest, bool) or latest < 0:
            raise ValueError(f"currentLedger is {latest!r}")
        network = state.get("networkPassphrase")
    except urllib.error.HTTPError as e:
        raise CorePreflightError(f"cannot read history archive state {where}: HTTP {e.code}") from None
    except urllib.error.URLError as e:
        raise CorePreflightError(f"cannot read history archive state {where}: {e.reason}") from None
    except OSError as e:
        raise CorePreflightError(f"cannot read history archive state {where}: {e.strerror or e}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CorePreflightError(f"history archive state {where} is not valid: {e}") from None
    if network is not None and network != network_passphrase:
        raise CorePreflightError(
            f"history archive {url} is of network {network!r}, not service.network_passphrase {network_passphrase!r}"
        )
    return latest
