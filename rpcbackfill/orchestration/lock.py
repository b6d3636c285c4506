"""Exclusive lock on a data directory: ``fcntl.flock`` on ``{data_dir}/.lock``.

The lock belongs to the open file description, so orchestrator processes that inherit the
descriptor keep the directory locked until the last of them exits: a new coordinator can
never start while workers of a dead one are still writing.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import time
from pathlib import Path

from ..errors import DataDirLockedError, InputError

log = logging.getLogger(__name__)


class DataDirLock:
    """``with DataDirLock(data_dir) as lock: ...``; ``lock.fd`` may be passed to children."""

    def __init__(self, data_dir: Path | str):
        self.path = Path(data_dir) / ".lock"
        self.fd: int | None = None

    def acquire(self, wait_s: float = 0.0) -> DataDirLock:
        """Take the lock; retry for up to ``wait_s`` seconds (the orchestrators of a coordinator
        that was just killed need a moment to die), then raise DataDirLockedError."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:  # the operator's data_dir cannot hold files (permissions, read-only, ...)
            raise InputError(f"cannot use data directory {self.path.parent}: {e.strerror or e}") from None
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                busy = e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
                if busy and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                holder = ""
                try:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
                except OSError:
                    pass
                os.close(fd)
                if busy:
                    raise DataDirLockedError(
                        f"data directory {self.path.parent} is in use by another process"
                        + (f" (pid {holder})" if holder else "")
                    ) from None
                raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        log.debug("locked %s", self.path)
        return self

    def release(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    close = release

    def __enter__(self) -> DataDirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
