"""Reading finished LFS chunks: one chunk (``ChunkReader``), its end-to-end check
(``verify_chunk``) and ``get_ledger`` across chunks (``LedgerStore``)."""

from __future__ import annotations

import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path

import zstandard

from ...errors import Cancelled, CorruptStoreError, NotFoundError, StoreError, XdrError
from ...lcm import header_sequence as _header_sequence
from ...lcm import ledger_sequence as _scan_ledger_sequence
from ...ledgermath import CHUNK_SIZE, FIRST_LEDGER, chunk_first_ledger, chunk_of_ledger
from ...paths import chunk_paths
from .format import (
    MAX_INDEX_BYTES,
    MAX_LEDGER_BYTES,
    READ_AHEAD,
    ChunkStats,
    chunk_exists,
    decode_index,
    decompress_ledger,
    index_width,
)


class ChunkReader:
    """Random access and sequential scan of one finished chunk (pread based; not thread-safe)."""

    def __init__(self, ledgers_base: str | os.PathLike, chunk_id: int):
        self.chunk_id = chunk_id
        self.data_path, self.index_path = chunk_paths(ledgers_base, chunk_id)
        self._fd = -1
        try:
            self._fd = os.open(self.data_path, os.O_RDONLY)
            with open(self.index_path, "rb") as f:
                raw = f.read(MAX_INDEX_BYTES + 1)  # bounded: one byte more than any valid index
        except FileNotFoundError as e:
            self.close()
            raise NotFoundError(f"chunk {chunk_id}: {e.filename} does not exist") from None
        except OSError as e:
            self.close()
            raise StoreError(f"chunk {chunk_id}: cannot open {e.filename}: {e.strerror}") from None
        try:
            self.data_bytes = os.fstat(self._fd).st_size
            self.index_width = raw[1] if len(raw) > 1 else 0
            offs = decode_index(raw, self.data_bytes, where=str(self.index_path))
        except BaseException:
            self.close()
            raise
        self._offl: list[int] = offs.tolist()  # python ints: faster scalar access in get()
        self.first_ledger = chunk_first_ledger(chunk_id)
        self.last_ledger = self.first_ledger + len(self._offl) - 2
        self._dctx = zstandard.ZstdDecompressor()

    def __len__(self) -> int:
        return len(self._offl) - 1

    @property
    def frame_offsets(self) -> list[int]:
        """The N+1 validated index offsets: ledger i's frame is ``.data[offsets[i]:offsets[i+1]]``."""
        return list(self._offl)

    def _frame(self, i: int) -> bytes:
        if self._fd < 0:
            raise StoreError(f"chunk {self.chunk_id} reader is closed")
        s, e = self._offl[i], self._offl[i + 1]
        if e - s > MAX_LEDGER_BYTES:  # a compressed frame is never larger than its ledger bound
            raise CorruptStoreError(f"{self.data_path}: ledger {self.first_ledger + i} frame of {e - s} bytes")
        try:
            b = os.pread(self._fd, e - s, s)
        except OSError as err:
            raise StoreError(f"chunk {self.chunk_id}: reading {self.data_path}: {err.strerror}") from None
        if len(b) != e - s:
            raise CorruptStoreError(f"{self.data_path}: ledger {self.first_ledger + i} frame truncated")
        return b

    def _index_of(self, seq: int) -> int:
        i = seq - self.first_ledger
        if not 0 <= i < len(self._offl) - 1:
            raise NotFoundError(
                f"ledger {seq} is not in chunk {self.chunk_id} ({self.first_ledger}..{self.last_ledger})"
            )
        return i

    def get(self, seq: int) -> bytes:
        """The LedgerCloseMeta XDR of ledger ``seq``."""
        i = self._index_of(seq)
        return decompress_ledger(self._dctx, self._frame(i), f"{self.data_path} ledger {seq}")

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        """``(seq, lcm)`` for every ledger in order."""
        dctx = self._dctx
        for seq, frame in self.frames():
            yield seq, decompress_ledger(dctx, frame, f"{self.data_path} ledger {seq}")

    def frames(self) -> Iterator[tuple[int, memoryview]]:
        """``(seq, stored zstd frame)`` for every ledger in order (read ahead in large blocks; a
        frame is a view valid until the next one is requested)."""
        offl, fd = self._offl, self._fd
        if fd < 0:
            raise StoreError(f"chunk {self.chunk_id} reader is closed")
        block, bstart = b"", 0
        for i in range(len(offl) - 1):
            s, e = offl[i], offl[i + 1]
            if e - s > MAX_LEDGER_BYTES:
                raise CorruptStoreError(f"{self.data_path}: ledger {self.first_ledger + i} frame of {e - s} bytes")
            if e > bstart + len(block):  # refill: read ahead in large blocks
                if self._fd != fd:
                    raise StoreError(f"chunk {self.chunk_id} reader closed during iteration")
                want = max(e - s, min(READ_AHEAD, self.data_bytes - s))
                try:
                    block = os.pread(fd, want, s)
                except OSError as err:
                    raise StoreError(f"chunk {self.chunk_id}: reading {self.data_path}: {err.strerror}") from None
                bstart = s
                if len(block) < e - s:
                    raise CorruptStoreError(f"{self.data_path}: ledger {self.first_ledger + i} frame truncated")
            yield self.first_ledger + i, memoryview(block)[s - bstart : e - bstart]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ChunkReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: S110 - interpreter shutdown: nothing left to report to
            pass


def _has_content_checksum(frame: memoryview) -> bool:
    """The zstd frame header sets Content_Checksum_flag (bit 2 of the descriptor after the magic)."""
    return len(frame) > 4 and bool(frame[4] & 0x04)


def verify_chunk(
    ledgers_base: str | os.PathLike,
    chunk_id: int,
    *,
    expect_ledgers: int | None = CHUNK_SIZE,
    cancel: threading.Event | None = None,
    ledger_sequence: Callable[[bytes], int] | None = None,
) -> ChunkStats:
    """Check a finished chunk end to end; raise CorruptStoreError on any inconsistency.

    Index header and offsets (monotonic, last = data size, canonical width), every frame
    decompresses as exactly one zstd frame, and every ledger carries its expected sequence.
    ``expect_ledgers`` (default: a full chunk; None = any count) checks the ledger count.

    What proves a frame holds the ledger that was ingested: our writer sets zstd's content
    checksum (XXH64 of the ledger, computed from the bytes the source had fully scanned), which
    libzstd checks while decompressing -- so a frame that decodes reproduces exactly those bytes,
    and only its position needs checking: the sequence is read by a bounded parse of the header
    (``lcm.header_sequence``), no second scan of the whole ledger.  A frame without the checksum
    (written by another tool) is decoded and fully scanned (``lcm.ledger_sequence``), as is every
    frame when the caller passes its own ``ledger_sequence``.
    """
    seq_full = ledger_sequence or _scan_ledger_sequence
    with ChunkReader(ledgers_base, chunk_id) as r:
        where = str(r.index_path)
        if r.index_width != index_width(r.data_bytes):
            raise CorruptStoreError(
                f"{where}: offset width {r.index_width} for {r.data_bytes} data bytes "
                f"(canonical is {index_width(r.data_bytes)})"
            )
        if expect_ledgers is not None and len(r) != expect_ledgers:
            raise CorruptStoreError(f"{where}: holds {len(r)} ledgers, expected {expect_ledgers}")
        dctx = zstandard.ZstdDecompressor()  # checks content checksums (libzstd's default)
        raw = 0
        for seq, frame in r.frames():
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"verification of chunk {chunk_id} cancelled at ledger {seq}")
            lcm = decompress_ledger(dctx, frame, f"{r.data_path} ledger {seq}")
            seq_of = _header_sequence if ledger_sequence is None and _has_content_checksum(frame) else seq_full
            try:
                got = seq_of(lcm)
            except (XdrError, ValueError, IndexError, struct.error) as e:
                raise CorruptStoreError(f"{r.data_path}: ledger {seq} is not a LedgerCloseMeta ({e})") from None
            if got != seq:
                raise CorruptStoreError(
                    f"{r.data_path}: ledger at position {seq - r.first_ledger} has sequence {got}, expected {seq}"
                )
            raw += len(lcm)
        return ChunkStats(len(r), r.data_bytes, raw)


class LedgerStore:
    """``get_ledger(seq)`` across the finished chunks under ``ledgers_base``.

    Keeps an LRU of up to ``max_open`` chunk readers.  Thread-safe (calls are serialised).
    """

    def __init__(self, ledgers_base: str | os.PathLike, max_open: int = 8):
        if max_open < 1:
            raise ValueError(f"max_open must be >= 1, got {max_open}")
        self.ledgers_base = Path(ledgers_base)
        self.max_open = max_open
        self._readers: OrderedDict[int, ChunkReader] = OrderedDict()
        self._lock = threading.Lock()
        self._closed = False

    def _reader(self, chunk_id: int) -> ChunkReader:
        r = self._readers.get(chunk_id)
        if r is not None:
            self._readers.move_to_end(chunk_id)
            return r
        if not chunk_exists(self.ledgers_base, chunk_id):
            raise NotFoundError(f"chunk {chunk_id} does not exist under {self.ledgers_base}")
        r = ChunkReader(self.ledgers_base, chunk_id)
        self._readers[chunk_id] = r
        while len(self._readers) > self.max_open:
            _, old = self._readers.popitem(last=False)
            old.close()
        return r

    def get_ledger(self, seq: int) -> bytes:
        if seq < FIRST_LEDGER:
            raise NotFoundError(f"ledger {seq} precedes the first ledger {FIRST_LEDGER}")
        with self._lock:
            if self._closed:
                raise StoreError("ledger store is closed")
            return self._reader(chunk_of_ledger(seq)).get(seq)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            while self._readers:
                self._readers.popitem()[1].close()

    def __enter__(self) -> LedgerStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
