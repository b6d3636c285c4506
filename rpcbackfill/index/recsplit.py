"""RecSplit shard index of spec section 8: build, verify and look up ``cf-{x}.idx`` files.

The kernels (RecSplit, Esposito/Graf/Vigna ALENEX 2020) are in ext/recsplit_core.h and
ext/_recsplit.pyx; this module owns the file format (docs/recsplit-format.md) and the
BUILDING_RECSPLIT / VERIFYING_RECSPLIT entry points.

File layout, version 1 (little-endian; every section starts on a 64-byte boundary)::

    header (256 bytes, see _HEADER_FIELDS)
    values   n_keys x uint32: (ledger - range_start) | fingerprint << 24, in MPHF order
    seeds    Golomb-Rice coded splitting seeds, uint64 words (per bucket: fixed parts, unary parts)
    EF keys  Elias-Fano of the cumulative key count per bucket: low, high, select samples
    EF bits  Elias-Fano of each bucket's first bit in ``seeds``:  low, high, select samples

The CRC-32 (zlib polynomial) covers the whole file with the header's crc field zeroed.
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import _recsplit
from ..errors import Cancelled, CorruptStoreError, DuplicateKeyError, IndexBuildError, UnsupportedFormatError
from ..fsutil import AtomicFile, io_errors
from ..records import HASH_SIZE, RECORD_SIZE
from . import sortedfile

log = logging.getLogger(__name__)

MAGIC = b"RBTXIDX\0"
VERSION = 1
HEADER_SIZE = 256
ALIGN = 64  # section alignment: keeps uint64 loads aligned and sections on their own cache lines
MAX_VALUE = 1 << 24  # values are stored in 3 bytes
MAX_ATTEMPTS = 8  # salt retries before giving up (a retry is needed with probability ~ n*1000/2^64)
BUILD_BLOCK_RECORDS = 1 << 16  # records per read while building/verifying (2.3 MiB)

# The builder's record size comes from ext/txhash_record.h; it must be the records.py one.
if _recsplit.RECORD_SIZE != RECORD_SIZE:  # pragma: no cover - build mismatch
    raise ImportError(
        f"rpcbackfill._recsplit was built for {_recsplit.RECORD_SIZE}-byte records, "
        f"rpcbackfill.records says {RECORD_SIZE}"
    )

_HEADER_FIELDS = [
    ("magic", "8s"),
    ("version", "I"),
    ("header_size", "I"),
    ("n_keys", "Q"),
    ("n_buckets", "Q"),
    ("range_start", "I"),
    ("leaf", "H"),
    ("lower_aggr", "B"),
    ("upper_aggr", "B"),
    ("bucket_size", "I"),
    ("ef_sample", "I"),
    ("bucket_salt", "Q"),
    ("split_salt", "Q"),
    ("vals_off", "Q"),
    ("vals_len", "Q"),
    ("bits_off", "Q"),
    ("bits_len", "Q"),
    ("seed_bits", "Q"),
    ("efk_n", "Q"),
    ("efk_l", "I"),
    ("efk_pad", "I"),
    ("efk_low_off", "Q"),
    ("efk_low_len", "Q"),
    ("efk_high_off", "Q"),
    ("efk_high_len", "Q"),
    ("efk_s_off", "Q"),
    ("efk_s_len", "Q"),
    ("efb_n", "Q"),
    ("efb_l", "I"),
    ("efb_pad", "I"),
    ("efb_low_off", "Q"),
    ("efb_low_len", "Q"),
    ("efb_high_off", "Q"),
    ("efb_high_len", "Q"),
    ("efb_s_off", "Q"),
    ("efb_s_len", "Q"),
    ("file_size", "Q"),
    ("crc32", "I"),
]
_HEADER = struct.Struct("<" + "".join(f for _, f in _HEADER_FIELDS))
_HEADER_PAD = HEADER_SIZE - _HEADER.size
assert _HEADER_PAD >= 0
CRC_OFFSET = _HEADER.size - 4  # the crc32 field is last


@dataclass(frozen=True)
class ShardStats:
    n_keys: int
    n_buckets: int
    file_bytes: int
    bytes_per_key: float  # whole file / keys
    mphf_bits_per_key: float  # seeds + both Elias-Fano sequences, per key
    max_bucket: int
    attempts: int  # 1 unless a split-hash collision forced a new salt
    seconds: float
    bucket_salt: int
    split_salt: int


def _align(x: int) -> int:
    return (x + ALIGN - 1) // ALIGN * ALIGN


def n_buckets_for(n_keys: int) -> int:
    return 0 if n_keys == 0 else (n_keys + _recsplit.BUCKET_SIZE - 1) // _recsplit.BUCKET_SIZE


def derive_split_salt(bucket_salt: int, attempt: int) -> int:
    """Split salt of build attempt ``attempt`` (1, 2, ...): a function of the bucket salt, which
    compaction derives from the shard's content and identity, so a rebuild gives the same file
    and the salt is as unpredictable as the bucket salt."""
    h = hashlib.blake2b(struct.pack("<QI", bucket_salt, attempt), digest_size=8, person=b"rbtx-splitsalt1")
    return int.from_bytes(h.digest(), "little")


def _check_cancel(cancel: threading.Event | None, what: str) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"{what} cancelled")


def _build_once(
    sorted_path: Path,
    n_keys: int,
    n_buckets: int,
    bucket_salt: int,
    split_salt: int,
    range_start: int,
    force_collision: bool,
    cancel: threading.Event | None,
):
    b = _recsplit.Builder(n_keys, n_buckets, bucket_salt, split_salt, range_start, force_collision)
    done = 0
    prev_tail = b""
    for blk in sortedfile.iter_blocks(sorted_path, BUILD_BLOCK_RECORDS):
        _check_cancel(cancel, f"building index from {sorted_path}")
        rc, at = b.add_records(blk)
        if rc != _recsplit.OK:
            rec = blk[at * RECORD_SIZE : (at + 1) * RECORD_SIZE]
            key, seq = rec[:HASH_SIZE].hex(), int.from_bytes(rec[HASH_SIZE:], "little")
            if rc == _recsplit.ERR_COLLISION:
                return None
            if rc == _recsplit.ERR_VALUE:
                raise IndexBuildError(
                    f"{sorted_path}: ledger {seq} of hash {key} is outside [{range_start}, {range_start + MAX_VALUE})"
                )
            if rc == _recsplit.ERR_DUPLICATE:
                prev = blk[(at - 1) * RECORD_SIZE : at * RECORD_SIZE] if at else prev_tail
                raise DuplicateKeyError(
                    f"{sorted_path}: transaction hash {key} occurs twice "
                    f"(ledgers {int.from_bytes(prev[HASH_SIZE:], 'little')} and {seq})"
                )
            if rc == _recsplit.ERR_ORDER:
                raise CorruptStoreError(f"{sorted_path}: record {done + at} (hash {key}) is out of bucket order")
            if rc == _recsplit.ERR_COUNT:
                raise CorruptStoreError(f"{sorted_path}: holds more than the expected {n_keys} records")
            if rc == _recsplit.ERR_TOOBIG:
                raise IndexBuildError(f"{sorted_path}: a bucket exceeds {_recsplit.MAX_BUCKET} keys near hash {key}")
            raise MemoryError(f"RecSplit build of {sorted_path} ran out of memory")
        done += len(blk) // RECORD_SIZE
        prev_tail = blk[-RECORD_SIZE:]
    if done != n_keys:
        raise CorruptStoreError(f"{sorted_path}: {done} records, expected {n_keys}")
    rc = b.finish()
    if rc == _recsplit.ERR_COLLISION:
        return None
    if rc != _recsplit.OK:
        raise IndexBuildError(f"{sorted_path}: RecSplit finish failed with code {rc}")
    return b


def build_shard(
    sorted_path: Path | str,
    idx_path: Path | str,
    range_start: int,
    n_keys: int,
    *,
    salt: int | None = None,
    cancel: threading.Event | None = None,
    forced_collisions: int = 0,
) -> ShardStats:
    """BUILDING_RECSPLIT: build ``idx_path`` from a compacted shard file (atomic write).

    ``salt`` fixes the split salt of the first attempt (default: ``derive_split_salt`` of the
    bucket salt, deterministic); the bucket salt is the one the sorted file was ordered with.  ``n_keys`` must equal the file's record count.
    ``forced_collisions`` (tests) makes that many first attempts report a split-hash collision,
    exercising the salt retry that real data needs with probability ~ n*1000/2^64."""
    t0 = time.perf_counter()
    sorted_path, idx_path = Path(sorted_path), Path(idx_path)
    if not 0 <= range_start < 1 << 32:
        raise ValueError(f"range_start {range_start} does not fit in uint32")
    count, bucket_salt = sortedfile.read_header(sorted_path)
    if count != n_keys:
        raise CorruptStoreError(f"{sorted_path}: holds {count} records but the checkpoint expects {n_keys}")
    n_buckets = n_buckets_for(n_keys)
    split_salt = derive_split_salt(bucket_salt, 1) if salt is None else salt & (2**64 - 1)
    builder = None
    attempts = 0
    while builder is None:
        attempts += 1
        if attempts > MAX_ATTEMPTS:
            raise IndexBuildError(f"{sorted_path}: no collision-free split salt after {MAX_ATTEMPTS} attempts")
        force = attempts <= forced_collisions
        builder = _build_once(sorted_path, n_keys, n_buckets, bucket_salt, split_salt, range_start, force, cancel)
        if builder is None:
            log.warning("%s: split-hash collision with salt %016x, retrying with a new salt", sorted_path, split_salt)
            split_salt = derive_split_salt(bucket_salt, attempts + 1)
    _check_cancel(cancel, f"building index {idx_path}")
    with io_errors(idx_path.parent, "creating directory"):
        idx_path.parent.mkdir(parents=True, exist_ok=True)
    stats = _write_index(idx_path, builder, n_keys, n_buckets, range_start, bucket_salt, split_salt)
    seconds = time.perf_counter() - t0
    st = ShardStats(
        n_keys=n_keys,
        n_buckets=n_buckets,
        file_bytes=stats[0],
        bytes_per_key=stats[0] / n_keys if n_keys else 0.0,
        mphf_bits_per_key=stats[1] * 8 / n_keys if n_keys else 0.0,
        max_bucket=builder.max_bucket,
        attempts=attempts,
        seconds=seconds,
        bucket_salt=bucket_salt,
        split_salt=split_salt,
    )
    log.info("built %s: %d keys, %.3f bytes/key, %.2fs", idx_path, n_keys, st.bytes_per_key, seconds)
    return st


def _write_index(
    idx_path: Path, b, n_keys: int, n_buckets: int, range_start: int, bucket_salt: int, split_salt: int
) -> tuple[int, int]:
    """Lay out and write the file; returns (file bytes, MPHF structure bytes)."""
    vals = b.values
    words, nbits = b.seed_bits()
    words = np.concatenate([words, np.zeros(2, dtype=np.uint64)])  # readers may touch 1 word past the end
    efk = b.elias_fano("keys")
    efb = b.elias_fano("bits")
    sections: list[tuple[int, np.ndarray]] = []
    off = HEADER_SIZE

    def place(arr: np.ndarray) -> tuple[int, int]:
        nonlocal off
        off = _align(off)
        start = off
        sections.append((start, arr))
        off += arr.nbytes
        return start, arr.nbytes

    vals_off, vals_len = place(vals)
    bits_off, bits_len = place(words)
    h = {
        "magic": MAGIC,
        "version": VERSION,
        "header_size": HEADER_SIZE,
        "n_keys": n_keys,
        "n_buckets": n_buckets,
        "range_start": range_start,
        "leaf": _recsplit.LEAF,
        "lower_aggr": _recsplit.LOWER_AGGR,
        "upper_aggr": _recsplit.UPPER_AGGR,
        "bucket_size": _recsplit.BUCKET_SIZE,
        "ef_sample": _recsplit.EF_SAMPLE,
        "bucket_salt": bucket_salt,
        "split_salt": split_salt,
        "vals_off": vals_off,
        "vals_len": vals_len,
        "bits_off": bits_off,
        "bits_len": bits_len,
        "seed_bits": nbits,
        "efk_pad": 0,
        "efb_pad": 0,
        "crc32": 0,
    }
    for pfx, ef in (("efk", efk), ("efb", efb)):
        n, l, low, high, samples = ef
        h[f"{pfx}_n"], h[f"{pfx}_l"] = n, l
        h[f"{pfx}_low_off"], h[f"{pfx}_low_len"] = place(low)
        h[f"{pfx}_high_off"], h[f"{pfx}_high_len"] = place(high)
        h[f"{pfx}_s_off"], h[f"{pfx}_s_len"] = place(samples)
    h["file_size"] = off
    header = _HEADER.pack(*(h[name] for name, _ in _HEADER_FIELDS)) + bytes(_HEADER_PAD)
    # checksum over header (crc field zero) and every byte after it, padding included
    crc = zlib.crc32(header)
    pos = HEADER_SIZE
    chunks: list[bytes | memoryview] = []
    for start, arr in sections:
        if start > pos:
            chunks.append(bytes(start - pos))
        chunks.append(np.ascontiguousarray(arr).view(np.uint8).data)
        pos = start + arr.nbytes
    for c in chunks:
        crc = zlib.crc32(c, crc)
    header = header[:CRC_OFFSET] + struct.pack("<I", crc) + header[CRC_OFFSET + 4 :]
    with AtomicFile(idx_path) as f:
        f.write(header)
        for c in chunks:
            f.write(c)
        f.commit()
    mphf = bits_len + sum(h[f"{p}_{s}_len"] for p in ("efk", "efb") for s in ("low", "high", "s"))
    return off, mphf


CHECKSUM_MODES = ("open", "first-use", "off")


class ShardIndex:
    """One mapped ``cf-{x}.idx`` file.  ``lookup`` returns the absolute ledger or None.

    Opening validates the header and the section table against the file size (in C,
    ``rs_index_open``): a truncated or inconsistent file raises ``CorruptStoreError`` naming it
    before any pointer into it is used.  ``checksum`` says when the CRC-32 of the whole file is
    checked: ``"open"`` in the constructor, ``"first-use"`` (default) before the first lookup
    answers -- so a range whose other shards are never asked pays only for the shard it uses --
    or ``"off"``.  Lookups that meet impossible directory or seed data raise
    ``CorruptStoreError`` too; they never read outside the file.
    """

    def __init__(self, idx_path: Path | str, *, checksum: str = "first-use"):
        if checksum not in CHECKSUM_MODES:
            raise ValueError(f"checksum must be one of {CHECKSUM_MODES}, got {checksum!r}")
        self.path = Path(idx_path)
        self._mm: mmap.mmap | None = None
        self._ix = None
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            raise CorruptStoreError(f"index {self.path} is missing") from None
        except OSError as e:
            with io_errors(self.path, "opening index"):
                raise e
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                raise CorruptStoreError(f"index {self.path} is empty")
            with io_errors(self.path, "mapping index"):
                self._mm = mmap.mmap(fd, size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        try:
            self._ix = _recsplit.Index(self._mm, str(self.path), CorruptStoreError, UnsupportedFormatError)
            h = dict(zip((n for n, _ in _HEADER_FIELDS), _HEADER.unpack_from(self._mm, 0)))
            self.header = h
            self._crc_ok = checksum == "off"
            if checksum == "open":
                self._verify()
        except BaseException:
            self.close()
            raise
        self.n_keys: int = h["n_keys"]
        self.range_start: int = h["range_start"]
        # hot path: once the checksum is known good, skip one Python frame per lookup
        self.lookup = self._ix.lookup if self._crc_ok else self._first_lookup  # type: ignore[method-assign,assignment]

    def _verify(self) -> None:
        if not self._crc_ok:
            if self._mm is None:
                raise ValueError(f"index {self.path} is closed")
            check_crc(self.path, self._mm, self.header)
            self._crc_ok = True

    def _first_lookup(self, hash32: bytes) -> int | None:
        self._verify()
        if self._ix is None:
            raise ValueError(f"index {self.path} is closed")
        self.lookup = self._ix.lookup  # type: ignore[method-assign,assignment]
        return self._ix.lookup(hash32)

    def lookup(self, hash32: bytes) -> int | None:  # replaced per instance while open
        """Absolute ledger of ``hash32`` (confirm by reading it), or None when certainly absent."""
        raise ValueError(f"index {self.path} is closed")

    def lookup_many(self, hashes) -> np.ndarray:
        """uint32 ledgers (0 = not found) for concatenated 32-byte hashes or an (n, 32) uint8 array."""
        if self._ix is None:
            raise ValueError(f"index {self.path} is closed")
        self._verify()
        return self._ix.lookup_many(as_key_buffer(hashes))

    def close(self) -> None:
        if self._ix is not None:
            self.__dict__.pop("lookup", None)
            self._ix.release()
            self._ix = None
        if self._mm is not None:
            self._mm.close()
            self._mm = None

    def __enter__(self) -> ShardIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def as_key_buffer(hashes):
    """A flat byte buffer of concatenated 32-byte keys from bytes-like or an (n, 32) uint8 array."""
    if isinstance(hashes, np.ndarray):
        if hashes.dtype != np.uint8 or (hashes.ndim == 2 and hashes.shape[1] != HASH_SIZE) or hashes.ndim > 2:
            raise ValueError(f"expected an (n, 32) uint8 array, got {hashes.dtype} {hashes.shape}")
        return np.ascontiguousarray(hashes).reshape(-1)
    mv = memoryview(hashes)
    if not mv.c_contiguous:
        return bytes(mv)
    return mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv


def check_crc(path: Path, buf, h: dict) -> None:
    """CRC-32 of the whole file (crc field zeroed) against the header's; CorruptStoreError naming
    ``path`` on mismatch.  zlib releases the GIL for each 16 MiB step."""
    crc = zlib.crc32(bytes(buf[:CRC_OFFSET]) + b"\0\0\0\0" + bytes(buf[CRC_OFFSET + 4 : HEADER_SIZE]))
    mv = memoryview(buf)
    step = 1 << 24
    for o in range(HEADER_SIZE, len(buf), step):
        crc = zlib.crc32(mv[o : o + step], crc)
    mv.release()
    if crc != h["crc32"]:
        raise CorruptStoreError(f"index {path}: checksum mismatch (stored {h['crc32']:08x}, computed {crc:08x})")


def verify_shard(
    idx_path: Path | str,
    sorted_path: Path | str,
    range_start: int,
    n_keys: int,
    *,
    cancel: threading.Event | None = None,
) -> None:
    """VERIFYING_RECSPLIT: checksum, key count, range start, and every key -> its ledger."""
    idx_path, sorted_path = Path(idx_path), Path(sorted_path)
    with ShardIndex(idx_path, checksum="open") as ix:
        if ix.n_keys != n_keys:
            raise CorruptStoreError(f"index {idx_path} holds {ix.n_keys} keys, expected {n_keys}")
        if ix.range_start != range_start:
            raise CorruptStoreError(f"index {idx_path} is for range start {ix.range_start}, expected {range_start}")
        count, _ = sortedfile.read_header(sorted_path)
        if count != n_keys:
            raise CorruptStoreError(f"{sorted_path} holds {count} records, expected {n_keys}")
        seen = 0
        for blk in sortedfile.iter_blocks(sorted_path, BUILD_BLOCK_RECORDS):
            _check_cancel(cancel, f"verifying {idx_path}")
            recs = np.frombuffer(blk, dtype=np.uint8).reshape(-1, RECORD_SIZE)
            want = np.ascontiguousarray(recs[:, HASH_SIZE:]).view("<u4").reshape(-1)
            got = ix.lookup_many(np.ascontiguousarray(recs[:, :HASH_SIZE]))
            bad = np.nonzero(got != want)[0]
            if bad.size:
                i = int(bad[0])
                raise CorruptStoreError(
                    f"index {idx_path}: hash {bytes(recs[i, :HASH_SIZE]).hex()} resolves to {int(got[i])}, "
                    f"expected ledger {int(want[i])}"
                )
            seen += recs.shape[0]
        if seen != n_keys:
            raise CorruptStoreError(f"{sorted_path}: {seen} records, expected {n_keys}")
