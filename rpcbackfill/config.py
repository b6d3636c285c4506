"""Configuration of spec section 3: one frozen dataclass per component.

Precedence: command-line flag > environment (``STELLAR_RPC_*``) > TOML file > default.
``load_config`` (below) builds a validated ``Config``; validation reports every problem
at once (``ConfigError.problems``), rejects unknown keys and resolves relative paths
against ``service.data_dir``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .ledgermath import DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_RANGE_SIZE

PUBNET_PASSPHRASE = "Public Global Stellar Network ; September 2015"
TESTNET_PASSPHRASE = "Test SDF Network ; September 2015"


@dataclass(frozen=True)
class ServiceConfig:
    data_dir: Path
    network_passphrase: str = PUBNET_PASSPHRASE
    http_port: int = 8080  # 0 disables the HTTP endpoint
    log_level: str = "info"  # debug|info|warning|error
    log_format: str = "text"  # text|json


@dataclass(frozen=True)
class MetaStoreConfig:
    path: Path  # default {data_dir}/meta/rocksdb


@dataclass(frozen=True)
class ActiveStoresConfig:
    ledger_path: Path  # default {data_dir}/active/ledgers ; per range: <ledger_path>/<range:04d>
    txhash_path: Path  # default {data_dir}/active/txhash  ; per range: <txhash_path>/<range:04d>


@dataclass(frozen=True)
class ImmutableStoresConfig:
    ledgers_base: Path  # default {data_dir}/immutable/ledgers
    txhash_base: Path  # default {data_dir}/immutable/txhash


@dataclass(frozen=True)
class RocksDBConfig:
    block_cache_mb: int = 64
    write_buffer_mb: int = 64
    max_write_buffer_number: int = 2


@dataclass(frozen=True)
class BufferedStorageConfig:
    bucket_path: str = ""  # gs://bucket/prefix, file:///path or a local path
    buffer_size: int = 10_000  # files buffered ahead of the consumer
    num_workers: int = 200  # parallel downloads
    retry_limit: int = 5  # attempts per object on transient errors
    retry_wait: float = 1.0  # seconds; backoff base (doubles per attempt, capped)


@dataclass(frozen=True)
class CaptiveCoreConfig:
    binary_path: Path | None = None
    config_path: Path | None = None


@dataclass(frozen=True)
class BackfillConfig:
    start_ledger: int | None = None
    end_ledger: int | None = None
    ledger_backend: str = "buffered_storage"  # buffered_storage|captive_core
    parallel_ranges: int = 2
    checkpoint_interval: int = DEFAULT_CHECKPOINT_INTERVAL
    range_size: int = DEFAULT_RANGE_SIZE
    max_retries: int = 3
    buffered_storage: BufferedStorageConfig = field(default_factory=BufferedStorageConfig)
    captive_core: CaptiveCoreConfig = field(default_factory=CaptiveCoreConfig)


@dataclass(frozen=True)
class Config:
    service: ServiceConfig
    meta_store: MetaStoreConfig
    active_stores: ActiveStoresConfig
    immutable_stores: ImmutableStoresConfig
    rocksdb: RocksDBConfig = field(default_factory=RocksDBConfig)
    backfill: BackfillConfig = field(default_factory=BackfillConfig)


def default_config(data_dir: Path | str, **backfill_overrides) -> Config:
    """A Config with every default, rooted at ``data_dir`` (used by tests and tools)."""
    d = Path(data_dir).resolve()
    bs = backfill_overrides.pop("buffered_storage", None) or BufferedStorageConfig()
    cc = backfill_overrides.pop("captive_core", None) or CaptiveCoreConfig()
    return Config(
        service=ServiceConfig(data_dir=d),
        meta_store=MetaStoreConfig(path=d / "meta" / "rocksdb"),
        active_stores=ActiveStoresConfig(ledger_path=d / "active" / "ledgers", txhash_path=d / "active" / "txhash"),
        immutable_stores=ImmutableStoresConfig(
            ledgers_base=d / "immutable" / "ledgers", txhash_base=d / "immutable" / "txhash"
        ),
        backfill=BackfillConfig(buffered_storage=bs, captive_core=cc, **backfill_overrides),
    )
