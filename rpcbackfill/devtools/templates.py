"""Template transactions for the data-lake generator, cut out of real ledgers.

The slow path: real ``LedgerCloseMeta`` XDR is decoded once with stellar-sdk and every
transaction is turned into a ``TxTemplate``: its envelope bytes, its result-meta bytes and
the byte offsets the generator patches (the sequence number it varies, the hash spans it
re-hashes, the hashes recorded in the result).  Every offset is checked against the real
ledger: the hash recomputed from the located bytes must equal the hash the network wrote
into ``txProcessing``, so a wrong offset fails loudly here instead of producing a lake with
inconsistent hashes.

Transaction hash rule (stellar-core, mirrored by stellar-sdk's ``signature_base``):
``sha256(networkId || envelopeTypeTag || txXdr)`` with ``networkId = sha256(passphrase)``.
The tag is ENVELOPE_TYPE_TX (2) for v1 transactions and ENVELOPE_TYPE_TX_FEE_BUMP (5) for
fee bumps (whose inner v1 transaction is hashed with tag 2).  A v0 envelope is hashed in its
v1 form: a ``MuxedAccount`` of type KEY_TYPE_ED25519 (four zero bytes) followed by the
TransactionV0 bytes, which are then byte-identical to the v1 ``Transaction`` (the optional
timeBounds encodes exactly like Preconditions PRECOND_NONE / PRECOND_TIME, and both ext
unions are v = 0).
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import zstandard

from ..config import PUBNET_PASSPHRASE
from ..errors import XdrError

log = logging.getLogger(__name__)

# EnvelopeType values of Stellar-ledger-entries.x
ENVELOPE_TYPE_TX_V0 = 0
ENVELOPE_TYPE_TX = 2
ENVELOPE_TYPE_TX_FEE_BUMP = 5
# TransactionResultCode arms that carry an InnerTransactionResultPair
TX_FEE_BUMP_INNER_SUCCESS = 1
TX_FEE_BUMP_INNER_FAILED = -13
# Offset of InnerTransactionResultPair.transactionHash inside a TransactionResultPair:
# outer hash (32) + feeCharged int64 (8) + result union discriminant (4).
INNER_HASH_OFFSET = 44
# Size of a MuxedAccount's discriminant; KEY_TYPE_ED25519 = 0 (for the v0 → v1 form).
V0_AS_V1_PREFIX = b"\x00\x00\x00\x00"


# Real pubnet ledgers used by default (shipped in templates_data/, also in tests/fixtures/).  Ledgers 26154623,
# 36154623, 46154623 (LedgerCloseMeta V0, protocols 11-19) and 53312000 (V1, protocol 21)
# span pubnet ranges 2-5 of the spec's 10M-ledger ranges: the "default mix".
PUBNET_TTP_FILE = "ttp-ledgers-base64.txt"
PUBNET_V1_FILE = "FCD285FF--53312000.xdr.zstd"
# Too small to be representative (0 and 2 transactions); skipped.
MIN_TEMPLATE_TXS = 10


@dataclass(frozen=True)
class TxTemplate:
    """One real transaction, as byte pieces plus the offsets the generator patches."""

    env: bytes  # TransactionEnvelope XDR (union discriminant included)
    kind: int  # ENVELOPE_TYPE_TX_V0 | ENVELOPE_TYPE_TX | ENVELOPE_TYPE_TX_FEE_BUMP
    body: tuple[int, int]  # span of env hashed for the (outer) hash, see module docstring
    inner: tuple[int, int] | None  # span of the inner v1 Transaction of a fee bump
    seq_off: int  # offset in env of the (inner) transaction's int64 seqNum
    meta: bytes  # TransactionResultMeta XDR; starts with the TransactionResultPair
    pair_len: int  # bytes of the TransactionResultPair at the start of meta
    has_inner_hash: bool  # result records the inner hash at INNER_HASH_OFFSET
    soroban: bool  # belongs in the Soroban phase of a generalized tx set
    source: str  # which real ledger it came from (for messages)

    @property
    def size(self) -> int:
        return len(self.env) + len(self.meta)


@dataclass(frozen=True)
class Skeleton:
    """The non-transaction parts of a real LedgerCloseMeta (V0 or V1), split for re-assembly."""

    version: int  # LedgerCloseMeta union arm: 0 or 1
    prefix: bytes  # union discriminant (+ LedgerCloseMetaV1.ext for V1)
    header_entry: bytes  # LedgerHeaderHistoryEntry: hash(32) ‖ LedgerHeader ‖ ext
    header_len: int  # bytes of the LedgerHeader (starting at offset 32 of header_entry)
    off_result_hash: int  # LedgerHeader offsets of txSetResultHash,
    off_bucket_hash: int  # bucketListHash,
    off_ledger_seq: int  # and ledgerSeq (previousLedgerHash is at 4, txSetHash at 36,
    base_fee: int  # closeTime at 68); base fee of the (V1) tx-set components
    tail: bytes  # upgradesProcessing ‖ scpInfo ‖ remaining V1 fields, verbatim
    protocol: int
    source: str


# LedgerHeader fixed offsets: ledgerVersion uint32 (4), previousLedgerHash (32), then
# StellarValue starting with txSetHash (32) and closeTime uint64.
OFF_PREV_HASH = 4
OFF_TXSET_HASH = 36
OFF_CLOSE_TIME = 68


# The template ledgers shipped inside the package: the default of every generator.
PACKAGED_TEMPLATES_DIR = Path(__file__).resolve().parent / "templates_data"


def _read_ttp_text(ttp: Path) -> str:
    """The base64 template file, plain or zstd-compressed (``.zst`` suffix, as packaged)."""
    if ttp.is_file():
        return ttp.read_text()
    return _decompress(ttp.with_name(ttp.name + ".zst").read_bytes()).decode("ascii")


def network_id(passphrase: str) -> bytes:
    return hashlib.sha256(passphrase.encode()).digest()


def tx_hash_prefixes(passphrase: str) -> tuple[bytes, bytes]:
    """(networkId ‖ ENVELOPE_TYPE_TX, networkId ‖ ENVELOPE_TYPE_TX_FEE_BUMP)."""
    nid = network_id(passphrase)
    return nid + struct.pack(">I", ENVELOPE_TYPE_TX), nid + struct.pack(">I", ENVELOPE_TYPE_TX_FEE_BUMP)


def template_hashes(t: TxTemplate, env: bytes | bytearray | memoryview, passphrase: str) -> tuple[bytes, bytes | None]:
    """(outer hash, inner hash or None) of a (possibly patched) template envelope."""
    p_tx, p_fb = tx_hash_prefixes(passphrase)
    mv = memoryview(env)
    a, b = t.body
    if t.kind == ENVELOPE_TYPE_TX_FEE_BUMP:
        assert t.inner is not None  # every fee bump has an inner transaction
        ia, ib = t.inner
        return hashlib.sha256(p_fb + mv[a:b]).digest(), hashlib.sha256(p_tx + mv[ia:ib]).digest()
    if t.kind == ENVELOPE_TYPE_TX_V0:
        return hashlib.sha256(p_tx + V0_AS_V1_PREFIX + mv[a:b]).digest(), None
    return hashlib.sha256(p_tx + mv[a:b]).digest(), None


# --- slow path: decode real ledgers ----------------------------------------------------------


def _decompress(data: bytes) -> bytes:
    # lake frames may omit the content size: always decompress in streaming mode
    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()


def _envelope_template(env_obj, meta_obj, passphrase: str, soroban: bool, source: str) -> TxTemplate:
    from stellar_sdk import xdr

    env = env_obj.to_xdr_bytes()
    kind = env_obj.type.value
    inner = None
    if kind == ENVELOPE_TYPE_TX_V0:
        tx = env_obj.v0.tx
        body = (4, 4 + len(tx.to_xdr_bytes()))
        seq_off = 4 + 32 + 4  # sourceAccountEd25519, fee
        seq_num = tx.seq_num.sequence_number.int64
    elif kind == ENVELOPE_TYPE_TX:
        tx = env_obj.v1.tx
        body = (4, 4 + len(tx.to_xdr_bytes()))
        seq_off = 4 + len(tx.source_account.to_xdr_bytes()) + 4
        seq_num = tx.seq_num.sequence_number.int64
    elif kind == ENVELOPE_TYPE_TX_FEE_BUMP:
        fb = env_obj.fee_bump.tx
        body = (4, 4 + len(fb.to_xdr_bytes()))
        # feeSource MuxedAccount, fee int64, innerTx union discriminant
        ia = 4 + len(fb.fee_source.to_xdr_bytes()) + 8 + 4
        itx = fb.inner_tx.v1.tx
        inner = (ia, ia + len(itx.to_xdr_bytes()))
        seq_off = ia + len(itx.source_account.to_xdr_bytes()) + 4
        seq_num = itx.seq_num.sequence_number.int64
    else:
        raise XdrError(f"{source}: unsupported envelope type {kind}")
    if struct.unpack_from(">q", env, seq_off)[0] != seq_num:
        raise XdrError(f"{source}: seqNum not found at offset {seq_off} of a type-{kind} envelope")
    meta = meta_obj.to_xdr_bytes()
    pair_len = len(meta_obj.result.to_xdr_bytes())
    code = meta_obj.result.result.result.code.value
    has_inner = kind == ENVELOPE_TYPE_TX_FEE_BUMP and code in (TX_FEE_BUMP_INNER_SUCCESS, TX_FEE_BUMP_INNER_FAILED)
    t = TxTemplate(env, kind, body, inner, seq_off, meta, pair_len, has_inner, soroban, source)
    # the located spans must reproduce the hashes the network recorded
    h, ih = template_hashes(t, env, passphrase)
    if h != meta[:32]:
        raise XdrError(f"{source}: recomputed hash {h.hex()} != recorded {meta[:32].hex()}")
    if has_inner and ih != meta[INNER_HASH_OFFSET : INNER_HASH_OFFSET + 32]:
        raise XdrError(f"{source}: recomputed inner hash {ih.hex()} differs from the recorded one")
    assert isinstance(meta_obj, xdr.TransactionResultMeta)
    return t


def templates_from_lcm(lcm: bytes, passphrase: str, source: str) -> list[TxTemplate]:
    """Every transaction of a V0/V1 LedgerCloseMeta as a template, in apply order."""
    from stellar_sdk import xdr

    m = xdr.LedgerCloseMeta.from_xdr_bytes(lcm)
    if m.v == 0:
        envs = [(e, False) for e in m.v0.tx_set.txs]
        metas = m.v0.tx_processing
    elif m.v == 1:
        envs = []
        for pi, phase in enumerate(m.v1.tx_set.v1_tx_set.phases):
            if phase.v != 0:
                raise XdrError(f"{source}: parallel tx-set phases are not supported as templates")
            for comp in phase.v0_components:
                envs += [(e, pi == 1) for e in comp.txs_maybe_discounted_fee.txs]
        metas = m.v1.tx_processing
    else:
        raise XdrError(f"{source}: LedgerCloseMeta V{m.v} is not supported as a template")
    p_tx, p_fb = tx_hash_prefixes(passphrase)
    by_hash = {}
    for e, soroban in envs:
        b = e.to_xdr_bytes()
        if e.type.value == ENVELOPE_TYPE_TX_FEE_BUMP:
            h = hashlib.sha256(p_fb + e.fee_bump.tx.to_xdr_bytes()).digest()
        elif e.type.value == ENVELOPE_TYPE_TX_V0:
            h = hashlib.sha256(p_tx + V0_AS_V1_PREFIX + e.v0.tx.to_xdr_bytes()).digest()
        else:
            h = hashlib.sha256(p_tx + e.v1.tx.to_xdr_bytes()).digest()
        by_hash[h] = (e, soroban, b)
    out = []
    for i, meta in enumerate(metas):
        h = meta.result.transaction_hash.hash
        if h not in by_hash:
            raise XdrError(f"{source}: txProcessing[{i}] hash {h.hex()} matches no envelope of the tx set")
        e, soroban, _ = by_hash[h]
        out.append(_envelope_template(e, meta, passphrase, soroban, f"{source} tx {i}"))
    return out


def skeleton(lcm: bytes, source: str) -> Skeleton:
    """Cut a LedgerCloseMeta V0/V1 into the pieces the generator re-assembles around new txs."""
    from stellar_sdk import xdr

    m = xdr.LedgerCloseMeta.from_xdr_bytes(lcm)
    if m.v not in (0, 1):
        raise XdrError(f"{source}: skeleton needs a LedgerCloseMeta V0 or V1, got V{m.v}")
    body = m.v0 if m.v == 0 else m.v1
    prefix = struct.pack(">I", m.v) + (body.ext.to_xdr_bytes() if m.v == 1 else b"")
    hhe = body.ledger_header.to_xdr_bytes()
    hdr = body.ledger_header.header
    header_len = len(hdr.to_xdr_bytes())
    off_result = 4 + 32 + len(hdr.scp_value.to_xdr_bytes())
    txset = body.tx_set.to_xdr_bytes()
    txproc = struct.pack(">I", len(body.tx_processing)) + b"".join(t.to_xdr_bytes() for t in body.tx_processing)
    head = prefix + hhe + txset + txproc
    tail = lcm[len(head) :]
    if lcm[: len(head)] != head:  # the re-encoded pieces must be the exact original bytes
        raise XdrError(f"{source}: cannot cut the LedgerCloseMeta V{m.v} into pieces")
    if struct.unpack_from(">I", hhe, 32 + off_result + 64)[0] != hdr.ledger_seq.uint32:
        raise XdrError(f"{source}: ledgerSeq not at the computed header offset")
    fees = []
    if m.v == 1:
        fees = [
            c.txs_maybe_discounted_fee.base_fee.int64
            for p in body.tx_set.v1_tx_set.phases
            if p.v == 0
            for c in p.v0_components
            if c.txs_maybe_discounted_fee.base_fee is not None
        ]
    return Skeleton(
        version=m.v,
        prefix=prefix,
        header_entry=hhe,
        header_len=header_len,
        off_result_hash=off_result,
        off_bucket_hash=off_result + 32,
        off_ledger_seq=off_result + 64,
        base_fee=fees[0] if fees else hdr.base_fee.uint32,
        tail=tail,
        protocol=hdr.ledger_version.uint32,
        source=source,
    )


@dataclass(frozen=True)
class TemplateSet:
    txs: tuple[TxTemplate, ...]
    skeleton: Skeleton  # LedgerCloseMeta V1, protocol 21 (pubnet ledger 53312000)
    skeleton_v0: Skeleton  # LedgerCloseMeta V0, protocol 19 (pubnet ledger 46154623)


def load_pubnet_templates(templates_dir: str | os.PathLike | None = None) -> TemplateSet:
    """Templates from real pubnet ledgers (decoded once per process): those in ``templates_dir``,
    by default the copy shipped in the package (``templates_data/``)."""
    d = Path(templates_dir) if templates_dir else PACKAGED_TEMPLATES_DIR
    return _load_pubnet_templates(str(d.resolve()))


@lru_cache(maxsize=4)
def _load_pubnet_templates(templates_dir: str) -> TemplateSet:
    d = Path(templates_dir)
    ttp, v1file = d / PUBNET_TTP_FILE, d / PUBNET_V1_FILE
    for p in (ttp, v1file):
        if not p.is_file() and not (p is ttp and ttp.with_name(ttp.name + ".zst").is_file()):
            raise FileNotFoundError(f"template ledger {p} not found (pass the directory holding the template ledgers)")
    from stellar_sdk import xdr

    txs: list[TxTemplate] = []
    skel_v0 = None
    for i, line in enumerate(_read_ttp_text(ttp).split()):
        lcm = base64.b64decode(line)
        where = f"{ttp.name} line {i + 1}"
        got = templates_from_lcm(lcm, PUBNET_PASSPHRASE, where)
        if len(got) >= MIN_TEMPLATE_TXS:
            txs += got
            sk = skeleton(lcm, where)
            if skel_v0 is None or sk.protocol > skel_v0.protocol:
                skel_v0 = sk
    batch = xdr.LedgerCloseMetaBatch.from_xdr_bytes(_decompress(v1file.read_bytes()))
    lcm = batch.ledger_close_metas[0].to_xdr_bytes()
    txs += templates_from_lcm(lcm, PUBNET_PASSPHRASE, v1file.name)
    skel = skeleton(lcm, v1file.name)
    if skel_v0 is None:
        raise XdrError(f"{ttp}: no LedgerCloseMeta V0 with at least {MIN_TEMPLATE_TXS} transactions")
    log.debug("loaded %d template transactions from %s", len(txs), d)
    return TemplateSet(tuple(txs), skel, skel_v0)
