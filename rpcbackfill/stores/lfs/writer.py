"""Writing one LFS chunk: streamed through partial files, resumable, published atomically.

Writing goes through two *partial* files in a work directory (the range's active ledger
store; format in ``format.py``), which ``sync()`` makes durable so a checkpoint can record a
``ChunkProgress``; after a crash ``ChunkWriter(..., resume=progress)`` continues from exactly
that point without recompressing.  ``finish()`` publishes ``.data`` then ``.index``
atomically; the index is renamed last, so a chunk exists (``chunk_exists``) only once both
are in place.  A finished chunk is never rewritten.
"""

from __future__ import annotations

import enum
import errno
import logging
import mmap
import os
import shutil
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import zstandard

from ...errors import (
    CorruptStoreError,
    LedgerSequenceError,
    StoreError,
    UnsupportedFormatError,
)
from ...fsutil import (
    atomic_write,
    fsync_dir,
    io_errors,
    temp_path,
    unlink_quiet,
    write_all,
)
from ...ledgermath import CHUNK_SIZE, chunk_first_ledger, chunk_last_ledger
from ...paths import chunk_partial_paths, chunk_paths
from ...records import ChunkProgress
from ...zstdframe import ZSTD_LEVEL
from .format import (
    MAX_PLAUSIBLE_OFFSET,
    PARTIAL_HEADER,
    PARTIAL_MAGIC,
    PARTIAL_RECORD,
    PARTIAL_RECORD_DTYPE,
    PARTIAL_VERSION,
    ZSTD_CHECKSUM,
    ChunkStats,
    chunk_exists,
    encode_index,
)
from .reader import ChunkReader, verify_chunk

log = logging.getLogger(__name__)

_DATA_BUFFER = 1 << 20  # userspace write buffer of the data partial (frames are ~10-500 KiB)
# append_many compresses a batch in one multi_compress_to_buffer call up to this many input bytes
# (sparse ledgers: the per-call overhead matters); bigger batches compress ledger by ledger, so
# no batch-sized output buffer is allocated (and faulted in) for dense ledgers.
_MULTI_MAX_BYTES = 4 << 20
# check_frame_crcs releases the mapped pages it has checked every this many bytes
_CRC_WINDOW = 32 << 20


def check_frame_crcs(path: Path, ends: Sequence[int], crcs: Sequence[int], first_ledger: int, where: str) -> None:
    """Frame ``i`` of the data file ``path`` (bytes ``ends[i-1]..ends[i]``, from 0) has CRC-32
    ``crcs[i]``.  The file is mapped, not copied: one slice per frame.  Raises ``CorruptStoreError``."""
    if not ends:
        return
    crc32 = zlib.crc32
    with _io(path, "reading"), open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        if size < ends[-1]:
            raise CorruptStoreError(f"{where}: {path} has {size} bytes, {ends[-1]} were written")
        with mmap.mmap(f.fileno(), ends[-1], access=mmap.ACCESS_READ) as m, memoryview(m) as mv:
            s = dropped = 0
            for i, end in enumerate(ends):
                if crc32(mv[s:end]) != crcs[i]:
                    raise CorruptStoreError(f"{where}: ledger {first_ledger + i} frame fails its CRC in {path}")
                s = end
                if end - dropped >= _CRC_WINDOW:
                    # the pages already checked leave this process (they stay in the page cache):
                    # mapped whole, a dense chunk's ~1.5 GB would count in the worker's RSS
                    upto = end - end % mmap.PAGESIZE
                    m.madvise(mmap.MADV_DONTNEED, dropped, upto - dropped)
                    dropped = upto


def _compress_batch(cctx: zstandard.ZstdCompressor, lcms: Sequence[bytes | memoryview], lens: list[int]) -> list:
    """The frames of ``lcms`` (byte-identical to one ``cctx.compress`` each): runs of small ledgers
    of up to ``_MULTI_MAX_BYTES`` together go through one ``multi_compress_to_buffer`` call
    (measured on 5 tx/ledger: 48 us per ledger against 60 us one call each); a ledger larger
    than that is compressed on its own."""
    out: list = []
    i, n = 0, len(lcms)
    multi, one = cctx.multi_compress_to_buffer, cctx.compress
    while i < n:
        j, size = i, 0
        while j < n and size + lens[j] <= _MULTI_MAX_BYTES:
            size += lens[j]
            j += 1
        if j - i >= 2:
            out.extend(multi(lcms[i:j]))  # type: ignore[arg-type]  # any buffers
            i = j
        else:
            out.append(one(lcms[i]))
            i += 1
    return out


class _State(enum.Enum):
    """Life cycle of a ``ChunkWriter`` (the value is what error messages show)."""

    OPEN = "open"  # partial files open, appends compress and write
    COMPLETE = "complete"  # the chunk was already finished on disk: appends are only sequence-checked
    FINISHED = "finished"  # published (or verified, when COMPLETE) by finish()
    ABORTED = "aborted"  # abort(): partials removed
    CLOSED = "closed"  # close(): files released, synced partials kept for a resume
    FAILED = "failed"  # an I/O error or an interrupted publish: only abort()/close() remain


_USABLE = (_State.OPEN, _State.COMPLETE)


def _io(path: Path | str, what: str):
    """Typed store errors for OS calls; a missing file on open propagates as FileNotFoundError."""
    return io_errors(path, what, passthrough_not_found=what.startswith("open"))


def remove_chunk(ledgers_base: str | os.PathLike, chunk_id: int) -> None:
    """Delete a finished chunk (index first, so it stops existing atomically). Operator/repair use."""
    data, index = chunk_paths(ledgers_base, chunk_id)
    for p in (index, data):
        unlink_quiet(p)
    if data.parent.is_dir():
        fsync_dir(data.parent)


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
        check_frames: bool = False,
    ):
        if chunk_id < 0:
            raise ValueError(f"chunk id must be >= 0, got {chunk_id}")
        self.ledgers_base = Path(ledgers_base)
        self.chunk_id = chunk_id
        self.work_dir = Path(work_dir)
        self.first_ledger = chunk_first_ledger(chunk_id)
        self.last_ledger = chunk_last_ledger(chunk_id)
        self.data_path, self.index_path = chunk_paths(ledgers_base, chunk_id)
        self.data_partial, self.offsets_partial = chunk_partial_paths(work_dir, chunk_id)
        self._cctx = zstandard.ZstdCompressor(level=level, write_checksum=ZSTD_CHECKSUM)
        self._compress = self._cctx.compress
        # check_frames: every frame is decoded right after it is compressed, while it is hot in
        # the CPU cache (zstd checks its content checksum, computed over the ingested bytes, and
        # the decoded length must be the ingested length); finish() then proves the published
        # .data holds exactly those frames (CRC-32 of each, from the records) and the .index
        # their offsets.  Together: every stored frame decodes to the bytes ingested.
        self._check_frames = check_frames
        self._decompress = zstandard.ZstdDecompressor().decompress
        self._pack = PARTIAL_RECORD.pack
        self._data: BinaryIO | None = None  # buffered file object of the data partial (open state)
        self._offs_fd = -1
        self._recs = bytearray()  # one PARTIAL_RECORD per appended ledger
        self._recs_synced = 0  # bytes of _recs already written to the offsets partial
        self._size = 0  # bytes of data appended
        self._raw = 0  # uncompressed bytes appended
        self._n = 0
        self._state = _State.OPEN
        self._final_offsets: list[int] = []  # index offsets of an already finished chunk

        if resume is not None:
            if resume.chunk_id != chunk_id:
                raise ValueError(f"resume progress is for chunk {resume.chunk_id}, not chunk {chunk_id}")
            if not 0 <= resume.ledgers <= CHUNK_SIZE or resume.data_bytes < 0:
                raise ValueError(f"chunk {chunk_id}: invalid resume progress {resume}")

        if chunk_exists(ledgers_base, chunk_id):
            # Finished before a crash: never rewritten.  Leftover partials are garbage.
            with ChunkReader(ledgers_base, chunk_id) as r:  # structural check of the index
                self._final_offsets = r.frame_offsets
            self._state = _State.COMPLETE
            self._n = resume.ledgers if resume else 0
            if self._n >= len(self._final_offsets) or (resume and resume.data_bytes != self._final_offsets[self._n]):
                raise CorruptStoreError(
                    f"chunk {chunk_id}: resume progress {resume} does not match the finished chunk "
                    f"({len(self._final_offsets) - 1} ledgers)"
                )
            self._size = self._final_offsets[self._n]
            self._remove_partials()
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
        write_all(
            self._offs_fd,
            PARTIAL_HEADER.pack(PARTIAL_MAGIC, PARTIAL_VERSION, PARTIAL_RECORD.size, self.chunk_id),
            self.offsets_partial,
        )
        with _io(self.offsets_partial, "fsync"):
            os.fsync(self._offs_fd)
        fsync_dir(self.work_dir)

    def _reopen(self, p: ChunkProgress) -> None:
        c, where = self.chunk_id, f"chunk {self.chunk_id} partial"
        want_offs = PARTIAL_HEADER.size + p.ledgers * PARTIAL_RECORD.size
        try:
            dsize = self.data_partial.stat().st_size
            osize = self.offsets_partial.stat().st_size
        except FileNotFoundError as e:
            raise CorruptStoreError(
                f"{where}: {e.filename} is missing but progress records {p.ledgers} ledgers"
            ) from None
        if dsize < p.data_bytes:
            raise CorruptStoreError(f"{where}: {self.data_partial} has {dsize} bytes, progress records {p.data_bytes}")
        if osize < want_offs:
            raise CorruptStoreError(
                f"{where}: {self.offsets_partial} has {osize} bytes, progress records {p.ledgers} ledgers"
            )
        with _io(self.offsets_partial, "reading"), open(self.offsets_partial, "rb") as f:
            raw = f.read(want_offs)
        magic, version, recsize, cid = PARTIAL_HEADER.unpack_from(raw)
        if magic != PARTIAL_MAGIC:
            raise CorruptStoreError(f"{where}: {self.offsets_partial} has a bad magic")
        if version != PARTIAL_VERSION or recsize != PARTIAL_RECORD.size:
            raise UnsupportedFormatError(f"{where}: {self.offsets_partial} version {version}/record size {recsize}")
        if cid != c:
            raise CorruptStoreError(f"{where}: {self.offsets_partial} belongs to chunk {cid}")
        recs = np.frombuffer(raw, dtype=PARTIAL_RECORD_DTYPE, offset=PARTIAL_HEADER.size)
        ends = recs["end"]
        if (ends > np.uint64(MAX_PLAUSIBLE_OFFSET)).any():  # keeps the int64 diff below exact
            raise CorruptStoreError(f"{where}: recorded offsets beyond any plausible file size")
        ends = ends.astype(np.int64)
        if ends[0] <= 0 or (np.diff(ends) <= 0).any() or int(ends[-1]) != p.data_bytes:
            raise CorruptStoreError(f"{where}: recorded offsets disagree with progress ({p.data_bytes} bytes)")
        # Re-check every frame's CRC: proves the data partial holds exactly what we wrote.
        check_frame_crcs(self.data_partial, ends.tolist(), recs["crc"].tolist(), self.first_ledger, where)
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
            os.fsync(fd)
            os.fsync(self._offs_fd)
        self._recs = bytearray(raw[PARTIAL_HEADER.size :])
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
        return self._state is _State.COMPLETE

    # -- writing

    def append(self, seq: int, lcm: bytes | memoryview) -> None:
        """Compress and append ledger ``seq`` (must be ``next_ledger``)."""
        if seq != self.first_ledger + self._n:
            self._check_open()
            raise LedgerSequenceError(
                f"chunk {self.chunk_id}: got ledger {seq}, expected {self.first_ledger + self._n}"
            )
        if self._n >= CHUNK_SIZE:
            raise LedgerSequenceError(f"chunk {self.chunk_id}: ledger {seq} is past its last ledger {self.last_ledger}")
        st = self._state
        if st is _State.OPEN:
            frame = self._compress(lcm)
            if self._check_frames:
                self._check_decoded(seq, (frame,), (len(lcm),))
            try:
                self._data.write(frame)  # type: ignore[union-attr]  # open state: the file is open
            except OSError as e:
                self._state = _State.FAILED
                with _io(self.data_partial, "writing"):
                    raise e
            self._size += len(frame)
            self._raw += len(lcm)
            self._recs += self._pack(self._size, len(lcm), zlib.crc32(frame))
            self._n += 1
        elif st is _State.COMPLETE:
            if self._n + 1 >= len(self._final_offsets):
                raise LedgerSequenceError(f"chunk {self.chunk_id}: ledger {seq} is past the end of the finished chunk")
            self._n += 1
            self._size = self._final_offsets[self._n]
        else:
            self._check_open()

    def append_many(self, seq: int, lcms: Sequence[bytes | memoryview]) -> None:
        """Append ledgers ``seq, seq + 1, ...`` (``seq`` must be ``next_ledger``; all of them must
        belong to this chunk): the same bytes and records as one ``append`` per ledger, with one
        compression call for the whole batch (``ZstdCompressor.multi_compress_to_buffer``, byte-
        identical frames) and no per-ledger Python call."""
        n = len(lcms)
        if n == 0:
            return
        if seq != self.first_ledger + self._n:
            self._check_open()
            raise LedgerSequenceError(
                f"chunk {self.chunk_id}: got ledger {seq}, expected {self.first_ledger + self._n}"
            )
        if self._n + n > CHUNK_SIZE:
            raise LedgerSequenceError(
                f"chunk {self.chunk_id}: ledgers {seq}-{seq + n - 1} go past its last ledger {self.last_ledger}"
            )
        st = self._state
        if st is _State.OPEN:
            lens = [len(x) for x in lcms]
            frames: Any = _compress_batch(self._cctx, lcms, lens)
            if self._check_frames:
                self._check_decoded(seq, frames, lens)
            crc32 = zlib.crc32
            rec = np.empty(n, dtype=PARTIAL_RECORD_DTYPE)  # the batch's records, built column-wise
            ends = np.cumsum([len(f) for f in frames], dtype=np.uint64)
            ends += np.uint64(self._size)
            rec["end"] = ends
            rec["raw"] = lens
            rec["crc"] = [crc32(f) for f in frames]
            try:
                self._data.writelines(frames)  # type: ignore[union-attr]  # open state: the file is open
            except OSError as e:
                self._state = _State.FAILED
                with _io(self.data_partial, "writing"):
                    raise e
            self._recs += rec.tobytes()
            self._size, self._raw = int(ends[-1]), self._raw + sum(lens)
            self._n += n
        elif st is _State.COMPLETE:
            if self._n + n >= len(self._final_offsets):
                raise LedgerSequenceError(
                    f"chunk {self.chunk_id}: ledger {seq + n - 1} is past the end of the finished chunk"
                )
            self._n += n
            self._size = self._final_offsets[self._n]
        else:
            self._check_open()

    def _check_decoded(self, seq: int, frames: Any, lens: Sequence[int]) -> None:
        """Each of ``frames`` (just compressed, ledgers ``seq..``) decodes, checksum verified, to
        as many bytes as were ingested for its ledger."""
        decompress = self._decompress
        for i, m in enumerate(lens):
            try:
                n = len(decompress(frames[i]))
            except zstandard.ZstdError as e:
                self._state = _State.FAILED
                raise CorruptStoreError(
                    f"chunk {self.chunk_id}: ledger {seq + i}: its new frame does not decode ({e})"
                ) from None
            if n != m:
                self._state = _State.FAILED
                raise CorruptStoreError(
                    f"chunk {self.chunk_id}: ledger {seq + i}: its new frame decodes to {n} bytes, ingested {m}"
                )

    def _check_published(self) -> None:
        """The published .index holds the offsets written and the .data the very frames that
        ``_check_decoded`` decoded (CRC-32 of each against the writer's records)."""
        recs = np.frombuffer(self._recs, dtype=PARTIAL_RECORD_DTYPE)
        ends = recs["end"].tolist()
        where = f"chunk {self.chunk_id}"
        with ChunkReader(self.ledgers_base, self.chunk_id) as r:  # structural check of the index
            if r.first_ledger != self.first_ledger or r.frame_offsets[1:] != ends:
                raise CorruptStoreError(f"{where}: the published {self.index_path} differs from the offsets written")
        check_frame_crcs(self.data_path, ends, recs["crc"].tolist(), self.first_ledger, where)

    def _check_open(self) -> None:
        if self._state not in _USABLE:
            raise StoreError(f"chunk {self.chunk_id} writer is {self._state.value}")

    def sync(self) -> ChunkProgress:
        """Flush and fsync the partial files; return the durable progress."""
        self._check_open()
        if self._state is _State.OPEN:
            try:
                # fdatasync: the partials' data and sizes must be durable, their mtimes need not.
                with _io(self.data_partial, "syncing"):
                    self._data.flush()  # type: ignore[union-attr]  # open state: the file is open
                    os.fdatasync(self._data.fileno())  # type: ignore[union-attr]
                if len(self._recs) > self._recs_synced:
                    write_all(self._offs_fd, memoryview(self._recs)[self._recs_synced :], self.offsets_partial)
                    with _io(self.offsets_partial, "fsync"):
                        os.fdatasync(self._offs_fd)
                    self._recs_synced = len(self._recs)
            except StoreError:
                self._state = _State.FAILED
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
        if self._state is _State.COMPLETE:
            stats = verify_chunk(self.ledgers_base, self.chunk_id, expect_ledgers=None)
            if stats.ledgers != self._n:
                raise CorruptStoreError(
                    f"chunk {self.chunk_id}: existing chunk holds {stats.ledgers} ledgers, writer saw {self._n}"
                )
            self._state = _State.FINISHED
            log.info("chunk %d already finished and verified; not rewritten", self.chunk_id)
            return stats
        try:
            self.sync()
            self._data.close()  # type: ignore[union-attr]  # open state: the file is open
            os.close(self._offs_fd)
            self._data, self._offs_fd = None, -1
            self._publish()
        except BaseException:
            self._state = _State.FAILED
            raise
        self._state = _State.FINISHED
        stats = ChunkStats(self._n, self._size, self._raw)
        if self._check_frames:
            self._check_published()
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
        index = encode_index(np.frombuffer(self._recs, dtype=PARTIAL_RECORD_DTYPE)["end"])
        tmp = temp_path(self.data_path)
        unlink_quiet(tmp)
        if self.data_path.exists():
            # An orphan .data from an interrupted publish (no index, so not a chunk).  It may be
            # a hard link to our own partial, and rename() between two links of one file is a
            # no-op, so drop it first.
            log.info("chunk %d: replacing orphan %s left by an interrupted publish", self.chunk_id, self.data_path)
            unlink_quiet(self.data_path)
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
                unlink_quiet(tmp)
                raise
        with _io(self.data_path, "renaming into place"):
            os.replace(tmp, self.data_path)
        fsync_dir(final_dir)
        atomic_write(self.index_path, index)  # the chunk now exists
        self._remove_partials()

    def _remove_partials(self) -> None:
        """Delete both partial files (if present), durably."""
        for p in (self.data_partial, self.offsets_partial):
            unlink_quiet(p)
        if self.work_dir.is_dir():
            fsync_dir(self.work_dir)

    def abort(self) -> None:
        """Drop everything written for this chunk (partials removed). Final files are untouched."""
        self._close_files()
        if self._state in (_State.OPEN, _State.FAILED, _State.CLOSED):
            self._remove_partials()
        if self._state is not _State.FINISHED:
            self._state = _State.ABORTED

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
        if self._state in (_State.OPEN, _State.COMPLETE, _State.FAILED):
            self._state = _State.CLOSED

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self._close_files()
        except Exception:
            pass
