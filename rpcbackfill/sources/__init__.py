"""rpcbackfill.sources: where ledgers come from.

``open_source(config, cancel)`` returns the ``LedgerSource`` selected by
``config.backfill.ledger_backend``:

- ``"buffered_storage"`` → ``DataLakeSource`` (Galexie lake on S3, GCS or a local directory, spec §5)
- ``"captive_core"`` → ``CaptiveCoreSource`` (bounded catchup of stellar-core, spec §6)

``preflight(config, ranges)`` checks, once before any range starts, that the source can
serve the ledgers of the ranges still to ingest (``sources.checks``).  Layout math and the local lake writer live
in ``sources.layout``; object stores and their scheme table in ``sources.objstore``.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .base import Ledger, LedgerSource

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ..config import Config
    from .checks import RangeLike
    from .layout import LakeSchema

__all__ = ["Ledger", "LedgerSource", "open_source", "preflight"]


def preflight(config: Config, ranges: Iterable[RangeLike]) -> None:
    """See ``sources.checks.preflight``."""
    from .checks import preflight as run

    run(config, ranges)


def open_source(
    config: Config, cancel: threading.Event, *, prefetch: bool = True, lake_schema: LakeSchema | None = None
) -> LedgerSource:
    """Build (but do not start) the source the configuration names.

    Nothing touches the network or spawns a process here; ``prepare_range`` does.
    ``prefetch=False``: the caller is one of several parallel workers, so a source that can read
    cheaply in the caller's thread (a data lake in a local directory) starts no read-ahead threads.
    ``lake_schema``: a data lake's layout already resolved by an earlier source of this run
    (``DataLakeSource.schema``); the new source does not resolve it again.
    """
    backend = config.backfill.ledger_backend
    passphrase = config.service.network_passphrase
    if backend == "buffered_storage":
        from .datalake import DataLakeSource

        return DataLakeSource(
            config.backfill.buffered_storage,
            passphrase,
            cancel,
            authenticate=config.backfill.check_ledger_hashes,
            prefetch=prefetch,
            known_schema=lake_schema,
        )
    if backend == "captive_core":
        from .captive_core import CaptiveCoreSource

        return CaptiveCoreSource(
            config.backfill.captive_core,
            cancel,
            network_passphrase=passphrase,
            range_size=config.backfill.range_size,
            authenticate=config.backfill.check_ledger_hashes,
        )
    raise ConfigError(f"backfill.ledger_backend must be 'buffered_storage' or 'captive_core', got {backend!r}")
