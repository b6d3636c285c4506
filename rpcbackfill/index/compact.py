"""COMPACTING: turn one spill shard into the bucket-ordered record file the builder consumes.

Order.  The RecSplit builder streams buckets in order, and a key's bucket is a monotone
function of its *salted* 64-bit bucket hash (ext/recsplit_core.h ``rs_hash_bucket``).  So the
compacted file is sorted by that hash, under a salt derived here (``derive_bucket_salt``) and
stored in the file header (format: ``sortedfile``).  Identical hashes get identical bucket hashes, so duplicates
are adjacent after sorting and are rejected (DuplicateKeyError).

Salt.  The salt is a function of the shard's content and identity: an order-independent digest
of its keys, its record count, the range start and the shard number, hashed with BLAKE2b.  So
re-running a range (after a crash, ``max_duration``, a FAILED retry) writes the same bytes as an
uninterrupted run, while nobody can predict the salt before the shard's last transaction exists
-- an attacker grinding hashes toward one bucket would have to know every other transaction of
the range first.  The digest is the sum and the xor (mod 2^64) of two fixed-keyed 64-bit mixes of
every key (the builder's own mixer, GIL-free): independent of the order records arrive in.

Bounded memory.  When the shard does not fit in ``mem_limit_bytes`` it is radix-partitioned on
the top bits of the salted hash into temporary partition files (the hash is uniform under the
unknown salt, so partitions have near-equal sizes and no attacker can overload one); each
partition is then sorted in memory and appended to the output.  Partition p holds exactly the
hashes with top bits p, so concatenating sorted partitions gives a sorted file.  A partition that
still exceeds the limit is partitioned again on the next bits.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import struct
import threading
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .. import _recsplit
from ..errors import Cancelled, CorruptStoreError, DuplicateKeyError
from ..fsutil import AtomicFile, io_errors
from ..paths import sorted_shard_path, spill_shard_path
from ..records import HASH_SIZE, NSHARDS, RECORD_SIZE
from . import sortedfile
from .spill import shard_spill_inputs

log = logging.getLogger(__name__)

DEFAULT_MEM_LIMIT = 1 << 30  # 1 GiB per compaction (two ranges may compact at once)
# In-memory sort cost per record: the record (36) + its hash (8) + argsort permutation (8) +
# the gathered copy (36) + sorted hashes (8) = 96 bytes.
BYTES_PER_RECORD_IN_SORT = 2 * RECORD_SIZE + 3 * 8
MIN_MEM_LIMIT = 1 << 16


# Fixed keys of the two per-key mixes whose sums/xors form the content digest (arbitrary constants).
_DIGEST_KEYS = (0x7278626B2D646967, 0x9E3779B97F4A7C15)
_SALT_PERSON = b"rbtx-bucketsalt1"  # BLAKE2b personalisation: domain of the bucket salt


def keys_digest(blocks: Iterable[bytes | np.ndarray]) -> bytes:
    """Order-independent 32-byte digest of the keys of 36-byte records given in blocks."""
    acc = [0, 0, 0, 0]
    mask = (1 << 64) - 1
    for blk in blocks:
        flat = np.frombuffer(blk, dtype=np.uint8) if not isinstance(blk, np.ndarray) else blk.reshape(-1)
        if flat.size == 0:
            continue
        for j, k in enumerate(_DIGEST_KEYS):
            h = _recsplit.bucket_hashes(flat, k)
            acc[2 * j] = (acc[2 * j] + int(h.sum(dtype=np.uint64))) & mask
            acc[2 * j + 1] ^= int(np.bitwise_xor.reduce(h))
    return struct.pack("<4Q", *acc)


def derive_bucket_salt(digest: bytes, n_records: int, range_start: int, shard: int) -> int:
    """The bucket salt of shard ``shard`` of the range starting at ``range_start``."""
    ident = struct.pack("<QQB", n_records, range_start, shard)
    h = hashlib.blake2b(digest + ident, digest_size=8, person=_SALT_PERSON)
    return int.from_bytes(h.digest(), "little")


def _file_blocks(src: Path, n: int, block: int = 1 << 16):
    """The first ``n`` records of ``src`` in blocks of ``block`` records."""
    with io_errors(src, "reading"), open(src, "rb") as f:
        left = n
        while left:
            blk = f.read(min(block, left) * RECORD_SIZE)
            if len(blk) < RECORD_SIZE:
                raise CorruptStoreError(f"{src}: ended {left} records early")
            if len(blk) % RECORD_SIZE:
                raise CorruptStoreError(f"{src}: trailing partial record")
            left -= len(blk) // RECORD_SIZE
            yield blk


def _sources_blocks(sources: list[tuple[Path, int]]):
    """The first ``count`` records of each (path, count) source, in order, in blocks."""
    for p, c in sources:
        yield from _file_blocks(p, c)


def _check_cancel(cancel: threading.Event | None, what: str) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"{what} cancelled")


def _sort_records(recs: np.ndarray, salt: int, where: Path) -> np.ndarray:
    """Sort an (n, RECORD_SIZE) uint8 record array by salted bucket hash; reject duplicate hashes."""
    if recs.shape[0] == 0:
        return recs
    h = _recsplit.bucket_hashes(recs.reshape(-1), salt)
    order = np.argsort(h)
    h = h[order]
    recs = recs[order]
    ties = np.nonzero(h[1:] == h[:-1])[0]
    if ties.size:
        _check_ties(recs, h, ties, where)
    return recs


def _check_ties(recs: np.ndarray, h: np.ndarray, ties: np.ndarray, where: Path) -> None:
    """Equal bucket hashes: identical keys (duplicates) or a 64-bit hash collision."""
    done = -1
    for t in ties.tolist():
        if t <= done:
            continue
        end = t + 1
        while end + 1 < h.shape[0] and h[end + 1] == h[t]:
            end += 1
        group = recs[t : end + 1]
        seen: dict[bytes, int] = {}
        for row in group:
            key = bytes(row[:HASH_SIZE])
            seq = int.from_bytes(bytes(row[HASH_SIZE:]), "little")
            if key in seen:
                a, b = sorted((seen[key], seq))
                raise DuplicateKeyError(f"{where}: transaction hash {key.hex()} occurs twice (ledgers {a} and {b})")
            seen[key] = seq
        # distinct keys sharing the 64-bit hash: keep them ordered by key for determinism
        keys = [bytes(r[:HASH_SIZE]) for r in group]
        idx = sorted(range(len(keys)), key=keys.__getitem__)
        recs[t : end + 1] = group[idx]
        done = end


def compact_shard(
    spill_dir: Path | str,
    shard: int,
    out_dir: Path | str,
    *,
    mem_limit_bytes: int = DEFAULT_MEM_LIMIT,
    n_records: int | None = None,
    expect_records: int | None = None,
    salt: int | None = None,
    range_start: int = 0,
    cancel: threading.Event | None = None,
) -> Path:
    """Write ``{out_dir}/cf-{x}.sorted`` from every input of spill shard ``x`` in ``spill_dir``
    (``spill.shard_spill_inputs``: the sequential ``cf-{x}.spill`` and each chunk spill, in
    chunk order) atomically; return its path.

    ``n_records`` compacts exactly that many records, the first ones in input order: more
    records are cut there (uncommitted tail), fewer is CorruptStoreError.  ``expect_records``
    (the range's ``cf_counts[x]``) must equal the records the inputs hold (CorruptStoreError
    otherwise).  Default: everything.  ``salt`` (tests) overrides the bucket salt otherwise derived from the
    records, ``range_start`` and ``shard`` (``derive_bucket_salt``): the output is a function of
    the input, so a re-run writes identical bytes."""
    if not 0 <= shard < NSHARDS:
        raise ValueError(f"shard must be 0..{NSHARDS - 1}, got {shard}")
    mem_limit_bytes = max(int(mem_limit_bytes), MIN_MEM_LIMIT)
    inputs = shard_spill_inputs(spill_dir, shard) or [spill_shard_path(spill_dir, shard)]
    src = inputs[0]  # names the shard in messages
    out_dir = Path(out_dir)
    dst = sorted_shard_path(out_dir, shard)
    sources: list[tuple[Path, int]] = []
    for p in inputs:
        with io_errors(p, "opening spill shard"):
            size = p.stat().st_size
        if size % RECORD_SIZE:
            raise CorruptStoreError(f"spill shard {p} is {size} bytes, not a multiple of {RECORD_SIZE}")
        sources.append((p, size // RECORD_SIZE))
    total = sum(c for _, c in sources)
    if expect_records is not None and expect_records != total:
        raise CorruptStoreError(
            f"spill shard {shard:x} of {spill_dir} holds {total} records in {len(sources)} file(s), "
            f"the meta store counts {expect_records}"
        )
    n = total
    if n_records is not None:
        if n_records > total:
            raise CorruptStoreError(f"spill shard {src} holds {total} records, checkpoint says {n_records}")
        n = n_records
        cut, left = [], n
        for p, c in sources:
            cut.append((p, min(c, left)))
            left -= cut[-1][1]
        sources = [(p, c) for p, c in cut if c]
    with io_errors(out_dir, "creating directory"):
        out_dir.mkdir(parents=True, exist_ok=True)
    cap = max(1, mem_limit_bytes // BYTES_PER_RECORD_IN_SORT)
    recs = None
    if n <= cap:
        parts = []
        for p, c in sources:
            with io_errors(p, "reading"), open(p, "rb") as f:
                b = f.read(c * RECORD_SIZE)
            if len(b) != c * RECORD_SIZE:
                raise CorruptStoreError(f"{p}: ended {c - len(b) // RECORD_SIZE} records early")
            parts.append(np.frombuffer(b, dtype=np.uint8).reshape(-1, RECORD_SIZE))
        # concatenate copies: the tie fix-up writes into recs (frombuffer views are read-only)
        recs = np.concatenate(parts) if parts else np.zeros((0, RECORD_SIZE), dtype=np.uint8)
        del parts
    _check_cancel(cancel, f"compacting {src}")
    if salt is None:
        # one extra read-only pass over the spill when it does not fit in memory
        digest = keys_digest([recs] if recs is not None else _sources_blocks(sources))
        salt = derive_bucket_salt(digest, n, range_start, shard)
    with AtomicFile(dst) as out:
        out.write(sortedfile.pack_header(n, salt))
        if recs is not None:
            recs = _sort_records(recs, salt, src)
            out.write(recs)
            del recs
        else:
            work = out_dir / f".{dst.name}.parts-{os.getpid()}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            try:
                written = _partition_and_sort(sources, n, salt, 0, cap, work, out, cancel, src, mem_limit_bytes)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            if written != n:
                raise CorruptStoreError(f"compaction of {src} wrote {written} records, expected {n}")
        out.commit()
    log.info("compacted %s (%d input file(s)): %d records -> %s", src, len(sources), n, dst)
    return dst


def _partition_and_sort(
    sources: list[tuple[Path, int]],
    n: int,
    salt: int,
    used_bits: int,
    cap: int,
    work: Path,
    out: AtomicFile,
    cancel,
    where: Path,
    mem_limit: int,
) -> int:
    """Partition the first ``count`` records of each (path, count) source on hash bits
    [used_bits, used_bits+b) and sort each partition into ``out``."""
    parts = 2
    while parts * cap < n * 5 // 4:  # 25% slack for uneven partitions
        parts *= 2
    bits = parts.bit_length() - 1
    if used_bits + bits > 64:
        bits = 64 - used_bits
        parts = 1 << bits
    shift = np.uint64(64 - bits)
    block = max(1, min(cap // 2, 1 << 18))
    buf_bytes = max(1 << 12, min(1 << 20, mem_limit // (4 * parts)))
    paths = [work / f"p{used_bits}-{i:05d}" for i in range(parts)]
    files = [open(p, "wb", buffering=buf_bytes) for p in paths]
    try:
        for s, count in sources:
            with open(s, "rb") as f:
                left = count
                while left:
                    _check_cancel(cancel, f"compacting {where}")
                    blk = f.read(min(block, left) * RECORD_SIZE)
                    if not blk:
                        raise CorruptStoreError(f"{s}: ended {left} records early")
                    left -= len(blk) // RECORD_SIZE
                    if len(blk) % RECORD_SIZE:
                        raise CorruptStoreError(f"{s}: trailing partial record")
                    recs = np.frombuffer(blk, dtype=np.uint8).reshape(-1, RECORD_SIZE)
                    h = _recsplit.bucket_hashes(blk, salt)
                    p = (h << np.uint64(used_bits)) >> shift  # hash bits [used_bits, used_bits + bits)
                    p = p.astype(np.int64)
                    order = np.argsort(p, kind="stable")
                    counts = np.bincount(p, minlength=parts)
                    grouped = recs[order]
                    pos = 0
                    for i in np.nonzero(counts)[0].tolist():
                        c = int(counts[i])
                        files[i].write(grouped[pos : pos + c].tobytes())
                        pos += c
    finally:
        for fh in files:
            fh.close()
    for s, _ in sources:
        if s.parent == work:
            s.unlink()
    written = 0
    for pth in paths:
        _check_cancel(cancel, f"compacting {where}")
        m = pth.stat().st_size // RECORD_SIZE
        if m == 0:
            pth.unlink()
            continue
        if m > cap and used_bits + bits < 64:
            written += _partition_and_sort(
                [(pth, m)], m, salt, used_bits + bits, cap, work, out, cancel, where, mem_limit
            )
            continue
        with open(pth, "rb") as f:
            recs = np.frombuffer(f.read(), dtype=np.uint8).reshape(-1, RECORD_SIZE).copy()
        pth.unlink()
        recs = _sort_records(recs, salt, where)
        out.write(recs)
        written += recs.shape[0]
        del recs
    return written
