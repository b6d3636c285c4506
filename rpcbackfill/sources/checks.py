"""Pre-flight check of the ledger source, run once by the coordinator before any range starts.

For a data lake: the location is reachable and readable (a listing), the manifest (or the
configured layout) is valid and agrees with the configuration, and the objects holding the
first and the last requested ledger exist.  Requests use short timeouts and at most
``ATTEMPTS`` tries within ``BUDGET_S`` seconds, so an unreachable lake (DNS failure,
connection refused, access denied, no such bucket) fails the command within seconds with
one line naming the location and the cause, instead of every range retrying for minutes.
Errors during the run keep the source's own retry policy.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import MissingLedgerError, SourceError, TransientSourceError
from . import layout
from .objstore import open_store

if TYPE_CHECKING:
    from ..config import BufferedStorageConfig, Config

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 8.0
ATTEMPTS = 3  # per request, for transient failures
RETRY_WAIT_S = 0.5  # doubles per attempt
BUDGET_S = 12.0  # no new attempt starts after this; worst case ~ BUDGET_S + one request's timeouts


class RangeLike(Protocol):
    """What the pre-flight reads of a range (the coordinator passes its ``RangeInfo``s)."""

    id: int  # captive core names its per-range directories after it
    state: Any
    start_ledger: int
    end_ledger: int


# Range states whose ledgers still come from the source (later states only read local stores).
_NEEDS_SOURCE = ("PENDING", "INGESTING")


def preflight(config: Config, ranges: Iterable[RangeLike]) -> None:
    """Check the configured source can serve the ranges still to ingest; raise ``SourceError``
    (exit 1) with one line naming the location and the cause when it cannot.  For a lake:
    the first ledger of the earliest such range and the last of the latest.  Captive core:
    ``captive_core.preflight`` (it also sweeps the core directories of ranges past ingestion,
    so it gets every range)."""
    if config.backfill.ledger_backend == "captive_core":
        from .captive_core import preflight as captive_core_preflight

        captive_core_preflight(config, ranges)
        return
    todo = [r for r in ranges if getattr(r.state, "value", r.state) in _NEEDS_SOURCE]
    if not todo:
        return
    first, last = min(r.start_ledger for r in todo), max(r.end_ledger for r in todo)
    if config.backfill.ledger_backend == "buffered_storage":
        check_lake(config.backfill.buffered_storage, config.service.network_passphrase, first, last)


class _Bounded:
    """The ``call(fn, where)`` retry policy of the pre-flight: few, quick attempts."""

    def __init__(self, budget_s: float):
        self.deadline = time.monotonic() + budget_s

    def __call__(self, fn, where: str):
        wait = RETRY_WAIT_S
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return fn()
            except TransientSourceError as e:
                if attempt == ATTEMPTS or time.monotonic() + wait > self.deadline:
                    raise SourceError(f"{e} ({attempt} attempt{'s' if attempt > 1 else ''})") from None
                log.debug("pre-flight %s: attempt %d failed (%s); retrying in %.1fs", where, attempt, e, wait)
                time.sleep(wait)
                wait *= 2
        raise AssertionError("unreachable")  # pragma: no cover


def check_lake(
    bs: BufferedStorageConfig, network_passphrase: str, first: int, last: int, budget_s: float = BUDGET_S
) -> layout.LakeSchema:
    from .datalake import resolve_schema, store_options

    t0 = time.monotonic()
    call = _Bounded(budget_s)
    try:
        store = open_store(
            bs.bucket_path,
            store_options(bs, pool_size=1, connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S),
        )
        try:
            schema, detected = resolve_schema(store, bs, network_passphrase, call)
            exts = [schema.file_ext] if detected else list(layout.FILE_EXTS)
            for seq in dict.fromkeys((first, last)):
                if not any(
                    _exists(store, call, layout.object_key(seq, dataclasses.replace(schema, file_ext=x))) for x in exts
                ):
                    key = layout.object_key(seq, schema)
                    raise MissingLedgerError(f"ledger {seq}: object {store.url}/{key} does not exist")
        finally:
            store.close()
    except SourceError as e:
        raise type(e)(f"data lake pre-flight check failed: {e}") from None
    log.info(
        "data lake %s: pre-flight check passed in %.1fs (ledgers %d and %d present, %d per file)",
        bs.bucket_path,
        time.monotonic() - t0,
        first,
        last,
        schema.ledgers_per_batch,
    )
    return schema


def _exists(store, call, key: str) -> bool:
    return bool(call(lambda: store.exists(key), f"{store.url}/{key}"))
