"""``stellar-rpc verify``: re-check a finished data directory from its files alone.

The meta store is *not* trusted: it is read (when readable) only to learn which ranges the
directory was asked to hold and its ``range_size``; every check works on the files.  For each
range found on disk, recorded in the meta store or named by ``[backfill] start_ledger/end_ledger``:

1. **chunks** -- each of the range's LFS chunks exists, its index is well formed, it holds
   10,000 frames, every frame decompresses and is a complete LedgerCloseMeta (native scanner,
   ``rpcbackfill.lcm``) whose sequence is the expected one;
2. **shards** -- each of the 16 ``cf-{x}.idx`` files exists, parses, belongs to the range and
   its CRC-32 matches;
3. **keys** -- every transaction hash found in the range's ledgers resolves through its shard
   to the ledger that holds it, and each shard holds exactly as many keys as the ledgers do
   (so no key is missing and none is extra).  ``sample=N`` looks up only N hashes per shard,
   drawn at random (the key counts are still compared);
4. with ``against_source``, every ledger is compared (SHA-256) with the configured source.

Everything is streamed chunk by chunk, so memory does not grow with the range.  Problems are
collected (never raised) and returned in a ``VerifyReport`` naming each bad chunk, shard
and ledger; progress is logged every ``progress_interval_s`` seconds.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import lcm
from ..config import Config
from ..errors import Cancelled, InputError, MetaStoreError, RpcBackfillError, XdrError
from ..index.recsplit import ShardIndex
from ..ledgermath import (
    CHUNK_SIZE,
    chunk_first_ledger,
    chunk_last_ledger,
    chunk_of_ledger,
    range_first_ledger,
    range_last_ledger,
    range_of_ledger,
)
from ..paths import DataDirLayout, chunk_paths
from ..records import NSHARDS, shard_digit
from ..stores.lfs import ChunkReader, decode_index, index_width
from ..stores.lfs.format import INDEX_HEADER_SIZE, MAX_INDEX_BYTES

log = logging.getLogger(__name__)

# Problems listed per chunk before the rest are summarised in one line (a corrupt chunk can
# otherwise yield 10,000 near-identical entries).
MAX_PROBLEMS_PER_CHUNK = 10
# Wrong key lookups listed per shard before summarising.
MAX_KEY_PROBLEMS_PER_SHARD = 10
# Hashes looked up in one batch (32 bytes each: 1 Mi hashes = 32 MiB).
LOOKUP_BATCH = 1 << 20

_RANGE_DIR_RE = re.compile(r"^\d{4,}$")
_CHUNK_FILE_RE = re.compile(r"^(\d{6,})\.(data|index)$")


@dataclass(frozen=True)
class VerifyOptions:
    sample: int | None = None  # keys looked up per shard; None = every key
    against_source: bool = False
    progress_interval_s: float = 10.0
    seed: int | None = None  # random sample seed (tests); None = fresh


@dataclass(frozen=True)
class Problem:
    kind: str  # "chunk" | "ledger" | "shard" | "key" | "source" | "range"
    message: str
    range_id: int | None = None
    chunk: int | None = None
    shard: str | None = None
    ledger: int | None = None
    path: str | None = None

    @property
    def subject(self) -> str:
        """What is bad, in words: ``chunk 1``, ``range 0 shard 3``, ``ledger 12345``..."""
        if self.kind in ("shard", "key") and self.shard is not None:
            return f"range {self.range_id} shard {self.shard}"
        if self.kind in ("ledger", "source") and self.ledger is not None:
            return f"ledger {self.ledger}"
        if self.kind == "chunk" and self.chunk is not None:
            return f"chunk {self.chunk}"
        return f"range {self.range_id}" if self.range_id is not None else "data directory"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "subject": self.subject}
        for k in ("range_id", "chunk", "shard", "ledger", "path"):
            v = getattr(self, k)
            if v is not None:
                out["range" if k == "range_id" else k] = v
        out["message"] = self.message
        return out


@dataclass
class RangeReport:
    range_id: int
    first_ledger: int
    last_ledger: int
    chunks_checked: int = 0
    ledgers_checked: int = 0  # ledgers that decoded with the right sequence
    shards_checked: int = 0  # shards whose file and checksum are good
    keys_found: int = 0  # transaction hashes in the range's readable ledgers
    keys_checked: int = 0  # of which looked up in the index
    ledgers_compared: int = 0  # compared with the source
    meta_state: str | None = None
    problems: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "range": self.range_id,
            "first_ledger": self.first_ledger,
            "last_ledger": self.last_ledger,
            "ok": self.problems == 0,
            "problems": self.problems,
            "chunks_checked": self.chunks_checked,
            "ledgers_checked": self.ledgers_checked,
            "shards_checked": self.shards_checked,
            "keys_found": self.keys_found,
            "keys_checked": self.keys_checked,
            "ledgers_compared": self.ledgers_compared,
            "meta_state": self.meta_state,
        }


@dataclass
class VerifyReport:
    data_dir: str
    range_size: int
    sample: int | None
    against_source: bool
    ranges: list[RangeReport] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def clean(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "data_dir": self.data_dir,
            "clean": self.clean,
            "range_size": self.range_size,
            "sample": self.sample,
            "against_source": self.against_source,
            "elapsed_s": round(self.elapsed_s, 3),
            "ranges": [r.to_json() for r in self.ranges],
            "problems": [p.to_json() for p in self.problems],
        }

    def format_text(self) -> str:
        keys = "every key" if self.sample is None else f"{self.sample} sampled keys per shard"
        lines = [
            f"data directory {self.data_dir} (range_size {self.range_size}): {len(self.ranges)} ranges, "
            f"{sum(r.chunks_checked for r in self.ranges)} chunks, "
            f"{sum(r.ledgers_checked for r in self.ranges)} good ledgers, "
            f"{sum(r.keys_checked for r in self.ranges)} keys looked up ({keys})"
            + (
                f", {sum(r.ledgers_compared for r in self.ranges)} ledgers compared with the source"
                if self.against_source
                else ""
            )
            + f", {self.elapsed_s:.1f}s"
        ]
        for r in self.ranges:
            verdict = "ok" if r.problems == 0 else f"{r.problems} problem{'s' * (r.problems != 1)}"
            lines.append(f"range {r.range_id} (ledgers {r.first_ledger}-{r.last_ledger}): {verdict}")
        if self.problems:
            lines.append(f"PROBLEMS ({len(self.problems)}):")
            for p in self.problems:
                where = f" [{p.path}]" if p.path and p.path not in p.message else ""
                lines.append(f"  {p.subject}: {p.message}{where}")
        else:
            lines.append("clean: every check passed")
        return "\n".join(lines)


# --- discovery -------------------------------------------------------------------------------------


def _meta_hints(config: Config) -> tuple[int | None, dict[int, str | None]]:
    """(range_size, {range id: state}) recorded in the meta store, or (None, {}) if unreadable."""
    path = Path(config.meta_store.path)
    if not path.exists():
        return None, {}
    from ..meta.store import MetaStore

    try:
        meta = MetaStore(path, read_only=True)
    except (MetaStoreError, OSError) as e:
        log.warning("meta store %s is unreadable (%s); verifying the files found on disk only", path, e)
        return None, {}
    try:
        g = meta.global_info()
        states: dict[int, str | None] = {rid: meta.range_info(rid).state for rid in meta.range_ids()}
        return g.get("range_size"), states
    except RpcBackfillError as e:
        log.warning("meta store %s is inconsistent (%s); verifying the files found on disk only", path, e)
        return None, {}
    finally:
        meta.close()


def _ranges_on_disk(config: Config, range_size: int) -> set[int]:
    layout = DataDirLayout(config)
    found: set[int] = set()
    if layout.txhash_base.is_dir():
        for e in os.scandir(layout.txhash_base):
            if e.is_dir() and _RANGE_DIR_RE.match(e.name):
                found.add(int(e.name))
    chunks = layout.chunk_paths(0)[0].parent.parent  # {ledgers_base}/chunks: one directory per 1000 chunks
    if chunks.is_dir():
        for d in os.scandir(chunks):
            if not d.is_dir():
                continue
            for f in os.scandir(d.path):
                m = _CHUNK_FILE_RE.match(f.name)
                if m:
                    found.add(range_of_ledger(chunk_first_ledger(int(m.group(1))), range_size))
    return found


def discover(config: Config) -> tuple[int, dict[int, str | None]]:
    """``(range_size, {range id: meta state or None})`` of every range to verify."""
    range_size = config.backfill.range_size
    meta_size, states = _meta_hints(config)
    if meta_size is not None and meta_size != range_size:
        raise InputError(
            f"data directory {config.service.data_dir} was backfilled with range_size {meta_size}, "
            f"the configuration says {range_size}; pass the configuration used for the backfill"
        )
    ranges: dict[int, str | None] = {rid: None for rid in _ranges_on_disk(config, range_size)}
    ranges.update(states)
    b = config.backfill
    if b.start_ledger is not None and b.end_ledger is not None and b.end_ledger >= b.start_ledger:
        for rid in range(range_of_ledger(b.start_ledger, range_size), range_of_ledger(b.end_ledger, range_size) + 1):
            ranges.setdefault(rid, None)
    return range_size, dict(sorted(ranges.items()))


def _diagnose_chunk(data: Path, index: Path) -> tuple[str, Path] | None:
    """Which file of an unreadable chunk is off, in plain words, when it can be told: a
    truncated ``.index`` (shorter than a finished chunk's), or a ``.data`` whose size disagrees
    with a sound index.  None when the index is damaged in some other way."""
    try:
        raw = index.read_bytes()[: MAX_INDEX_BYTES + 1]
        size = data.stat().st_size
    except OSError:
        return None
    width = raw[1] if len(raw) > 1 else 0
    if width in (4, 8) and len(raw) < INDEX_HEADER_SIZE + (CHUNK_SIZE + 1) * width:
        full = INDEX_HEADER_SIZE + (CHUNK_SIZE + 1) * width
        return f"{index.name} is truncated: {len(raw)} bytes, a finished chunk's index has {full}", index
    if width not in (4, 8) or (len(raw) - INDEX_HEADER_SIZE) % width or len(raw) < INDEX_HEADER_SIZE + 2 * width:
        return None
    declared = int.from_bytes(raw[len(raw) - width :], "little")
    try:
        decode_index(raw, declared)  # the index is sound in itself
    except RpcBackfillError:
        return None
    if size < declared:
        return f"{data.name} is truncated: {size} bytes, its index expects {declared}", data
    if size > declared:
        return f"{data.name} has {size - declared} bytes after the last ledger its index knows", data
    return None


# --- structural checks (cheap: sizes and headers, no decoding) ---------------------------------------
#
# The one home of the per-file checks that ``status``, the start-up repair of ``--backfill``,
# ``rebuild-meta`` and this module's full verification share.  A chunk costs two opens and one
# read of its ``.index`` (at most 80 KiB), validated against the ``.data`` size; a shard costs
# one mmap and the header/section validation in C (plus, with ``crc``, one pass over the file).


def open_chunk_checked(ledgers_base: Path, c: int) -> tuple[ChunkReader | None, list[tuple[str, Path]]]:
    """Open chunk ``c`` and check its structure: ``(reader or None, [(problem, file)])``.

    Problems: a file missing, an index that is malformed or disagrees with the ``.data`` size
    (``ChunkReader`` runs ``decode_index``), fewer than 10,000 ledgers, a non-canonical offset
    width.  The reader is None when the chunk cannot be opened; the caller closes it otherwise."""
    first, last = chunk_first_ledger(c), chunk_last_ledger(c)
    data, index = chunk_paths(ledgers_base, c)
    missing = [p.name for p in (data, index) if not p.is_file()]
    if missing:
        msg = f"chunk file{'s' * (len(missing) > 1)} {' and '.join(missing)} missing (ledgers {first}-{last})"
        return None, [(msg, data.parent)]
    try:
        reader = ChunkReader(ledgers_base, c)
    except RpcBackfillError as e:
        why, path = _diagnose_chunk(data, index) or (str(e), index)
        return None, [(f"unreadable (ledgers {first}-{last}): {why}", path)]
    problems: list[tuple[str, Path]] = []
    if reader.index_width != index_width(reader.data_bytes):
        problems.append(
            (
                f"offset width {reader.index_width} is not the canonical "
                f"{index_width(reader.data_bytes)} for {reader.data_bytes} data bytes",
                index,
            )
        )
    if len(reader) != CHUNK_SIZE:
        problems.append(
            (
                f"holds {len(reader)} ledgers, a finished chunk holds {CHUNK_SIZE} "
                f"(ledgers {reader.last_ledger + 1}-{last} are absent)",
                index,
            )
        )
    return reader, problems


def open_shard_checked(
    path: Path, range_start: int, *, crc: bool, n_keys: int | None = None
) -> tuple[ShardIndex | None, str | None]:
    """Open one index shard and check it belongs to the range starting at ``range_start``
    (and, when given, holds ``n_keys`` keys): ``(index, None)`` or ``(None, problem)``.
    ``crc`` verifies the CRC-32 of the whole file as well (a full read of it)."""
    if not path.is_file():
        return None, "index shard file is missing"
    try:
        ix = ShardIndex(path, checksum="open" if crc else "off")
    except RpcBackfillError as e:
        return None, str(e)
    problem = None
    if ix.range_start != range_start:
        problem = f"belongs to the range starting at ledger {ix.range_start}, expected {range_start}"
    elif n_keys is not None and ix.n_keys != n_keys:
        problem = f"holds {ix.n_keys} keys, the meta store records {n_keys}"
    if problem is not None:
        ix.close()
        return None, problem
    return ix, None


def structural_damage(
    layout: DataDirLayout,
    rid: int,
    first_ledger: int,
    last_ledger: int,
    *,
    shard_keys: list[int] | None = None,
    crc: bool = False,
) -> list[Problem]:
    """Every structural problem of the final files of range ``rid`` (ledgers
    ``first_ledger..last_ledger``): its chunks and its 16 index shards.  ``shard_keys`` (the
    meta store's ``cf_counts``) also checks each shard's key count.  Nothing is decoded: the
    full check is ``verify_data_dir``."""
    out: list[Problem] = []
    for c in range(chunk_of_ledger(first_ledger), chunk_of_ledger(last_ledger) + 1):
        reader, problems = open_chunk_checked(layout.ledgers_base, c)
        if reader is not None:
            reader.close()
        out += [Problem("chunk", msg, range_id=rid, chunk=c, path=str(p)) for msg, p in problems]
    for x in range(NSHARDS):
        path = layout.index_shard(rid, x)
        ix, problem = open_shard_checked(
            path, first_ledger, crc=crc, n_keys=None if shard_keys is None else shard_keys[x]
        )
        if ix is not None:
            ix.close()
        if problem is not None:
            out.append(Problem("shard", problem, range_id=rid, shard=shard_digit(x), path=str(path)))
    return out


# --- the checks ------------------------------------------------------------------------------------


class _Verifier:
    def __init__(self, config: Config, options: VerifyOptions, cancel: threading.Event | None):
        self.config = config
        self.options = options
        self.cancel = cancel or threading.Event()
        self.layout = DataDirLayout(config)
        self.ledgers_base = self.layout.ledgers_base
        self.rng = np.random.default_rng(options.seed)
        self.problems: list[Problem] = []
        self._last_log = time.monotonic()
        self._t0 = time.monotonic()
        self._ledgers_done = 0
        self._ledgers_total = 0

    def add(self, rr: RangeReport, kind: str, message: str, **where: Any) -> None:
        p = Problem(kind, message, range_id=rr.range_id, **where)
        self.problems.append(p)
        rr.problems += 1
        log.warning("verify: %s: %s", p.subject, message)

    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled("verification cancelled")

    def _progress(self, rr: RangeReport, chunk: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_log < self.options.progress_interval_s:
            return
        self._last_log = now
        elapsed = now - self._t0
        rate = self._ledgers_done / elapsed if elapsed > 0 else 0.0
        left = self._ledgers_total - self._ledgers_done
        eta = f", ETA {left / rate:.0f}s" if rate > 0 and left > 0 else ""
        log.info(
            "verify: range %d chunk %d done: %d/%d ledgers (%.1f%%), %.0f ledgers/s%s, %d problems so far",
            rr.range_id,
            chunk,
            self._ledgers_done,
            self._ledgers_total,
            100.0 * self._ledgers_done / max(1, self._ledgers_total),
            rate,
            eta,
            len(self.problems),
        )

    # -- shards --

    def open_shards(self, rr: RangeReport) -> list[ShardIndex | None]:
        out: list[ShardIndex | None] = []
        for x in range(NSHARDS):
            path = self.layout.index_shard(rr.range_id, x)
            ix, problem = open_shard_checked(path, rr.first_ledger, crc=True)
            if problem is not None:
                self.add(rr, "shard", problem, shard=shard_digit(x), path=str(path))
            else:
                rr.shards_checked += 1
            out.append(ix)
        return out

    # -- chunks --

    def chunk_ledgers(self, rr: RangeReport, c: int) -> Iterator[tuple[int, bytes | None]]:
        """``(seq, lcm or None)`` for every ledger of chunk ``c`` in order; problems recorded."""
        first, last = chunk_first_ledger(c), chunk_last_ledger(c)
        data = self.layout.chunk_paths(c)[0]
        reader, problems = open_chunk_checked(self.ledgers_base, c)
        for msg, path in problems:
            self.add(rr, "chunk", msg, chunk=c, path=str(path))
        if reader is None:
            for seq in range(first, last + 1):
                yield seq, None
            return
        rr.chunks_checked += 1
        with reader:
            nxt = first  # the next ledger the reader should produce
            bad = 0
            try:
                for seq, raw in reader:
                    yield seq, raw
                    nxt = seq + 1
            except RpcBackfillError as e:
                # the block reader stopped at ``nxt``: go on frame by frame
                bad += 1
                self.add(rr, "ledger", f"stored frame is unreadable: {e}", chunk=c, ledger=nxt, path=str(data))
                yield nxt, None
                for seq in range(nxt + 1, reader.last_ledger + 1):
                    try:
                        raw = reader.get(seq)
                    except RpcBackfillError as e2:
                        bad += 1
                        if bad <= MAX_PROBLEMS_PER_CHUNK:
                            self.add(
                                rr, "ledger", f"stored frame is unreadable: {e2}", chunk=c, ledger=seq, path=str(data)
                            )
                        yield seq, None
                        continue
                    yield seq, raw
                if bad > MAX_PROBLEMS_PER_CHUNK:
                    self.add(
                        rr,
                        "chunk",
                        f"{bad - MAX_PROBLEMS_PER_CHUNK} more unreadable ledgers not listed",
                        chunk=c,
                        path=str(data),
                    )
            seq = max(nxt, reader.last_ledger + 1)
            for s in range(seq, last + 1):
                yield s, None

    # -- one range --

    def verify_range(self, rid: int, rs: int, meta_state: str | None) -> RangeReport:
        rr = RangeReport(rid, range_first_ledger(rid, rs), range_last_ledger(rid, rs), meta_state=meta_state)
        log.info(
            "verify: range %d (ledgers %d-%d)%s",
            rid,
            rr.first_ledger,
            rr.last_ledger,
            f", meta store state {meta_state}" if meta_state else "",
        )
        if meta_state is not None and meta_state != "COMPLETE":
            self.add(rr, "range", f"not finished: the meta store records it as {meta_state}")
        shards = self.open_shards(rr)
        try:
            self._scan_range(rr, shards)
        finally:
            for ix in shards:
                if ix is not None:
                    ix.close()
        log.info(
            "verify: range %d: %s (%d ledgers, %d keys looked up)",
            rid,
            "ok" if rr.problems == 0 else f"{rr.problems} problems",
            rr.ledgers_checked,
            rr.keys_checked,
        )
        return rr

    def _scan_range(self, rr: RangeReport, shards: list[ShardIndex | None]) -> None:
        sample = self.options.sample
        counts = np.zeros(NSHARDS, dtype=np.int64)  # keys seen per shard, in ledger order
        picks: list[np.ndarray | None] = []  # sample mode: sorted key positions to look up
        for ix in shards:
            if sample is None or ix is None:
                picks.append(None)
            else:
                n = ix.n_keys
                picks.append(
                    np.sort(self.rng.choice(n, size=min(sample, n), replace=False))
                    if n
                    else np.zeros(0, dtype=np.int64)
                )
        wrong = np.zeros(NSHARDS, dtype=np.int64)
        pend_keys: list[bytes] = []
        pend_seqs: list[np.ndarray] = []
        pend_n = 0
        complete = True  # every ledger of the range was read (so key counts are meaningful)

        def flush() -> None:
            nonlocal pend_n
            if not pend_keys:
                return
            keys = np.frombuffer(b"".join(pend_keys), dtype=np.uint8).reshape(-1, 32)
            seqs = np.concatenate(pend_seqs)
            pend_keys.clear()
            pend_seqs.clear()
            pend_n = 0
            shard_of = keys[:, 0] >> 4
            for x in np.unique(shard_of).tolist():
                sel = np.flatnonzero(shard_of == x)
                pos = counts[x] + np.arange(sel.size)
                counts[x] += sel.size
                ix = shards[x]
                if ix is None:
                    continue
                p = picks[x]
                if p is not None:
                    keep = np.isin(pos, p)
                    sel = sel[keep]
                    if not sel.size:
                        continue
                got = ix.lookup_many(np.ascontiguousarray(keys[sel]))
                want = seqs[sel]
                rr.keys_checked += int(sel.size)
                for i in np.flatnonzero(got != want).tolist():
                    wrong[x] += 1
                    if wrong[x] <= MAX_KEY_PROBLEMS_PER_SHARD:
                        g = int(got[i])
                        self.add(
                            rr,
                            "key",
                            f"transaction {bytes(keys[sel[i]]).hex()} of ledger {int(want[i])} "
                            + ("is not found" if g == 0 else f"resolves to ledger {g}"),
                            shard=shard_digit(x),
                            ledger=int(want[i]),
                            path=str(ix.path),
                        )

        source = self._open_source(rr)
        try:
            for c in range(chunk_of_ledger(rr.first_ledger), chunk_of_ledger(rr.last_ledger) + 1):
                self._check_cancel()
                for seq, raw in self.chunk_ledgers(rr, c):
                    self._ledgers_done += 1
                    if source is not None:
                        source = self._compare(rr, source, seq, raw)
                    if raw is None:
                        complete = False
                        continue
                    problem = None
                    try:
                        got_seq, hashes = lcm.tx_hashes(raw)
                    except (XdrError, ValueError) as e:
                        problem = f"stored bytes are not a valid LedgerCloseMeta: {e}"
                    else:
                        if got_seq != seq:
                            problem = f"holds ledger sequence {got_seq}, expected {seq}"
                    if problem is not None:
                        complete = False
                        self.add(rr, "ledger", problem, chunk=c, ledger=seq, path=str(self.layout.chunk_paths(c)[0]))
                        continue
                    rr.ledgers_checked += 1
                    if hashes:
                        n = len(hashes) // 32
                        rr.keys_found += n
                        pend_keys.append(hashes)
                        pend_seqs.append(np.full(n, seq, dtype=np.uint32))
                        pend_n += n
                        if pend_n >= LOOKUP_BATCH:
                            flush()
                flush()
                self._progress(rr, c)
        finally:
            if source is not None:
                source.close()
        for x, ix in enumerate(shards):
            if wrong[x] > MAX_KEY_PROBLEMS_PER_SHARD:
                self.add(
                    rr,
                    "key",
                    f"{int(wrong[x]) - MAX_KEY_PROBLEMS_PER_SHARD} more wrong lookups not listed",
                    shard=shard_digit(x),
                    path=str(ix.path) if ix is not None else None,
                )
            if ix is not None and complete and ix.n_keys != counts[x]:
                self.add(
                    rr,
                    "shard",
                    f"holds {ix.n_keys} keys but the range's ledgers have {int(counts[x])} "
                    f"transaction hashes in this shard",
                    shard=shard_digit(x),
                    path=str(ix.path),
                )
        if not complete:
            log.info("verify: range %d has unreadable ledgers: per-shard key counts not compared", rr.range_id)

    # -- the source --

    def _open_source(self, rr: RangeReport):
        if not self.options.against_source:
            return None
        from ..sources import open_source

        src = open_source(self.config, self.cancel)
        try:
            src.prepare_range(rr.first_ledger, rr.last_ledger)
        except Cancelled:
            src.close()
            raise
        except RpcBackfillError as e:
            src.close()
            self.add(rr, "source", f"cannot read the source for this range: {e}")
            return None
        return src

    def _compare(self, rr: RangeReport, source, seq: int, raw: bytes | None):
        """Compare ledger ``seq`` with the source; the source, or None once it failed."""
        try:
            theirs = bytes(source.get_ledger(seq).lcm)
        except Cancelled:
            raise
        except RpcBackfillError as e:
            self.add(rr, "source", f"source failed at this ledger, later ledgers not compared: {e}", ledger=seq)
            source.close()
            return None
        if raw is None:
            return source
        rr.ledgers_compared += 1
        mine_d, theirs_d = hashlib.sha256(raw).hexdigest(), hashlib.sha256(theirs).hexdigest()
        if mine_d != theirs_d:
            self.add(
                rr,
                "source",
                f"stored ledger differs from the source (sha256 {mine_d[:16]}... "
                f"stored, {theirs_d[:16]}... in the source)",
                chunk=chunk_of_ledger(seq),
                ledger=seq,
            )
        return source

    def run(self) -> VerifyReport:
        rs, ranges = discover(self.config)
        report = VerifyReport(str(self.config.service.data_dir), rs, self.options.sample, self.options.against_source)
        self._ledgers_total = len(ranges) * rs
        log.info(
            "verify: data directory %s: %d ranges to check (%s), %s%s",
            self.config.service.data_dir,
            len(ranges),
            ", ".join(map(str, ranges)) or "none",
            "every key" if self.options.sample is None else f"{self.options.sample} keys per shard",
            ", against the source" if self.options.against_source else "",
        )
        if not ranges:
            self.problems.append(Problem("range", "nothing to verify: no chunks, no index and no recorded ranges"))
        for rid, state in ranges.items():
            report.ranges.append(self.verify_range(rid, rs, state))
        report.problems = self.problems
        report.elapsed_s = time.monotonic() - self._t0
        log.info(
            "verify: done in %.1fs: %s",
            report.elapsed_s,
            "clean" if report.clean else f"{len(report.problems)} problems",
        )
        return report


def verify_range(
    config: Config, rid: int, meta_state: str | None = None, cancel: threading.Event | None = None
) -> list[Problem]:
    """The full check of one range (every chunk, shard and key; no source comparison)."""
    v = _Verifier(config, VerifyOptions(), cancel)
    v.verify_range(rid, config.backfill.range_size, meta_state)
    return v.problems


def verify_data_dir(
    config: Config, options: VerifyOptions | None = None, cancel: threading.Event | None = None
) -> VerifyReport:
    """Check the data directory of ``config``; never raises for damage (it is in the report)."""
    opts = options or VerifyOptions()
    if opts.sample is not None and opts.sample < 1:
        raise InputError(f"--sample must be >= 1, got {opts.sample}")
    return _Verifier(config, opts, cancel).run()


__all__ = [
    "Problem",
    "RangeReport",
    "VerifyOptions",
    "VerifyReport",
    "discover",
    "open_chunk_checked",
    "open_shard_checked",
    "structural_damage",
    "verify_data_dir",
    "verify_range",
]
