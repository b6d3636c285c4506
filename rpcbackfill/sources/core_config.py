"""The stellar-core configuration each captive-core range runs with.

The operator's file (``[backfill.captive_core] config_path``) is the one they already have for
stellar-rpc: validators, home domains, history archives.  ``CoreToml.load`` parses it with
tomllib and merges in what the driver owns; ``CoreToml.render(work_dir)`` writes the per-range
file, adding the range's ``DATABASE`` and ``BUCKET_DIR_PATH`` (relative: core runs in the range's
private directory).

Keys the driver owns, and what happens when the operator's file sets them too:

- ``DATABASE``, ``BUCKET_DIR_PATH`` -- refused: they are per range (a shared bucket directory is
  what makes a second core fail on stellar-core's bucket lock).
- ``NETWORK_PASSPHRASE`` -- taken from ``[service] network_passphrase``; a different value is
  refused.
- ``HTTP_PORT = 0``, ``PUBLIC_HTTP_PORT = false``, ``RUN_STANDALONE = true``,
  ``UNSAFE_QUORUM = true``, ``FAILURE_SAFETY = 0``, ``LOG_FILE_PATH = ""`` -- overridden, with a
  note (a catchup replays archives: it neither votes nor serves; core's console output is
  captured instead of a log file).  stellar/go's catchup config overrides the same keys.
- ``META_FLAGS`` -- the meta-emission settings Galexie runs core with, so ledgers are byte for
  byte those of the public data lake: set to true; an explicit ``false`` is refused.

Written only when absent (memory settings stellar/go also defaults):
``BUCKETLIST_DB_INDEX_PAGE_SIZE_EXPONENT = 12``, ``BUCKETLIST_DB_MEMORY_FOR_CACHING = 0``.

History: when the file has no ``[HISTORY.*]`` table with ``get`` and no validator with
``HISTORY``, ``history_archive_urls`` become ``[HISTORY.h0]``, ``[HISTORY.h1]``, ...; with neither
the file is refused (catchup needs an archive).  A file with no quorum at all (no ``VALIDATORS``,
no ``QUORUM_SET``) gets a one-key placeholder ``QUORUM_SET``: core needs one to start, and a
catchup never uses it.
"""

from __future__ import annotations

import datetime
import math
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CorePreflightError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

#: Per-range keys: never taken from the operator's file.
REFUSED_KEYS = ("DATABASE", "BUCKET_DIR_PATH")
#: Keys a catchup needs with these values; the operator's value is overridden (with a note).
FORCED_KEYS: dict[str, Any] = {
    "HTTP_PORT": 0,
    "PUBLIC_HTTP_PORT": False,
    "RUN_STANDALONE": True,
    "UNSAFE_QUORUM": True,
    "FAILURE_SAFETY": 0,
    "LOG_FILE_PATH": "",
}
#: Meta emission as Galexie configures core (stellar/go's "verbose meta" plus the protocol-23
#: defaults): without them captive-core ledgers differ from the public data lake's.
META_FLAGS = (
    "EMIT_SOROBAN_TRANSACTION_META_EXT_V1",
    "EMIT_LEDGER_CLOSE_META_EXT_V1",
    "ENABLE_SOROBAN_DIAGNOSTIC_EVENTS",
    "ENABLE_DIAGNOSTICS_FOR_TX_SUBMISSION",
    "EMIT_CLASSIC_EVENTS",
    "BACKFILL_STELLAR_ASSET_EVENTS",
    "BACKFILL_RESTORE_META",
)
#: Written when the operator's file does not set them.
DEFAULT_KEYS: dict[str, Any] = {
    "BUCKETLIST_DB_INDEX_PAGE_SIZE_EXPONENT": 12,
    "BUCKETLIST_DB_MEMORY_FOR_CACHING": 0,
}
#: A valid but unused validator key for the placeholder quorum set.
PLACEHOLDER_VALIDATOR = "GBU6VL6FNFBXQ3TIH7WU7YUSPVTHW54L4DOYBWENOCQCV2JSUYE7JAZB"

CONFIG_NAME = "stellar-core.cfg"
DB_NAME = "stellar.db"
BUCKETS_NAME = "buckets"


@dataclass(frozen=True)
class CoreToml:
    """The operator's file merged with everything the driver owns except the per-range paths."""

    source: Path
    values: dict[str, Any]
    notes: tuple[str, ...]  # keys overridden or added, for the log
    archive_url: str | None  # the first history archive core uses, as a URL; None when it cannot be told

    @classmethod
    def load(cls, path: Path | str, *, network_passphrase: str, history_archive_urls: Sequence[str] = ()) -> CoreToml:
        path = Path(path)
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise CorePreflightError(f"cannot read captive-core config {path}: {e.strerror or e}") from None
        except UnicodeDecodeError:
            raise CorePreflightError(f"captive-core config {path} is not UTF-8 text") from None
        except tomllib.TOMLDecodeError as e:
            raise CorePreflightError(f"captive-core config {path}: invalid TOML: {e}") from None
        return cls.merge(doc, path, network_passphrase=network_passphrase, history_archive_urls=history_archive_urls)

    @classmethod
    def merge(
        cls, doc: dict[str, Any], path: Path, *, network_passphrase: str, history_archive_urls: Sequence[str] = ()
    ) -> CoreToml:
        values = dict(doc)
        notes: list[str] = []
        for key in REFUSED_KEYS:
            if key in values:
                raise CorePreflightError(
                    f"{path} sets {key}: rpcbackfill gives every range its own {key} under "
                    f"[backfill.captive_core] storage_path; remove it"
                )
        if "NETWORK_PASSPHRASE" in values and values["NETWORK_PASSPHRASE"] != network_passphrase:
            raise CorePreflightError(
                f"{path} sets NETWORK_PASSPHRASE {values['NETWORK_PASSPHRASE']!r} but "
                f"service.network_passphrase is {network_passphrase!r}"
            )
        values["NETWORK_PASSPHRASE"] = network_passphrase
        for key, want in FORCED_KEYS.items():
            if key in values and values[key] != want:
                notes.append(f"{key} = {_literal(values[key])} in {path} replaced by {_literal(want)} (catchup only)")
            values[key] = want
        for key in META_FLAGS:
            if key in values and values[key] is not True:
                raise CorePreflightError(
                    f"{path} sets {key} = {_literal(values[key])}: captive-core ledgers would differ from "
                    f"the public data lake's; remove it"
                )
            values[key] = True
        for key, default in DEFAULT_KEYS.items():
            values.setdefault(key, default)

        commands = history_get_commands(values)
        if commands and history_archive_urls:
            notes.append(f"history_archive_urls not used: {path} names its own history archives")
        if not commands:
            if not history_archive_urls:
                raise CorePreflightError(
                    f"{path} names no history archive (no [HISTORY.*] get and no VALIDATORS HISTORY) and "
                    f"backfill.captive_core.history_archive_urls is empty: a catchup needs one"
                )
            values["HISTORY"] = {f"h{i}": {"get": archive_get_command(u)} for i, u in enumerate(history_archive_urls)}
            notes.append(f"history archives from history_archive_urls: {', '.join(history_archive_urls)}")
            commands = history_get_commands(values)
        if "VALIDATORS" not in values and "QUORUM_SET" not in values:
            values["QUORUM_SET"] = {"THRESHOLD_PERCENT": 100, "VALIDATORS": [PLACEHOLDER_VALIDATOR]}
            notes.append("no VALIDATORS or QUORUM_SET: a placeholder QUORUM_SET was added (unused by catchup)")
        return cls(path, values, tuple(notes), archive_url_of(commands[0]))

    def for_range(self) -> dict[str, Any]:
        """The full configuration of one range.  Core runs with its private directory as the
        working directory, so the relative ``DATABASE`` and ``BUCKET_DIR_PATH`` land inside it
        (as stellar/go does; no quoting issues with unusual characters in the path)."""
        values = dict(self.values)
        values["DATABASE"] = f"sqlite3://{DB_NAME}"
        values["BUCKET_DIR_PATH"] = BUCKETS_NAME
        return values

    def render(self, header: str = "") -> str:
        lines = [f"# Generated by rpcbackfill from {self.source}; rewritten on every attempt."]
        if header:
            lines.append(f"# {header}")
        return "\n".join(lines) + "\n" + dumps(self.for_range())


# --- history archives -------------------------------------------------------------------------


def history_get_commands(doc: Mapping[str, Any]) -> list[str]:
    """Every archive ``get`` command the file configures, [HISTORY.*] tables first."""
    out: list[str] = []
    hist = doc.get("HISTORY")
    if isinstance(hist, Mapping):
        out += [str(t["get"]) for t in hist.values() if isinstance(t, Mapping) and t.get("get")]
    vals = doc.get("VALIDATORS")
    if isinstance(vals, list):
        out += [str(v["HISTORY"]) for v in vals if isinstance(v, Mapping) and v.get("HISTORY")]
    return out


def archive_get_command(url: str) -> str:
    """The ``get`` command for an http(s):// or file:/// archive URL ({0}: remote, {1}: local file)."""
    url = url.rstrip("/")
    if url.startswith("file://"):
        return f"cp {shlex.quote(url[len('file://') :])}/{{0}} {{1}}"
    return f"curl -sf {shlex.quote(url)}/{{0}} -o {{1}}"


def archive_url_of(command: str) -> str | None:
    """The archive URL behind a ``get`` command: the word holding ``{0}`` without ``/{0}``;
    None when that word is neither http(s) nor an absolute path (e.g. an ``aws s3 cp``)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    for w in words:
        if w.endswith("/{0}"):
            base = w[: -len("/{0}")]
            if base.startswith(("http://", "https://")):
                return base
            if base.startswith("/"):
                return "file://" + base
            return None
    return None


# --- a TOML writer (stellar-core's parser reads the conventional [[ARRAY]] / [a.b] layout) ----------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _key(k: str) -> str:
    return k if _BARE_KEY.fullmatch(k) else _string(k)


def _string(s: str) -> str:
    out = []
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _literal(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, (datetime.datetime, datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_literal(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_literal(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} {v!r} as TOML")


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, Mapping) for x in v)


def dumps(doc: Mapping[str, Any]) -> str:
    """TOML text that ``tomllib.loads`` turns back into ``doc``: scalars first, then ``[tables]``,
    then ``[[arrays of tables]]``, recursively."""
    out: list[str] = []
    _table(doc, [], None, out)
    return "\n".join(out) + "\n"


def _table(t: Mapping[str, Any], path: list[str], header: str | None, out: list[str]) -> None:
    scalars = [(k, v) for k, v in t.items() if not isinstance(v, Mapping) and not _is_table_array(v)]
    tables = [(k, v) for k, v in t.items() if isinstance(v, Mapping)]
    arrays = [(k, v) for k, v in t.items() if _is_table_array(v)]
    if header is not None and (header.startswith("[[") or scalars or not (tables or arrays)):
        if out:
            out.append("")
        out.append(header)
    out.extend(f"{_key(k)} = {_literal(v)}" for k, v in scalars)
    for k, v in tables:
        sub = path + [k]
        _table(v, sub, "[" + ".".join(_key(p) for p in sub) + "]", out)
    for k, v in arrays:
        sub = path + [k]
        for item in v:
            _table(item, sub, "[[" + ".".join(_key(p) for p in sub) + "]]", out)
