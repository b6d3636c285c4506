"""Realistic synthetic ledgers and data lakes, templated from real pubnet ledgers.

Every generated ledger is a ``LedgerCloseMeta`` V1 by default (the protocol-21 pubnet ledger 53312000
is the skeleton: header, SCP info, upgrades) holding ``k`` transactions copied from a pool
of real pubnet transactions (ledgers 26M-53M, see ``templates``).  Generation is byte-level:
the pool is decoded with stellar-sdk once; each ledger is then assembled from the template
byte pieces and patched in place -- no per-ledger XDR objects:

* each transaction's ``seqNum`` becomes ``ledgerSeq << 32 | (i + 1)`` (``i`` = apply index),
  which makes every envelope, hence every transaction hash, unique across any range; the
  hash (and for fee bumps the inner hash) is recomputed with hashlib and written into the
  transaction's ``TransactionResultPair`` (and ``InnerTransactionResultPair``);
* the tx set is a GeneralizedTransactionSet v1 with a classic and a Soroban phase, each one
  component sorted by the envelopes' full hash sha256(envelope XDR) (as stellar-core does);
  ``txProcessing`` lists the same transactions in a different (random) apply order, as real
  ledgers do;  with ``lcm_version=0`` the ledger is a LedgerCloseMeta V0 (protocol-19
  skeleton, pubnet ledger 46154623) with a legacy TransactionSet and classic txs only;
* the header gets ``ledgerSeq``, ``previousLedgerHash`` (the previous generated ledger's
  hash), ``txSetHash`` (sha256 of the tx-set XDR), ``txSetResultHash`` (sha256 of the
  TransactionResultSet XDR), a close time 5 s apart, a pseudo-random ``bucketListHash``;
  the ``LedgerHeaderHistoryEntry.hash`` is sha256 of the header XDR, so consumers that
  check the hash chain accept the lake.

Determinism: the transactions of ledger ``L`` depend only on ``(seed, L)`` (and the options),
never on where the generated range starts; the header chain of course depends on the whole
range from ``first``.  The ledger before ``first`` is given a pseudo-random hash derived from
``(seed, first - 1)``.

Density: the number of transactions per ledger is drawn from a gamma-Poisson (negative
binomial) distribution with the configured mean, which gives realistic spread (and runs of
empty ledgers for small means).  Within a ledger the pool is sampled without replacement
(up to its size) so the zstd ratio stays close to that of real ledgers.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import PUBNET_PASSPHRASE
from ..errors import Cancelled
from ..ledgermath import FIRST_LEDGER
from .templates import (
    ENVELOPE_TYPE_TX_FEE_BUMP,
    ENVELOPE_TYPE_TX_V0,
    INNER_HASH_OFFSET,
    OFF_CLOSE_TIME,
    OFF_PREV_HASH,
    OFF_TXSET_HASH,
    V0_AS_V1_PREFIX,
    TemplateSet,
    TxTemplate,
    load_pubnet_templates,
    tx_hash_prefixes,
)

log = logging.getLogger(__name__)

# Generated transactions use sequence number (ledger << 32) | index as a signed XDR int64
# (the account-sequence convention of stellar-core), so a generated ledger must stay below 2**31.
MAX_GENERATED_LEDGER = 2**31 - 1
# Mean transactions per ledger of pubnet ranges 3-5 (ledgers 30M-60M): ~300.
DEFAULT_TX_PER_LEDGER = 300.0
MIN_TX_PER_LEDGER = 0.0
MAX_TX_PER_LEDGER = 5000.0
# Shape of the gamma mixing distribution: coefficient of variation of the per-ledger mean is
# 1/sqrt(8) ~ 0.35, close to the ledger-to-ledger spread of busy pubnet periods.
DENSITY_SHAPE = 8.0
# Pubnet closes a ledger about every 5 s; generated close times start at the genesis era.
CLOSE_INTERVAL_S = 5
CLOSE_TIME_BASE = 1_443_600_000  # 2015-09-30, pubnet launch
# Ledgers generated ahead of the lake writer (each ~1 MB at the default density).
PREFETCH_LEDGERS = 16
# The LedgerHeaderHistoryEntry hash sits before the LedgerHeader.
HEADER_START = 32

_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_U64 = struct.Struct(">Q")
_PHASE_EMPTY = _U32.pack(0) + _U32.pack(0)  # TransactionPhase v0 with no components


@dataclass(frozen=True)
class GenOptions:
    """What shapes the generated ledgers (besides the range)."""

    seed: int = 0
    tx_per_ledger: float = DEFAULT_TX_PER_LEDGER
    network_passphrase: str = PUBNET_PASSPHRASE
    min_tx_bytes: int = 0  # keep only template txs whose envelope+meta size is within
    max_tx_bytes: int | None = None  # [min_tx_bytes, max_tx_bytes] ("size" knob)
    templates_dir: str | None = None
    lcm_version: int = 1  # 1: LedgerCloseMeta V1 (protocol 21); 0: V0 (protocol 19, classic txs only)

    def __post_init__(self) -> None:
        if self.lcm_version not in (0, 1):
            raise ValueError(f"lcm_version must be 0 or 1, got {self.lcm_version!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not (MIN_TX_PER_LEDGER <= float(self.tx_per_ledger) <= MAX_TX_PER_LEDGER):
            raise ValueError(
                f"tx_per_ledger must be within {MIN_TX_PER_LEDGER}..{MAX_TX_PER_LEDGER}, got {self.tx_per_ledger!r}"
            )
        if not self.network_passphrase:
            raise ValueError("network_passphrase must be non-empty")


@dataclass(frozen=True)
class LakeStats:
    """What ``generate_lake`` wrote."""

    root: Path
    first: int
    last: int
    ledgers: int
    transactions: int  # TransactionResultPairs (fee bumps count once)
    files: int
    raw_bytes: int  # uncompressed LedgerCloseMetaBatch bytes
    compressed_bytes: int  # bytes of lake files
    seconds: float


def _check_range(first: int, last: int) -> None:
    for name, v in (("first", first), ("last", last)):
        if isinstance(v, bool) or not isinstance(v, int) or not (FIRST_LEDGER <= v <= MAX_GENERATED_LEDGER):
            raise ValueError(f"{name} ledger must be an integer in {FIRST_LEDGER}..{MAX_GENERATED_LEDGER}, got {v!r}")
    if last < first:
        raise ValueError(f"last ledger {last} precedes first ledger {first}")


def anchor_hash(seed: int, seq: int) -> bytes:
    """Pseudo-random hash standing in for ledger ``seq`` (the one before a generated range)."""
    return hashlib.sha256(b"rpcbackfill-lakegen anchor" + _U64.pack(seed) + _U32.pack(seq)).digest()


class LedgerGenerator:
    """Builds generated ledgers one at a time; holds the template pool and hash prefixes."""

    def __init__(self, opts: GenOptions, templates: TemplateSet | None = None):
        self.opts = opts
        ts = templates or load_pubnet_templates(opts.templates_dir)
        hi = opts.max_tx_bytes if opts.max_tx_bytes is not None else float("inf")
        # a V0 ledger (protocol < 20) cannot carry Soroban transactions
        pool = [t for t in ts.txs if opts.min_tx_bytes <= t.size <= hi and not (opts.lcm_version == 0 and t.soroban)]
        if not pool:
            raise ValueError(
                f"no template transaction has a size within {opts.min_tx_bytes}..{opts.max_tx_bytes} bytes"
            )
        self.pool: tuple[TxTemplate, ...] = tuple(pool)
        self.skel = ts.skeleton if opts.lcm_version == 1 else ts.skeleton_v0
        p_tx, p_fb = tx_hash_prefixes(opts.network_passphrase)
        self._h_tx = hashlib.sha256(p_tx)
        self._h_v0 = hashlib.sha256(p_tx + V0_AS_V1_PREFIX)
        self._h_fb = hashlib.sha256(p_fb)
        # TransactionPhase v0 with one TXSET_COMP_TXS_MAYBE_DISCOUNTED_FEE component whose
        # optional baseFee is present
        self._parts = [self._split(t) for t in self.pool]
        self._comp_head = _U32.pack(0) + _U32.pack(1) + _U32.pack(0) + _U32.pack(1) + _I64.pack(self.skel.base_fee)

    def _split(self, t: TxTemplate) -> tuple:
        """Pre-cut a template around its seqNum so a ledger is built by joining pieces."""
        env, so = t.env, t.seq_off
        a, b = t.body
        if t.kind == ENVELOPE_TYPE_TX_FEE_BUMP:
            h0 = self._h_fb
        else:
            h0 = self._h_v0 if t.kind == ENVELOPE_TYPE_TX_V0 else self._h_tx
        inner = None
        if t.has_inner_hash:
            assert t.inner is not None  # only fee bumps record an inner hash
            ia, ib = t.inner
            inner = (env[ia:so], env[so + 8 : ib])
            m_mid = t.meta[32:INNER_HASH_OFFSET]
            m_pair_tail = t.meta[INNER_HASH_OFFSET + 32 : t.pair_len]
        else:
            m_mid = t.meta[32 : t.pair_len]
            m_pair_tail = b""
        m_rest = t.meta[t.pair_len :]
        return (h0, env[:so], env[so + 8 :], env[a:so], env[so + 8 : b], inner, m_mid, m_pair_tail, m_rest, t.soroban)

    # -- per-ledger choices (depend only on seed and seq) --

    def _rng(self, seq: int) -> np.random.Generator:
        return np.random.default_rng([self.opts.seed, seq])

    def choose(self, seq: int) -> np.ndarray:
        """Indices into ``pool`` of the transactions of ledger ``seq``, in apply order."""
        rng = self._rng(seq)
        mean = float(self.opts.tx_per_ledger)
        if mean <= 0:
            return np.empty(0, dtype=np.int64)
        k = int(rng.poisson(rng.gamma(DENSITY_SHAPE, mean / DENSITY_SHAPE)))
        n = len(self.pool)
        parts, left = [], k
        while left > 0:
            take = min(left, n)
            parts.append(rng.permutation(n)[:take])
            left -= take
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    # -- byte-level assembly --

    def build(self, seq: int, prev_hash: bytes) -> tuple[bytes, bytes, int]:
        """(LedgerCloseMeta XDR, this ledger's hash, tx count) of generated ledger ``seq``."""
        parts = self._parts
        classic: list[tuple[bytes, tuple]] = []
        soroban: list[tuple[bytes, tuple]] = []
        metas: list[bytes] = []
        rh = hashlib.sha256()
        base = seq << 32
        pack = _I64.pack
        order = self.choose(seq).tolist()
        rh.update(_U32.pack(len(order)))  # TransactionResultSet: results<> count
        for i, ti in enumerate(order):
            (h0, env_head, env_tail, body_pre, body_post, inner, m_mid, m_pair_tail, m_rest, is_soroban) = parts[ti]
            sb = pack(base | (i + 1))
            h = h0.copy()
            h.update(body_pre)
            h.update(sb)
            h.update(body_post)
            d = h.digest()
            if inner is None:
                metas += (d, m_mid, m_rest)
                rh.update(d)
                rh.update(m_mid)
            else:
                # fee bump: the inner v1 transaction is hashed with the ENVELOPE_TYPE_TX tag
                hi = self._h_tx.copy()
                hi.update(inner[0])
                hi.update(sb)
                hi.update(inner[1])
                ih = hi.digest()
                metas += (d, m_mid, ih, m_pair_tail, m_rest)
                rh.update(d)
                rh.update(m_mid)
                rh.update(ih)
                rh.update(m_pair_tail)
            # stellar-core orders tx sets by the envelope's full hash, sha256(envelope XDR)
            fh = hashlib.sha256(env_head)
            fh.update(sb)
            fh.update(env_tail)
            (soroban if is_soroban else classic).append((fh.digest(), (env_head, sb, env_tail)))
        k = len(order)
        skel = self.skel
        if skel.version == 1:
            txset = b"".join([_U32.pack(1), prev_hash, _U32.pack(2), self._phase(classic), self._phase(soroban)])
            txset_hash = hashlib.sha256(txset).digest()
        else:
            # legacy TransactionSet {previousLedgerHash; txs<>}; its contents hash (stellar-core)
            # is sha256(previousLedgerHash ‖ each envelope XDR in full-hash order), no count
            # (checked against pubnet ledgers 26154623, 36154623, 46154623)
            classic.sort(key=lambda x: x[0])
            envs = [p for _, env in classic for p in env]
            body = b"".join(envs)
            txset = b"".join([prev_hash, _U32.pack(len(classic)), body])
            txset_hash = hashlib.sha256(prev_hash + body).digest()
        hb = bytearray(skel.header_entry)
        H = HEADER_START
        hb[H + OFF_PREV_HASH : H + OFF_PREV_HASH + 32] = prev_hash
        hb[H + OFF_TXSET_HASH : H + OFF_TXSET_HASH + 32] = txset_hash
        _U64.pack_into(hb, H + OFF_CLOSE_TIME, CLOSE_TIME_BASE + seq * CLOSE_INTERVAL_S)
        hb[H + skel.off_result_hash : H + skel.off_result_hash + 32] = rh.digest()
        hb[H + skel.off_bucket_hash : H + skel.off_bucket_hash + 32] = hashlib.sha256(
            b"bucketlist" + _U64.pack(self.opts.seed) + _U32.pack(seq)
        ).digest()
        _U32.pack_into(hb, H + skel.off_ledger_seq, seq)
        ledger_hash = hashlib.sha256(memoryview(hb)[H : H + skel.header_len]).digest()
        hb[0:32] = ledger_hash
        lcm = b"".join([skel.prefix, hb, txset, _U32.pack(k), *metas, skel.tail])
        return lcm, ledger_hash, k

    def _phase(self, txs: list[tuple[bytes, tuple]]) -> bytes:
        if not txs:
            return _PHASE_EMPTY
        txs.sort(key=lambda x: x[0])  # by full hash (see build)
        pieces = [self._comp_head, _U32.pack(len(txs))]
        for _, env in txs:
            pieces += env
        return b"".join(pieces)

    def ledgers(self, first: int, last: int) -> Iterator[tuple[int, bytes, int]]:
        _check_range(first, last)
        prev = anchor_hash(self.opts.seed, first - 1)
        for seq in range(first, last + 1):
            lcm, prev, k = self.build(seq, prev)
            yield seq, lcm, k


def _prefetch(it: Iterator, depth: int) -> Iterator:
    """Run ``it`` in a background thread, ``depth`` items ahead of the consumer.

    Generation is mostly Python (holds the GIL) while the lake writer spends its time in zstd
    and file I/O (release the GIL), so the two overlap on two cores.  Exceptions of ``it`` are
    re-raised in the consumer; closing the consumer stops the thread.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in it:
                if not put((None, item)):
                    return
            put((None, done))
        except BaseException as e:  # handed to the consumer
            put((e, None))

    t = threading.Thread(target=run, name="lakegen-prefetch", daemon=True)
    t.start()
    try:
        while True:
            err, item = q.get()
            if err is not None:
                raise err
            if item is done:
                return
            yield item
    finally:
        stop.set()
        t.join()


def generate_ledgers(
    first: int,
    last: int,
    *,
    seed: int = 0,
    tx_per_ledger: float = DEFAULT_TX_PER_LEDGER,
    network_passphrase: str = PUBNET_PASSPHRASE,
    min_tx_bytes: int = 0,
    max_tx_bytes: int | None = None,
    templates_dir: str | None = None,
    lcm_version: int = 1,
) -> Iterator[tuple[int, bytes]]:
    """Yield ``(seq, LedgerCloseMeta XDR)`` for ``first..last`` (inclusive), hash-chained.

    Raises ``ValueError`` for a bad range or option (before yielding anything) and
    ``FileNotFoundError`` when the template ledgers cannot be found.
    """
    gen = LedgerGenerator(
        GenOptions(seed, tx_per_ledger, network_passphrase, min_tx_bytes, max_tx_bytes, templates_dir, lcm_version)
    )
    _check_range(first, last)
    return ((seq, lcm) for seq, lcm, _ in gen.ledgers(first, last))


def generate_lake(
    root,
    first: int,
    last: int,
    *,
    seed: int = 0,
    tx_per_ledger: float = DEFAULT_TX_PER_LEDGER,
    ledgers_per_batch: int = 1,
    batches_per_partition: int = 64000,
    network_passphrase: str = PUBNET_PASSPHRASE,
    file_ext: str = ".xdr.zst",
    progress: Callable[[int, int], None] | None = None,
    min_tx_bytes: int = 0,
    max_tx_bytes: int | None = None,
    templates_dir: str | None = None,
    fsync: bool = True,
    zstd_level: int = 3,
    lcm_version: int = 1,
    cancel: threading.Event | None = None,
) -> LakeStats:
    """Write a Galexie-layout lake of generated ledgers ``first..last`` under ``root``.

    ``progress(ledgers_done, ledgers_total)`` is called (in the caller's thread) after every
    ledger handed to the writer.  Setting ``cancel`` stops before the next ledger with
    ``rpcbackfill.errors.Cancelled``; files already written stay, but the manifest is written
    last (by ``write_lake``), so only a lake with a manifest is complete.
    """
    from ..sources.layout import LakeSchema, write_lake

    schema = LakeSchema(
        network_passphrase=network_passphrase,
        ledgers_per_batch=ledgers_per_batch,
        batches_per_partition=batches_per_partition,
        file_ext=file_ext,
    )
    gen = LedgerGenerator(
        GenOptions(seed, tx_per_ledger, network_passphrase, min_tx_bytes, max_tx_bytes, templates_dir, lcm_version)
    )
    _check_range(first, last)
    total = last - first + 1
    txs = 0

    def counted() -> Iterator[tuple[int, bytes]]:
        # runs in the caller's thread: progress and cancellation are seen there
        nonlocal txs
        for n, (seq, lcm, k) in enumerate(_prefetch(gen.ledgers(first, last), PREFETCH_LEDGERS), 1):
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"lake generation into {root} cancelled before ledger {seq}")
            txs += k
            yield seq, lcm
            if progress is not None:
                progress(n, total)

    t0 = time.perf_counter()
    ws = write_lake(root, counted(), schema, level=zstd_level, fsync=fsync)
    secs = time.perf_counter() - t0
    log.info("generated lake %s: ledgers %d-%d, %d txs, %d files in %.1fs", root, first, last, txs, ws.files, secs)
    return LakeStats(
        root=Path(root),
        first=first,
        last=last,
        ledgers=ws.ledgers,
        transactions=txs,
        files=ws.files,
        raw_bytes=ws.raw_bytes,
        compressed_bytes=ws.compressed_bytes,
        seconds=secs,
    )
