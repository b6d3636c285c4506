"""The ``stellar-rpc`` command line (click).

    stellar-rpc --backfill --start-ledger S --end-ledger E [--config-path F]
    stellar-rpc get-ledger-by-sequence SEQ [--base64]
    stellar-rpc get-transaction-by-hash HEX
    stellar-rpc status [--json]
    stellar-rpc verify [--sample N] [--against-source] [--json]
    stellar-rpc detect-gaps --start-ledger S --end-ledger E [--json]
    stellar-rpc rebuild-meta [--yes]
    stellar-rpc version | gen-config-file | dev ...

Arguments are parsed and validated here; the work is done by ``rpcbackfill.orchestration.api``.

``main`` is the console-script entry point.  It never shows a traceback for bad input: every
failure becomes one ``error: ...`` line on stderr and an exit code (see ``rpcbackfill.errors``):
``RpcBackfillError`` -> its ``exit_code``; click usage errors -> 2; Ctrl-C -> 130; anything
unexpected -> 1 with a hint to rerun with ``--log-level debug``, which prints the traceback.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from . import __version__
from .config import (
    ENV_CONFIG_PATH,
    KEYS_BY_DOTTED,
    Config,
    example_config_text,
    load_config,
    parse_ascii_int,
)
from .errors import (
    CheckFailedError,
    ConfigError,
    DataCorruptionError,
    InputError,
    RangeFailedError,
    RpcBackfillError,
)
from .fsutil import atomic_write
from .ledgermath import FIRST_LEDGER, UINT32_MAX, ranges_between
from .logsetup import LOG_FORMATS, LOG_LEVELS, configure_logging, debug_enabled
from .meta.store import RangeState
from .orchestration import api
from .orchestration.status import RangeStatus, StatusReport

log = logging.getLogger(__name__)

PROG = "stellar-rpc"
DEBUG_HINT = "run with --log-level debug for the traceback"


class _AsciiInt(click.ParamType):
    """An integer written in ASCII digits (click.INT would take any script's digits)."""

    name = "INTEGER"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        try:
            return parse_ascii_int(str(value))
        except ValueError:
            self.fail(f"{value!r} is not an integer of ASCII digits", param, ctx)


# --- shared options ---------------------------------------------------------------------------

_COMMON = ("config_path", "data_dir", "log_level", "log_format", "settings")


def _common_options(f):
    """Options accepted both before the command (``stellar-rpc --data-dir D status``) and after it."""
    options = [
        click.option(
            "--config-path",
            metavar="FILE",
            default=None,
            help=f"TOML configuration file (env {ENV_CONFIG_PATH}). See `{PROG} gen-config-file`.",
        ),
        click.option("--data-dir", metavar="DIR", default=None, help="Overrides [service] data_dir."),
        click.option(
            "--log-level",
            type=click.Choice(LOG_LEVELS, case_sensitive=False),
            default=None,
            help="Overrides [service] log_level (default info).",
        ),
        click.option(
            "--log-format",
            type=click.Choice(LOG_FORMATS),
            default=None,
            help="Overrides [service] log_format (default text).",
        ),
        click.option(
            "--set",
            "settings",
            metavar="SECTION.KEY=VALUE",
            multiple=True,
            help="Override any configuration key, e.g. --set backfill.parallel_ranges=4 (repeatable).",
        ),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def _merged(ctx: click.Context, local: dict[str, Any]) -> dict[str, Any]:
    """Group-level options overridden by the command's own."""
    root = ctx.find_root()
    merged = dict((root.obj or {}).get("common", {}))
    for name in _COMMON:
        value = local.get(name)
        if name == "settings":
            merged["settings"] = tuple(merged.get("settings", ())) + tuple(value or ())
        elif value is not None:
            merged[name] = value
    return merged


def _overrides(opts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in opts.get("settings") or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--set expects SECTION.KEY=VALUE, got {item!r}")
        out[key] = value
    flags = {
        "service.data_dir": opts.get("data_dir"),
        "service.log_level": opts.get("log_level"),
        "service.log_format": opts.get("log_format"),
    }
    out.update({k: v for k, v in flags.items() if v is not None})
    return out


def _load(ctx: click.Context, local: dict[str, Any], *, for_backfill: bool = False, **extra: Any) -> Config:
    opts = _merged(ctx, local)
    overrides = _overrides(opts)
    overrides.update({k: v for k, v in extra.items() if v is not None})
    config_path = opts.get("config_path") or os.environ.get(ENV_CONFIG_PATH) or None
    cfg = load_config(config_path, overrides=overrides, for_backfill=for_backfill)
    configure_logging(cfg.service.log_level, cfg.service.log_format)
    log.debug("configuration loaded", extra={"config_path": config_path, "data_dir": str(cfg.service.data_dir)})
    return cfg


def _early_logging(opts: dict[str, Any]) -> None:
    """Logging before the configuration is loaded (flags, then environment, then defaults)."""
    level = opts.get("log_level") or os.environ.get(KEYS_BY_DOTTED["service.log_level"].env, "info")
    fmt = opts.get("log_format") or os.environ.get(KEYS_BY_DOTTED["service.log_format"].env, "text")
    level = level.strip().lower() if level.strip().lower() in LOG_LEVELS else "info"
    configure_logging(level, fmt if fmt in LOG_FORMATS else "text")


# --- commands loaded on first use ------------------------------------------------------------------

# name -> (module, attribute).  The developer tools pull in the lake generator and its XDR
# templates; an operator's commands should not pay for that import.
LAZY_COMMANDS = {"dev": ("rpcbackfill.devtools.cli", "dev")}


class _RootGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            module, attr = LAZY_COMMANDS[cmd_name]
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, cmd_name)


# --- commands --------------------------------------------------------------------------------


@click.group(
    cls=_RootGroup,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option("--backfill", is_flag=True, help="Backfill [--start-ledger, --end-ledger] into the data directory.")
@click.option(
    "--start-ledger",
    type=_AsciiInt(),
    default=None,
    help="First ledger (a range first ledger: 2, 10000002, ...). Overrides [backfill] start_ledger.",
)
@click.option(
    "--end-ledger",
    type=_AsciiInt(),
    default=None,
    help="Last ledger (a range last ledger: 10000001, 20000001, ...). Overrides [backfill] end_ledger.",
)
@click.option(
    "--verify-complete",
    is_flag=True,
    default=None,
    help="With --backfill: check the ranges already COMPLETE with the full verification (every ledger and key; "
    "slow) instead of the quick structural check, and repair what it finds. Sets [backfill] verify_complete.",
)
@_common_options
@click.version_option(__version__, "--version", prog_name=PROG, message="%(prog)s %(version)s")
@click.pass_context
def cli(
    ctx: click.Context,
    backfill: bool,
    start_ledger: int | None,
    end_ledger: int | None,
    verify_complete: bool | None,
    **common: Any,
) -> int:
    """Backfill Stellar ledger history into immutable stores, and query them.

    Configuration precedence: flag > environment (STELLAR_RPC_*) > TOML file > default.
    """
    ctx.ensure_object(dict)
    ctx.obj["common"] = {k: common.get(k) for k in _COMMON}
    _early_logging(common)
    sub = ctx.invoked_subcommand
    if sub is not None:
        if backfill:
            raise InputError(f"--backfill cannot be combined with the '{sub}' command")
        if start_ledger is not None or end_ledger is not None or verify_complete:
            raise InputError("--start-ledger/--end-ledger/--verify-complete apply only with --backfill")
        return 0
    if not backfill:
        if start_ledger is not None or end_ledger is not None or verify_complete:
            raise InputError("--start-ledger/--end-ledger/--verify-complete apply only with --backfill")
        raise InputError(
            f"nothing to do: streaming mode is not part of this build; use --backfill or a command ({PROG} --help)"
        )
    cfg = _load(
        ctx,
        {},
        for_backfill=True,
        **{
            "backfill.start_ledger": start_ledger,
            "backfill.end_ledger": end_ledger,
            "backfill.verify_complete": verify_complete or None,
        },
    )
    b = cfg.backfill
    assert b.start_ledger is not None and b.end_ledger is not None  # for_backfill: _load requires both
    ranges = ranges_between(b.start_ledger, b.end_ledger, b.range_size)
    log.info(
        "starting backfill of ledgers %d-%d (ranges %d-%d) into %s",
        b.start_ledger,
        b.end_ledger,
        ranges[0],
        ranges[-1],
        cfg.service.data_dir,
        extra={"backend": b.ledger_backend, "parallel_ranges": b.parallel_ranges},
    )
    rc = api.run_backfill(cfg)
    return int(rc or 0)


@cli.command()
def version() -> int:
    """Print the version."""
    _out(f"{PROG} {__version__} (rpcbackfill, Python {sys.version.split()[0]})\n")
    return 0


@cli.command("gen-config-file")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to FILE (atomically) instead of stdout.",
)
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
def gen_config_file(output: Path | None, force: bool) -> int:
    """Print a commented example configuration with every key and its default."""
    text = example_config_text()
    if output is None:
        _out(text)
        return 0
    if output.exists() and not force:
        raise InputError(f"{output} exists; pass --force to overwrite it")
    atomic_write_text(output, text)
    return 0


@cli.command("show-config")
@_common_options
@click.pass_context
def show_config(ctx: click.Context, **common: Any) -> int:
    """Print the effective configuration (after flags, environment, file and defaults) as JSON."""
    cfg = _load(ctx, common)
    _out(json.dumps(dataclasses.asdict(cfg), indent=2, default=str) + "\n")
    return 0


class _LedgerSeq(click.ParamType):
    name = "SEQ"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            seq = value
        else:
            try:
                seq = parse_ascii_int(str(value))
            except ValueError:
                self.fail(f"must be a ledger sequence (an integer >= {FIRST_LEDGER}), got {value!r}", param, ctx)
        if not FIRST_LEDGER <= seq <= UINT32_MAX:
            self.fail(f"must be a ledger sequence between {FIRST_LEDGER} and {UINT32_MAX}, got {seq}", param, ctx)
        return seq


class _TxHash(click.ParamType):
    name = "HEX"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> bytes:
        if isinstance(value, bytes):
            return value
        text = str(value).strip()
        if len(text) != 64 or any(c not in "0123456789abcdefABCDEF" for c in text):
            self.fail(
                f"must be 64 hex characters (a 32-byte transaction hash), got {value!r} ({len(text)} characters)",
                param,
                ctx,
            )
        return bytes.fromhex(text)


@cli.command("get-ledger-by-sequence")
@click.argument("seq", type=_LedgerSeq())
@click.option("--base64", "as_base64", is_flag=True, help="Print base64 text instead of raw XDR bytes.")
@_common_options
@click.pass_context
def get_ledger_by_sequence(ctx: click.Context, seq: int, as_base64: bool, **common: Any) -> int:
    """Write ledger SEQ's LedgerCloseMeta XDR to stdout (raw bytes, or base64 with --base64)."""
    if not as_base64 and sys.stdout.isatty():
        raise InputError("refusing to write binary XDR to a terminal; redirect stdout or pass --base64")
    cfg = _load(ctx, common)
    data = api.get_ledger(cfg, seq)
    if as_base64:
        import base64

        _out(base64.b64encode(data) + b"\n")
    else:
        _out(data)
    return 0


@cli.command("get-transaction-by-hash")
@click.argument("tx_hash", metavar="HEX", type=_TxHash())
@_common_options
@click.pass_context
def get_transaction_by_hash(ctx: click.Context, tx_hash: bytes, **common: Any) -> int:
    """Print {"ledger_sequence": N} for transaction HEX; exit 3 when it is absent."""
    cfg = _load(ctx, common)
    seq = api.get_transaction_ledger(cfg, tx_hash)
    _out(json.dumps({"ledger_sequence": int(seq)}) + "\n")
    return 0


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_common_options
@click.pass_context
def status(ctx: click.Context, as_json: bool, **common: Any) -> int:
    """Per-range state and progress of the data directory (exit 1 when a range FAILED)."""
    cfg = _load(ctx, common)
    report = api.status(cfg)
    _out((json.dumps(report.to_json(), indent=2) if as_json else format_status(report)) + "\n")
    failed = [r for r in report.ranges if r.state == RangeState.FAILED]
    if failed:
        raise RangeFailedError(
            f"{len(failed)} range{'s' * (len(failed) > 1)} FAILED ("
            + ", ".join(f"range {r.id}: {r.error or 'no error recorded'}" for r in failed)
            + "); re-run the backfill to resume"
        )
    damaged = [r for r in report.ranges if r.damage]
    if damaged:
        n = sum(len(r.damage) for r in damaged)
        raise DataCorruptionError(
            f"{n} damaged or missing file{'s' * (n > 1)} in COMPLETE range{'s' * (len(damaged) > 1)} "
            + ", ".join(str(r.id) for r in damaged)
            + " (listed above); re-run the same --backfill command to repair them"
        )
    return 0


@cli.command()
@click.option(
    "--sample",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Look up N random transaction hashes per index shard instead of every one (quicker).",
)
@click.option(
    "--against-source",
    is_flag=True,
    help="Also compare every stored ledger with the configured source (the data lake).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_common_options
@click.pass_context
def verify(ctx: click.Context, sample: int | None, against_source: bool, as_json: bool, **common: Any) -> int:
    """Re-check every chunk, index shard and key of the data directory from the files alone.

    Exit 0 when everything is sound, 1 with a report naming each bad chunk, shard and ledger.
    """
    cfg = _load(ctx, common)
    from .orchestration.verify import VerifyOptions, verify_data_dir

    report = verify_data_dir(cfg, VerifyOptions(sample=sample, against_source=against_source))
    _out((json.dumps(report.to_json(), indent=2) if as_json else report.format_text()) + "\n")
    if not report.clean:
        raise CheckFailedError(f"verify found {len(report.problems)} problems in {cfg.service.data_dir}")
    return 0


@cli.command("detect-gaps")
@click.option(
    "--start-ledger",
    type=click.IntRange(min=FIRST_LEDGER, max=UINT32_MAX),
    required=True,
    metavar="S",
    help="First ledger to look for.",
)
@click.option(
    "--end-ledger",
    type=click.IntRange(min=FIRST_LEDGER, max=UINT32_MAX),
    required=True,
    metavar="E",
    help="Last ledger to look for.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_common_options
@click.pass_context
def detect_gaps(ctx: click.Context, start_ledger: int, end_ledger: int, as_json: bool, **common: Any) -> int:
    """List the ledgers in [S, E] whose objects are missing from the configured data lake.

    One list call per lake partition; nothing is downloaded.  Exit 0 when none is missing, else 1.
    """
    if end_ledger < start_ledger:
        raise InputError(f"--end-ledger ({end_ledger}) must not be less than --start-ledger ({start_ledger})")
    cfg = _load(ctx, common)
    bucket_path = cfg.backfill.buffered_storage.bucket_path
    if not bucket_path:
        raise InputError("detect-gaps needs a data lake: set [backfill.buffered_storage] bucket_path")
    from .errors import LakeConfigError
    from .sources.gaps import detect_gaps as find_gaps
    from .sources.objstore import StoreOptions, open_store

    try:
        store = open_store(bucket_path, StoreOptions.from_config(cfg.backfill.buffered_storage))
        try:
            report = find_gaps(
                store, start_ledger, end_ledger, cfg.backfill.buffered_storage, cfg.service.network_passphrase
            )
        finally:
            store.close()
    except LakeConfigError as e:
        # exit 1 means "objects are missing" here: a lake it cannot interpret is bad input (exit 2)
        raise InputError(str(e)) from None
    _out((json.dumps(report.to_json(), indent=2) if as_json else report.format_text()) + "\n")
    if report.missing:
        raise CheckFailedError(
            f"{report.ledgers_missing} ledgers ({len(report.missing_keys)} objects) of {start_ledger}-{end_ledger} "
            f"are missing from the lake {report.lake}"
        )
    return 0


@cli.command("rebuild-meta")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_common_options
@click.pass_context
def rebuild_meta(ctx: click.Context, yes: bool, **common: Any) -> int:
    """Rebuild a lost or damaged meta store from the immutable files.

    Ranges whose chunks and 16 index shards all check out become COMPLETE; the others are left
    out (the next --backfill redoes them).  The old store is renamed aside, never deleted.
    Refuses while a backfill holds the data directory.
    """
    cfg = _load(ctx, common)
    from .orchestration.rebuild import RebuildPlan
    from .orchestration.rebuild import rebuild_meta as rebuild

    def confirm(plan: RebuildPlan) -> bool:
        _out(plan.format_text() + "\n")
        if yes:
            return True
        if not sys.stdin.isatty():
            raise InputError("rebuild-meta replaces the meta store: pass --yes to proceed")
        if not click.confirm(f"replace the meta store {plan.meta_path} (the old one is kept aside)?"):
            raise InputError("rebuild-meta cancelled; nothing changed")
        return True

    plan = rebuild(cfg, confirm)
    if plan.moved_to is not None:
        _out(f"old meta store moved to {plan.moved_to}\n")
    _out(
        f"new meta store at {plan.meta_path}: {len(plan.complete)} range(s) COMPLETE"
        + (
            f", {len(plan.partial)} partial range(s) left out ("
            + ", ".join(str(r.id) for r in plan.partial)
            + "): re-run --backfill to redo them"
            if plan.partial
            else ""
        )
        + "\n"
    )
    return 0


@cli.command()
@_common_options
@click.pass_context
def serve(ctx: click.Context, **common: Any) -> int:
    """Serve the COMPLETE ranges over JSON-RPC on [service] endpoint until SIGTERM."""
    cfg = _load(ctx, common)
    from .rpc import server

    server.parse_endpoint(cfg.service.endpoint)  # bad input: exit 2 before anything starts
    return server.serve(cfg)


# --- helpers ---------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# (header, value of a RangeStatus) in table order
STATUS_COLUMNS: tuple[tuple[str, Callable[[RangeStatus], Any]], ...] = (
    ("ID", lambda r: r.id),
    ("STATE", lambda r: r.state_text()),
    ("START", lambda r: r.start_ledger),
    ("END", lambda r: r.end_ledger),
    ("PERCENT", lambda r: r.percent),
    ("LEDGERS", lambda r: r.ledgers_done),
    ("LAST_COMMITTED", lambda r: r.last_committed_ledger),
    ("LEDGER_PHASE", lambda r: r.ledger_phase),
    ("TXHASH_PHASE", lambda r: r.txhash_phase),
    ("TX", lambda r: r.tx_count),
    ("ATTEMPTS", lambda r: r.attempts),
    ("COMPLETED_AT", lambda r: r.completed_at),
    ("ERROR", lambda r: r.error),
)


def format_status(report: StatusReport) -> str:
    """``StatusReport`` as text: a summary, then one table row per range (``--json`` has
    every field).  Columns empty in every row are left out; numbers are right-aligned."""
    counts = ", ".join(f"{n} {s}" for s, n in report.counts.items()) or "none"
    lines = [
        f"mode: {_cell(report.mode)}",
        f"ledgers: {_cell(report.start_ledger)}-{_cell(report.end_ledger)} (range size {_cell(report.range_size)})",
        f"complete: {report.complete}",
        f"ranges: {counts}",
        f"progress: {report.ledgers_done}/{report.ledgers_total} ledgers, {report.tx_count} tx hashes",
    ]
    if not report.ranges:
        return "\n".join(lines + ["(no ranges)"])
    raw = [[get(r) for _, get in STATUS_COLUMNS] for r in report.ranges]
    keep = [i for i in range(len(STATUS_COLUMNS)) if any(row[i] is not None for row in raw)]
    heads = [STATUS_COLUMNS[i][0] for i in keep]
    cells = [[_cell(row[i]) for i in keep] for row in raw]
    widths = [max(len(h), *(len(c[j]) for c in cells)) for j, h in enumerate(heads)]

    def fmt(values: list[str], numeric: list[bool]) -> str:
        return "  ".join(
            v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True)
        ).rstrip()

    lines += ["", fmt(heads, [False] * len(heads))]
    for row, c in zip(raw, cells, strict=True):
        lines.append(fmt(c, [isinstance(row[i], (int, float)) and not isinstance(row[i], bool) for i in keep]))
    return "\n".join(lines)


def atomic_write_text(path: Path, text: str) -> None:
    """temp file in the same directory -> fsync -> rename -> fsync directory."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise InputError(f"cannot write {path}: directory {directory} does not exist")
    atomic_write(path, text.encode("utf-8"))


class _StdoutClosed(Exception):
    """stdout was closed by the reader (e.g. ``| head``); kept apart from click's own EPIPE handling."""


def _out(data: bytes | str) -> None:
    """Write command output to stdout; a closed pipe becomes ``_StdoutClosed``."""
    try:
        if isinstance(data, str):
            data = data.encode("utf-8")
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        raise _StdoutClosed() from None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _error(text: str) -> None:
    try:
        sys.stderr.write(f"error: {_one_line(text)}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _wants_debug(argv: list[str]) -> bool:
    if debug_enabled():
        return True
    for i, arg in enumerate(argv):
        if arg.lower() == "--log-level=debug" or (arg == "--log-level" and argv[i + 1 : i + 2] == ["debug"]):
            return True
    return os.environ.get(KEYS_BY_DOTTED["service.log_level"].env, "").strip().lower() == "debug"


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (never raises for deliberate errors)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        rv = cli.main(args=args, prog_name=PROG, standalone_mode=False)
        return rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        hint = ""
        if isinstance(e, click.UsageError) and e.ctx is not None:
            hint = f" (see '{e.ctx.command_path} --help')"
        _error(e.format_message() + hint)
        return e.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        _error("interrupted")
        return 130
    except ConfigError as e:
        if _wants_debug(args):
            traceback.print_exc()
        _error(("invalid configuration: " if len(e.problems) > 1 else "") + str(e))
        return e.exit_code
    except RpcBackfillError as e:
        if _wants_debug(args):
            traceback.print_exc()
        _error(str(e))
        return e.exit_code
    except (_StdoutClosed, BrokenPipeError):
        # stdout closed early (e.g. `| head`): not an error worth a message.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141  # 128 + SIGPIPE
    except Exception as e:
        if _wants_debug(args):
            traceback.print_exc()
        _error(f"unexpected {type(e).__name__}: {e} ({DEBUG_HINT})")
        return 1


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    sys.exit(run(argv))
