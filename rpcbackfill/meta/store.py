"""The meta store of spec section 4: RocksDB (rocksdict, raw mode), one writer.

Keys are UTF-8 strings; values are big-endian uint32/uint64, UTF-8 strings, RFC 3339 UTC
timestamps or (``cf_counts``) JSON.  Only the coordinator process opens the store for
writing; orchestrator processes ask it to apply the typed updates below over a pipe
(``rpcbackfill.orchestration.protocol``).  Every update is one ``WriteBatch`` written
with ``sync=True`` so that an acknowledged update survives a power loss.

State machines (validated here; a write that skips a state raises ``MetaStoreError``):

    range:{id}:state          PENDING -> INGESTING -> TRANSITIONING -> COMPLETE   (any -> FAILED;
                              FAILED -> PENDING/INGESTING/TRANSITIONING when re-run)
    range:{id}:ledger:phase   INGESTING -> WRITING_LFS -> IMMUTABLE
    range:{id}:txhash:phase   INGESTING -> COMPACTING -> BUILDING_RECSPLIT -> VERIFYING_RECSPLIT -> COMPLETE

Keys added by this implementation under the same scheme (documented in docs/design.md):
    global:range_size                          uint64, fixed for the life of a data directory
    range:{id}:error                           last failure message (string), cleared on resume
    range:{id}:attempts                        uint32, failed attempts of the current run
    range:{id}:ledger:open_chunk               uint32, chunk id of the partial chunk at the checkpoint
    range:{id}:ledger:open_chunk_ledgers       uint32, ledgers in that partial chunk
    range:{id}:ledger:open_chunk_bytes         uint64, bytes of its partial .data file
    range:{id}:ledger:chunks_verified          uint32, chunks of the range verified (prefix, WRITING_LFS)
    range:{id}:txhash:shard:{x}:sorted         path of the compacted shard {x} (COMPACTING done for x)
    range:{id}:txhash:shard:{x}:built          uint64 keys in index shard {x} (BUILDING_RECSPLIT done for x)
    range:{id}:txhash:shard:{x}:verified       uint64 keys verified in shard {x} (VERIFYING_RECSPLIT done)
    range:{id}:chunk:{C}:done                  JSON: chunk C ingested by a chunk worker (chunk-parallel
                                               ingestion): its per-shard tx counts, ledger count, and the
                                               hash links (previous hash of its first ledger, hash of its
                                               last) when ledger hashes are checked
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Protocol

from ..errors import InputError, MetaStoreCorruptError, MetaStoreError
from ..ledgermath import check_range_size, range_first_ledger, range_last_ledger, range_of_ledger
from ..records import NSHARDS, SHARD_DIGITS, ChunkProgress

log = logging.getLogger(__name__)

MODE_BACKFILL = "backfill"


class _StrEnum(str, Enum):
    """A str-valued enum that prints as its value (``enum.StrEnum`` needs Python 3.11)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @classmethod
    def parse(cls, value: str, what: str):
        try:
            return cls(value)
        except ValueError:
            raise MetaStoreError(f"meta store: unknown {what} {value!r}") from None


class RangeState(_StrEnum):
    """``range:{id}:state``."""

    PENDING = "PENDING"
    INGESTING = "INGESTING"
    TRANSITIONING = "TRANSITIONING"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"


class LedgerPhase(_StrEnum):
    """``range:{id}:ledger:phase``, in order."""

    INGESTING = "INGESTING"
    WRITING_LFS = "WRITING_LFS"
    IMMUTABLE = "IMMUTABLE"


class TxHashPhase(_StrEnum):
    """``range:{id}:txhash:phase``, in order."""

    INGESTING = "INGESTING"
    COMPACTING = "COMPACTING"
    BUILDING_RECSPLIT = "BUILDING_RECSPLIT"
    VERIFYING_RECSPLIT = "VERIFYING_RECSPLIT"
    COMPLETE = "COMPLETE"


SHARD_STEPS = ("sorted", "built", "verified")
# the txhash phase during which each shard step is recorded
SHARD_STEP_PHASE = {
    "sorted": TxHashPhase.COMPACTING,
    "built": TxHashPhase.BUILDING_RECSPLIT,
    "verified": TxHashPhase.VERIFYING_RECSPLIT,
}

_RANGE_NEXT = {
    RangeState.PENDING: {RangeState.INGESTING},
    RangeState.INGESTING: {RangeState.TRANSITIONING},
    RangeState.TRANSITIONING: {RangeState.COMPLETE},
    RangeState.COMPLETE: set(),
    RangeState.FAILED: {RangeState.PENDING, RangeState.INGESTING, RangeState.TRANSITIONING},
}


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _shadow_dir(path: Path) -> str:
    """A new temporary directory of symlinks to the files of the store at ``path`` (read-only use)."""
    shadow = tempfile.mkdtemp(prefix="rpcbackfill-meta-ro-")
    try:
        for entry in path.iterdir():
            if entry.name == "rocksdict-config.json":  # rewritten on open: a private copy
                shutil.copyfile(entry, os.path.join(shadow, entry.name))
            elif entry.name not in ("LOCK", "LOG") and not entry.name.startswith("LOG.old"):
                os.symlink(entry.resolve(), os.path.join(shadow, entry.name))
    except OSError as e:
        shutil.rmtree(shadow, ignore_errors=True)
        raise MetaStoreError(f"cannot read meta store {path}: {e.strerror or e}") from None
    return shadow


def encode_u32(v: int) -> bytes:
    return struct.pack(">I", v)


def encode_u64(v: int) -> bytes:
    return struct.pack(">Q", v)


def decode_uint(b: bytes) -> int:
    if len(b) == 4:
        return struct.unpack(">I", b)[0]
    if len(b) == 8:
        return struct.unpack(">Q", b)[0]
    raise MetaStoreError(f"meta store: integer value has {len(b)} bytes, expected 4 or 8")


def rfc3339_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def encode_cf_counts(counts: list[int]) -> bytes:
    if len(counts) != NSHARDS:
        raise MetaStoreError(f"cf_counts needs {NSHARDS} shard counts, got {len(counts)}")
    return json.dumps({SHARD_DIGITS[i]: int(n) for i, n in enumerate(counts)}, separators=(",", ":")).encode()


def decode_cf_counts(b: bytes) -> list[int]:
    d = json.loads(b.decode())
    try:
        return [int(d[x]) for x in SHARD_DIGITS]
    except KeyError as e:
        raise MetaStoreError(f"meta store: cf_counts lacks shard {e.args[0]!r}") from None


def rkey(rid: int, suffix: str) -> bytes:
    return f"range:{rid}:{suffix}".encode()


@dataclass(frozen=True)
class Checkpoint:
    """Everything one checkpoint writes, in one batch (spec section 4)."""

    last_committed_ledger: int
    ledger_count: int
    cf_counts: list[int]
    open_chunk: ChunkProgress | None = None


@dataclass(frozen=True)
class ChunkDone:
    """What ``range:{id}:chunk:{C}:done`` records about one chunk a chunk worker ingested."""

    chunk_id: int
    ledgers: int
    cf_counts: tuple[int, ...]
    first_prev_hash: bytes | None = None  # previousLedgerHash of the chunk's first ledger
    last_hash: bytes | None = None  # hash of its last ledger

    @property
    def tx_count(self) -> int:
        return sum(self.cf_counts)

    def encode(self) -> bytes:
        d = {
            "ledgers": self.ledgers,
            "cf_counts": {SHARD_DIGITS[i]: int(n) for i, n in enumerate(self.cf_counts)},
            "first_prev_hash": None if self.first_prev_hash is None else self.first_prev_hash.hex(),
            "last_hash": None if self.last_hash is None else self.last_hash.hex(),
        }
        return json.dumps(d, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, chunk_id: int, b: bytes) -> ChunkDone:
        try:
            d = json.loads(b.decode())
            cf = tuple(int(d["cf_counts"][x]) for x in SHARD_DIGITS)
            h = lambda k: None if d.get(k) is None else bytes.fromhex(d[k])  # noqa: E731
            return cls(chunk_id, int(d["ledgers"]), cf, h("first_prev_hash"), h("last_hash"))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise MetaStoreError(f"meta store: chunk {chunk_id} record is malformed ({e})") from None


@dataclass
class RangeInfo:
    """Decoded view of every key of one range."""

    id: int
    state: RangeState
    start_ledger: int
    end_ledger: int
    created_at: str | None = None
    completed_at: str | None = None
    error: str | None = None
    attempts: int = 0
    ledger_phase: LedgerPhase | None = None
    ledger_last_committed: int | None = None
    ledger_count: int = 0
    immutable_path: str | None = None
    open_chunk: ChunkProgress | None = None
    chunks_verified: int = 0
    txhash_phase: TxHashPhase | None = None
    txhash_last_committed: int | None = None
    cf_counts: list[int] = field(default_factory=lambda: [0] * NSHARDS)
    rocksdb_path: str | None = None
    recsplit_path: str | None = None
    shard_sorted: dict[str, str] = field(default_factory=dict)
    shard_built: dict[str, int] = field(default_factory=dict)
    shard_verified: dict[str, int] = field(default_factory=dict)
    chunks_done: dict[int, ChunkDone] = field(default_factory=dict)  # chunk-parallel ingestion

    @property
    def tx_count(self) -> int:
        return sum(self.cf_counts)


class MetaWriter(Protocol):
    """The updates a range orchestrator makes while it drives its range (``MetaStore`` has them;
    an orchestrator in another process or machine gets a forwarding implementation).  Each is
    one synced batch, validated against the state machines above."""

    def start_ingesting(self, rid: int, spill_dir: str) -> None: ...

    def checkpoint(self, rid: int, cp: Checkpoint) -> None: ...

    def start_transition(self, rid: int) -> None: ...

    def set_ledger_phase(self, rid: int, phase: LedgerPhase, immutable_path: str | None = None) -> None: ...

    def set_txhash_phase(self, rid: int, phase: TxHashPhase, recsplit_path: str | None = None) -> None: ...

    def mark_chunks_verified(self, rid: int, n: int) -> None: ...

    def mark_chunk_done(self, rid: int, done: ChunkDone, prefix: Checkpoint | None = None) -> None: ...

    def mark_shard(self, rid: int, step: str, shard: str, value: str | int) -> None: ...

    def complete_range(self, rid: int) -> None: ...


class MetaStore:
    """Typed access to the meta store (implements ``MetaWriter``).  ``read_only=True`` may run beside a live writer."""

    def __init__(self, path: Path | str, rocksdb=None, *, read_only: bool = False):
        from rocksdict import AccessType, BlockBasedOptions, Cache, Options, Rdict, WriteOptions

        self.path = Path(path)
        self.read_only = read_only
        opts = Options(raw_mode=True)
        opts.create_if_missing(not read_only)
        if rocksdb is not None:
            opts.set_write_buffer_size(rocksdb.write_buffer_mb << 20)
            opts.set_max_write_buffer_number(rocksdb.max_write_buffer_number)
            bbo = BlockBasedOptions()
            bbo.set_block_cache(Cache(rocksdb.block_cache_mb << 20))
            opts.set_block_based_table_factory(bbo)
        if read_only:
            if not (self.path / "CURRENT").exists():
                raise MetaStoreError(f"no meta store at {self.path}")
            access = AccessType.read_only()
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            access = AccessType.read_write()
        self._shadow: str | None = None
        open_path = str(self.path)
        if read_only and not os.access(self.path, os.W_OK):
            # rocksdict rewrites rocksdict-config.json on every open, even read-only: a store on a
            # read-only mount is opened through a private directory of links to its files.
            self._shadow = open_path = _shadow_dir(self.path)
        try:
            self._db = Rdict(open_path, opts, access_type=access)
        except Exception as e:  # rocksdict raises plain Exception with RocksDB's message
            self._drop_shadow()
            raise MetaStoreCorruptError(f"cannot open meta store {self.path}: {_one_line(e)}") from None
        self._wopt = WriteOptions()
        self._wopt.sync = True  # acknowledged == durable (WAL fsynced)
        self._closed = False

    # --- low level ---------------------------------------------------------------------------

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._db.close()  # flushes the memtable to an SST file
            except Exception as e:  # rocksdict raises plain Exception with RocksDB's message
                # Every write was acknowledged only once its WAL record was fsynced, so a flush that
                # fails (typically: the disk filled up, already reported) loses nothing -- the next
                # open replays the WAL.  Not a second error on the way out.
                log.debug("meta store %s: flush on close failed: %s", self.path, _one_line(e))
            finally:
                self._drop_shadow()

    def _drop_shadow(self) -> None:
        if self._shadow is not None:
            shutil.rmtree(self._shadow, ignore_errors=True)
            self._shadow = None

    def __enter__(self) -> MetaStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _unreadable(self, e: Exception, what: str) -> MetaStoreCorruptError:
        return MetaStoreCorruptError(f"meta store {self.path} is unreadable ({what}): {_one_line(e)}")

    def _get(self, key: bytes) -> bytes | None:
        try:
            v = self._db.get(key)
        except Exception as e:  # RocksDB corruption / I/O error, as a plain Exception
            raise self._unreadable(e, f"reading {key.decode(errors='replace')}") from None
        return None if v is None else bytes(v)

    def _str(self, key: bytes) -> str | None:
        v = self._get(key)
        return None if v is None else v.decode()

    def _uint(self, key: bytes) -> int | None:
        v = self._get(key)
        return None if v is None else decode_uint(v)

    def _write(self, puts: dict[bytes, bytes], deletes: Iterable[bytes] = ()) -> None:
        if self.read_only:
            raise MetaStoreError(f"meta store {self.path} is open read-only")
        from rocksdict import WriteBatch

        wb = WriteBatch(raw_mode=True)
        for k, v in puts.items():
            wb.put(k, v)
        for k in deletes:
            wb.delete(k)
        try:
            self._db.write(wb, self._wopt)
        except Exception as e:
            raise MetaStoreError(f"meta store write failed ({', '.join(k.decode() for k in puts)}): {e}") from None

    def dump(self) -> dict[str, bytes]:
        """Every key and raw value (tests, debugging)."""
        out: dict[str, bytes] = {}
        it = self._db.iter()
        try:
            it.seek_to_first()
            while it.valid():
                out[bytes(it.key()).decode()] = bytes(it.value())
                it.next()
            it.status()  # raises if the scan stopped on an error rather than at the end
        except Exception as e:
            raise self._unreadable(e, "scanning all keys") from None
        finally:
            del it
        return out

    # --- global -------------------------------------------------------------------------------

    def global_info(self) -> dict:
        return {
            "mode": self._str(b"global:mode"),
            "backfill_start_ledger": self._uint(b"global:backfill_start_ledger"),
            "backfill_end_ledger": self._uint(b"global:backfill_end_ledger"),
            "range_size": self._uint(b"global:range_size"),
        }

    def init_backfill(self, start: int, end: int, range_size: int) -> list[int]:
        """Record the backfill scope and create missing range entries (PENDING); return range ids.

        A data directory keeps one ``range_size`` forever (InputError on mismatch).  A different
        [start, end] extends the recorded scope to the union; existing ranges keep their state.
        """
        check_range_size(range_size)
        g = self.global_info()
        if g["mode"] not in (None, MODE_BACKFILL):
            raise InputError(f"meta store {self.path} is in mode {g['mode']!r}, not {MODE_BACKFILL!r}")
        if g["range_size"] is not None and g["range_size"] != range_size:
            raise InputError(
                f"range_size {range_size} differs from {g['range_size']} recorded in {self.path}; "
                "range_size may never change for an existing data directory"
            )
        first_id = range_of_ledger(start, range_size)
        last_id = range_of_ledger(end, range_size)
        gs = start if g["backfill_start_ledger"] is None else min(start, g["backfill_start_ledger"])
        ge = end if g["backfill_end_ledger"] is None else max(end, g["backfill_end_ledger"])
        puts = {
            b"global:mode": MODE_BACKFILL.encode(),
            b"global:backfill_start_ledger": encode_u32(gs),
            b"global:backfill_end_ledger": encode_u32(ge),
            b"global:range_size": encode_u64(range_size),
        }
        now = rfc3339_now().encode()
        ids = list(range(first_id, last_id + 1))
        for rid in ids:
            if self._get(rkey(rid, "state")) is None:
                puts[rkey(rid, "state")] = RangeState.PENDING.encode()
                puts[rkey(rid, "start_ledger")] = encode_u32(range_first_ledger(rid, range_size))
                puts[rkey(rid, "end_ledger")] = encode_u32(range_last_ledger(rid, range_size))
                puts[rkey(rid, "created_at")] = now
        self._write(puts)
        return ids

    def range_ids(self) -> list[int]:
        ids = set()
        it = self._db.iter()
        try:
            it.seek(b"range:")
            while it.valid():
                k = bytes(it.key())
                if not k.startswith(b"range:"):
                    break
                ids.add(int(k.split(b":")[1]))
                it.next()
            # an iterator that hit a damaged block just stops being valid: only status() tells
            # "end of data" from "error", so an unchecked loop would report no ranges at all
            it.status()
        except Exception as e:
            raise self._unreadable(e, "listing ranges") from None
        finally:
            del it
        return sorted(ids)

    # --- ranges -------------------------------------------------------------------------------

    def range_info(self, rid: int) -> RangeInfo:
        g = lambda s: self._get(rkey(rid, s))  # noqa: E731
        s = lambda s: self._str(rkey(rid, s))  # noqa: E731
        u = lambda s: self._uint(rkey(rid, s))  # noqa: E731
        state, start, end = s("state"), u("start_ledger"), u("end_ledger")
        if state is None:
            raise MetaStoreError(f"meta store has no range {rid}")
        if start is None or end is None:
            raise MetaStoreError(f"meta store: range {rid} lacks its start or end ledger")
        lp, tp = s("ledger:phase"), s("txhash:phase")
        info = RangeInfo(
            id=rid,
            state=RangeState.parse(state, "range state"),
            start_ledger=start,
            end_ledger=end,
            created_at=s("created_at"),
            completed_at=s("completed_at"),
            error=s("error"),
            attempts=u("attempts") or 0,
            ledger_phase=None if lp is None else LedgerPhase.parse(lp, "ledger phase"),
            ledger_last_committed=u("ledger:last_committed_ledger"),
            ledger_count=u("ledger:count") or 0,
            immutable_path=s("ledger:immutable_path"),
            chunks_verified=u("ledger:chunks_verified") or 0,
            txhash_phase=None if tp is None else TxHashPhase.parse(tp, "txhash phase"),
            txhash_last_committed=u("txhash:last_committed_ledger"),
            rocksdb_path=s("txhash:rocksdb_path"),
            recsplit_path=s("txhash:recsplit_path"),
        )
        cf = g("txhash:cf_counts")
        if cf is not None:
            info.cf_counts = decode_cf_counts(cf)
        oc = u("ledger:open_chunk")
        if oc is not None:
            info.open_chunk = ChunkProgress(oc, u("ledger:open_chunk_ledgers") or 0, u("ledger:open_chunk_bytes") or 0)
        info.chunks_done = self._chunks_done(rid)
        for x in SHARD_DIGITS:
            v = s(f"txhash:shard:{x}:sorted")
            if v is not None:
                info.shard_sorted[x] = v
            n = u(f"txhash:shard:{x}:built")
            if n is not None:
                info.shard_built[x] = n
            n = u(f"txhash:shard:{x}:verified")
            if n is not None:
                info.shard_verified[x] = n
        return info

    def _chunks_done(self, rid: int) -> dict[int, ChunkDone]:
        """Every ``range:{rid}:chunk:{C}:done`` key (a prefix scan)."""
        prefix = rkey(rid, "chunk:")
        out: dict[int, ChunkDone] = {}
        it = self._db.iter()
        try:
            it.seek(prefix)
            while it.valid():
                k = bytes(it.key())
                if not k.startswith(prefix):
                    break
                parts = k[len(prefix) :].split(b":")
                if len(parts) == 2 and parts[1] == b"done" and parts[0].isdigit():
                    c = int(parts[0])
                    out[c] = ChunkDone.decode(c, bytes(it.value()))
                it.next()
            it.status()
        except MetaStoreError:
            raise
        except Exception as e:
            raise self._unreadable(e, f"listing the chunks of range {rid}") from None
        finally:
            del it
        return out

    def _require_state(self, rid: int) -> RangeState:
        st = self._str(rkey(rid, "state"))
        if st is None:
            raise MetaStoreError(f"meta store has no range {rid}")
        return RangeState.parse(st, "range state")

    def set_range_state(
        self, rid: int, state: RangeState | str, *, error: str | None = None, extra: dict | None = None
    ) -> None:
        """Move range ``rid`` to ``state`` (validated); ``extra`` = additional keys (suffix -> bytes)."""
        state = RangeState.parse(state, "range state")
        cur = self._require_state(rid)
        if state != cur and state != RangeState.FAILED and state not in _RANGE_NEXT[cur]:
            raise MetaStoreError(f"range {rid}: illegal state change {cur} -> {state}")
        if cur == RangeState.COMPLETE and state == RangeState.FAILED:
            raise MetaStoreError(f"range {rid}: a COMPLETE range cannot become FAILED")
        if state == RangeState.COMPLETE and cur != RangeState.COMPLETE:
            lp = self._str(rkey(rid, "ledger:phase"))
            tp = self._str(rkey(rid, "txhash:phase"))
            if lp != LedgerPhase.IMMUTABLE or tp != TxHashPhase.COMPLETE:
                raise MetaStoreError(f"range {rid}: cannot complete with ledger phase {lp} and txhash phase {tp}")
        puts = {rkey(rid, "state"): state.encode()}
        deletes = []
        if state == RangeState.FAILED:
            puts[rkey(rid, "error")] = (error or "unknown error").encode()
        elif cur == RangeState.FAILED:
            deletes.append(rkey(rid, "error"))
        for k, v in (extra or {}).items():
            puts[rkey(rid, k)] = v
        self._write(puts, deletes)

    def start_ingesting(self, rid: int, spill_dir: str) -> None:
        """PENDING -> INGESTING with both sub-flows at INGESTING (one batch)."""
        self.set_range_state(
            rid,
            RangeState.INGESTING,
            extra={
                "ledger:phase": LedgerPhase.INGESTING.encode(),
                "txhash:phase": TxHashPhase.INGESTING.encode(),
                "txhash:rocksdb_path": spill_dir.encode(),
            },
        )

    def set_attempts(self, rid: int, attempts: int) -> None:
        """Failed attempts of the range in the current run (written by the coordinator only)."""
        self._require_state(rid)
        self._write({rkey(rid, "attempts"): encode_u32(attempts)})

    def checkpoint(self, rid: int, cp: Checkpoint) -> None:
        """Spec section 4 checkpoint: ledger + txhash progress and counts in ONE synced batch."""
        puts, deletes = self._checkpoint_keys(rid, cp)
        self._write(puts, deletes)

    def mark_chunk_done(self, rid: int, done: ChunkDone, prefix: Checkpoint | None = None) -> None:
        """Record chunk ``done.chunk_id`` as ingested by a chunk worker; ``prefix`` (when the
        contiguous run of finished chunks from the range's start grew) is the checkpoint that
        describes that run, written in the same synced batch."""
        if len(done.cf_counts) != NSHARDS or done.ledgers <= 0:
            raise MetaStoreError(f"range {rid}: bad chunk record {done}")
        if prefix is not None:
            puts, deletes = self._checkpoint_keys(rid, prefix)
        else:
            cur = self._require_state(rid)
            if cur != RangeState.INGESTING:
                raise MetaStoreError(f"range {rid}: chunk {done.chunk_id} recorded while {cur}")
            puts, deletes = {}, []
        puts[rkey(rid, f"chunk:{done.chunk_id}:done")] = done.encode()
        self._write(puts, deletes)

    def _checkpoint_keys(self, rid: int, cp: Checkpoint) -> tuple[dict[bytes, bytes], list[bytes]]:
        cur = self._require_state(rid)
        if cur != RangeState.INGESTING:
            raise MetaStoreError(f"range {rid}: checkpoint at ledger {cp.last_committed_ledger} while {cur}")
        prev = self._uint(rkey(rid, "ledger:last_committed_ledger"))
        if prev is not None and cp.last_committed_ledger < prev:
            raise MetaStoreError(
                f"range {rid}: checkpoint ledger {cp.last_committed_ledger} precedes committed ledger {prev}"
            )
        puts = {
            rkey(rid, "ledger:last_committed_ledger"): encode_u32(cp.last_committed_ledger),
            rkey(rid, "ledger:count"): encode_u64(cp.ledger_count),
            rkey(rid, "txhash:last_committed_ledger"): encode_u32(cp.last_committed_ledger),
            rkey(rid, "txhash:cf_counts"): encode_cf_counts(cp.cf_counts),
        }
        deletes = []
        if cp.open_chunk is not None:
            puts[rkey(rid, "ledger:open_chunk")] = encode_u32(cp.open_chunk.chunk_id)
            puts[rkey(rid, "ledger:open_chunk_ledgers")] = encode_u32(cp.open_chunk.ledgers)
            puts[rkey(rid, "ledger:open_chunk_bytes")] = encode_u64(cp.open_chunk.data_bytes)
        else:
            deletes += [
                rkey(rid, s) for s in ("ledger:open_chunk", "ledger:open_chunk_ledgers", "ledger:open_chunk_bytes")
            ]
        return puts, deletes

    def start_transition(self, rid: int) -> None:
        """INGESTING -> TRANSITIONING; ledger phase WRITING_LFS, txhash phase COMPACTING (one batch)."""
        self.set_range_state(
            rid,
            RangeState.TRANSITIONING,
            extra={"ledger:phase": LedgerPhase.WRITING_LFS.encode(), "txhash:phase": TxHashPhase.COMPACTING.encode()},
        )

    def _set_phase(self, rid: int, sub: str, phases: type[_StrEnum], phase: str, extra: dict | None) -> None:
        order = list(phases)
        new = phases.parse(phase, f"{sub} phase")
        state = self._require_state(rid)
        if new != order[0] and state != RangeState.TRANSITIONING:
            raise MetaStoreError(f"range {rid}: {sub} phase {new} while the range is {state}")
        cur = self._str(rkey(rid, f"{sub}:phase"))
        if cur is None or order.index(new) - order.index(phases.parse(cur, f"{sub} phase")) not in (0, 1):
            raise MetaStoreError(f"range {rid}: illegal {sub} phase change {cur} -> {new}")
        puts = {rkey(rid, f"{sub}:phase"): new.encode()}
        for k, v in (extra or {}).items():
            puts[rkey(rid, k)] = v
        self._write(puts)

    def set_ledger_phase(self, rid: int, phase: LedgerPhase, immutable_path: str | None = None) -> None:
        extra = {"ledger:immutable_path": immutable_path.encode()} if immutable_path else None
        self._set_phase(rid, "ledger", LedgerPhase, phase, extra)

    def set_txhash_phase(self, rid: int, phase: TxHashPhase, recsplit_path: str | None = None) -> None:
        extra = {"txhash:recsplit_path": recsplit_path.encode()} if recsplit_path else None
        self._set_phase(rid, "txhash", TxHashPhase, phase, extra)

    def mark_chunks_verified(self, rid: int, n: int) -> None:
        if self._str(rkey(rid, "ledger:phase")) != LedgerPhase.WRITING_LFS:
            raise MetaStoreError(f"range {rid}: chunk verification recorded outside WRITING_LFS")
        self._write({rkey(rid, "ledger:chunks_verified"): encode_u32(n)})

    def mark_shard(self, rid: int, step: str, shard: str, value: str | int) -> None:
        """Record that ``step`` (sorted|built|verified) finished for ``shard``."""
        if step not in SHARD_STEPS or shard not in SHARD_DIGITS:
            raise MetaStoreError(f"range {rid}: bad shard mark {step}/{shard}")
        want = SHARD_STEP_PHASE[step]
        cur = self._str(rkey(rid, "txhash:phase"))
        if cur != want:
            raise MetaStoreError(f"range {rid}: shard {shard} {step} recorded during txhash phase {cur}")
        v = value.encode() if isinstance(value, str) else encode_u64(value)
        self._write({rkey(rid, f"txhash:shard:{shard}:{step}"): v})

    def complete_range(self, rid: int) -> None:
        """TRANSITIONING -> COMPLETE; callers have verified immutables and deleted active stores."""
        self.set_range_state(rid, RangeState.COMPLETE, extra={"completed_at": rfc3339_now().encode()})


def resume_state(info: RangeInfo) -> RangeState:
    """The state a FAILED range resumes in, deduced from its sub-flow phases."""
    if info.ledger_phase in (LedgerPhase.WRITING_LFS, LedgerPhase.IMMUTABLE) or info.txhash_phase not in (
        None,
        TxHashPhase.INGESTING,
    ):
        return RangeState.TRANSITIONING
    if info.ledger_phase is not None:
        return RangeState.INGESTING
    return RangeState.PENDING


@dataclass(frozen=True)
class RestoredRange:
    """What ``rebuild-meta`` learned from the files of one finished range (see ``restore_complete``)."""

    id: int
    range_size: int
    chunks: int
    shard_keys: list[int]  # keys held by index shard 0..15
    immutable_path: str
    recsplit_path: str
    rocksdb_path: str
    sorted_paths: list[str]


def restore_complete(store: MetaStore, ranges: list[RestoredRange], start: int, end: int, range_size: int) -> None:
    """Write into an EMPTY store the keys a normal run leaves for each range of ``ranges`` as
    COMPLETE, and the global scope [start, end] (one synced batch).  Used by ``rebuild-meta``."""
    check_range_size(range_size)
    if store.range_ids() or store.global_info()["mode"] is not None:
        raise MetaStoreError(f"meta store {store.path} is not empty; refusing to restore into it")
    now = rfc3339_now().encode()
    puts: dict[bytes, bytes] = {
        b"global:mode": MODE_BACKFILL.encode(),
        b"global:backfill_start_ledger": encode_u32(start),
        b"global:backfill_end_ledger": encode_u32(end),
        b"global:range_size": encode_u64(range_size),
    }
    for r in ranges:
        first, last = range_first_ledger(r.id, range_size), range_last_ledger(r.id, range_size)
        keys = {
            "state": RangeState.COMPLETE.encode(),
            "start_ledger": encode_u32(first),
            "end_ledger": encode_u32(last),
            "created_at": now,
            "completed_at": now,
            "ledger:phase": LedgerPhase.IMMUTABLE.encode(),
            "ledger:immutable_path": r.immutable_path.encode(),
            "ledger:last_committed_ledger": encode_u32(last),
            "ledger:count": encode_u64(last - first + 1),
            "ledger:chunks_verified": encode_u32(r.chunks),
            "txhash:phase": TxHashPhase.COMPLETE.encode(),
            "txhash:recsplit_path": r.recsplit_path.encode(),
            "txhash:rocksdb_path": r.rocksdb_path.encode(),
            "txhash:last_committed_ledger": encode_u32(last),
            "txhash:cf_counts": encode_cf_counts(r.shard_keys),
        }
        for i, x in enumerate(SHARD_DIGITS):
            keys[f"txhash:shard:{x}:sorted"] = r.sorted_paths[i].encode()
            keys[f"txhash:shard:{x}:built"] = encode_u64(r.shard_keys[i])
            keys[f"txhash:shard:{x}:verified"] = encode_u64(r.shard_keys[i])
        for k, v in keys.items():
            puts[rkey(r.id, k)] = v
    store._write(puts)
