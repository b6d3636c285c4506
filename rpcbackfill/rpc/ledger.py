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
_ENV_FIELDS = 7  # int64 per envelope in ledger_map's output
_TX_FIELDS = 11  # int64 per txProcessing entry


def network_id(passphrase: str) -> bytes:
    return hashlib.sha256(passphrase.encode()).digest()


class TxView:
    """One transaction of a ledger (bytes are slices of the stored XDR)."""

    __slots__ = ("application_order", "envelope", "hash", "inner_hash", "ledger", "meta", "result", "result_code")

    def __init__(self, ledger: LedgerView, index: int):
        if not 0 <= index < ledger.tx_count:
            raise IndexError(f"ledger {ledger.seq} has {ledger.tx_count} transactions, not #{index}")
        t = ledger._txs
        o = index * _TX_FIELDS
        rs, re_, ms, me, code = t[o + 2], t[o + 3], t[o + 6], t[o + 7], t[o + 10]
        buf = ledger.lcm
        self.ledger = ledger
        self.application_order = index + 1  # 1-based apply order
        self.hash = bytes(buf[rs - HASH_SIZE : rs])
        self.result_code = code
        # TransactionResult: int64 feeCharged; int32 code; InnerTransactionResultPair (hash first)
        self.inner_hash = (
            bytes(buf[rs + 12 : rs + 44]) if code in (TX_FEE_BUMP_INNER_SUCCESS, TX_FEE_BUMP_INNER_FAILED) else None
        )
        self.result = buf[rs:re_]
        self.meta = buf[ms:me]
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
        "_cands",
        "_n_env",
        "_nid_fb",
        "_nid_tx",
        "_txs",
        "close_time",
        "found",
        "lcm",
        "protocol",
        "seq",
        "tx_count",
        "version",
    )

    def __init__(self, lcm: bytes, nid: bytes, want: bytes | None = None):
        """Map ``lcm``; ``want`` (a 32-byte hash) is looked for during the walk: ``found`` is its
        0-based apply index (outer or fee-bump inner hash), or None."""
        self.lcm = memoryview(lcm)
        (self.version, self.protocol, self.seq, self.close_time, hs, he, envs, txs, found, cands) = ledger_map(
            lcm, want
        )
        self._cands = cands  # envelopes charged to the found transaction's fee account: hashed first
        self._envs = memoryview(envs).cast("q")
        self._txs = memoryview(txs).cast("q")
        self._n_env = len(self._envs) // _ENV_FIELDS
        self.tx_count = len(self._txs) // _TX_FIELDS
        self.found = found if found >= 0 else None
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

    # --- transactions ------------------------------------------------------------------------

    def tx_hash(self, index: int) -> bytes:
        s = self._txs[index * _TX_FIELDS + 2]
        return bytes(self.lcm[s - HASH_SIZE : s])

    def find(self, tx_hash: bytes) -> int | None:
        """Apply index (0-based) of the transaction with outer or (fee bump) inner hash ``tx_hash``."""
        t, buf = self._txs, self.lcm
        for i in range(self.tx_count):
            s, code = t[i * _TX_FIELDS + 2], t[i * _TX_FIELDS + 10]
            if buf[s - HASH_SIZE : s] == tx_hash:
                return i
            if code in (TX_FEE_BUMP_INNER_SUCCESS, TX_FEE_BUMP_INNER_FAILED) and buf[s + 12 : s + 44] == tx_hash:
                return i
        return None

    def tx(self, index: int) -> TxView:
        return TxView(self, index)

    def txs(self) -> list[TxView]:
        return [TxView(self, i) for i in range(self.tx_count)]

    def _envelope_hash(self, i: int) -> bytes:
        o = i * _ENV_FIELDS
        e = self._envs
        kind, ts, te = e[o + 2], e[o + 3], e[o + 4]
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
        if i is None and self._cands:
            for c in self._cands:  # usually one envelope: the only one from that account
                if self._envelope_hash(c) == tx_hash:
                    i = c
                    break
            self._cands = []
        while i is None and self._hashed < self._n_env:
            h = self._envelope_hash(self._hashed)
            self._env_by_hash[h] = self._hashed
            if h == tx_hash:
                i = self._hashed
            self._hashed += 1
        if i is None:
            raise LookupError(f"ledger {self.seq}: no envelope in the tx set hashes to {tx_hash.hex()}")
        o = i * _ENV_FIELDS
        return self.lcm[self._envs[o] : self._envs[o + 1]]
