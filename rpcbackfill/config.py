"""Configuration of spec section 3: one frozen dataclass per component.

Precedence: command-line flag > environment (``STELLAR_RPC_*``) > TOML file > default.
``load_config`` (below) builds a validated ``Config``; validation reports every problem
at once (``ConfigError.problems``), rejects unknown keys and resolves relative paths
against ``service.data_dir``.

Path rules (documented in docs/configuration.md):
- ``service.data_dir`` written in the TOML file resolves against the directory holding that
  file; given by flag or environment it resolves against the working directory.
- Every other relative path (stores, a local ``bucket_path``, captive-core files) resolves
  against ``service.data_dir``, whatever its source.  ``~`` is expanded everywhere.

Every key is declared once in ``KEYS``; validation, environment names, the example file
(``example_config_text``) and the reference table of docs/configuration.md (``reference_table``,
kept identical by a test) all derive from it.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import shutil
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError, InputError, LakeConfigError, LedgerRangeError
from .ledgermath import (
    CHUNK_SIZE,
    DEFAULT_CHECKPOINT_INTERVAL,
    DEFAULT_RANGE_SIZE,
    FIRST_LEDGER,
    UINT32_MAX,
    check_range_size,
    ranges_between,
)
from .logsetup import LOG_FORMATS, LOG_LEVELS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

PUBNET_PASSPHRASE = "Public Global Stellar Network ; September 2015"
TESTNET_PASSPHRASE = "Test SDF Network ; September 2015"


@dataclass(frozen=True)
class ServiceConfig:
    data_dir: Path
    network_passphrase: str = PUBNET_PASSPHRASE
    http_port: int | None = None  # deprecated: overrides http_endpoint's port; 0 disables the endpoint
    http_endpoint: str = "127.0.0.1:8080"  # getHealth/getStatus while a backfill runs
    admin_endpoint: str | None = None  # GET /metrics (Prometheus); None = off
    health_stall_threshold: float = 120.0  # getHealth reports a stall after this long without progress
    progress_interval: float = 30.0  # a progress log line per running range this often (first after <= 5 s)
    endpoint: str = "127.0.0.1:8000"  # JSON-RPC listen address of `stellar-rpc serve`
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
    compression_level: int = 3  # zstd level of the LFS chunk frames


@dataclass(frozen=True)
class RocksDBConfig:
    block_cache_mb: int = 64
    write_buffer_mb: int = 64
    max_write_buffer_number: int = 2


@dataclass(frozen=True)
class BufferedStorageConfig:
    bucket_path: str = ""  # a location of sources.objstore.SCHEMES or a local path
    buffer_size: int = 10_000  # files buffered ahead of the consumer
    num_workers: int = 200  # parallel downloads
    retry_limit: int = 5  # retries per object on transient errors (retry_limit + 1 attempts)
    retry_wait: float = 1.0  # seconds; backoff base (doubles per attempt, capped)
    ledgers_per_file: int | None = None  # layout of a lake without .config.json (else checked against it)
    files_per_partition: int | None = None
    anonymous: bool = False  # unsigned/anonymous requests even when credentials exist
    region: str | None = None  # S3 region (default: the AWS chain)
    endpoint_url: str | None = None  # S3-compatible endpoint (default: the AWS chain)
    force_path_style: bool = False  # S3 path-style addressing (MinIO, Ceph)


@dataclass(frozen=True)
class CaptiveCoreConfig:
    binary_path: Path | None = None
    config_path: Path | None = None  # the operator's stellar-core file (validators, history)
    storage_path: Path | None = None  # default {data_dir}/captive-core ; per range: <storage_path>/<range:04d>
    history_archive_urls: tuple[str, ...] = ()  # http(s):// or file:/// ; used when config_path has no HISTORY


@dataclass(frozen=True)
class BackfillConfig:
    start_ledger: int | None = None
    end_ledger: int | None = None
    ledger_backend: str = "buffered_storage"  # buffered_storage|captive_core
    parallel_ranges: int = 2
    workers: int = 0  # processes for chunk-parallel ingestion across all ranges; 0 = os.cpu_count()
    checkpoint_interval: int = DEFAULT_CHECKPOINT_INTERVAL
    range_size: int = DEFAULT_RANGE_SIZE
    max_retries: int = 3
    max_duration: float | None = None  # seconds; None = no limit (parsed from "90s", "30m", "6h", ...)
    check_ledger_hashes: bool = True
    verify_complete: bool = False  # start-up check of COMPLETE ranges: full verify instead of structural
    buffered_storage: BufferedStorageConfig = field(default_factory=BufferedStorageConfig)
    captive_core: CaptiveCoreConfig = field(default_factory=CaptiveCoreConfig)

    def effective_workers(self) -> int:
        """``workers`` with 0 resolved to the machine's CPU count (at least 1)."""
        return self.workers if self.workers > 0 else max(1, os.cpu_count() or 1)


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
    if cc.storage_path is None:
        cc = replace(cc, storage_path=d / "captive-core")
    return Config(
        service=ServiceConfig(data_dir=d),
        meta_store=MetaStoreConfig(path=d / "meta" / "rocksdb"),
        active_stores=ActiveStoresConfig(ledger_path=d / "active" / "ledgers", txhash_path=d / "active" / "txhash"),
        immutable_stores=ImmutableStoresConfig(
            ledgers_base=d / "immutable" / "ledgers", txhash_base=d / "immutable" / "txhash"
        ),
        backfill=BackfillConfig(buffered_storage=bs, captive_core=cc, **backfill_overrides),
    )


# --- the key table ------------------------------------------------------------------------

ENV_PREFIX = "STELLAR_RPC_"
#: Environment variable naming the TOML file (read by the CLI, not a configuration key).
ENV_CONFIG_PATH = ENV_PREFIX + "CONFIG_PATH"

LEDGER_BACKENDS = ("buffered_storage", "captive_core")

SECTIONS = (
    "service",
    "meta_store",
    "active_stores",
    "immutable_stores",
    "rocksdb",
    "backfill",
    "backfill.buffered_storage",
    "backfill.captive_core",
)

_REQUIRED = object()  # marker: the key has no default

# --- input bounds (issue 15): every input is bounded before it is used ------------------------
MAX_CONFIG_BYTES = 1 << 20  # a configuration file is a few KiB; more is a mistake (or /dev/zero)
MAX_RANGE_SIZE = UINT32_MAX // CHUNK_SIZE * CHUNK_SIZE  # largest chunk multiple of uint32 ledgers
MAX_DURATION_S = 366 * 24 * 3600.0  # a year: longer "limits" are typos (and overflow timers)
# data_dir may not live on these pseudo filesystems (nothing durable can be stored there)
PSEUDO_FILESYSTEMS = (Path("/proc"), Path("/sys"), Path("/dev"))
_ASCII_INT = re.compile(r"[+-]?[0-9]+(?:_[0-9]+)*")
_ASCII_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def parse_ascii_int(text: str) -> int:
    """Base-10 integer from text of ASCII digits (``_`` between digits allowed, surrounding
    blanks ignored).  ``int()`` alone would also take other scripts' digits ("١٢٣" -> 123);
    ValueError for anything else."""
    t = text.strip(" \t")
    if not _ASCII_INT.fullmatch(t):
        raise ValueError(f"not an integer of ASCII digits: {text!r}")
    return int(t.replace("_", ""), 10)


def parse_ascii_float(text: str) -> float:
    """Decimal number from ASCII text (digits, one point, optional exponent); ValueError else."""
    t = text.strip(" \t")
    if not _ASCII_FLOAT.fullmatch(t):
        raise ValueError(f"not a decimal number of ASCII digits: {text!r}")
    return float(t)


@dataclass(frozen=True)
class Key:
    """One configuration key.  ``kind``: str, int, float, bool, duration, choice, path, location (bucket_path),
    urls (a list of history-archive URLs; from text: comma-separated)."""

    section: str
    name: str
    kind: str
    default: Any
    doc: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    example: Any = None  # value shown in the example file when it differs from the default
    commented: bool = False  # the example file shows the key commented out

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dotted.upper().replace(".", "_")


KEYS: tuple[Key, ...] = (
    Key(
        "service",
        "data_dir",
        "path",
        _REQUIRED,
        "Root of all state: meta store, active and immutable stores. Required. Relative: against this "
        "file's directory (against the working directory when given by flag or environment).",
        example="/var/lib/stellar-rpc",
    ),
    Key(
        "service",
        "network_passphrase",
        "str",
        PUBNET_PASSPHRASE,
        "Network passphrase; a data lake whose manifest names another network is refused.",
    ),
    Key(
        "service",
        "http_port",
        "int",
        None,
        "Deprecated: use http_endpoint. When set, replaces the port of http_endpoint; 0 disables the endpoint.",
        minimum=0,
        maximum=65535,
        example=8080,
        commented=True,
    ),
    Key(
        "service",
        "http_endpoint",
        "str",
        "127.0.0.1:8080",
        "HOST:PORT of the backfill's health/status endpoint (JSON-RPC getHealth, getStatus; GET /health, "
        "/status). A port already in use is a start-up error.",
    ),
    Key(
        "service",
        "admin_endpoint",
        "str",
        None,
        "HOST:PORT serving Prometheus metrics at GET /metrics while a backfill runs. Unset: no metrics endpoint.",
        example="127.0.0.1:6061",
        commented=True,
    ),
    Key(
        "service",
        "health_stall_threshold",
        "duration",
        120.0,
        "getHealth answers an error when no ledger was ingested and no transition step finished for this long "
        '(e.g. "120s", "5m").',
        minimum=1.0,
        maximum=MAX_DURATION_S,
    ),
    Key(
        "service",
        "progress_interval",
        "duration",
        30.0,
        "A progress log line per running range (ledgers or transition steps, rates, ETA as fields) this often "
        "during a backfill; the first one comes after 5 s at most.",
        minimum=0.1,
        maximum=MAX_DURATION_S,
    ),
    Key(
        "service",
        "endpoint",
        "str",
        "127.0.0.1:8000",
        "HOST:PORT the JSON-RPC server (`stellar-rpc serve`) listens on; port 0 picks a free port.",
    ),
    Key("service", "log_level", "choice", "info", "Log verbosity.", choices=LOG_LEVELS),
    Key(
        "service",
        "log_format",
        "choice",
        "text",
        "text: human-readable lines; json: one JSON object per line (ts, level, logger, msg, extra fields).",
        choices=LOG_FORMATS,
    ),
    Key(
        "meta_store",
        "path",
        "path",
        "meta/rocksdb",
        "RocksDB directory of the meta store (progress, states).",
        commented=True,
    ),
    Key(
        "active_stores",
        "ledger_path",
        "path",
        "active/ledgers",
        "Partial LFS chunks of ranges being ingested; one subdirectory per range.",
        commented=True,
    ),
    Key(
        "active_stores",
        "txhash_path",
        "path",
        "active/txhash",
        "Transaction-hash spill files of ranges being ingested; one subdirectory per range.",
        commented=True,
    ),
    Key("immutable_stores", "ledgers_base", "path", "immutable/ledgers", "Finished LFS ledger chunks.", commented=True),
    Key(
        "immutable_stores",
        "txhash_base",
        "path",
        "immutable/txhash",
        "Finished RecSplit transaction-hash indexes.",
        commented=True,
    ),
    Key(
        "immutable_stores",
        "compression_level",
        "int",
        3,
        "zstd level of the ledger frames in LFS chunks (1-22). Higher levels store fewer bytes for more CPU per "
        "ledger (docs/benchmarks.md); any level gives valid chunks. Applies to chunks written from now on.",
        minimum=1,
        maximum=22,
    ),
    Key("rocksdb", "block_cache_mb", "int", 64, "Block cache of the meta store, MiB.", minimum=1, maximum=65536),
    Key("rocksdb", "write_buffer_mb", "int", 64, "Memtable size of the meta store, MiB.", minimum=1, maximum=4096),
    Key(
        "rocksdb",
        "max_write_buffer_number",
        "int",
        2,
        "Memtables kept before a flush stalls writes.",
        minimum=1,
        maximum=64,
    ),
    Key(
        "backfill",
        "start_ledger",
        "int",
        None,
        "First ledger to backfill: a range first ledger (2, 10000002, ...). The --start-ledger flag overrides it.",
        minimum=FIRST_LEDGER,
        maximum=UINT32_MAX,
        example=2,
        commented=True,
    ),
    Key(
        "backfill",
        "end_ledger",
        "int",
        None,
        "Last ledger to backfill: a range last ledger (10000001, 20000001, ...). The --end-ledger flag overrides it.",
        minimum=FIRST_LEDGER,
        maximum=UINT32_MAX,
        example=10000001,
        commented=True,
    ),
    Key(
        "backfill", "ledger_backend", "choice", "buffered_storage", "Where ledgers come from.", choices=LEDGER_BACKENDS
    ),
    Key(
        "backfill",
        "parallel_ranges",
        "int",
        2,
        "Ranges ingested at the same time (one process each).",
        minimum=1,
        maximum=256,
    ),
    Key(
        "backfill",
        "workers",
        "int",
        0,
        "Processes that ingest chunks (10,000 ledgers each) in parallel, shared by the ranges running at "
        "once; 0 = one per CPU. Data-lake ranges only: a captive-core range reads its ledgers with one "
        "core, sequentially (each core start replays minutes of catchup).",
        minimum=0,
        maximum=1024,
    ),
    Key(
        "backfill",
        "checkpoint_interval",
        "int",
        DEFAULT_CHECKPOINT_INTERVAL,
        "Ledgers between durable checkpoints; a crash re-ingests at most this many ledgers per range.",
        minimum=1,
        maximum=UINT32_MAX,
    ),
    Key(
        "backfill",
        "range_size",
        "int",
        DEFAULT_RANGE_SIZE,
        f"Ledgers per range; a positive multiple of {CHUNK_SIZE}. Change only for tests and private networks; "
        "it can never change for an existing data directory.",
        minimum=CHUNK_SIZE,
        maximum=MAX_RANGE_SIZE,
    ),
    Key(
        "backfill",
        "max_retries",
        "int",
        3,
        "Whole-range retries before a range is marked FAILED.",
        minimum=0,
        maximum=1000,
    ),
    Key(
        "backfill",
        "max_duration",
        "duration",
        None,
        'Stop the backfill after this long (e.g. "90s", "30m", "6h", "1h30m"; a bare number is '
        "seconds) and exit 75; re-running the same command continues from the last checkpoint. Unset: no limit.",
        minimum=1.0,
        maximum=MAX_DURATION_S,
        example="6h",
        commented=True,
    ),
    Key(
        "backfill",
        "check_ledger_hashes",
        "bool",
        True,
        "Authenticate every ingested ledger: recompute its header hash, transaction-set hash and result-set "
        "hash and check the previous-ledger hash chain; a mismatch fails the range (exit 1). Turn off (with a "
        "warning in the log) only for test lakes whose ledgers were re-sequenced or synthesised.",
    ),
    Key(
        "backfill",
        "verify_complete",
        "bool",
        False,
        "At start-up, check the ranges already COMPLETE with the full verification of `stellar-rpc verify` "
        "(every ledger decoded, every index key looked up: hours for tens of millions of ledgers) instead of "
        "the quick structural check (files present, sizes and headers consistent). Damage found either way "
        "is repaired before the backfill continues.",
    ),
    Key(
        "backfill.buffered_storage",
        "bucket_path",
        "location",
        "",
        "Data lake root: s3://bucket/prefix, gs://bucket/prefix, file:///abs/path or a local path (relative: "
        'against data_dir). Required with ledger_backend = "buffered_storage".',
        example="s3://aws-public-blockchain/v1.1/stellar/ledgers/pubnet",
    ),
    Key(
        "backfill.buffered_storage",
        "buffer_size",
        "int",
        10_000,
        "Lake files fetched ahead of the consumer.",
        minimum=1,
        maximum=1_000_000,
    ),
    Key("backfill.buffered_storage", "num_workers", "int", 200, "Parallel downloads.", minimum=1, maximum=4096),
    Key(
        "backfill.buffered_storage",
        "retry_limit",
        "int",
        5,
        "Retries per object on transient errors (retry_limit + 1 attempts in all).",
        minimum=0,
        maximum=1000,
    ),
    Key(
        "backfill.buffered_storage",
        "retry_wait",
        "float",
        1.0,
        "Seconds before the first retry; doubles per attempt (capped).",
        minimum=0.0,
        maximum=3600.0,
    ),
    Key(
        "backfill.buffered_storage",
        "ledgers_per_file",
        "int",
        None,
        "Ledgers per lake file (ledgersPerBatch). Required, with files_per_partition, for a lake without "
        ".config.json; with a manifest both must agree with it.",
        minimum=1,
        maximum=UINT32_MAX,
        example=1,
        commented=True,
    ),
    Key(
        "backfill.buffered_storage",
        "files_per_partition",
        "int",
        None,
        "Lake files per partition directory (batchesPerPartition); see ledgers_per_file.",
        minimum=1,
        maximum=UINT32_MAX,
        example=64000,
        commented=True,
    ),
    Key(
        "backfill.buffered_storage",
        "anonymous",
        "bool",
        False,
        "Read the lake with anonymous (unsigned) requests even when credentials are available. Without "
        "credentials requests are anonymous anyway.",
    ),
    Key(
        "backfill.buffered_storage",
        "region",
        "str",
        None,
        "S3 only: bucket region (default: AWS_REGION / the AWS profile); the public pubnet lake is in us-east-2.",
        example="us-east-2",
        commented=True,
    ),
    Key(
        "backfill.buffered_storage",
        "endpoint_url",
        "str",
        None,
        "S3 only: endpoint of an S3-compatible store (MinIO, R2, Ceph); default: AWS_ENDPOINT_URL_S3 / "
        "AWS_ENDPOINT_URL, else AWS.",
        example="http://127.0.0.1:9000",
        commented=True,
    ),
    Key(
        "backfill.buffered_storage",
        "force_path_style",
        "bool",
        False,
        "S3 only: path-style addressing (https://host/bucket/key), needed by most S3-compatible stores.",
    ),
    Key(
        "backfill.captive_core",
        "binary_path",
        "path",
        None,
        'stellar-core executable (a bare name is looked up on PATH). Required with ledger_backend = "captive_core".',
        example="/usr/local/bin/stellar-core",
        commented=True,
    ),
    Key(
        "backfill.captive_core",
        "config_path",
        "path",
        None,
        "stellar-core configuration file (see config/captive-core.example.toml). Required with captive_core.",
        example="/etc/stellar/captive-core.cfg",
        commented=True,
    ),
    Key(
        "backfill.captive_core",
        "storage_path",
        "path",
        "captive-core",
        "Working directories of captive stellar-core: one private subdirectory per range (config, database, "
        "buckets), removed when the range's catchup has finished. Needs room for one bucket list per range "
        "running at a time.",
        commented=True,
    ),
    Key(
        "backfill.captive_core",
        "history_archive_urls",
        "urls",
        (),
        "History archives (http(s):// or file:///) for captive core when config_path names none of its own "
        "(no [HISTORY.*] get, no VALIDATORS HISTORY); ignored otherwise.",
        example=("https://history.stellar.org/prd/core-live/core_live_001",),
        commented=True,
    ),
)

KEYS_BY_DOTTED: dict[str, Key] = {k.dotted: k for k in KEYS}
KEYS_BY_ENV: dict[str, Key] = {k.env: k for k in KEYS}
assert len(KEYS_BY_ENV) == len(KEYS), "environment variable names must be unique"


def _accepted(section: str) -> str:
    return ", ".join(k.name for k in KEYS if k.section == section)


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.7)
    return f"did you mean {close[0]!r}? " if close else ""


# --- loading ----------------------------------------------------------------------------------


@dataclass
class _Value:
    value: Any
    source: str  # "file F", "env NAME", "flag", "default"
    from_text: bool  # True when the value is a string to be parsed (env, --set)


def _read_bounded(path: Path) -> bytes:
    """At most MAX_CONFIG_BYTES of a regular file (or a pipe); devices are refused, so
    ``--config-path /dev/zero`` fails at once instead of reading until memory runs out."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            raise ConfigError(f"config file {path} is not a regular file")
        os.set_blocking(fd, True)
        chunks, total = [], 0
        while total <= MAX_CONFIG_BYTES:
            b = os.read(fd, MAX_CONFIG_BYTES + 1 - total)
            if not b:
                break
            chunks.append(b)
            total += len(b)
    finally:
        os.close(fd)
    if total > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is larger than {MAX_CONFIG_BYTES >> 20} MiB")
    return b"".join(chunks)


def _read_toml(path: Path) -> dict:
    try:
        raw = _read_bounded(path)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory, not a TOML file") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(f"config file {path}: not UTF-8 text (line {line})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # tomllib's message already ends with "(at line L, column C)"
        raise ConfigError(f"config file {path}: invalid TOML: {e}") from None
    except RecursionError:  # tomllib parses nested arrays/tables recursively
        raise ConfigError(f"config file {path}: invalid TOML: arrays or tables nested too deeply") from None


def _flatten_toml(data: dict, where: str, problems: list[str]) -> dict[str, _Value]:
    """Dotted key -> value of a parsed TOML document; unknown sections/keys become problems."""
    out: dict[str, _Value] = {}
    top_sections = [s for s in SECTIONS if "." not in s]

    def walk(section: str, table: dict) -> None:
        for name, value in table.items():
            dotted = f"{section}.{name}"
            if dotted in SECTIONS:
                if not isinstance(value, dict):
                    problems.append(f"[{dotted}] must be a table, got {type(value).__name__}")
                else:
                    walk(dotted, value)
            elif dotted in KEYS_BY_DOTTED:
                out[dotted] = _Value(value, f"file {where}", False)
            else:
                subs = [s.split(".", 1)[1] for s in SECTIONS if s.startswith(section + ".")]
                accepted = _accepted(section) + (f"; tables: {', '.join(subs)}" if subs else "")
                problems.append(
                    f"unknown key {name!r} in [{section}] ({_suggest(name, accepted.replace(';', ',').split(', '))}"
                    f"accepted: {accepted})"
                )

    for name, value in data.items():
        if name not in top_sections:
            problems.append(
                f"unknown section [{name}] ({_suggest(name, top_sections)}accepted: {', '.join(top_sections)})"
            )
        elif not isinstance(value, dict):
            problems.append(f"[{name}] must be a table, got {type(value).__name__}")
        else:
            walk(name, value)
    return out


def _from_env(env: Mapping[str, str], problems: list[str]) -> dict[str, _Value]:
    out: dict[str, _Value] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_CONFIG_PATH:
            continue
        key = KEYS_BY_ENV.get(name)
        if key is None:
            problems.append(
                f"unknown environment variable {name} ({_suggest(name, list(KEYS_BY_ENV))}"
                f"accepted: {ENV_PREFIX}<SECTION>_<KEY>, e.g. {KEYS[0].env}; see docs/configuration.md)"
            )
        else:
            out[key.dotted] = _Value(value, f"env {name}", True)
    return out


def _from_overrides(overrides: Mapping[str, Any], problems: list[str]) -> dict[str, _Value]:
    out: dict[str, _Value] = {}
    for dotted, value in overrides.items():
        if value is None:
            continue  # an absent flag
        if dotted not in KEYS_BY_DOTTED:
            problems.append(
                f"unknown configuration key {dotted!r} ({_suggest(dotted, list(KEYS_BY_DOTTED))}"
                f"keys are section.name, e.g. backfill.parallel_ranges)"
            )
            continue
        out[dotted] = _Value(value, "command line", isinstance(value, str))
    return out


def _describe(key: Key, v: _Value) -> str:
    return key.dotted if v.source in ("default",) else f"{key.dotted} (from {v.source})"


_BOOL_TEXT = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


def _coerce(key: Key, v: _Value, problems: list[str]) -> Any:
    """Type-check/parse one value; append a problem and return None when it is invalid."""
    val = v.value
    what = _describe(key, v)
    if key.kind == "int":
        if v.from_text:
            try:
                val = parse_ascii_int(str(val))
            except ValueError:
                problems.append(f"{what} must be an integer, got {v.value!r}")
                return None
        elif isinstance(val, bool) or not isinstance(val, int):
            problems.append(f"{what} must be an integer, got {type(val).__name__} {val!r}")
            return None
    elif key.kind == "bool":
        if v.from_text:
            norm = str(val).strip().lower()
            if norm not in _BOOL_TEXT:
                problems.append(f"{what} must be true or false, got {v.value!r}")
                return None
            val = _BOOL_TEXT[norm]
        elif not isinstance(val, bool):
            problems.append(f"{what} must be true or false, got {type(val).__name__} {val!r}")
            return None
    elif key.kind == "float":
        if v.from_text:
            try:
                val = parse_ascii_float(str(val))
            except ValueError:
                problems.append(f"{what} must be a number, got {v.value!r}")
                return None
        elif isinstance(val, bool) or not isinstance(val, (int, float)):
            problems.append(f"{what} must be a number, got {type(val).__name__} {val!r}")
            return None
        val = float(val)
        if not math.isfinite(val):
            problems.append(f"{what} must be a finite number, got {v.value!r}")
            return None
    elif key.kind == "urls":
        return _coerce_urls(val, v.from_text, what, problems)
    elif key.kind == "duration":
        if isinstance(val, bool) or not isinstance(val, (int, float, str)):
            problems.append(f'{what} must be a duration such as "90s", "30m" or "6h", got {val!r}')
            return None
        try:
            val = parse_duration(val) if isinstance(val, str) else float(val)
        except ValueError:
            problems.append(f'{what} must be a duration such as "90s", "30m" or "6h", got {v.value!r}')
            return None
        if not math.isfinite(val):
            problems.append(f"{what} must be a finite duration, got {v.value!r}")
            return None
    else:  # str, choice, path, location
        if isinstance(val, Path):
            val = str(val)
        if not isinstance(val, str):
            problems.append(f"{what} must be a string, got {type(val).__name__} {val!r}")
            return None
        if key.kind == "choice":
            norm = val.strip().lower() if key.name == "log_level" else val.strip()
            if norm not in key.choices:
                problems.append(f"{what} must be one of {', '.join(key.choices)}; got {val!r}")
                return None
            val = norm
        elif key.kind in ("path", "str") and not val.strip():
            problems.append(f"{what} must not be empty")
            return None
    if key.minimum is not None and val < key.minimum or key.maximum is not None and val > key.maximum:
        bounds = f">= {key.minimum}" if key.maximum is None else f"between {key.minimum} and {key.maximum}"
        problems.append(f"{what} must be {bounds}, got {val!r}")
        return None
    return val


def _coerce_urls(val: Any, from_text: bool, what: str, problems: list[str]) -> tuple[str, ...] | None:
    """A list of history-archive URLs (text: comma-separated); http(s):// or file:///, no whitespace
    or quotes (they become part of a shell command in the generated stellar-core config)."""
    if from_text and isinstance(val, str):
        val = [u for u in (part.strip() for part in val.split(",")) if u]
    if not isinstance(val, (list, tuple)) or not all(isinstance(u, str) for u in val):
        problems.append(f"{what} must be a list of URL strings, got {type(val).__name__} {val!r}")
        return None
    out = []
    for u in val:
        u = u.strip().rstrip("/")
        if not u.startswith(("http://", "https://", "file:///")):
            problems.append(f"{what}: {u!r} is not an http://, https:// or file:/// URL")
        elif any(c.isspace() or c in "\"'`$;&|<>" for c in u):
            problems.append(f"{what}: {u!r} contains whitespace, quotes or shell characters")
        else:
            out.append(u)
    return tuple(out) if len(out) == len(val) else None


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhd])")  # ASCII digits only, like every number


def parse_duration(text: str) -> float:
    """Seconds in ``"90s"``, ``"30m"``, ``"6h"``, ``"2d"``, ``"1h30m"`` or a bare number of seconds."""
    t = str(text).strip().lower().replace(" ", "")
    if re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", t):
        return float(t)
    parts = _DURATION_PART.findall(t)
    if not parts or "".join(n + u for n, u in parts) != t:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 30m, 6h, 1h30m)")
    return float(sum(float(n) * _DURATION_UNITS[u] for n, u in parts))


def format_duration(seconds: float) -> str:
    """``5400`` -> ``"1h30m"``; fractions of a second are kept as ``"1.5s"``."""
    rest = float(seconds)
    out = ""
    for unit in ("d", "h", "m"):
        n = int(rest // _DURATION_UNITS[unit])
        if n:
            out += f"{n}{unit}"
            rest -= n * _DURATION_UNITS[unit]
    if rest or not out:
        out += f"{rest:g}s"
    return out


def _absolute(p: str | Path, base: Path) -> Path:
    p = Path(os.path.expanduser(str(p)))
    return (p if p.is_absolute() else base / p).resolve()


def _check_dir_path(label: str, p: Path, problems: list[str]) -> None:
    """``p`` may be absent (created later) but must not be, or sit under, a non-directory, nor
    lie on a pseudo filesystem (/proc, /sys, /dev)."""
    for pseudo in PSEUDO_FILESYSTEMS:
        if p == pseudo or pseudo in p.parents:
            problems.append(f"{label} {p} is on the {pseudo} pseudo filesystem, which cannot hold data")
            return
    try:
        if p.exists() and not p.is_dir():
            problems.append(f"{label} {p} exists and is not a directory")
            return
        for parent in p.parents:
            if parent.exists():
                if not parent.is_dir():
                    problems.append(f"{label} {p}: {parent} is not a directory")
                return
    except OSError as e:  # e.g. a parent without search permission
        problems.append(f"{label} {p} cannot be inspected: {e.strerror or e}")


def _resolve_location(key: Key, raw: str, data_dir: Path | None, what: str, problems: list[str]) -> str:
    # The scheme table lives with the stores; imported here lazily (config is the lower layer).
    from .sources import objstore

    raw = raw.strip()
    if raw == "":
        return ""
    try:
        raw = objstore.check_location(raw)
    except LakeConfigError as e:
        problems.append(f"{what}: {e}")
        return raw
    if "://" in raw:
        return raw
    return str(_absolute(raw, data_dir)) if data_dir is not None else raw


def load_config(
    config_path: str | Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    for_backfill: bool = False,
    cwd: str | Path | None = None,
) -> Config:
    """Build a validated ``Config`` from defaults, a TOML file, the environment and flags.

    ``overrides`` maps dotted keys (``"backfill.start_ledger"``) to flag values (``None`` =
    flag absent; strings are parsed like environment values).  ``env`` defaults to
    ``os.environ``; only ``STELLAR_RPC_*`` variables are read.  ``for_backfill`` adds the
    checks a backfill needs (start/end ledgers, the ledger backend's settings).
    Raises ``ConfigError`` listing every problem (``LedgerRangeError`` when the start/end
    ledgers are the only problem).
    """
    base = Path(cwd) if cwd is not None else Path.cwd()
    env = os.environ if env is None else env
    problems: list[str] = []

    layers: dict[str, _Value] = {}
    file_dir = base
    if config_path is not None:
        path = _absolute(config_path, base)
        file_dir = path.parent
        layers.update(_flatten_toml(_read_toml(path), str(path), problems))
    layers.update(_from_env(env, problems))
    layers.update(_from_overrides(overrides or {}, problems))

    values: dict[str, Any] = {}
    invalid: set[str] = set()  # keys whose value was reported as a problem
    for key in KEYS:
        v = layers.get(key.dotted)
        if v is None:
            if key.default is _REQUIRED:
                problems.append(
                    f"{key.dotted} is required (set data_dir in [{key.section}] of the config file, "
                    f"{key.env} or --data-dir)"
                )
            values[key.dotted] = None if key.default is _REQUIRED else key.default
            continue
        n = len(problems)
        values[key.dotted] = _coerce(key, v, problems)
        if len(problems) > n:
            invalid.add(key.dotted)

    # data_dir first: every other relative path hangs off it.
    data_dir: Path | None = None
    check_paths = False
    if values["service.data_dir"] is not None:
        v = layers["service.data_dir"]
        data_dir = _absolute(values["service.data_dir"], file_dir if v.source.startswith("file ") else base)
        n = len(problems)
        _check_dir_path("service.data_dir", data_dir, problems)
        check_paths = len(problems) == n  # paths under a broken data_dir would only repeat its problem
    values["service.data_dir"] = data_dir

    for key in KEYS:
        raw = values[key.dotted]
        if key.kind == "path" and key.name != "data_dir" and raw is not None:
            if key.section == "backfill.captive_core" and key.name != "storage_path":
                values[key.dotted] = _resolve_core_file(key, raw, data_dir)
            else:
                values[key.dotted] = _absolute(raw, data_dir) if data_dir is not None else Path(raw)
                if check_paths:
                    _check_dir_path(key.dotted, values[key.dotted], problems)
        elif key.kind == "location" and raw is not None:
            v = layers.get(key.dotted)
            what = _describe(key, v) if v else key.dotted
            values[key.dotted] = _resolve_location(key, raw, data_dir, what, problems)

    range_problems = _check_backfill(values, invalid, for_backfill, problems)
    if problems:
        if range_problems and len(range_problems) == len(problems):
            raise LedgerRangeError("; ".join(range_problems))
        raise ConfigError(problems)
    return _build(values)


def _resolve_core_file(key: Key, raw: str, data_dir: Path | None) -> Path:
    if key.name == "binary_path" and os.sep not in raw and "/" not in raw:
        found = shutil.which(raw)
        if found:
            return Path(found)
    if data_dir is None:
        return Path(raw)
    return _absolute(raw, data_dir)


def _check_backfill(values: dict[str, Any], invalid: set[str], for_backfill: bool, problems: list[str]) -> list[str]:
    """Cross-key checks; returns the start/end problems (also appended to ``problems``)."""
    range_size = values["backfill.range_size"]
    if range_size is not None:
        try:
            check_range_size(range_size)
        except InputError:
            problems.append(f"backfill.range_size must be a positive multiple of {CHUNK_SIZE}, got {range_size!r}")
            range_size = None
    interval = values["backfill.checkpoint_interval"]
    if interval is not None and range_size is not None and interval > range_size:
        problems.append(f"backfill.checkpoint_interval ({interval}) must not exceed backfill.range_size ({range_size})")

    if not for_backfill:
        return []

    range_problems: list[str] = []
    start, end = values["backfill.start_ledger"], values["backfill.end_ledger"]
    if start is None and "backfill.start_ledger" not in invalid:
        range_problems.append("backfill needs --start-ledger (or start_ledger in [backfill])")
    if end is None and "backfill.end_ledger" not in invalid:
        range_problems.append("backfill needs --end-ledger (or end_ledger in [backfill])")
    if start is not None and end is not None and range_size is not None:
        try:
            ranges_between(start, end, range_size)
        except LedgerRangeError as e:
            range_problems.append(str(e))
    problems.extend(range_problems)

    backend = values["backfill.ledger_backend"]
    if backend == "buffered_storage":
        _check_lake(values, invalid, problems)
    elif backend == "captive_core":
        binary = values["backfill.captive_core.binary_path"]
        conf = values["backfill.captive_core.config_path"]
        need = "is required when backfill.ledger_backend is captive_core"
        for name, path, mode, ability in (
            ("binary_path", binary, os.X_OK, "executable"),
            ("config_path", conf, os.R_OK, "readable"),
        ):
            key = f"backfill.captive_core.{name}"
            if path is None:
                problems.append(f"{key} {need}")
            elif not path.is_file():
                problems.append(f"{key} {path} does not exist or is not a file")
            elif not os.access(path, mode):
                problems.append(f"{key} {path} is not {ability}")
    return range_problems


def _check_lake(values: dict[str, Any], invalid: set[str], problems: list[str]) -> None:
    from .sources import objstore

    sect = "backfill.buffered_storage"
    bucket = values[f"{sect}.bucket_path"]
    if bucket == "":
        problems.append(
            f"{sect}.bucket_path is required when backfill.ledger_backend is buffered_storage "
            f"({objstore.accepted_forms()})"
        )
    if not bucket or f"{sect}.bucket_path" in invalid:
        return
    try:
        scheme = objstore.scheme_of(bucket)
        local = objstore.local_path(bucket)
    except LakeConfigError:
        return  # already reported by _resolve_location
    if local is not None and not local.is_dir():
        problems.append(f"{sect}.bucket_path {bucket} is not an existing directory")
    for name in ("region", "endpoint_url", "force_path_style"):
        if values[f"{sect}.{name}"] not in (None, False) and name not in scheme.options:
            forms = " or ".join(s.form for s in objstore.SCHEMES.values() if name in s.options)
            problems.append(f"{sect}.{name} applies only to {forms} lakes, not to {bucket}")
    endpoint = values[f"{sect}.endpoint_url"]
    if endpoint and not endpoint.startswith(("http://", "https://")):
        problems.append(f"{sect}.endpoint_url must be an http:// or https:// URL, got {endpoint!r}")


def _build(values: dict[str, Any]) -> Config:
    def sect(section: str) -> dict[str, Any]:
        return {k.name: values[k.dotted] for k in KEYS if k.section == section}

    backfill = sect("backfill")
    return Config(
        service=ServiceConfig(**sect("service")),
        meta_store=MetaStoreConfig(**sect("meta_store")),
        active_stores=ActiveStoresConfig(**sect("active_stores")),
        immutable_stores=ImmutableStoresConfig(**sect("immutable_stores")),
        rocksdb=RocksDBConfig(**sect("rocksdb")),
        backfill=BackfillConfig(
            **backfill,
            buffered_storage=BufferedStorageConfig(**sect("backfill.buffered_storage")),
            captive_core=CaptiveCoreConfig(**sect("backfill.captive_core")),
        ),
    )


# --- the example file ------------------------------------------------------------------------------


def _toml_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_literal(v) for v in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _wrap(text: str, width: int = 96) -> list[str]:
    lines, cur = [], ""
    for word in text.split():
        if cur and len(cur) + 1 + len(word) > width - 2:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}" if cur else word
    if cur:
        lines.append(cur)
    return ["# " + line for line in lines]


EXAMPLE_HEADER = """\
# stellar-rpc configuration (TOML). Generated by `stellar-rpc gen-config-file`; config/example.toml
# is this same text. Every key is listed with its default.
#
# Precedence: command-line flag > environment > this file > default.
# Environment: STELLAR_RPC_<SECTION>_<KEY>, e.g. STELLAR_RPC_SERVICE_DATA_DIR,
#   STELLAR_RPC_BACKFILL_BUFFERED_STORAGE_BUCKET_PATH. STELLAR_RPC_CONFIG_PATH names this file.
# Paths: data_dir resolves against this file's directory; every other relative path resolves
#   against data_dir. Unknown keys are an error.
"""


def example_config_text() -> str:
    """The commented example configuration (``gen-config-file``; config/example.toml)."""
    out = [EXAMPLE_HEADER.rstrip("\n")]
    for section in SECTIONS:
        out.append("")
        out.append(f"[{section}]")
        for key in (k for k in KEYS if k.section == section):
            doc = key.doc
            if key.choices:
                doc += f" One of: {', '.join(key.choices)}."
            if key.kind == "path" and key.default not in (None, _REQUIRED):
                doc += f" Default: {{data_dir}}/{key.default}."
            elif key.default not in (None, _REQUIRED, "", ()):
                doc += f" Default: {_toml_literal(key.default)}."
            out.extend(_wrap(doc))
            value = key.example if key.example is not None else key.default
            prefix = "# " if key.commented else ""
            out.append(f"{prefix}{key.name} = {_toml_literal(value)}")
    return "\n".join(out) + "\n"


def reference_table() -> str:
    """The "Reference" table of docs/configuration.md (key, default, environment variable,
    meaning), one row per ``KEYS`` entry; a test keeps the document identical to it."""
    lines = ["| key | default | environment variable | meaning |", "|---|---|---|---|"]
    for key in KEYS:
        if key.default is _REQUIRED:
            default = "required"
        elif key.default is None:
            default = "unset"
        elif key.kind == "path":
            default = f"`{{data_dir}}/{key.default}`"
        else:
            default = f"`{_toml_literal(key.default)}`"
        meaning = key.doc + (f" One of: {', '.join(key.choices)}." if key.choices else "")
        if key.minimum is not None and key.maximum is not None:
            meaning += f" Accepted: {_toml_literal(key.minimum)} to {_toml_literal(key.maximum)}."
        lines.append(f"| `{key.dotted}` | {default} | `{key.env}` | {meaning} |")
    return "\n".join(lines) + "\n"
