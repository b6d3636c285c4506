"""Typed meta-store updates: the messages a range task sends its coordinator.

Each ``MetaWriter`` method has one update class here.  An update knows two things:

``apply(meta, rid)``
    perform it on a ``MetaWriter`` (the coordinator's ``MetaStore``: one synced batch);
``mirror(info)``
    the same change on an in-memory ``RangeInfo``, so that the orchestrator and the
    coordinator keep their copy of the range's record current without re-reading the store.

``ForwardingMeta`` is the ``MetaWriter`` of a range task that does not own the store: every
call becomes an update handed to ``send``, which returns once the coordinator applied it (or
raises ``MetaStoreError`` with its refusal).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import MetaStoreError
from ..meta.store import (
    Checkpoint,
    ChunkDone,
    LedgerPhase,
    MetaWriter,
    RangeInfo,
    RangeState,
    TxHashPhase,
    rfc3339_now,
)


class MetaUpdate:
    """Base of the update messages (frozen dataclasses, picklable)."""

    def apply(self, meta: MetaWriter, rid: int) -> None:
        raise NotImplementedError

    def mirror(self, info: RangeInfo) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class StartIngesting(MetaUpdate):
    spill_dir: str

    def apply(self, meta: MetaWriter, rid: int) -> None:
        meta.start_ingesting(rid, self.spill_dir)

    def mirror(self, info: RangeInfo) -> None:
        info.state = RangeState.INGESTING
        info.ledger_phase = LedgerPhase.INGESTING
        info.txhash_phase = TxHashPhase.INGESTING
        info.rocksdb_path = self.spill_dir


@dataclass(frozen=True)
class SaveCheckpoint(MetaUpdate):
    cp: Checkpoint

    def apply(self, meta: MetaWriter, rid: int) -> None:
        meta.checkpoint(rid, self.cp)

    def mirror(self, info: RangeInfo) -> None:
        cp = self.cp
        info.ledger_last_committed = info.txhash_last_committed = cp.last_committed_ledger
        info.ledger_count = cp.ledger_count
        info.cf_counts = list(cp.cf_counts)
        info.open_chunk = cp.open_chunk


@dataclass(frozen=True)
class MarkChunkDone(MetaUpdate):
    """A chunk worker finished chunk ``done.chunk_id`` (chunk-parallel ingestion); ``prefix`` is
    the new checkpoint of the contiguous finished run from the range's start, when it grew."""

    done: ChunkDone
    prefix: Checkpoint | None = None

    def apply(self, meta: MetaWriter, rid: int) -> None:
        meta.mark_chunk_done(rid, self.done, self.prefix)

    def mirror(self, info: RangeInfo) -> None:
        info.chunks_done[self.done.chunk_id] = self.done
        if self.prefix is not None:
            SaveCheckpoint(self.prefix).mirror(info)


@dataclass(frozen=True)
class StartTransition(MetaUpdate):
    def apply(self, meta: MetaWriter, rid: int) -> None:
        meta.start_transition(rid)

    def mirror(self, info: RangeInfo) -> None:
        info.state = RangeState.TRANSITIONING
        info.ledger_phase = LedgerPhase.WRITING_LFS
        info.txhash_phase = TxHashPhase.COMPACTING


@dataclass(frozen=True)
class SetLedgerPhase(MetaUpdate):
    phase: LedgerPhase
    immutable_path: str | None = None

    def apply(self, meta: MetaWriter, rid: int) -> None:
        meta.set_ledger_phase(rid, self.phase, self.immutable_path)

    def mirror(self, info: RangeInfo) -> None:
        info.ledger_phase = self.phase
        if self.immutable_path:
            info.immutable_path = self.immutable_path


@dataclass(frozen=True)
class SetTxHashPhase(MetaUpdate):
    phase: TxHashPhase
    recsplit_path: str | None = None

    def apply(self, meta: MetaWriter, rid: int) -> None:
        meta.set_txhash_phase(rid, self.phase, self.recsplit_path)

    def mirror(self, info: RangeInfo) -> None:
        info.txhash_phase = self.phase
        if self.recsplit_path:
            info.recsplit_path = self.recsplit_path


@dataclass(frozen=True)
class MarkChunksVerified(MetaUpdate):
    n: int

    def apply(self, meta: MetaWriter, rid: int) -> None:
        meta.mark_chunks_verified(rid, self.n)

    def mirror(self, info: RangeInfo) -> None:
        info.chunks_verified = self.n


@dataclass(frozen=True)
class MarkShard(MetaUpdate):
    step: str  # sorted | built | verified
    shard: str
    value: str | int

    def apply(self, meta: MetaWriter, rid: int) -> None:
        meta.mark_shard(rid, self.step, self.shard, self.value)

    def mirror(self, info: RangeInfo) -> None:
        if self.step == "sorted":
            info.shard_sorted[self.shard] = str(self.value)
        elif self.step == "built":
            info.shard_built[self.shard] = int(self.value)
        else:
            info.shard_verified[self.shard] = int(self.value)


@dataclass(frozen=True)
class CompleteRange(MetaUpdate):
    def apply(self, meta: MetaWriter, rid: int) -> None:
        meta.complete_range(rid)

    def mirror(self, info: RangeInfo) -> None:
        info.state = RangeState.COMPLETE
        info.completed_at = rfc3339_now()  # the store's own stamp may differ by a second


class ForwardingMeta:
    """``MetaWriter`` for range ``rid`` whose updates are applied elsewhere via ``send``."""

    def __init__(self, rid: int, send: Callable[[MetaUpdate], None]):
        self.rid = rid
        self._send = send

    def _forward(self, rid: int, update: MetaUpdate) -> None:
        if rid != self.rid:
            raise MetaStoreError(f"range {self.rid}: refused update {type(update).__name__} for range {rid}")
        self._send(update)

    def start_ingesting(self, rid: int, spill_dir: str) -> None:
        self._forward(rid, StartIngesting(spill_dir))

    def checkpoint(self, rid: int, cp: Checkpoint) -> None:
        self._forward(rid, SaveCheckpoint(cp))

    def mark_chunk_done(self, rid: int, done: ChunkDone, prefix: Checkpoint | None = None) -> None:
        self._forward(rid, MarkChunkDone(done, prefix))

    def start_transition(self, rid: int) -> None:
        self._forward(rid, StartTransition())

    def set_ledger_phase(self, rid: int, phase: LedgerPhase, immutable_path: str | None = None) -> None:
        self._forward(rid, SetLedgerPhase(phase, immutable_path))

    def set_txhash_phase(self, rid: int, phase: TxHashPhase, recsplit_path: str | None = None) -> None:
        self._forward(rid, SetTxHashPhase(phase, recsplit_path))

    def mark_chunks_verified(self, rid: int, n: int) -> None:
        self._forward(rid, MarkChunksVerified(n))

    def mark_shard(self, rid: int, step: str, shard: str, value: str | int) -> None:
        self._forward(rid, MarkShard(step, shard, value))

    def complete_range(self, rid: int) -> None:
        self._forward(rid, CompleteRange())
