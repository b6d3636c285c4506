"""One LedgerCloseMeta as the read methods see it.

``LedgerView(lcm, network_id)`` maps the ledger once with the native walker
(``rpcbackfill._txmap.ledger_map``: offsets only, whole value validated) and hands out byte
slices of the stored XDR: the header entry, and per transaction (in apply order) its
envelope, ``TransactionResult`` and ``TransactionMeta``.

``txProcessing`` is in apply order but the tx set is not, so an envelope is matched to its
result by transaction hash: ``sha256(network id || envelope type || signed transaction)``
(a V0 envelope is hashed in its V1 form, a fee bump with type 5).  Envelopes are hashed
lazily, only until the wanted one is found.
"""

from __future__ import annotations

import hashlib
import struct

from .._txmap import ledger_map

HASH_SIZE = 32
ENVELOPE_TYPE_TX_V0 = 0
ENVELOPE_TYPE_TX = 2
ENVELOPE_TYPE_TX_FEE_BUMP = 5
# TransactionResultCode values that carry an InnerTransactionResultPair / mean success
TX_FEE_BUMP_INNER_SUCCESS = 1
TX_FEE_BUMP_INNER_FAILED = -13
TX_SUCCESS = 0
_SUCCESS_CODES = (TX_SUCCESS, TX_FEE_BUMP_INNER_SUCCESS)
_TAG_TX = struct.pack(">I", ENVELOPE_TYPE_TX)
_TAG_FEE_BUMP = struct.pack(">I", ENVELOPE_TYPE_TX_FEE_BUMP)
_V0_AS_V1 = b"\0\0\0\0"  # a V0 source key becomes MuxedAccount KEY_TYPE_ED25519 in its V1 form


def network_id(passphrase: str) -> bytes:
    return hashlib.sha256(passphrase.encode()).digest()


class TxView:
    """One transaction of a ledger (bytes are slices of the stored XDR)."""

    __slots__ = ("application_order", "envelope", "hash", "inner_hash", "ledger", "meta", "result", "result_code")

    def __init__(self, ledger: LedgerView, index: int):
        t = ledger._txs[index]
        buf = ledger.lcm
        self.ledger = ledger
        self.application_order = index + 1  # 1-based apply order
        self.hash = bytes(buf[t[2] - HASH_SIZE : t[2]])
        self.result_code = t[10]
        # TransactionResult: int64 feeCharged; int32 code; InnerTransactionResultPair (hash first)
        self.inner_hash = (
            bytes(buf[t[2] + 12 : t[2] + 44])
            if self.result_code in (TX_FEE_BUMP_INNER_SUCCESS, TX_FEE_BUMP_INNER_FAILED)
            else None
        )
        self.result = buf[t[2] : t[3]]
        self.meta = buf[t[6] : t[7]]
        self.envelope = ledger.envelope_of(self.hash)

    @property
    def fee_bump(self) -> bool:
        return self.inner_hash is not None

    @property
    def successful(self) -> bool:
        return self.result_code in _SUCCESS_CODES


class LedgerView:
    """A mapped LedgerCloseMeta (see the module docstring).  ``lcm`` must stay unchanged."""

    __slots__ = (
        "_env_by_hash",
        "_envs",
        "_hashed",
        "_hdr",
        "_nid_fb",
        "_nid_tx",
        "_txs",
        "close_time",
        "lcm",
        "protocol",
        "seq",
        "version",
    )

    def __init__(self, lcm: bytes, nid: bytes):
        self.lcm = memoryview(lcm)
        (self.version, self.protocol, self.seq, self.close_time, hs, he, self._envs, self._txs) = ledger_map(lcm)
        self._hdr = (hs, he)
        self._nid_tx = hashlib.sha256(nid + _TAG_TX)
        self._nid_fb = hashlib.sha256(nid + _TAG_FEE_BUMP)
        self._env_by_hash: dict[bytes, int] = {}
        self._hashed = 0  # envelopes hashed so far (in tx-set order)

    # --- header ------------------------------------------------------------------------------

    @property
    def header_xdr(self) -> memoryview:
        """``LedgerHeaderHistoryEntry`` XDR."""
        return self.lcm[self._hdr[0] : self._hdr[1]]

    @property
    def hash(self) -> bytes:
        return bytes(self.lcm[self._hdr[0] : self._hdr[0] + HASH_SIZE])

    @property
    def tx_count(self) -> int:
        return len(self._txs)

    # --- transactions ------------------------------------------------------------------------

    def tx_hash(self, index: int) -> bytes:
        s = self._txs[index][2]
        return bytes(self.lcm[s - HASH_SIZE : s])

    def find(self, tx_hash: bytes) -> int | None:
        """Apply index (0-based) of the transaction with outer or (fee bump) inner hash ``tx_hash``."""
        buf = self.lcm
        for i, t in enumerate(self._txs):
            s = t[2]
            if buf[s - HASH_SIZE : s] == tx_hash:
                return i
            if t[10] in (TX_FEE_BUMP_INNER_SUCCESS, TX_FEE_BUMP_INNER_FAILED) and buf[s + 12 : s + 44] == tx_hash:
                return i
        return None

    def tx(self, index: int) -> TxView:
        return TxView(self, index)

    def txs(self) -> list[TxView]:
        return [TxView(self, i) for i in range(len(self._txs))]

    def _envelope_hash(self, e: tuple) -> bytes:
        kind, ts, te = e[2], e[3], e[4]
        if kind == ENVELOPE_TYPE_TX_FEE_BUMP:
            h = self._nid_fb.copy()
        else:
            h = self._nid_tx.copy()
            if kind == ENVELOPE_TYPE_TX_V0:
                h.update(_V0_AS_V1)
        h.update(self.lcm[ts:te])
        return h.digest()

    def envelope_of(self, tx_hash: bytes) -> memoryview:
        """``TransactionEnvelope`` XDR whose (outer) hash is ``tx_hash``; LookupError if none."""
        i = self._env_by_hash.get(tx_hash)
        envs = self._envs
        while i is None and self._hashed < len(envs):
            e = envs[self._hashed]
            h = self._envelope_hash(e)
            self._env_by_hash[h] = self._hashed
            if h == tx_hash:
                i = self._hashed
            self._hashed += 1
        if i is None:
            raise LookupError(f"ledger {self.seq}: no envelope in the tx set hashes to {tx_hash.hex()}")
        e = envs[i]
        return self.lcm[e[0] : e[1]]
