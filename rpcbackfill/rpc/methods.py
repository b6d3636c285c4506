"""The JSON-RPC methods of ``stellar-rpc serve``: stellar-rpc's request and response shapes.

Each method takes the request's ``params`` (an object, or null when the method has none)
and returns the ``result`` object, or raises ``RpcError`` (code, message).  They run in a
worker thread (they read and decompress ledgers); ``Methods.call`` is the dispatcher.

Shapes (field names, number vs string encodings) follow stellar-rpc:
* ``getTransaction``: ``latestLedgerCloseTime``, ``oldestLedgerCloseTime`` and ``createdAt``
  are decimal strings; ``getLedgers``: ``ledgerCloseTime`` is a string, the top-level close
  times numbers; ``getTransactions``: every time is a number.
* Cursors: ``getLedgers`` -- the sequence of the last ledger returned; ``getTransactions`` --
  the TOID ``ledger << 32 | applicationOrder << 12`` of the last transaction returned.
* ``xdrFormat``: ``base64`` (default) puts base64 XDR in ``*Xdr`` fields; ``json`` puts the
  stellar-xdr JSON form (as produced by stellar-sdk's ``to_json``) in the ``*Json`` fields.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..jsonrpc import INTERNAL_ERROR, INVALID_PARAMS, METHOD_NOT_FOUND
from .ledger import LedgerView, TxView
from .reader import HistoryReader, LedgerDamaged

log = logging.getLogger(__name__)

FORMAT_BASE64 = "base64"
FORMAT_JSON = "json"

# Transaction-order bits of a TOID (stellar-go's toid: 32 ledger, 20 tx order, 12 operation bits)
_TOID_TX_BITS = 20
_TOID_OP_BITS = 12
_TOID_TX_MASK = (1 << _TOID_TX_BITS) - 1


class RpcError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(msg: str) -> RpcError:
    return RpcError(INVALID_PARAMS, msg)


def _no_start_with_cursor(start: int | None) -> None:
    """A page request names either startLedger or pagination.cursor, never both."""
    if start:
        raise invalid("startLedger and cursor cannot both be set")


def _check_start(r: HistoryReader, start: int | None, cursor: object) -> tuple[int, int]:
    """Check the first ledger of a paged request (startLedger is needed without a cursor and must
    lie in the served range); return it and the latest ledger served."""
    if start is None or (cursor is None and not start):
        raise invalid("startLedger is required (or pagination.cursor)")
    oldest, latest = r.oldest_ledger, r.latest_ledger
    if cursor is None and not oldest <= start <= latest:
        raise invalid(
            f"start ledger must be between the oldest ledger: {oldest} and the latest ledger: {latest} "
            "for this rpc instance"
        )
    return start, latest


@dataclass(frozen=True)
class Limits:
    ledgers_default: int = 5
    ledgers_max: int = 200
    transactions_default: int = 10
    transactions_max: int = 200
    # getTransactions reads at most this many ledgers per request; the cursor then continues
    # after the last ledger read, so a client paging through empty ledgers still advances.
    scan_ledgers_max: int = 1000


# --- parameter helpers ---------------------------------------------------------------------------


def _params(params: Any, allowed: set[str]) -> dict:
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise invalid("params must be an object (by-name parameters)")
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise invalid(f"unknown parameter(s) {', '.join(map(repr, unknown))}; accepted: {', '.join(sorted(allowed))}")
    return params


def _uint(value: Any, name: str, *, maximum: int = 0xFFFFFFFF) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"{name} must be an integer, got {type(value).__name__}")
    if not 0 <= value <= maximum:
        raise invalid(f"{name} must be within 0..{maximum}, got {value}")
    return value


def _cursor_int(cursor: str, what: str, maximum: int) -> int:
    """A cursor string as an integer: ASCII decimal digits only, at most ``maximum``.

    ``int()`` alone would also take other scripts' digits ("١٢٣"), signs, spaces and
    underscores, and would spend quadratic time on a megabyte of digits."""
    width = len(str(maximum))
    if not (cursor.isascii() and cursor.isdigit()):
        raise invalid(f"invalid cursor {cursor[:40]!r}: expected {what} (ASCII decimal digits)")
    if len(cursor) > width or int(cursor) > maximum:
        raise invalid(f"invalid cursor {cursor[:40]!r}: {what} must not exceed {maximum}")
    return int(cursor)


def _xdr_format(p: dict) -> str:
    f = p.get("xdrFormat")
    if f is None or f == "":
        return FORMAT_BASE64
    if f not in (FORMAT_BASE64, FORMAT_JSON):
        raise invalid(f"xdrFormat must be {FORMAT_BASE64!r} or {FORMAT_JSON!r}, got {f!r}")
    return f


def _pagination(p: dict) -> tuple[str | None, int | None]:
    pg = p.get("pagination")
    if pg is None:
        return None, None
    if not isinstance(pg, dict):
        raise invalid("pagination must be an object")
    unknown = sorted(set(pg) - {"cursor", "limit"})
    if unknown:
        raise invalid(f"unknown pagination field(s) {', '.join(map(repr, unknown))}")
    cursor = pg.get("cursor")
    if cursor is not None and not isinstance(cursor, str):
        raise invalid("pagination.cursor must be a string")
    return (cursor or None), _uint(pg.get("limit"), "pagination.limit")


def _limit(value: int | None, default: int, maximum: int) -> int:
    if value is None or value == 0:
        return default
    if value > maximum:
        raise invalid(f"limit must not exceed {maximum}")
    return value


def b64(b) -> str:
    return base64.b64encode(b).decode("ascii")


class RawJSON:
    """A value already encoded as JSON bytes (``parts`` concatenated); the server writes it as is.

    Whole ledgers are returned this way: a 1 MB LedgerCloseMeta becomes ~1.3 MB of base64, and
    200 of them would otherwise be copied into one Python string, scanned by ``json.dumps`` and
    encoded again."""

    __slots__ = ("parts",)

    def __init__(self, *parts: bytes):
        self.parts = parts


def b64_raw(b) -> RawJSON:
    return RawJSON(b'"', binascii.b2a_base64(b, newline=False), b'"')


class LargeResult(dict):
    """A result holding ``RawJSON`` values (encoded by the server piece by piece)."""


def _xdr_json(sdk_type: str, raw) -> Any:
    from stellar_sdk import xdr as sdk_xdr

    return json.loads(getattr(sdk_xdr, sdk_type).from_xdr_bytes(bytes(raw)).to_json())


# --- methods -------------------------------------------------------------------------------------


class Methods:
    """Dispatch table over one ``HistoryReader``."""

    def __init__(self, reader: HistoryReader, limits: Limits | None = None):
        self.reader = reader
        self.limits = limits or Limits()
        self.table: dict[str, Callable[[Any], dict]] = {
            "getHealth": self.get_health,
            "getNetwork": self.get_network,
            "getLatestLedger": self.get_latest_ledger,
            "getLedgers": self.get_ledgers,
            "getTransaction": self.get_transaction,
            "getTransactions": self.get_transactions,
        }

    def call(self, method: str, params: Any) -> dict:
        fn = self.table.get(method)
        if fn is None:
            raise RpcError(METHOD_NOT_FOUND, f"method {method!r} not found; served: {', '.join(self.table)}")
        try:
            return fn(params)
        except LedgerDamaged as e:
            log.error("%s failed on damaged data: %s", method, e)
            raise RpcError(INTERNAL_ERROR, f"stored data is damaged: {e}") from None
        except LookupError as e:  # a result without its envelope: wrong passphrase or bad data
            log.error("%s: %s", method, e)
            raise RpcError(
                INTERNAL_ERROR,
                f"{e} (is [service] network_passphrase {self.reader.passphrase!r} the network of this data?)",
            ) from None

    # --- helpers ---

    def _require_data(self) -> HistoryReader:
        r = self.reader
        if not r.ranges:
            raise RpcError(INTERNAL_ERROR, "no COMPLETE range in this data directory yet")
        return r

    def _bounds(self, times_as_str: bool) -> dict:
        r = self.reader
        conv = str if times_as_str else int
        return {
            "latestLedger": r.latest_ledger,
            "latestLedgerCloseTime": conv(r.latest_close_time),
            "oldestLedger": r.oldest_ledger,
            "oldestLedgerCloseTime": conv(r.oldest_close_time),
        }

    def _tx_fields(self, tx: TxView, fmt: str) -> dict:
        out: dict[str, Any] = {
            "status": "SUCCESS" if tx.successful else "FAILED",
            "txHash": tx.hash.hex(),
            "applicationOrder": tx.application_order,
            "feeBump": tx.fee_bump,
        }
        if fmt == FORMAT_JSON:
            out["envelopeJson"] = _xdr_json("TransactionEnvelope", tx.envelope)
            out["resultJson"] = _xdr_json("TransactionResult", tx.result)
            out["resultMetaJson"] = _xdr_json("TransactionMeta", tx.meta)
        else:
            out["envelopeXdr"] = b64(tx.envelope)
            out["resultXdr"] = b64(tx.result)
            out["resultMetaXdr"] = b64(tx.meta)
        out["ledger"] = tx.ledger.seq
        return out

    # --- getHealth / getNetwork / getLatestLedger ---

    def get_health(self, params: Any) -> dict:
        _params(params, set())
        r = self._require_data()
        return {
            "status": "healthy",
            "latestLedger": r.latest_ledger,
            "oldestLedger": r.oldest_ledger,
            "ledgerRetentionWindow": r.latest_ledger - r.oldest_ledger + 1,
        }

    def get_network(self, params: Any) -> dict:
        _params(params, set())
        return {"passphrase": self.reader.passphrase, "protocolVersion": self.reader.latest_protocol}

    def get_latest_ledger(self, params: Any) -> dict:
        _params(params, set())
        r = self._require_data()
        v = r.ledger(r.latest_ledger)
        return LargeResult(
            {
                "id": v.hash.hex(),
                "protocolVersion": v.protocol,
                "sequence": v.seq,
                "closeTime": str(v.close_time),
                "headerXdr": b64(v.header_xdr),
                "metadataXdr": b64_raw(v.lcm),
            }
        )

    # --- getLedgers ---

    def get_ledgers(self, params: Any) -> dict:
        p = _params(params, {"startLedger", "pagination", "xdrFormat"})
        fmt = _xdr_format(p)
        cursor, limit_v = _pagination(p)
        start = _uint(p.get("startLedger"), "startLedger")
        limit = _limit(limit_v, self.limits.ledgers_default, self.limits.ledgers_max)
        r = self._require_data()
        if cursor is not None:
            _no_start_with_cursor(start)
            start = _cursor_int(cursor, "a ledger sequence", 0xFFFFFFFF) + 1
        start, latest = _check_start(r, start, cursor)
        ledgers: list[dict] = []
        seq: int | None = start
        last = start - 1
        while seq is not None and seq <= latest and len(ledgers) < limit:
            seq = r.next_available(seq)
            if seq is None:
                break
            v = r.ledger(seq)
            item: dict[str, Any] = {"hash": v.hash.hex(), "sequence": seq, "ledgerCloseTime": str(v.close_time)}
            if fmt == FORMAT_JSON:
                item["headerJson"] = _xdr_json("LedgerHeaderHistoryEntry", v.header_xdr)
                item["metadataJson"] = _xdr_json("LedgerCloseMeta", v.lcm)
            else:
                item["headerXdr"] = b64(v.header_xdr)
                item["metadataXdr"] = b64_raw(v.lcm)
            ledgers.append(item)
            last = seq
            seq += 1
        out: dict[str, Any] = LargeResult(ledgers=ledgers)
        out.update(self._bounds(times_as_str=False))
        out["cursor"] = str(last)
        return out

    # --- getTransaction ---

    def get_transaction(self, params: Any) -> dict:
        p = _params(params, {"hash", "xdrFormat"})
        fmt = _xdr_format(p)
        h = p.get("hash")
        if not isinstance(h, str):
            raise invalid("hash is required: 64 hexadecimal characters")
        if len(h) != 64:
            raise invalid(f"unexpected hash length ({len(h)}), expected 64 hexadecimal characters")
        try:
            tx_hash = bytes.fromhex(h)
        except ValueError:
            raise invalid(f"incorrect hash {h!r}: not hexadecimal") from None
        r = self.reader
        found = r.find_transaction(tx_hash) if r.ranges else None
        out: dict[str, Any] = self._bounds(times_as_str=True)
        if found is None:
            out["status"] = "NOT_FOUND"
            out["txHash"] = h.lower()
            return out
        view, i = found
        out.update(self._tx_fields(view.tx(i), fmt))
        out["createdAt"] = str(view.close_time)
        return out

    # --- getTransactions ---

    def get_transactions(self, params: Any) -> dict:
        p = _params(params, {"startLedger", "pagination", "xdrFormat"})
        fmt = _xdr_format(p)
        cursor, limit_v = _pagination(p)
        start = _uint(p.get("startLedger"), "startLedger")
        limit = _limit(limit_v, self.limits.transactions_default, self.limits.transactions_max)
        r = self._require_data()
        after = 0  # first ledger: skip transactions with applicationOrder <= after
        if cursor is not None:
            _no_start_with_cursor(start)
            toid = _cursor_int(cursor, "a TOID", (1 << 63) - 1)
            start, after = toid >> 32, (toid >> _TOID_OP_BITS) & _TOID_TX_MASK
            if after == _TOID_TX_MASK:  # "end of this ledger" cursor
                start, after = start + 1, 0
        start, latest = _check_start(r, start, cursor)
        txs: list[dict] = []
        # TOID of the position before the first transaction returned: the cursor itself, or
        # "end of the ledger before start".
        last_toid = (
            (start << 32) | (after << _TOID_OP_BITS)
            if after
            else ((max(start - 1, 0) << 32) | (_TOID_TX_MASK << _TOID_OP_BITS))
        )
        seq: int | None = start
        scanned = 0
        while seq is not None and seq <= latest and len(txs) < limit and scanned < self.limits.scan_ledgers_max:
            nxt = r.next_available(seq)
            if nxt is None:
                break
            if nxt != seq:
                after = 0
            seq = nxt
            v: LedgerView = r.ledger(seq)
            scanned += 1
            i = after
            while i < v.tx_count and len(txs) < limit:
                t = v.tx(i)
                item = self._tx_fields(t, fmt)
                item["createdAt"] = v.close_time
                txs.append(item)
                last_toid = (seq << 32) | (t.application_order << _TOID_OP_BITS)
                i += 1
            if i >= v.tx_count and len(txs) < limit:  # ledger exhausted: continue after it
                last_toid = (seq << 32) | (_TOID_TX_MASK << _TOID_OP_BITS)
            after = 0
            seq += 1
        out: dict[str, Any] = {"transactions": txs}
        b = self._bounds(times_as_str=False)
        out.update(
            {
                "latestLedger": b["latestLedger"],
                "latestLedgerCloseTimestamp": b["latestLedgerCloseTime"],
                "oldestLedger": b["oldestLedger"],
                "oldestLedgerCloseTimestamp": b["oldestLedgerCloseTime"],
                "cursor": str(last_toid),
            }
        )
        return out


def safe_id(value: Any) -> Any:
    """A request ``id`` as it may be echoed: JSON-RPC allows string, number or null; anything
    else (objects, arrays, booleans, non-finite numbers) is answered with id null."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return None
