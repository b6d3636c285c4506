"""Galexie / SEP-54 data-lake layout (spec section 5): manifest, object keys, batches, writer.

A lake is a tree of zstd-compressed ``LedgerCloseMetaBatch`` files under a root that
holds a ``.config.json`` manifest::

    <root>/.config.json
    <root>/FD054DFF--49984000-50047999/FD050F7F--50000000.xdr.zst

Names count *down* (``0xFFFFFFFF - start``) so that a lexicographic listing returns the
newest ledgers first.  Partition directories exist only when ``batchesPerPartition > 1``;
the ``-<end>`` suffix of a file name only when a file holds more than one ledger.

A batch file is named after its *boundary* (``seq // ledgersPerBatch * ledgersPerBatch``)
but its header carries the ledgers it really holds; the first file of the chain (ledger 2)
and the edges of a partial lake may hold fewer than ``ledgersPerBatch`` ledgers, so readers
index a batch by its header's ``startSequence``, never by its name.

This module is pure layout math plus a local writer (used by tests, the data-lake
generator and benchmarks); the readers live in ``sources.datalake``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import zstandard

from ..errors import LakeConfigError
from ..fsutil import atomic_write, fsync_dir
from ..ledgermath import UINT32_MAX
from ..zstdframe import ZSTD_LEVEL

log = logging.getLogger(__name__)

MANIFEST_NAME = ".config.json"
# Current Galexie writes ``.xdr.zst``; lakes written by older releases use ``.xdr.zstd``.
FILE_EXT = ".xdr.zst"
LEGACY_FILE_EXT = ".xdr.zstd"
FILE_EXTS = (FILE_EXT, LEGACY_FILE_EXT)
SUPPORTED_COMPRESSION = ("zstd",)
# XDR header of a LedgerCloseMetaBatch: uint32 startSequence, uint32 endSequence, uint32 count.
_BATCH_HEADER = struct.Struct(">III")

# e.g. "FD050F7F--50000000.xdr.zst" or "FFFFFFBF--0-63.xdr.zstd"
_FILE_RE = re.compile(r"^([0-9A-F]{8})--(\d+)(?:-(\d+))?(\.xdr\.zstd?)$")
_PART_RE = re.compile(r"^([0-9A-F]{8})--(\d+)-(\d+)$")


@dataclass(frozen=True)
class LakeSchema:
    """What ``.config.json`` says about a lake (plus the file extension, found by listing)."""

    network_passphrase: str
    ledgers_per_batch: int = 1
    batches_per_partition: int = 64000
    compression: str = "zstd"
    version: str = "1.0"
    file_ext: str = FILE_EXT

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.network_passphrase, str) or not self.network_passphrase:
            problems.append("networkPassphrase must be a non-empty string")
        for name in ("ledgers_per_batch", "batches_per_partition"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1 or v > UINT32_MAX:
                problems.append(f"{name} must be an integer in 1..{UINT32_MAX}, got {v!r}")
        if self.compression not in SUPPORTED_COMPRESSION:
            problems.append(f"compression {self.compression!r} is not supported (only 'zstd')")
        if self.file_ext not in FILE_EXTS:
            problems.append(f"file_ext must be one of {FILE_EXTS}, got {self.file_ext!r}")
        if problems:
            raise LakeConfigError("invalid lake schema: " + "; ".join(problems))

    @property
    def ledgers_per_partition(self) -> int:
        return self.ledgers_per_batch * self.batches_per_partition


# --- key math ---------------------------------------------------------------------------------


def _check_seq(seq: int) -> None:
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0 or seq > UINT32_MAX:
        raise ValueError(f"ledger sequence must be an integer in 0..{UINT32_MAX}, got {seq!r}")


def batch_start(seq: int, schema: LakeSchema) -> int:
    """First ledger of the file boundary that holds ``seq`` (what its name is made of)."""
    _check_seq(seq)
    return seq // schema.ledgers_per_batch * schema.ledgers_per_batch


def partition_prefix(seq: int, schema: LakeSchema) -> str:
    """``"%08X--%d-%d/"`` of the partition holding ``seq``; ``""`` when partitions are off."""
    _check_seq(seq)
    if schema.batches_per_partition <= 1:
        return ""
    p = schema.ledgers_per_partition
    start = seq // p * p
    return f"{UINT32_MAX - start:08X}--{start}-{start + p - 1}/"


def _boundary_name(start: int, ledgers_per_batch: int, ext: str) -> str:
    """Base name of the file whose boundary is ``start`` (the one home of the name format)."""
    if ledgers_per_batch > 1:
        return f"{UINT32_MAX - start:08X}--{start}-{start + ledgers_per_batch - 1}{ext}"
    return f"{UINT32_MAX - start:08X}--{start}{ext}"


def file_name(seq: int, schema: LakeSchema) -> str:
    """Base name of the file holding ``seq``, extension included."""
    return _boundary_name(batch_start(seq, schema), schema.ledgers_per_batch, schema.file_ext)


def object_key(seq: int, schema: LakeSchema) -> str:
    """Key of the file holding ledger ``seq``, relative to the lake root (no leading slash).

    >>> object_key(50000000, LakeSchema("x"))
    'FD054DFF--49984000-50047999/FD050F7F--50000000.xdr.zst'
    """
    return partition_prefix(seq, schema) + file_name(seq, schema)


class ObjectKeys:
    """``object_key`` for a reader walking one lake in order: the partition prefix is formatted
    once per partition and only the file name per key (with one ledger per file a reader asks
    for a key per ledger; ``object_key`` checks and formats the partition every time).  Safe to
    share between threads: the cached partition is one tuple, replaced whole."""

    __slots__ = ("schema", "_part")

    def __init__(self, schema: LakeSchema):
        self.schema = schema
        self._part: tuple[int, int, str] = (-1, -1, "")  # ledgers lo..hi-1 have this prefix

    def __call__(self, start: int) -> str:
        """Key of the file whose boundary is ``start`` (an element of ``batch_starts``)."""
        s = self.schema
        lo, hi, prefix = self._part
        if not lo <= start < hi:
            _check_seq(start)
            prefix = partition_prefix(start, s)
            p = s.ledgers_per_partition if s.batches_per_partition > 1 else UINT32_MAX + 1
            lo = start // p * p
            self._part = (lo, lo + p, prefix)
        if start % s.ledgers_per_batch:
            raise ValueError(f"{start} is not a file boundary ({s.ledgers_per_batch} ledgers per file)")
        return prefix + _boundary_name(start, s.ledgers_per_batch, s.file_ext)


def batch_starts(first: int, last: int, schema: LakeSchema) -> range:
    """Boundary starts of every file needed for ledgers ``first..last`` (inclusive), in order."""
    if last < first:
        return range(0)
    lpb = schema.ledgers_per_batch
    return range(batch_start(first, schema), batch_start(last, schema) + 1, lpb)


def parse_file_name(name: str) -> tuple[int, int, str] | None:
    """``(start, end, ext)`` of a lake file base name, or None if it is not one.

    The inverted hex prefix must agree with the decimal start (names are self-checking).
    """
    m = _FILE_RE.match(name)
    if not m:
        return None
    start = int(m.group(2))
    if start > UINT32_MAX or int(m.group(1), 16) != UINT32_MAX - start:
        return None
    end = int(m.group(3)) if m.group(3) is not None else start
    if end < start:
        return None
    return start, end, m.group(4)


def parse_partition_name(name: str) -> tuple[int, int] | None:
    """``(start, end)`` of a partition directory name (without slash), or None."""
    m = _PART_RE.match(name.rstrip("/"))
    if not m:
        return None
    start, end = int(m.group(2)), int(m.group(3))
    if start > UINT32_MAX or int(m.group(1), 16) != UINT32_MAX - start or end < start:
        return None
    return start, end


# --- manifest -----------------------------------------------------------------------------------


def manifest_dict(schema: LakeSchema) -> dict:
    """The ``.config.json`` fields of spec section 5 (Galexie's names)."""
    return {
        "networkPassphrase": schema.network_passphrase,
        "version": schema.version,
        "compression": schema.compression,
        "ledgersPerBatch": schema.ledgers_per_batch,
        "batchesPerPartition": schema.batches_per_partition,
    }


def manifest_bytes(schema: LakeSchema) -> bytes:
    return (json.dumps(manifest_dict(schema), indent=2) + "\n").encode()


def parse_manifest(data: bytes | str, file_ext: str = FILE_EXT, where: str = MANIFEST_NAME) -> LakeSchema:
    """Parse a ``.config.json``; raises ``LakeConfigError`` naming ``where`` on any problem.

    Unknown extra fields are tolerated (newer Galexie releases may add some); the five
    fields of spec section 5 are required, except ``version`` (defaults to "1.0") and
    ``compression`` (defaults to "zstd", the only codec Galexie writes).
    """
    try:
        d = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise LakeConfigError(f"{where}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise LakeConfigError(f"{where}: expected a JSON object, got {type(d).__name__}")
    problems = [f"missing {k!r}" for k in ("networkPassphrase", "ledgersPerBatch", "batchesPerPartition") if k not in d]
    if problems:
        raise LakeConfigError(f"{where}: " + "; ".join(problems))
    version = d.get("version", "1.0")
    try:
        return LakeSchema(
            network_passphrase=d["networkPassphrase"],
            ledgers_per_batch=d["ledgersPerBatch"],
            batches_per_partition=d["batchesPerPartition"],
            compression=d.get("compression", "zstd"),
            version=str(version),
            file_ext=file_ext,
        )
    except LakeConfigError as e:
        raise LakeConfigError(f"{where}: {e}") from None


def read_manifest(root: str | os.PathLike, file_ext: str | None = None) -> LakeSchema:
    """Read ``<root>/.config.json`` of a local lake; the extension is detected unless given."""
    root = Path(root)
    path = root / MANIFEST_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LakeConfigError(f"{path}: lake manifest not found") from None
    except OSError as e:
        raise LakeConfigError(f"{path}: cannot read lake manifest ({e.strerror})") from None
    if file_ext is None:
        file_ext = detect_local_file_ext(root)
    return parse_manifest(data, file_ext=file_ext, where=str(path))


def detect_ext_from_names(names: Iterable[str]) -> str | None:
    """The lake file extension of the first lake file among ``names`` (base names or keys)."""
    for name in names:
        parsed = parse_file_name(name.rsplit("/", 1)[-1])
        if parsed:
            return parsed[2]
    return None


def first_key_contradicting(keys: Iterable[str], schema: LakeSchema) -> str | None:
    """The first lake-file key in ``keys`` whose name could not come from ``schema``, or None.

    A key contradicts the schema when it is not the name ``object_key`` gives its own start
    ledger (wrong span, misaligned start, partition directory present/absent/wrong).  Keys
    that are not lake files (manifest, notes) are ignored.
    """
    for key in keys:
        parsed = parse_file_name(key.rsplit("/", 1)[-1])
        if parsed is None:
            continue
        start = parsed[0]
        if key != object_key(start, dataclasses.replace(schema, file_ext=parsed[2])):
            return key
    return None


def detect_local_file_ext(root: str | os.PathLike) -> str:
    """Find ``.xdr.zst`` vs ``.xdr.zstd`` by looking at the first lake file under ``root``.

    Looks at most into one partition directory; defaults to ``.xdr.zst`` for an empty lake.
    """
    root = Path(root)
    try:
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        return FILE_EXT
    ext = detect_ext_from_names(e.name for e in entries if e.is_file())
    if ext:
        return ext
    for e in entries:
        if e.is_dir() and parse_partition_name(e.name):
            try:
                with os.scandir(e.path) as it2:
                    ext = detect_ext_from_names(sorted(x.name for x in it2 if x.is_file()))
            except OSError:
                continue
            if ext:
                return ext
    return FILE_EXT


# --- batch encoding -------------------------------------------------------------------------


def encode_batch(start: int, lcms: list[bytes]) -> bytes:
    """XDR ``LedgerCloseMetaBatch`` for consecutive ledgers ``start..start+len(lcms)-1``."""
    if not lcms:
        raise ValueError("a batch needs at least one ledger")
    end = start + len(lcms) - 1
    _check_seq(start)
    _check_seq(end)
    return b"".join([_BATCH_HEADER.pack(start, end, len(lcms)), *lcms])


# --- local writer ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LakeWriteStats:
    first: int
    last: int
    files: int
    ledgers: int
    raw_bytes: int  # uncompressed batch bytes
    compressed_bytes: int  # bytes written to lake files


def write_manifest(root: str | os.PathLike, schema: LakeSchema, *, fsync: bool = True) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / MANIFEST_NAME
    atomic_write(path, manifest_bytes(schema), fsync=fsync)
    return path


def compress_batch(batch: bytes, *, level: int = ZSTD_LEVEL, content_size: bool = True) -> bytes:
    """One zstd frame; ``content_size=False`` omits the size from the frame header (like some lakes)."""
    cctx = zstandard.ZstdCompressor(level=level, write_content_size=content_size)
    if content_size:
        return cctx.compress(batch)
    # compressobj() never knows the input size up front, so the frame header omits it.
    co = cctx.compressobj()
    return co.compress(batch) + co.flush()


def write_lake(
    root: str | os.PathLike,
    ledgers: Iterable[tuple[int, bytes]],
    schema: LakeSchema,
    *,
    level: int = ZSTD_LEVEL,
    content_size: bool = True,
    fsync: bool = True,
    manifest: bool = True,
) -> LakeWriteStats:
    """Write consecutive ``(seq, LedgerCloseMeta XDR)`` pairs as a local lake under ``root``.

    Memory holds one batch at a time, so ``ledgers`` may be a generator of any length.
    Each file is written atomically (temp → fsync → rename); every directory touched is
    fsynced once its files are in place, and the manifest is written last, so a lake with a
    manifest is complete.  Sequences must increase by exactly 1 (``ValueError`` otherwise);
    the first and last files may be partial batches, named after their boundary.
    Existing files with the same names are replaced.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    cctx_level = level
    dirty_dirs: set[Path] = set()
    first = last = None
    files = count = raw = comp = 0
    cur_start: int | None = None  # boundary start of the batch being assembled
    cur_first = 0  # first real ledger of that batch
    cur: list[bytes] = []

    def flush() -> None:
        nonlocal files, raw, comp
        batch = encode_batch(cur_first, cur)
        data = compress_batch(batch, level=cctx_level, content_size=content_size)
        path = root / object_key(cur_first, schema)
        if path.parent != root:
            path.parent.mkdir(exist_ok=True)
        atomic_write(path, data, fsync=fsync, sync_dir=False)
        dirty_dirs.add(path.parent)
        files += 1
        raw += len(batch)
        comp += len(data)

    for seq, lcm in ledgers:
        _check_seq(seq)
        if last is not None and seq != last + 1:
            raise ValueError(f"write_lake needs consecutive ledgers: {seq} follows {last}")
        if first is None:
            first = seq
        start = batch_start(seq, schema)
        if cur_start is not None and start != cur_start:
            flush()
            cur = []
        if not cur:
            cur_start, cur_first = start, seq
        cur.append(bytes(lcm))
        last = seq
        count += 1
    if cur:
        flush()
    if fsync:
        for d in sorted(dirty_dirs, key=lambda p: len(p.parts), reverse=True):
            fsync_dir(d)
        if dirty_dirs:
            fsync_dir(root)
    if manifest:
        write_manifest(root, schema, fsync=fsync)
    if first is None:
        log.info("write_lake %s: no ledgers given; manifest only", root)
        return LakeWriteStats(0, 0, 0, 0, 0, 0)
    assert last is not None  # set with first
    log.debug("write_lake %s: ledgers %d-%d in %d files", root, first, last, files)
    return LakeWriteStats(first, last, files, count, raw, comp)
