"""File helpers of the index package: typed OS errors, atomic temp files, directory fsync."""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path

from ..errors import DiskFullError, StoreError

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


@contextmanager
def io_errors(path: Path | str, what: str):
    """Map OSError to DiskFullError (ENOSPC/EDQUOT) or StoreError naming the path."""
    try:
        yield
    except OSError as e:
        if e.errno in _DISK_FULL:
            raise DiskFullError(f"no space left on device while {what} {path}") from e
        raise StoreError(f"{what} {path} failed: {e.strerror or e}") from e


def fsync_dir(d: Path | str) -> None:
    with io_errors(d, "fsync of directory"):
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_all(fd: int, data, path: Path | str) -> None:
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
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


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

    def commit(self) -> None:
        with io_errors(self.tmp, "fsync of"):
            os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1
        with io_errors(self.path, "renaming into place"):
            os.replace(self.tmp, self.path)
        fsync_dir(self.path.parent)
        self.done = True

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
