"""Durable file I/O shared by every store: typed OS errors, atomic writes, directory fsync.

Core module (imports only ``errors``).  Every immutable file rpcbackfill publishes goes
temp file -> fsync -> rename -> fsync of the directory, so after a crash a path either holds
its complete content or does not exist.  ENOSPC/EDQUOT surface as ``DiskFullError`` (never
retried); any other OSError as ``StoreError`` naming the path.
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path

from .errors import DiskFullError, StoreError

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


@contextmanager
def io_errors(path: Path | str, what: str, *, passthrough_not_found: bool = False):
    """Map OSError to DiskFullError (ENOSPC/EDQUOT) or StoreError naming ``path``.

    With ``passthrough_not_found`` a FileNotFoundError propagates unchanged, for callers
    that treat a missing file as a normal outcome."""
    try:
        yield
    except OSError as e:
        if passthrough_not_found and isinstance(e, FileNotFoundError):
            raise
        if e.errno in DISK_FULL_ERRNOS:
            raise DiskFullError(f"no space left on device while {what} {path}") from e
        raise StoreError(f"{what} {path} failed: {e.strerror or e}") from e


def fsync_dir(d: Path | str) -> None:
    """Make a directory's entries (creations, renames, deletions) durable."""
    with io_errors(d, "fsync of directory"):
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_all(fd: int, data, path: Path | str) -> None:
    """os.write until every byte of ``data`` (any buffer) is written."""
    mv = memoryview(data)
    if mv.nbytes == 0:
        return
    if mv.ndim != 1 or mv.format != "B":
        mv = mv.cast("B")
    with io_errors(path, "writing"):
        while mv:
            n = os.write(fd, mv)
            mv = mv[n:]


def temp_path(path: Path) -> Path:
    """The temp name a writer of ``path`` uses in the same directory: ``.{name}.tmp-{pid}``
    (hidden, and unique per process).  ``temp_owner`` maps it back; crash cleanup lists
    ``TEMP_GLOB`` (``paths.DataDirLayout.interrupted_writes``)."""
    return path.with_name(f".{path.name}{_TEMP_MARK}{os.getpid()}")


_TEMP_MARK = ".tmp-"
TEMP_GLOB = f".*{_TEMP_MARK}*"  # matches every name temp_path produces


def temp_owner(tmp: Path) -> Path | None:
    """The final path whose temp file ``tmp`` is (inverse of ``temp_path``), or None."""
    name = tmp.name
    cut = name.rfind(_TEMP_MARK)
    if not name.startswith(".") or cut <= 1 or not name[cut + len(_TEMP_MARK) :].isdigit():
        return None
    return tmp.with_name(name[1:cut])


def unlink_quiet(p: Path) -> None:
    try:
        p.unlink()
    except FileNotFoundError:
        pass


class AtomicFile:
    """Write ``path`` through a temp file: ``commit()`` = fsync -> rename -> fsync dir.

    Leaving the ``with`` block without ``commit()`` (an exception) removes the temp file."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.tmp = temp_path(self.path)
        with io_errors(self.tmp, "creating"):
            self.fd = os.open(self.tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self.done = False

    def write(self, data) -> None:
        write_all(self.fd, data, self.tmp)

    def pwrite(self, data, offset: int) -> None:
        with io_errors(self.tmp, "writing"):
            os.pwrite(self.fd, data, offset)

    def commit(self, *, fsync: bool = True, sync_dir: bool = True) -> None:
        if fsync:
            with io_errors(self.tmp, "fsync of"):
                os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1
        with io_errors(self.path, "renaming into place"):
            os.replace(self.tmp, self.path)
        self.done = True
        if fsync and sync_dir:
            fsync_dir(self.path.parent)

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if not self.done:
            unlink_quiet(self.tmp)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, *exc) -> None:
        self.abort()


def atomic_write(path: Path | str, data, *, fsync: bool = True, sync_dir: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (temp -> fsync -> rename -> fsync dir).

    ``fsync=False`` keeps the atomic rename but skips both fsyncs (bulk generators);
    ``sync_dir=False`` lets a caller fsync a directory once after many files."""
    with AtomicFile(path) as f:
        f.write(data)
        f.commit(fsync=fsync, sync_dir=sync_dir)
