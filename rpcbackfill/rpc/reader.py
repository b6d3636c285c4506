"""Read side of a data directory for ``stellar-rpc serve``: only COMPLETE ranges are served.

``HistoryReader(config)`` reads the meta store read-only (a fresh read-only open per
``refresh()``, as the query commands do, so it works while a backfill holds the directory's
lock) and serves the ranges whose state is COMPLETE: their chunks are finished and verified
and their RecSplit shards built and verified, and neither is ever rewritten.  A range that
completes later is picked up by the next ``refresh()`` (the server calls it periodically);
ledgers of any other range are *not available* -- never read half-written.

Resources are opened once and reused by every request:
* per range and shard, a memory-mapped RecSplit shard, opened when a lookup first needs it
  (a damaged shard fails only the lookups routed to it, never the range's ledgers or other
  ranges' lookups; see ``find_transaction``);
* per chunk (opened on first use, kept in an LRU of ``max_open_chunks``), the decoded
  ``.index`` offsets and an open ``.data`` descriptor read with ``pread``.  The data file is
  read rather than mapped so that a damaged (e.g. truncated) chunk fails one request with an
  error instead of a SIGBUS killing the server.

Thread-safe: requests run in a thread pool (zstd decompression and the XDR walk release the
GIL); ``zstdframe`` gives each thread its own zstd decompressor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from ..errors import (
    CorruptStoreError,
    DataCorruptionError,
    MetaStoreError,
    NotFoundError,
    StoreError,
    XdrError,
)
from ..index.recsplit import ShardIndex
from ..index.txhash_index import damage_summary, open_shard, search_ranges, shard_candidate
from ..ledgermath import CHUNK_SIZE, chunk_first_ledger, chunk_of_ledger
from ..paths import DataDirLayout
from ..records import shard_of
from ..stores.lfs import decode_index
from ..zstdframe import decompress_frame
from .ledger import LedgerView, network_id

log = logging.getLogger(__name__)

MAX_LEDGER_BYTES = 256 * 1024 * 1024  # bound on one decompressed LedgerCloseMeta
_INDEX_MAX = 8 + (CHUNK_SIZE + 1) * 8 + 1


class LedgerUnavailable(Exception):
    """The ledger is not in a COMPLETE range of this directory."""


class LedgerDamaged(Exception):
    """A stored ledger could not be read or decoded; the message names the ledger and file."""


@dataclass(frozen=True)
class ServedRange:
    id: int
    start: int
    end: int


class _Chunk:
    """Offsets of one finished chunk plus an open descriptor of its ``.data`` file."""

    __slots__ = ("_fmt", "_offs", "_width", "chunk_id", "count", "fd", "first", "path")

    def __init__(self, layout: DataDirLayout, chunk_id: int):
        data, index = layout.chunk_paths(chunk_id)
        self.chunk_id = chunk_id
        self.path = data
        self.fd = -1
        try:
            with open(index, "rb") as f:
                raw = f.read(_INDEX_MAX)
            self.fd = os.open(data, os.O_RDONLY)
            size = os.fstat(self.fd).st_size
        except FileNotFoundError as e:
            self.close()
            raise LedgerDamaged(f"chunk {chunk_id}: {e.filename} is missing") from None
        except OSError as e:
            self.close()
            raise LedgerDamaged(f"chunk {chunk_id}: cannot open {e.filename}: {e.strerror}") from None
        try:
            decode_index(raw, size, where=str(index))  # full structural check, once
        except (CorruptStoreError, StoreError) as e:
            self.close()
            raise LedgerDamaged(str(e)) from None
        self._width = raw[1]
        self._fmt = struct.Struct("<II" if self._width == 4 else "<QQ")
        self._offs = raw  # header + offsets, read with unpack_from
        self.count = (len(raw) - 8) // self._width - 1
        self.first = chunk_first_ledger(chunk_id)

    def frame(self, seq: int) -> bytes:
        i = seq - self.first
        if not 0 <= i < self.count:
            raise LedgerUnavailable(f"ledger {seq} is not in chunk {self.chunk_id}")
        s, e = self._fmt.unpack_from(self._offs, 8 + i * self._width)
        try:
            b = os.pread(self.fd, e - s, s)
        except OSError as err:
            raise LedgerDamaged(f"ledger {seq}: reading {self.path}: {err.strerror}") from None
        if len(b) != e - s:
            raise LedgerDamaged(f"ledger {seq}: frame truncated in {self.path}")
        return b

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self):  # the LRU drops chunks; in-flight requests keep theirs alive until done
        with contextlib.suppress(OSError):
            self.close()


class HistoryReader:
    """The COMPLETE ranges of one data directory (see the module docstring)."""

    def __init__(self, config: Config, *, max_open_chunks: int = 256):
        self.config = config
        self.layout = DataDirLayout(config)
        self.meta_path = Path(config.meta_store.path)
        self.passphrase = config.service.network_passphrase
        self.nid = network_id(self.passphrase)
        self.max_open_chunks = max_open_chunks
        self._lock = threading.Lock()
        self._chunks: OrderedDict[int, _Chunk] = OrderedDict()
        self._shards: dict[tuple[int, int], ShardIndex] = {}  # (range id, shard) -> open shard
        self._ranges: tuple[ServedRange, ...] = ()
        self.oldest_close_time = 0
        self.latest_close_time = 0
        self.latest_protocol = 0
        self.last_refresh_error: str | None = None
        self._closed = False

    # --- what is served ----------------------------------------------------------------------

    @property
    def ranges(self) -> tuple[ServedRange, ...]:
        return self._ranges

    @property
    def oldest_ledger(self) -> int:
        return self._ranges[0].start if self._ranges else 0

    @property
    def latest_ledger(self) -> int:
        return self._ranges[-1].end if self._ranges else 0

    def available(self, seq: int) -> bool:
        return any(r.start <= seq <= r.end for r in self._ranges)

    def next_available(self, seq: int) -> int | None:
        """``seq`` if served, else the first served ledger after it, else None."""
        for r in self._ranges:
            if seq <= r.end:
                return max(seq, r.start)
        return None

    def refresh(self) -> bool:
        """Re-read the meta store; serve newly COMPLETE ranges.  True when the set changed."""
        from ..meta.store import MetaStore, RangeState

        try:
            meta = MetaStore(self.meta_path, read_only=True)
        except MetaStoreError as e:
            self.last_refresh_error = str(e)
            log.debug("meta store not readable yet: %s", e)
            return False
        try:
            infos = [meta.range_info(rid) for rid in meta.range_ids()]
        except MetaStoreError as e:
            self.last_refresh_error = str(e)
            log.warning("meta store read failed, keeping the served ranges: %s", e)
            return False
        finally:
            meta.close()
        self.last_refresh_error = None
        complete = sorted(
            (
                ServedRange(i.id, i.start_ledger, i.end_ledger)
                for i in infos
                if i.state == RangeState.COMPLETE and i.start_ledger is not None and i.end_ledger is not None
            ),
            key=lambda r: r.start,
        )
        if tuple(complete) == self._ranges:
            return False
        ok = list(complete)
        with self._lock:
            self._ranges = tuple(ok)
        self._update_bounds()
        log.info(
            "serving %d COMPLETE range(s): ledgers %s", len(ok), ", ".join(f"{r.start}-{r.end}" for r in ok) or "none"
        )
        return True

    def _update_bounds(self) -> None:
        if not self._ranges:
            self.oldest_close_time = self.latest_close_time = self.latest_protocol = 0
            return
        try:
            self.oldest_close_time = self.ledger(self.oldest_ledger).close_time
            latest = self.ledger(self.latest_ledger)
            self.latest_close_time, self.latest_protocol = latest.close_time, latest.protocol
        except (LedgerDamaged, LedgerUnavailable) as e:
            log.error("cannot read the oldest/latest served ledger: %s", e)

    # --- ledgers -----------------------------------------------------------------------------

    def _chunk(self, chunk_id: int) -> _Chunk:
        with self._lock:
            c = self._chunks.get(chunk_id)
            if c is not None:
                self._chunks.move_to_end(chunk_id)
                return c
        c = _Chunk(self.layout, chunk_id)  # outside the lock: file I/O
        with self._lock:
            self._chunks[chunk_id] = c
            while len(self._chunks) > self.max_open_chunks:
                self._chunks.popitem(last=False)
        return c

    def ledger_bytes(self, seq: int) -> bytes:
        """Raw LedgerCloseMeta of ``seq``: LedgerUnavailable outside COMPLETE ranges, LedgerDamaged on bad data."""
        if self._closed:
            raise LedgerUnavailable("the reader is closed")
        if not self.available(seq):
            raise LedgerUnavailable(f"ledger {seq} is not available")
        try:
            chunk = self._chunk(chunk_of_ledger(seq))
        except LedgerDamaged as e:
            raise LedgerDamaged(f"ledger {seq}: {e}") from None
        return self._decompress(chunk.frame(seq), seq)

    def _decompress(self, frame: bytes, seq: int) -> bytes:
        return decompress_frame(frame, f"ledger {seq}", LedgerDamaged, max_size=MAX_LEDGER_BYTES)

    def ledger(self, seq: int, want: bytes | None = None) -> LedgerView:
        """The mapped ledger ``seq`` (decompressed and walked once; ``want``: see ``LedgerView``)."""
        raw = self.ledger_bytes(seq)
        try:
            view = LedgerView(raw, self.nid, want)
        except XdrError as e:
            raise LedgerDamaged(f"ledger {seq}: stored LedgerCloseMeta is malformed ({e})") from None
        if view.seq != seq:
            raise LedgerDamaged(f"ledger {seq}: the stored LedgerCloseMeta carries sequence {view.seq}")
        return view

    # --- transactions ------------------------------------------------------------------------

    def _shard(self, r: ServedRange, x: int) -> ShardIndex:
        """Shard ``x`` of range ``r``, opened on first use (CorruptStoreError naming the file if bad).

        A shard that fails to open is not remembered: a repaired file is picked up by the next lookup."""
        with self._lock:
            ix = self._shards.get((r.id, x))
        if ix is not None:
            return ix
        ix = open_shard(self.layout.txhash_range_dir(r.id), x, range_start=r.start)  # outside the lock: file I/O
        with self._lock:
            if self._closed:
                ix.close()
                raise LedgerUnavailable("the reader is closed")
            kept = self._shards.setdefault((r.id, x), ix)
        if kept is not ix:  # another thread opened it meanwhile
            ix.close()
        return kept

    def _find_in_range(self, r: ServedRange, tx_hash: bytes) -> tuple[LedgerView, int] | None:
        """The confirmed transaction in range ``r``, None if absent; StoreError subclasses for damage."""
        seq = shard_candidate(self._shard(r, shard_of(tx_hash)), tx_hash, r.id, r.start, r.end)
        if seq is None:
            return None
        try:
            view = self.ledger(seq, want=tx_hash)
        except LedgerDamaged as e:
            raise DataCorruptionError(f"range {r.id}: {e}") from None
        if view.found is not None:
            return view, view.found
        log.debug("index candidate ledger %d for %s was a false positive", seq, tx_hash.hex())
        return None

    def find_transaction(self, tx_hash: bytes) -> tuple[LedgerView, int] | None:
        """(ledger, 0-based apply index) of the transaction with this outer or inner hash, or None.

        Every served range is asked (newest first) through the one shard the hash belongs to; a
        candidate counts only once the ledger is read and the hash found in it (RecSplit answers
        absent keys with false positives).  Damage in one range (a missing or corrupt shard, a
        missing or damaged chunk) does not stop the search: a healthy range that holds the hash
        still answers.  Only when none answers is the damage raised, as ``LedgerDamaged`` naming
        the file -- None ("not found") is reserved for a search that met no damage.  The same
        rule as the ``get-transaction`` command (``orchestration.api.get_transaction_ledger``).
        """
        if self._closed:
            raise LedgerUnavailable("the reader is closed")
        found, damage = search_ranges(reversed(self._ranges), lambda r: self._find_in_range(r, tx_hash))
        if found is not None:
            return found
        if damage:
            for e in damage:
                log.error("transaction lookup met damaged data: %s", e)
            summary = damage_summary(damage)
            raise LedgerDamaged(f"transaction {tx_hash.hex()} not found in the readable ranges; {summary}")
        return None

    def close(self) -> None:
        self._closed = True
        with self._lock:
            for ix in self._shards.values():
                ix.close()
            self._shards = {}
            self._ranges = ()
            self._chunks.clear()


__all__ = ["HistoryReader", "LedgerDamaged", "LedgerUnavailable", "NotFoundError", "ServedRange"]
