"""A lake copied to a local directory (e.g. with ``gsutil rsync`` or ``aws s3 sync``)."""

from __future__ import annotations

import os
from pathlib import Path

from ...errors import SourceError, TransientSourceError
from . import ObjectMissing, StoreTuning

# Worker cap for a lake in a local directory.  Local reads never wait on a network; a worker
# only overlaps the file read and the zstd decompression (both release the GIL) with the
# consumer.  Every extra thread costs GIL hand-offs and futex wake-ups: measured on 2 cores
# (10,000 ledgers, 300 tx/ledger, one orchestrator) 8 workers cost 6.9 ms of CPU per ledger,
# 2 workers 5.2 ms, 1 worker 5.5 ms (less overlap); at 30 tx/ledger 1 and 2 workers were
# within 5%.  2 is the cheapest.
LOCAL_MAX_WORKERS = 2
# Cap on parked decompressed bytes for a local lake: ~35 pubnet ledgers.  Nor is there latency
# to hide, so park only a little ahead of the consumer and a decompressed ledger is still in
# the CPU caches when the consumer compresses it.  Measured (2 cores, 300 tx/ledger, one range):
# 32 MiB cost 10% less CPU per ledger than 512 MiB and 4 MiB 2% more (allocator churn).
LOCAL_MAX_BUFFER_BYTES = 32 << 20


class LocalStore:
    """``ObjectStore`` over a directory; keys are relative paths."""

    tuning = StoreTuning(max_workers=LOCAL_MAX_WORKERS, max_buffer_bytes=LOCAL_MAX_BUFFER_BYTES, inline_reads=True)

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.url = str(self.root)
        self._prefix = os.path.join(self.url, "")  # keys are relative: a path is prefix + key

    def get(self, key: str) -> bytes:
        # open + fstat + one read of the whole size + close: 4 system calls per object (a
        # buffered open() and read() make 7-8), and no Path object per call -- with one ledger
        # per file this runs once per ledger.
        path = self._prefix + key
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                size = os.fstat(fd).st_size
                # always read: st_size is 0 for a pipe too, whose data only the read brings
                data = os.read(fd, size + 1)
                if len(data) != size:  # a short read (or a file that grew): finish with a plain loop
                    parts = [data]
                    while chunk := os.read(fd, 1 << 20):
                        parts.append(chunk)
                    data = b"".join(parts)
            finally:
                os.close(fd)
            return data
        except FileNotFoundError:
            raise ObjectMissing(key) from None
        except (PermissionError, IsADirectoryError) as e:
            raise SourceError(f"cannot read lake object {path}: {e.strerror}") from None
        except OSError as e:  # EIO, ESTALE on network filesystems...: worth another try
            raise TransientSourceError(f"I/O error reading lake object {path}: {e.strerror or e}") from None

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def list_keys(self, max_results: int | None = 16, prefix: str = "") -> list[str]:
        """First keys starting with ``prefix`` in lexicographic order (all for None);
        ``SourceError`` when the lake directory cannot be read."""
        out: list[str] = []
        try:
            with os.scandir(self.root):  # os.walk would swallow the error
                pass
        except FileNotFoundError:
            raise SourceError(f"lake directory {self.root} does not exist") from None
        except OSError as e:
            raise SourceError(f"cannot read lake directory {self.root}: {e.strerror or e}") from None
        # walk only the directory the prefix names (a key's "/" are directory separators)
        head = prefix.rpartition("/")[0]
        top = self.root / head if head else self.root
        if not top.is_dir():
            return out
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            rel = os.path.relpath(dirpath, self.root)
            for f in sorted(filenames):
                key = f if rel == "." else f"{rel}/{f}"
                if not key.startswith(prefix):
                    continue
                out.append(key)
                if max_results is not None and len(out) >= max_results:
                    return out
        return out

    def close(self) -> None:
        pass
