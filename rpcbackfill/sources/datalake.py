"""Data-lake ledger source (``ledger_backend = "buffered_storage"``, spec section 5).

``prepare_range(first, last)``:
  1. opens the store named by ``bucket_path`` (``sources.objstore``: any scheme it knows),
  2. reads ``.config.json`` (or, for a lake without one, takes the configured
     ``ledgers_per_file``/``files_per_partition``) and refuses a lake of another network or
     whose schema contradicts the configuration; detects ``.xdr.zst`` vs ``.xdr.zstd`` from a
     listing (``resolve_schema``, shared with the pre-flight check),
  3. checks the lake holds the range's first and last ledgers (fetches those two files),
  4. starts ``num_workers`` download threads.

Pipeline.  File *i* of the range (boundary ``batch_starts(first, last)[i]``) is claimed by
the next free worker, downloaded, decompressed in streaming mode (frames may omit the
content size), split (and scanned once) with ``rpcbackfill.lcm.scan_batch`` and parked in ``ready[i]``; the
consumer takes ``ready`` in index order.  At most ``buffer_size`` files are claimed but not
yet consumed, and new downloads also wait while the parked batches exceed
``max_buffer_bytes``, so memory is bounded whatever the range length.

Errors.  Transient failures (5xx, 429, timeouts, connection resets, truncated bodies,
corrupt zstd or XDR) are retried ``retry_limit`` times (so ``retry_limit + 1`` attempts) with
exponential backoff starting at ``retry_wait`` seconds, capped at ``MAX_BACKOFF``.  A missing
object is fatal at once, never retried (``MissingLedgerError`` naming the ledger and key).
A file that failed for good is reported in order: every ledger before it is still delivered
(so the orchestrator keeps that progress), no file after it is fetched, and ``get_ledger``
raises the error when it reaches the failed file.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass

from .. import lcm
from ..config import BufferedStorageConfig
from ..errors import (
    Cancelled,
    CorruptDownloadError,
    LakeConfigError,
    MissingLedgerError,
    RpcBackfillError,
    SourceError,
    TransientSourceError,
    XdrError,
)
from ..ledgerauth import verify_batch
from ..zstdframe import decompress_frame
from . import layout
from .base import DEFAULT_BATCH, POLL_S, Ledger, _BoundedSource
from .layout import LakeSchema
from .objstore import ObjectMissing, ObjectStore, StoreOptions, StoreTuning, open_store

log = logging.getLogger(__name__)

# Upper bound on one backoff sleep (seconds); retry_wait doubles per attempt up to this.
MAX_BACKOFF = 30.0
# Default cap on decompressed bytes parked in the buffer (on top of buffer_size files):
# pubnet ledgers decompress to ~1-2 MB, so the file cap alone (default 10,000) could reach
# tens of GB.  512 MiB keeps hundreds of ledgers ready, far more than the consumer needs.
DEFAULT_MAX_BUFFER_BYTES = 512 << 20
# How long close() waits for workers (an in-flight HTTP request finishes on its own timeout).
_JOIN_TIMEOUT = 5.0


@dataclass
class _Batch:
    start: int  # header startSequence: LCM j is ledger start + j
    ledgers: list[Ledger]
    nbytes: int  # memory the batch holds (the decompressed file its ledgers are views of)


class DataLakeSource(_BoundedSource):
    """``LedgerSource`` over a Galexie data lake. One bounded range per instance."""

    _name = "DataLakeSource"

    def __init__(
        self,
        config: BufferedStorageConfig,
        network_passphrase: str,
        cancel: threading.Event | None = None,
        *,
        expected_schema: LakeSchema | None = None,
        max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
        request_timeout: float | tuple[float, float] | None = None,
        store=None,
        authenticate: bool = False,
        prefetch: bool = True,
        known_schema: LakeSchema | None = None,
    ):
        problems = []
        if config.buffer_size < 1:
            problems.append(f"buffer_size must be >= 1, got {config.buffer_size}")
        if config.num_workers < 1:
            problems.append(f"num_workers must be >= 1, got {config.num_workers}")
        if config.retry_limit < 0:
            problems.append(f"retry_limit must be >= 0, got {config.retry_limit}")
        if config.retry_wait < 0:
            problems.append(f"retry_wait must be >= 0, got {config.retry_wait}")
        if problems:
            raise LakeConfigError("buffered_storage: " + "; ".join(problems))
        self.config = config
        self.network_passphrase = network_passphrase
        self.cancel = cancel if cancel is not None else threading.Event()
        self.expected_schema = expected_schema
        self.max_buffer_bytes = max(1, int(max_buffer_bytes))
        self._request_timeout = request_timeout
        self.authenticate = authenticate  # check_ledger_hashes: verify each ledger in the worker
        # prefetch=False: the caller runs beside other workers (a chunk worker of a pool), so a
        # store whose reads are cheap (``StoreTuning.inline_reads``: a local directory) is read in
        # the caller's thread, on demand, with no download thread and no hand-off per file.
        self.prefetch = prefetch
        self._inline = False
        # known_schema: the layout an earlier source of this run resolved (and checked) on the
        # same lake -- its ``schema`` after prepare_range, extension included; this one then
        # reads neither the manifest nor a listing (measured on a local partition of 40,000
        # files: 27.6 ms of CPU to open and prepare, 0.22 ms with the layout known)
        self._known_schema = known_schema
        self._store = store
        self._own_store = store is None
        self.schema: LakeSchema | None = None
        self._keys: layout.ObjectKeys | None = None  # object keys of ``schema``, cached per partition
        self._ext_detected = False
        # One lock guards the pipeline state below; the consumer waits on _cv (a file became
        # ready), workers wait on _room (the consumer freed a slot).
        self._mu = threading.Lock()
        self._cv = threading.Condition(self._mu)
        self._room = threading.Condition(self._mu)
        self._stop = False  # set by close()
        self._closed = False
        self._fatal: BaseException | None = None  # error of file index _fatal_at
        self._fatal_at: int | None = None  # earliest file index that failed for good
        self._threads: list[threading.Thread] = []
        self._starts: range = range(0)
        self._first = self._last = 0
        self._next_claim = 0  # next file index a worker will take
        self._next_take = 0  # next file index the consumer will take
        self._ready: dict[int, _Batch] = {}
        self._ready_bytes = 0
        self._cur: _Batch | None = None
        self._next_seq: int | None = None
        # counters (read by benchmarks/tests)
        self.stats = {"files": 0, "bytes_downloaded": 0, "retries": 0}
        self.retry_reasons: dict[str, int] = {}  # "corrupt" (bad zstd/XDR) or "transport" (I/O, HTTP, timeout)
        self._stats_lock = threading.Lock()

    # --- context manager -------------------------------------------------------------------

    def __enter__(self) -> DataLakeSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- setup -------------------------------------------------------------------------------

    def _open(self) -> None:
        if self._store is None:
            self._store = open_store(self.config.bucket_path, store_options(self.config, self._request_timeout))
        if self._known_schema is not None:
            self.schema, self._ext_detected = self._known_schema, True
            return
        self.schema, self._ext_detected = resolve_schema(
            self._store, self.config, self.network_passphrase, self._with_retries, self.expected_schema
        )

    def prepare_range(self, first: int, last: int) -> None:
        self._check_prepare(first, last, started=bool(self._threads))
        self._check_cancel()
        self._open()
        s = self.schema
        assert s is not None  # set by _open()
        self._first, self._last = first, last
        self._starts = layout.batch_starts(first, last, s)
        # The lake must hold the first and last ledgers before any work starts.  The first
        # file is kept for the consumer; the last only checked (one extra download).
        try:
            try:
                b0 = self._fetch_ends()
            except MissingLedgerError:
                if self._ext_detected:
                    raise
                # no lake file in the first listed keys: try the other extension before giving up
                other = layout.LEGACY_FILE_EXT if s.file_ext == layout.FILE_EXT else layout.FILE_EXT
                self.schema = s = dataclasses.replace(s, file_ext=other)
                try:
                    b0 = self._fetch_ends()
                except MissingLedgerError:
                    self.schema = s = dataclasses.replace(s, file_ext=layout.FILE_EXT)
                    raise
        except MissingLedgerError as e:
            raise MissingLedgerError(
                f"data lake {self._store.url} does not hold range [{first}, {last}]: {e}"
            ) from None
        self._ready[0] = b0
        self._ready_bytes = b0.nbytes
        self._next_claim = 1
        self._next_seq = first
        n = min(self.config.num_workers, self.config.buffer_size, max(0, len(self._starts) - 1))
        # The store's own advice (a local directory: few workers, a short read-ahead).
        tuning = getattr(self._store, "tuning", None) or StoreTuning()
        if tuning.max_workers is not None:
            n = min(n, tuning.max_workers)
        if tuning.max_buffer_bytes is not None:
            self.max_buffer_bytes = min(self.max_buffer_bytes, tuning.max_buffer_bytes)
        if not self.prefetch and tuning.inline_reads:
            n = 0
            self._inline = True
        for i in range(n):
            t = threading.Thread(target=self._worker, name=f"datalake-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        log.info(
            "data lake %s: ledgers %d-%d in %d files (%d per file, ext %s), %d workers%s, buffer %d files",
            self._store.url,
            first,
            last,
            len(self._starts),
            s.ledgers_per_batch,
            s.file_ext,
            n,
            " (read inline)" if self._inline else "",
            self.config.buffer_size,
        )

    # --- fetching ----------------------------------------------------------------------------

    def _fetch_ends(self) -> _Batch:
        """Fetch the files of the first and last ledgers; return the first (kept for the consumer)."""
        b0 = self._fetch_for(0)
        if len(self._starts) > 1:
            self._fetch_for(len(self._starts) - 1)
        return b0

    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled("data lake source cancelled")

    def _with_retries(self, fn, where: str, failed: TransientSourceError | None = None):
        """Run ``fn`` with the retry policy; ObjectMissing and non-transient errors pass through.
        ``failed``: the first attempt was already made (by the caller) and failed so."""
        attempt = 0
        err = failed
        while True:
            if err is not None:
                attempt += 1
                if attempt > self.config.retry_limit:
                    raise SourceError(f"{where}: giving up after {attempt} attempts: {err}") from None
                self._count("retries")
                reason = "corrupt" if isinstance(err, CorruptDownloadError) else "transport"
                with self._stats_lock:
                    self.retry_reasons[reason] = self.retry_reasons.get(reason, 0) + 1
                wait = min(MAX_BACKOFF, self.config.retry_wait * (2 ** (attempt - 1)))
                log.warning(
                    "%s: attempt %d failed (%s); retrying in %.2fs",
                    where,
                    attempt,
                    err,
                    wait,
                    extra={"error_class": type(err).__name__, "retry": attempt, "reason": reason, "object": where},
                )
                self._sleep(wait)
                err = None
            self._check_cancel()
            if self._stop:
                raise Cancelled("data lake source stopped")
            try:
                return fn()
            except TransientSourceError as e:
                err = e

    def _count(self, name: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[name] += n

    def _sleep(self, seconds: float) -> None:
        """Back off for ``seconds``, waking promptly on cancel or close."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self.cancel.wait(min(left, POLL_S)):
                raise Cancelled("data lake source cancelled")
            if self._stop:
                raise Cancelled("data lake source stopped")

    def _fetch_for(self, i: int) -> _Batch:
        """Download, check and split file ``i`` of the range (with retries).  The first attempt
        runs without the retry machinery; a failed one hands the file to ``_with_retries`` (same
        attempt count, same cancel and stop checks before every attempt)."""
        self._check_cancel()
        if self._stop:
            raise Cancelled("data lake source stopped")
        try:
            return self._fetch_once(i)
        except TransientSourceError as e:
            return self._with_retries(lambda: self._fetch_once(i), self._where(i), failed=e)

    def _where(self, i: int) -> str:
        assert self.schema is not None  # prepare_range opened the lake before any fetch
        return f"{self._store.url}/{self._key(self._starts[i])}"

    def _key(self, start: int) -> str:
        keys = self._keys
        if keys is None or keys.schema is not self.schema:  # prepare_range may change the extension
            assert self.schema is not None
            keys = self._keys = layout.ObjectKeys(self.schema)
        return keys(start)

    def _fetch_once(self, i: int) -> _Batch:
        """One attempt at file ``i``: download, decompress, scan once (authenticated: hashes
        checked in this thread) and keep the range's ledgers.  A corrupt or truncated download
        is a ``TransientSourceError`` (retried by the caller), a missing object is not."""
        s = self.schema
        assert s is not None  # prepare_range opened the lake before any fetch
        bstart = self._starts[i]
        lo = max(self._first, bstart)
        hi = min(self._last, bstart + s.ledgers_per_batch - 1)
        key = self._key(bstart)
        try:
            data = self._store.get(key)
        except ObjectMissing:
            raise MissingLedgerError(f"ledger {lo}: object {self._where(i)} does not exist") from None
        raw = decompress_frame(data, key, CorruptDownloadError)  # corrupt download: retried
        try:  # the one parse of these ledgers
            start, end, found = verify_batch(raw) if self.authenticate else lcm.scan_batch(raw)
        except XdrError as e:
            raise CorruptDownloadError(f"{self._where(i)}: malformed LedgerCloseMetaBatch ({e})") from None
        if start > lo or end < hi:
            raise MissingLedgerError(
                f"ledger {lo if start > lo else hi}: object {self._where(i)} holds ledgers {start}-{end}, "
                f"needed {lo}-{hi}"
            )
        if lo != start or hi != end:  # drop ledgers outside the range early
            found = found[lo - start : hi - start + 1]
        with self._stats_lock:
            self.stats["bytes_downloaded"] += len(data)
            self.stats["files"] += 1
        return _Batch(lo, [Ledger(*x) for x in found], len(raw))  # views: the whole batch stays in memory

    def _worker(self) -> None:
        while True:
            with self._cv:
                while True:
                    if self._stop or self.cancel.is_set():
                        return
                    if self._next_claim >= len(self._starts):
                        return
                    if self._fatal_at is not None and self._next_claim > self._fatal_at:
                        return  # the range cannot complete: nothing after the failed file is needed
                    in_window = self._next_claim - self._next_take < self.config.buffer_size
                    # Memory cap: the file the consumer needs next is always allowed.
                    under_bytes = self._ready_bytes < self.max_buffer_bytes or self._next_claim == self._next_take
                    if in_window and under_bytes:
                        break
                    self._room.wait(POLL_S)
                i = self._next_claim
                self._next_claim += 1
            try:
                b = self._fetch_for(i)
            except Cancelled:
                return
            except BaseException as e:  # the consumer raises it when it reaches file i
                if not isinstance(e, RpcBackfillError):
                    e = SourceError(f"data lake worker failed on file {i}: {type(e).__name__}: {e}")
                with self._cv:
                    if self._fatal_at is None or i < self._fatal_at:
                        self._fatal, self._fatal_at = e, i
                    self._cv.notify_all()
                    self._room.notify_all()
                return
            with self._cv:
                if self._stop:
                    return
                self._ready[i] = b
                self._ready_bytes += b.nbytes
                if i == self._next_take:
                    self._cv.notify()

    # --- consumer ------------------------------------------------------------------------------

    def get_ledger(self, seq: int) -> Ledger:
        self._check_get(seq)
        self._check_cancel()
        cur = self._cur
        if cur is None or seq >= cur.start + len(cur.ledgers):
            cur = self._cur = self._take_next()
        ledger = cur.ledgers[seq - cur.start]
        self._next_seq = seq + 1
        return ledger

    def get_batch(self, seq: int, max_count: int = DEFAULT_BATCH) -> list[Ledger]:
        """Ledgers ``seq..`` (at most ``max_count``, never past the range): the rest of the current
        file, then every further file already downloaded, taken under one lock; blocks only when
        nothing at all is ready.  A file that failed for good is raised by the call that reaches it."""
        self._check_get(seq)
        if max_count < 1:
            raise SourceError(f"get_batch: max_count must be >= 1, got {max_count}")
        self._check_cancel()
        want = min(max_count, self._last - seq + 1)
        out: list[Ledger] = []
        cur = self._cur
        if cur is not None and seq < cur.start + len(cur.ledgers):
            i = seq - cur.start
            out = cur.ledgers[i : i + want]
        if len(out) < want:
            for b in self._take_many(want - len(out), block=not out):
                part = b.ledgers[: want - len(out)]
                if out:
                    out += part
                else:
                    out = part
                self._cur = b
        self._next_seq = seq + len(out)
        return out

    def _take_many(self, max_ledgers: int, block: bool) -> list[_Batch]:
        """Consecutive ready files holding up to ``max_ledgers`` ledgers (at least one file when
        ``block``, waiting for it; possibly none otherwise), in one critical section."""
        out: list[_Batch] = []
        if self._inline:  # read files until the batch is full (nothing is ever "ready" ahead)
            # ... or holds max_buffer_bytes of ledgers: the memory bound of the read-ahead mode
            # (256 dense ledgers would be ~240 MB per batch)
            n = nbytes = 0
            while n < max_ledgers and nbytes < self.max_buffer_bytes:
                try:
                    b = self._fetch_inline()
                except RpcBackfillError as e:
                    if not out or isinstance(e, Cancelled):
                        raise
                    # the ledgers read so far are delivered; the next call reaches the failed file
                    self._fatal, self._fatal_at = e, self._next_take
                    break
                if b is None:
                    break
                out.append(b)
                n += len(b.ledgers)
                nbytes += b.nbytes
            return out
        if block:
            out.append(self._take_next())
            n = len(out[0].ledgers)
        else:
            n = 0
        with self._cv:
            freed = 0
            while n < max_ledgers:
                b = self._ready.pop(self._next_take, None)
                if b is None:
                    break
                self._next_take += 1
                self._ready_bytes -= b.nbytes
                out.append(b)
                n += len(b.ledgers)
                freed += 1
            if freed:
                self._room.notify(freed)
        return out

    def _fetch_inline(self) -> _Batch | None:
        """Inline mode: file ``_next_take``, read now in the caller's thread (None past the end).
        A failure is raised here, at the file it belongs to, like a worker's."""
        i = self._next_take
        if i >= len(self._starts):
            return None
        if self._fatal is not None and self._fatal_at == i:
            raise self._fatal
        self._check_cancel()
        b = self._ready.pop(i, None)  # file 0 was fetched by prepare_range
        if b is None:
            try:
                b = self._fetch_for(i)
            except (RpcBackfillError, Cancelled):
                raise
            except Exception as e:  # as a worker reports it
                raise SourceError(f"data lake read failed on file {i}: {type(e).__name__}: {e}") from None
        else:
            self._ready_bytes -= b.nbytes
        self._next_take = self._next_claim = i + 1
        return b

    def _take_next(self) -> _Batch:
        if self._inline:
            b = self._fetch_inline()
            if b is None:
                raise SourceError("data lake source: no file left in the range")
            return b
        with self._cv:
            while True:
                i = self._next_take
                b = self._ready.pop(i, None)
                if b is not None:
                    self._next_take = i + 1
                    self._ready_bytes -= b.nbytes
                    # One slot (and some bytes) freed: wake one waiting worker, not all of them
                    # (a herd of wake-ups per ledger was most of the source's CPU).  Workers
                    # also re-check every POLL_S seconds, so no wake-up can be lost for good.
                    self._room.notify()
                    return b
                if self._fatal is not None and self._fatal_at is not None and i >= self._fatal_at:
                    raise self._fatal
                if self.cancel.is_set():
                    raise Cancelled("data lake source cancelled")
                if self._stop:
                    raise SourceError("data lake source stopped")
                self._cv.wait(POLL_S)

    def close(self) -> None:
        if self._closed:
            return
        with self._cv:
            self._closed = True
            self._stop = True
            self._cv.notify_all()
            self._room.notify_all()
        deadline = time.monotonic() + _JOIN_TIMEOUT
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            log.warning("data lake source: %d workers still finishing a request after close()", len(alive))
        self._ready.clear()
        self._cur = None
        if self._own_store and self._store is not None:
            self._store.close()


# --- shared with the pre-flight check (sources.checks) ---------------------------------------


def lake_layout(
    raw: bytes | None, config: BufferedStorageConfig, network_passphrase: str, file_ext: str, url: str
) -> tuple[LakeSchema, str]:
    """The layout a lake is read with, and where it came from: ``raw`` (the ``.config.json``
    bytes, None when the lake has none), checked against the configured ``ledgers_per_file`` /
    ``files_per_partition`` (they must agree with it); without a manifest, those two keys (both
    required).  The one place this decision is made (the source, its pre-flight, detect-gaps)."""
    manifest_where = f"{url}/{layout.MANIFEST_NAME}"
    lpf, fpp = config.ledgers_per_file, config.files_per_partition
    if raw is None:
        unset = [n for n, v in (("ledgers_per_file", lpf), ("files_per_partition", fpp)) if v is None]
        if unset:
            raise LakeConfigError(
                f"{url}: lake manifest {layout.MANIFEST_NAME} not found; for a lake without one set "
                f"backfill.buffered_storage.ledgers_per_file and files_per_partition ({', '.join(unset)} unset)"
            )
        assert lpf is not None and fpp is not None
        log.info(
            "%s: no %s; using the configured layout (%d ledgers per file, %d files per partition)",
            url,
            layout.MANIFEST_NAME,
            lpf,
            fpp,
        )
        return LakeSchema(network_passphrase, lpf, fpp, file_ext=file_ext), "the configured layout"
    schema = layout.parse_manifest(raw, file_ext=file_ext, where=manifest_where)
    bad = [
        f"{name} = {v} in the configuration but {field} = {getattr(schema, attr)} in {manifest_where}"
        for name, v, field, attr in (
            ("ledgers_per_file", lpf, "ledgersPerBatch", "ledgers_per_batch"),
            ("files_per_partition", fpp, "batchesPerPartition", "batches_per_partition"),
        )
        if v is not None and v != getattr(schema, attr)
    ]
    if bad:
        raise LakeConfigError("lake layout disagrees: " + "; ".join(bad))
    return schema, "the manifest"


def resolve_schema(
    store: ObjectStore,
    config: BufferedStorageConfig,
    network_passphrase: str,
    call,
    expected: LakeSchema | None = None,
) -> tuple[LakeSchema, bool]:
    """The lake's layout, checked; ``(schema, extension_detected)``.

    From ``.config.json`` when the lake has one (configured ``ledgers_per_file`` /
    ``files_per_partition`` must then agree with it), else from those two keys (both
    required).  Refuses another network, a layout contradicted by the lake's first object
    names, and a schema contradicting ``expected``.  ``call(fn, where)`` runs each request
    under the caller's retry policy.
    """
    url = store.url
    manifest_where = f"{url}/{layout.MANIFEST_NAME}"
    try:
        raw = call(lambda: store.get(layout.MANIFEST_NAME), manifest_where)
    except ObjectMissing:
        raw = None
    try:
        keys = call(lambda: store.list_keys(16), url)
    except (LakeConfigError, Cancelled):
        raise
    except SourceError as e:
        if raw is None:
            raise
        # Some public buckets allow reading objects but not listing them: with a readable
        # manifest the listing is only a hint (extension, a layout check); probing finds the rest.
        log.warning("%s: cannot list the lake (%s); the file extension will be found by probing", url, e)
        keys = []
    ext = layout.detect_ext_from_names(keys)
    schema, origin = lake_layout(raw, config, network_passphrase, ext or layout.FILE_EXT, url)
    bad_key = layout.first_key_contradicting(keys, schema)
    if bad_key is not None:
        raise LakeConfigError(
            f"{url}: object {bad_key} contradicts {origin} (ledgersPerBatch {schema.ledgers_per_batch}, "
            f"batchesPerPartition {schema.batches_per_partition})"
        )
    if schema.network_passphrase != network_passphrase:
        raise LakeConfigError(
            f"{url}: lake network passphrase {schema.network_passphrase!r} differs from the configured "
            f"network {network_passphrase!r}"
        )
    if expected is not None:
        bad = [
            f"{name} is {getattr(schema, attr)!r} in the lake but {getattr(expected, attr)!r} in the configuration"
            for name, attr in (
                ("ledgersPerBatch", "ledgers_per_batch"),
                ("batchesPerPartition", "batches_per_partition"),
                ("compression", "compression"),
            )
            if getattr(schema, attr) != getattr(expected, attr)
        ]
        if bad:
            raise LakeConfigError(f"{url}: lake schema contradicts the configuration: " + "; ".join(bad))
    return schema, ext is not None


def store_options(
    config: BufferedStorageConfig, request_timeout: float | tuple[float, float] | None = None, **overrides
) -> StoreOptions:
    """``StoreOptions`` for ``config``; ``request_timeout`` is seconds or (connect, read)."""
    if request_timeout is not None:
        c, r = request_timeout if isinstance(request_timeout, tuple) else (request_timeout, request_timeout)
        overrides.setdefault("connect_timeout", float(c))
        overrides.setdefault("read_timeout", float(r))
    return StoreOptions.from_config(config, **overrides)
