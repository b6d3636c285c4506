"""LFS ledger chunks (spec section 7): streaming writer, reader, verifier, cross-chunk store.

A chunk ``C`` holds ledgers ``C*10000+2 .. (C+1)*10000+1`` in two files (byte-exact with the
Go tooling, see docs/formats.md "LFS chunks")::

    {ledgers_base}/chunks/{C//1000:04d}/{C:06d}.data    zstd level-3 frame per ledger, concatenated
    {ledgers_base}/chunks/{C//1000:04d}/{C:06d}.index   8-byte header + N+1 little-endian offsets

Writing is streamed through two *partial* files in a work directory (the range's active
ledger store), which ``sync()`` makes durable so a checkpoint can record a ``ChunkProgress``;
after a crash ``ChunkWriter(..., resume=progress)`` continues from exactly that point
without recompressing.  ``finish()`` publishes ``.data`` then ``.index`` atomically; the
index is renamed last, so a chunk exists (``chunk_exists``) only once both are in place.
A finished chunk is never rewritten.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zstandard

from ..errors import (
    Cancelled,
    CorruptStoreError,
    LedgerSequenceError,
    NotFoundError,
    StoreError,
    UnsupportedFormatError,
    XdrError,
)
from ..fsutil import atomic_write, fsync_dir, io_errors, unlink_quiet, write_all
from ..ledgermath import CHUNK_SIZE, FIRST_LEDGER, chunk_first_ledger, chunk_last_ledger, chunk_of_ledger

log = logging.getLogger(__name__)

__all__ = [
    "ChunkProgress",
    "ChunkStats",
    "ChunkWriter",
    "ChunkReader",
    "LedgerStore",
    "chunk_paths",
    "chunk_exists",
    "verify_chunk",
    "remove_chunk",
    "index_width",
    "encode_index",
    "decode_index",
    "compress_ledger",
]

# --- format constants (spec section 7) -----------------------------------------------------

INDEX_VERSION = 1
INDEX_HEADER_SIZE = 8  # byte0 version, byte1 offset width, 6 zero bytes
# Width 4 stores offsets up to 2**32 - 1.  The spec says "width 8 only if the data exceeds
# 4 GiB"; a chunk of exactly 2**32 bytes needs its last offset (= data size = 2**32) stored,
# which does not fit in 32 bits, so the exact rule is: width 4 iff data size <= 2**32 - 1.
MAX_WIDTH4_OFFSET = 2**32 - 1
ZSTD_LEVEL = 3  # spec: zstd level 3, one frame per ledger, content size in the frame header
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# Largest decompressed LedgerCloseMeta we accept when reading.  Real pubnet ledgers are a few
# MiB at most; this bound only protects readers from hostile frames declaring huge sizes.
MAX_LEDGER_BYTES = 256 * 1024 * 1024

# --- partial-file format (ours, internal to resume) -----------------------------------------
# {C:06d}.offsets.partial = 16-byte header, then one 16-byte record per appended ledger:
#   header: magic "RBLFSOFP", u16 version, u16 record size, u32 chunk id      (little-endian)
#   record: u64 end offset of the ledger's frame in .data.partial, u32 uncompressed size,
#           u32 CRC-32 of the compressed frame (lets a resume prove the data partial is intact)
PARTIAL_MAGIC = b"RBLFSOFP"
PARTIAL_VERSION = 1
_PARTIAL_HEADER = struct.Struct("<8sHHI")
_RECORD = struct.Struct("<QII")
_RECORD_DTYPE = np.dtype([("end", "<u8"), ("raw", "<u4"), ("crc", "<u4")])
assert _PARTIAL_HEADER.size == 16 and _RECORD.size == 16 == _RECORD_DTYPE.itemsize

_DATA_BUFFER = 1 << 20  # userspace write buffer of the data partial (frames are ~10-500 KiB)
_RESUME_READ = 8 << 20  # read size while re-checking CRCs of a partial on resume


# --- small value types -------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkProgress:
    """Durable progress of a partial chunk, as returned by ``ChunkWriter.sync()``."""

    chunk_id: int
    ledgers: int  # ledgers appended and fsynced (first ledger of the chunk onwards)
    data_bytes: int  # bytes of .data.partial those ledgers occupy

    def encode(self) -> bytes:
        """16 bytes for the meta store: u32 chunk id, u32 ledgers, u64 data bytes (big-endian, spec section 4)."""
        return struct.pack(">IIQ", self.chunk_id, self.ledgers, self.data_bytes)

    @classmethod
    def decode(cls, b: bytes) -> ChunkProgress:
        if len(b) != 16:
            raise CorruptStoreError(f"chunk progress value must be 16 bytes, got {len(b)}")
        return cls(*struct.unpack(">IIQ", b))


@dataclass(frozen=True)
class ChunkStats:
    ledgers: int
    data_bytes: int  # size of .data (compressed)
    raw_bytes: int  # total uncompressed LedgerCloseMeta bytes


# --- paths -------------------------------------------------------------------------------------


def chunk_paths(ledgers_base: str | os.PathLike, chunk_id: int) -> tuple[Path, Path]:
    """``(data_path, index_path)`` of chunk ``chunk_id`` under ``ledgers_base``."""
    if chunk_id < 0:
        raise ValueError(f"chunk id must be >= 0, got {chunk_id}")
    d = Path(ledgers_base) / "chunks" / f"{chunk_id // 1000:04d}"
    return d / f"{chunk_id:06d}.data", d / f"{chunk_id:06d}.index"


def chunk_exists(ledgers_base: str | os.PathLike, chunk_id: int) -> bool:
    """True when both final files of the chunk are present (not verified)."""
    data, index = chunk_paths(ledgers_base, chunk_id)
    return data.is_file() and index.is_file()


def partial_paths(work_dir: str | os.PathLike, chunk_id: int) -> tuple[Path, Path]:
    """``(data_partial, offsets_partial)`` of a chunk being written in ``work_dir``."""
    w = Path(work_dir)
    return w / f"{chunk_id:06d}.data.partial", w / f"{chunk_id:06d}.offsets.partial"


def remove_chunk(ledgers_base: str | os.PathLike, chunk_id: int) -> None:
    """Delete a finished chunk (index first, so it stops existing atomically). Operator/repair use."""
    data, index = chunk_paths(ledgers_base, chunk_id)
    for p in (index, data):
        try:
            p.unlink()
        except FileNotFoundError:
            pass
    if data.parent.is_dir():
        _fsync_dir(data.parent)


# --- helpers -----------------------------------------------------------------------------------


def _io(path: Path | str, what: str):
    """Typed store errors for OS calls; a missing file on open propagates as FileNotFoundError."""
    return io_errors(path, what, passthrough_not_found=what.startswith("open"))


_fsync_dir = fsync_dir
_write_all = write_all
_unlink_quiet = unlink_quiet


def _atomic_write(path: Path, data: bytes) -> None:
    """temp (``name.tmp-PID``) -> fsync -> rename -> fsync dir."""
    atomic_write(path, data, hidden=False)


def compress_ledger(lcm: bytes, level: int = ZSTD_LEVEL) -> bytes:
    """The exact frame spec section 7 stores for one ledger (content size set, no checksum)."""
    return zstandard.ZstdCompressor(level=level).compress(lcm)


def index_width(data_size: int) -> int:
    """Offset width the index uses for a .data file of ``data_size`` bytes (4 or 8)."""
    if data_size < 0:
        raise ValueError(f"data size must be >= 0, got {data_size}")
    return 4 if data_size <= MAX_WIDTH4_OFFSET else 8


def encode_index(ends) -> bytes:
    """Index bytes for frames ending at ``ends`` (ascending, last = data size): header + [0] + ends."""
    ends = np.asarray(ends, dtype=np.uint64)
    data_size = int(ends[-1]) if len(ends) else 0
    width = index_width(data_size)
    offs = np.empty(len(ends) + 1, dtype="<u4" if width == 4 else "<u8")
    offs[0] = 0
    offs[1:] = ends
    return bytes([INDEX_VERSION, width, 0, 0, 0, 0, 0, 0]) + offs.tobytes()


def decode_index(raw: bytes, data_size: int, where: str = "index") -> np.ndarray:
    """Validate index bytes against a data file size; return the N+1 offsets as uint64.

    Unknown version -> UnsupportedFormatError; anything else inconsistent -> CorruptStoreError.
    """
    if len(raw) < INDEX_HEADER_SIZE:
        raise CorruptStoreError(f"{where}: {len(raw)} bytes, shorter than the {INDEX_HEADER_SIZE}-byte header")
    version, width = raw[0], raw[1]
    if version != INDEX_VERSION:
        raise UnsupportedFormatError(f"{where}: index version {version}, this build reads version {INDEX_VERSION}")
    if width not in (4, 8):
        raise CorruptStoreError(f"{where}: offset width {width}, must be 4 or 8")
    if any(raw[2:INDEX_HEADER_SIZE]):
        raise CorruptStoreError(f"{where}: reserved header bytes 2..7 are not zero")
    body = len(raw) - INDEX_HEADER_SIZE
    if body % width:
        raise CorruptStoreError(f"{where}: {body} offset bytes is not a multiple of width {width}")
    n = body // width - 1
    if n < 1:
        raise CorruptStoreError(f"{where}: holds {n} ledgers, at least 1 required")
    if n > CHUNK_SIZE:
        raise CorruptStoreError(f"{where}: holds {n} ledgers, a chunk holds at most {CHUNK_SIZE}")
    offs = np.frombuffer(raw, dtype="<u4" if width == 4 else "<u8", offset=INDEX_HEADER_SIZE).astype(np.uint64)
    if offs[0] != 0:
        raise CorruptStoreError(f"{where}: first offset is {int(offs[0])}, must be 0")
    if width == 8 and (offs > np.uint64(2**62)).any():  # keeps the signed diff below exact
        raise CorruptStoreError(f"{where}: offset beyond any plausible file size")
    steps = np.diff(offs.astype(np.int64))
    bad = np.flatnonzero(steps <= 0)
    if len(bad):
        i = int(bad[0])
        raise CorruptStoreError(
            f"{where}: offsets not strictly increasing at ledger #{i} ({int(offs[i])} -> {int(offs[i + 1])})"
        )
    if int(offs[-1]) != data_size:
        raise CorruptStoreError(f"{where}: last offset {int(offs[-1])} != data file size {data_size}")
    return offs


def _decompress_frame(dctx: zstandard.ZstdDecompressor, frame, where: str) -> bytes:
    """Decompress exactly one zstd frame, with or without content size; bounded output."""
    try:
        size = zstandard.frame_content_size(frame)
    except zstandard.ZstdError as e:
        raise CorruptStoreError(f"{where}: not a zstd frame ({e})") from None
    try:
        if size >= 0:
            if size > MAX_LEDGER_BYTES:
                raise CorruptStoreError(f"{where}: frame declares {size} bytes, above the {MAX_LEDGER_BYTES} limit")
            out = dctx.decompress(frame, allow_extra_data=False)
            if len(out) != size:
                raise CorruptStoreError(f"{where}: frame decompressed to {len(out)} bytes, header says {size}")
            return out
        # No content size in the header: stream, feeding small input slices so the output
        # can overshoot the limit by at most one slice's worth before we stop.
        obj = dctx.decompressobj()
        parts, total, mv = [], 0, memoryview(frame)
        for i in range(0, len(mv), 4096):
            out = obj.decompress(mv[i : i + 4096])
            if out:
                parts.append(out)
                total += len(out)
                if total > MAX_LEDGER_BYTES:
                    raise CorruptStoreError(f"{where}: frame decompresses beyond the {MAX_LEDGER_BYTES} limit")
            if obj.eof:
                if i + 4096 < len(mv) or obj.unused_data:
                    raise CorruptStoreError(f"{where}: bytes after the end of the zstd frame")
                break
        if not obj.eof:
            raise CorruptStoreError(f"{where}: truncated zstd frame")
        return b"".join(parts)
    except zstandard.ZstdError as e:
        raise CorruptStoreError(f"{where}: zstd frame does not decompress ({e})") from None


def _default_ledger_sequence() -> Callable[[bytes], int]:
    from ..lcm import ledger_sequence  # the native XDR scanner (owned by the "native" area)

    return ledger_sequence


# --- writer ------------------------------------------------------------------------------------


class ChunkWriter:
    """Streams the ledgers of one chunk into partial files, then publishes the chunk.

    ``append`` must receive the chunk's ledgers strictly in order starting at its first ledger
    (or at the first ledger after ``resume``).  ``sync()`` makes everything appended durable
    and returns the progress a checkpoint records.  If the chunk's final files already exist
    (a crash after ``finish`` but before the checkpoint), the writer is *complete*: appends are
    only sequence-checked, and ``finish()`` verifies the existing files instead of rewriting.
    Not thread-safe.
    """

    def __init__(
        self,
        ledgers_base: str | os.PathLike,
        chunk_id: int,
        work_dir: str | os.PathLike,
        resume: ChunkProgress | None = None,
        level: int = ZSTD_LEVEL,
    ):
        if chunk_id < 0:
            raise ValueError(f"chunk id must be >= 0, got {chunk_id}")
        self.ledgers_base = Path(ledgers_base)
        self.chunk_id = chunk_id
        self.work_dir = Path(work_dir)
        self.first_ledger = chunk_first_ledger(chunk_id)
        self.last_ledger = chunk_last_ledger(chunk_id)
        self.data_path, self.index_path = chunk_paths(ledgers_base, chunk_id)
        self.data_partial, self.offsets_partial = partial_paths(work_dir, chunk_id)
        self._cctx = zstandard.ZstdCompressor(level=level)
        self._compress = self._cctx.compress
        self._pack = _RECORD.pack
        self._data = None  # buffered file object of the data partial
        self._offs_fd = -1
        self._recs = bytearray()  # one _RECORD per appended ledger
        self._recs_synced = 0  # bytes of _recs already written to the offsets partial
        self._size = 0  # bytes of data appended
        self._raw = 0  # uncompressed bytes appended
        self._n = 0
        self._state = "open"  # open | complete | finished | aborted | closed | failed
        self._final_offsets: list[int] = []  # index offsets of an already finished chunk

        if resume is not None:
            if resume.chunk_id != chunk_id:
                raise ValueError(f"resume progress is for chunk {resume.chunk_id}, not chunk {chunk_id}")
            if not 0 <= resume.ledgers <= CHUNK_SIZE or resume.data_bytes < 0:
                raise ValueError(f"chunk {chunk_id}: invalid resume progress {resume}")

        if chunk_exists(ledgers_base, chunk_id):
            # Finished before a crash: never rewritten.  Leftover partials are garbage.
            with ChunkReader(ledgers_base, chunk_id) as r:  # structural check of the index
                self._final_offsets = r._offl
            self._state = "complete"
            self._n = resume.ledgers if resume else 0
            if self._n >= len(self._final_offsets) or (resume and resume.data_bytes != self._final_offsets[self._n]):
                raise CorruptStoreError(
                    f"chunk {chunk_id}: resume progress {resume} does not match the finished chunk "
                    f"({len(self._final_offsets) - 1} ledgers)"
                )
            self._size = self._final_offsets[self._n]
            for p in (self.data_partial, self.offsets_partial):
                _unlink_quiet(p)
            if self.work_dir.is_dir():
                _fsync_dir(self.work_dir)
            log.info("chunk %d already finished; appends will only be sequence-checked", chunk_id)
            return

        with _io(self.work_dir, "creating directory"):
            self.work_dir.mkdir(parents=True, exist_ok=True)
        if resume is not None and resume.ledgers > 0:
            self._reopen(resume)
        else:
            if resume is not None and resume.data_bytes:
                raise ValueError(f"chunk {chunk_id}: resume progress has 0 ledgers but {resume.data_bytes} bytes")
            self._create()

    # -- setup

    def _create(self) -> None:
        if self.data_partial.exists() or self.offsets_partial.exists():
            log.info("chunk %d: discarding partial files without usable progress", self.chunk_id)
        with _io(self.data_partial, "creating"):
            fd = os.open(self.data_partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._data = open(fd, "wb", buffering=_DATA_BUFFER)
        with _io(self.offsets_partial, "creating"):
            self._offs_fd = os.open(self.offsets_partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        _write_all(self._offs_fd, _PARTIAL_HEADER.pack(PARTIAL_MAGIC, PARTIAL_VERSION, _RECORD.size, self.chunk_id),
                   self.offsets_partial)
        with _io(self.offsets_partial, "fsync"):
            os.fsync(self._offs_fd)
        _fsync_dir(self.work_dir)

    def _reopen(self, p: ChunkProgress) -> None:
        c, where = self.chunk_id, f"chunk {self.chunk_id} partial"
        want_offs = _PARTIAL_HEADER.size + p.ledgers * _RECORD.size
        try:
            dsize = self.data_partial.stat().st_size
            osize = self.offsets_partial.stat().st_size
        except FileNotFoundError as e:
            raise CorruptStoreError(f"{where}: {e.filename} is missing but progress records {p.ledgers} ledgers") \
                from None
        if dsize < p.data_bytes:
            raise CorruptStoreError(f"{where}: {self.data_partial} has {dsize} bytes, progress records {p.data_bytes}")
        if osize < want_offs:
            raise CorruptStoreError(
                f"{where}: {self.offsets_partial} has {osize} bytes, progress records {p.ledgers} ledgers"
            )
        with _io(self.offsets_partial, "reading"), open(self.offsets_partial, "rb") as f:
            raw = f.read(want_offs)
        magic, version, recsize, cid = _PARTIAL_HEADER.unpack_from(raw)
        if magic != PARTIAL_MAGIC:
            raise CorruptStoreError(f"{where}: {self.offsets_partial} has a bad magic")
        if version != PARTIAL_VERSION or recsize != _RECORD.size:
            raise UnsupportedFormatError(f"{where}: {self.offsets_partial} version {version}/record size {recsize}")
        if cid != c:
            raise CorruptStoreError(f"{where}: {self.offsets_partial} belongs to chunk {cid}")
        recs = np.frombuffer(raw, dtype=_RECORD_DTYPE, offset=_PARTIAL_HEADER.size)
        ends = recs["end"]
        if (ends > np.uint64(2**62)).any():
            raise CorruptStoreError(f"{where}: recorded offsets beyond any plausible file size")
        ends = ends.astype(np.int64)
        if ends[0] <= 0 or (np.diff(ends) <= 0).any() or int(ends[-1]) != p.data_bytes:
            raise CorruptStoreError(f"{where}: recorded offsets disagree with progress ({p.data_bytes} bytes)")
        # Re-check every frame's CRC: proves the data partial holds exactly what we wrote.
        crcs = recs["crc"].tolist()
        endl = ends.tolist()
        with _io(self.data_partial, "reading"), open(self.data_partial, "rb", buffering=0) as f:
            buf, base, s = bytearray(), 0, 0  # buf holds file bytes [base, base + len(buf))
            for i, e in enumerate(endl):
                while base + len(buf) < e:
                    more = f.read(max(_RESUME_READ, e - base - len(buf)))
                    if not more:
                        raise CorruptStoreError(f"{where}: {self.data_partial} shrank while resuming")
                    buf += more
                with memoryview(buf) as mv:
                    ok = zlib.crc32(mv[s - base : e - base]) == crcs[i]
                if not ok:
                    raise CorruptStoreError(
                        f"{where}: ledger {self.first_ledger + i} frame fails its CRC in {self.data_partial}"
                    )
                s = e
                if s - base >= _RESUME_READ:  # drop consumed bytes
                    del buf[: s - base]
                    base = s
        # Truncate to exactly the recorded progress and continue appending from there.
        with _io(self.data_partial, "truncating"):
            os.truncate(self.data_partial, p.data_bytes)
            os.truncate(self.offsets_partial, want_offs)
        with _io(self.data_partial, "opening"):
            fd = os.open(self.data_partial, os.O_WRONLY | os.O_APPEND)
        self._data = open(fd, "ab", buffering=_DATA_BUFFER)
        with _io(self.offsets_partial, "opening"):
            self._offs_fd = os.open(self.offsets_partial, os.O_WRONLY | os.O_APPEND)
        with _io(self.data_partial, "fsync"):
            os.fsync(self._data.fileno())
            os.fsync(self._offs_fd)
        self._recs = bytearray(raw[_PARTIAL_HEADER.size :])
        self._recs_synced = len(self._recs)
        self._n = p.ledgers
        self._size = p.data_bytes
        self._raw = int(recs["raw"].sum(dtype=np.uint64))
        log.info("chunk %d: resumed at ledger %d (%d bytes)", c, self.next_ledger, p.data_bytes)

    # -- properties

    @property
    def next_ledger(self) -> int:
        """The sequence ``append`` expects next."""
        return self.first_ledger + self._n

    @property
    def ledgers(self) -> int:
        return self._n

    @property
    def complete(self) -> bool:
        """True when the chunk was already finished on disk before this writer was created."""
        return self._state == "complete"

    # -- writing

    def append(self, seq: int, lcm: bytes) -> None:
        """Compress and append ledger ``seq`` (must be ``next_ledger``)."""
        if seq != self.first_ledger + self._n:
            self._check_open()
            raise LedgerSequenceError(
                f"chunk {self.chunk_id}: got ledger {seq}, expected {self.first_ledger + self._n}"
            )
        if self._n >= CHUNK_SIZE:
            raise LedgerSequenceError(f"chunk {self.chunk_id}: ledger {seq} is past its last ledger {self.last_ledger}")
        st = self._state
        if st == "open":
            frame = self._compress(lcm)
            try:
                self._data.write(frame)
            except OSError as e:
                self._state = "failed"
                with _io(self.data_partial, "writing"):
                    raise e
            self._size += len(frame)
            self._raw += len(lcm)
            self._recs += self._pack(self._size, len(lcm), zlib.crc32(frame))
            self._n += 1
        elif st == "complete":
            if self._n + 1 >= len(self._final_offsets):
                raise LedgerSequenceError(
                    f"chunk {self.chunk_id}: ledger {seq} is past the end of the finished chunk"
                )
            self._n += 1
            self._size = self._final_offsets[self._n]
        else:
            self._check_open()

    def _check_open(self) -> None:
        if self._state not in ("open", "complete"):
            raise StoreError(f"chunk {self.chunk_id} writer is {self._state}")

    def sync(self) -> ChunkProgress:
        """Flush and fsync the partial files; return the durable progress."""
        self._check_open()
        if self._state == "open":
            try:
                # fdatasync: the partials' data and sizes must be durable, their mtimes need not.
                with _io(self.data_partial, "syncing"):
                    self._data.flush()
                    os.fdatasync(self._data.fileno())
                if len(self._recs) > self._recs_synced:
                    _write_all(self._offs_fd, memoryview(self._recs)[self._recs_synced :], self.offsets_partial)
                    with _io(self.offsets_partial, "fsync"):
                        os.fdatasync(self._offs_fd)
                    self._recs_synced = len(self._recs)
            except StoreError:
                self._state = "failed"
                raise
        return ChunkProgress(self.chunk_id, self._n, self._size)

    def finish(self, allow_partial: bool = False, verify: bool = False) -> ChunkStats:
        """Publish ``.data`` and ``.index`` atomically; remove the partials.

        The chunk must hold all 10,000 ledgers unless ``allow_partial``.  ``verify`` re-reads
        the published chunk with ``verify_chunk`` (always done when the chunk already existed).
        """
        self._check_open()
        if not allow_partial and self._n != CHUNK_SIZE:
            raise StoreError(
                f"chunk {self.chunk_id}: finish() after {self._n} ledgers (next {self.next_ledger}), "
                f"a chunk holds {CHUNK_SIZE}"
            )
        if self._n == 0:
            raise StoreError(f"chunk {self.chunk_id}: finish() with no ledgers")
        if self._state == "complete":
            stats = verify_chunk(self.ledgers_base, self.chunk_id, expect_ledgers=None)
            if stats.ledgers != self._n:
                raise CorruptStoreError(
                    f"chunk {self.chunk_id}: existing chunk holds {stats.ledgers} ledgers, writer saw {self._n}"
                )
            self._state = "finished"
            log.info("chunk %d already finished and verified; not rewritten", self.chunk_id)
            return stats
        try:
            self.sync()
            self._data.close()
            os.close(self._offs_fd)
            self._data, self._offs_fd = None, -1
            self._publish()
        except BaseException:
            self._state = "failed"
            raise
        self._state = "finished"
        stats = ChunkStats(self._n, self._size, self._raw)
        if verify:
            got = verify_chunk(self.ledgers_base, self.chunk_id, expect_ledgers=self._n)
            if got != stats:
                raise CorruptStoreError(f"chunk {self.chunk_id}: verify found {got}, writer wrote {stats}")
        log.debug("chunk %d finished: %s", self.chunk_id, stats)
        return stats

    def _publish(self) -> None:
        final_dir = self.data_path.parent
        with _io(final_dir, "creating directory"):
            final_dir.mkdir(parents=True, exist_ok=True)
        if chunk_exists(self.ledgers_base, self.chunk_id):  # published by someone meanwhile
            raise StoreError(f"chunk {self.chunk_id}: final files appeared while writing; refusing to replace")
        index = encode_index(np.frombuffer(self._recs, dtype=_RECORD_DTYPE)["end"])
        tmp = self.data_path.with_name(f"{self.data_path.name}.tmp-{os.getpid()}")
        _unlink_quiet(tmp)
        if self.data_path.exists():
            # An orphan .data from an interrupted publish (no index, so not a chunk).  It may be
            # a hard link to our own partial, and rename() between two links of one file is a
            # no-op, so drop it first.
            log.info("chunk %d: replacing orphan %s left by an interrupted publish", self.chunk_id, self.data_path)
            _unlink_quiet(self.data_path)
        # Data: hard-link the (already fsynced) partial under a temp name, then rename.  The
        # partial stays in place until the index is published, so a crash at any point leaves
        # either a resumable partial or a complete chunk.  Other filesystem: copy + fsync.
        try:
            os.link(self.data_partial, tmp)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                with _io(tmp, "linking"):
                    raise
            try:
                with _io(tmp, "copying"):
                    with open(self.data_partial, "rb") as src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst, 8 << 20)
                        dst.flush()
                        os.fsync(dst.fileno())
            except BaseException:
                _unlink_quiet(tmp)
                raise
        with _io(self.data_path, "renaming into place"):
            os.replace(tmp, self.data_path)
        _fsync_dir(final_dir)
        _atomic_write(self.index_path, index)  # the chunk now exists
        for p in (self.data_partial, self.offsets_partial):
            _unlink_quiet(p)
        _fsync_dir(self.work_dir)

    def abort(self) -> None:
        """Drop everything written for this chunk (partials removed). Final files are untouched."""
        self._close_files()
        if self._state in ("open", "failed", "closed"):
            for p in (self.data_partial, self.offsets_partial):
                _unlink_quiet(p)
            if self.work_dir.is_dir():
                _fsync_dir(self.work_dir)
        if self._state != "finished":
            self._state = "aborted"

    def _close_files(self) -> None:
        if self._data is not None:
            try:
                self._data.close()
            except OSError:
                pass  # buffered bytes beyond the last sync are not part of any progress
            self._data = None
        if self._offs_fd >= 0:
            os.close(self._offs_fd)
            self._offs_fd = -1

    def close(self) -> None:
        """Release files.  Partial files stay for a later resume (their synced part)."""
        self._close_files()
        if self._state in ("open", "complete", "failed"):
            self._state = "closed"

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self._close_files()
        except Exception:
            pass


# --- reader ------------------------------------------------------------------------------------


class ChunkReader:
    """Random access and sequential scan of one finished chunk (pread based; not thread-safe)."""

    def __init__(self, ledgers_base: str | os.PathLike, chunk_id: int):
        self.chunk_id = chunk_id
        self.data_path, self.index_path = chunk_paths(ledgers_base, chunk_id)
        self._fd = -1
        try:
            self._fd = os.open(self.data_path, os.O_RDONLY)
            with open(self.index_path, "rb") as f:
                # bounded read: a valid index is at most header + (CHUNK_SIZE+1)*8 bytes
                raw = f.read(INDEX_HEADER_SIZE + (CHUNK_SIZE + 1) * 8 + 1)
        except FileNotFoundError as e:
            self.close()
            raise NotFoundError(f"chunk {chunk_id}: {e.filename} does not exist") from None
        except OSError as e:
            self.close()
            raise StoreError(f"chunk {chunk_id}: cannot open {e.filename}: {e.strerror}") from None
        try:
            self.data_bytes = os.fstat(self._fd).st_size
            self.index_width = raw[1] if len(raw) > 1 else 0
            self._offs = decode_index(raw, self.data_bytes, where=str(self.index_path))
        except BaseException:
            self.close()
            raise
        self._offl = self._offs.tolist()  # python ints: faster scalar access in get()
        self.first_ledger = chunk_first_ledger(chunk_id)
        self.last_ledger = self.first_ledger + len(self._offl) - 2
        self._dctx = zstandard.ZstdDecompressor()

    def __len__(self) -> int:
        return len(self._offl) - 1

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

    def get_frame(self, seq: int) -> bytes:
        """The stored (compressed) zstd frame of ledger ``seq``."""
        return self._frame(self._index_of(seq))

    def get(self, seq: int) -> bytes:
        """The LedgerCloseMeta XDR of ledger ``seq``."""
        i = self._index_of(seq)
        return _decompress_frame(self._dctx, self._frame(i), f"{self.data_path} ledger {seq}")

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        """``(seq, lcm)`` for every ledger in order."""
        offl, fd, dctx = self._offl, self._fd, self._dctx
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
                want = max(e - s, min(_RESUME_READ, self.data_bytes - s))
                try:
                    block = os.pread(fd, want, s)
                except OSError as err:
                    raise StoreError(f"chunk {self.chunk_id}: reading {self.data_path}: {err.strerror}") from None
                bstart = s
                if len(block) < e - s:
                    raise CorruptStoreError(f"{self.data_path}: ledger {self.first_ledger + i} frame truncated")
            seq = self.first_ledger + i
            frame = memoryview(block)[s - bstart : e - bstart]
            yield seq, _decompress_frame(dctx, frame, f"{self.data_path} ledger {seq}")

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
        except Exception:
            pass


# --- verification ------------------------------------------------------------------------------


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
    """
    seq_of = ledger_sequence or _default_ledger_sequence()
    with ChunkReader(ledgers_base, chunk_id) as r:
        where = str(r.index_path)
        if r.index_width != index_width(r.data_bytes):
            raise CorruptStoreError(f"{where}: offset width {r.index_width} for {r.data_bytes} data bytes "
                                    f"(canonical is {index_width(r.data_bytes)})")
        if expect_ledgers is not None and len(r) != expect_ledgers:
            raise CorruptStoreError(f"{where}: holds {len(r)} ledgers, expected {expect_ledgers}")
        raw = 0
        for seq, lcm in r:
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"verification of chunk {chunk_id} cancelled at ledger {seq}")
            try:
                got = seq_of(lcm)
            except (XdrError, ValueError, IndexError, struct.error) as e:
                raise CorruptStoreError(f"{r.data_path}: ledger {seq} is not a LedgerCloseMeta ({e})") from None
            if got != seq:
                raise CorruptStoreError(f"{r.data_path}: ledger at position {seq - r.first_ledger} has sequence "
                                        f"{got}, expected {seq}")
            raw += len(lcm)
        return ChunkStats(len(r), r.data_bytes, raw)


# --- cross-chunk store -------------------------------------------------------------------------


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
