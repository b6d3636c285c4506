"""Log handler setup for the command line (library modules never call this).

Two formats, both written to stderr (stdout carries command output, e.g. raw XDR):

- ``text``: ``2026-01-02T03:04:05.678Z INFO  rpcbackfill.x: message key=value ...``
- ``json``: one object per line: ``ts`` (RFC 3339 UTC, milliseconds), ``level``, ``logger``,
  ``msg``, ``pid`` (of the process that made the record), every ``extra={...}`` field of the
  call, and ``exc`` (the traceback) when present.

Records of range processes reach the coordinator with their ``extra`` fields plus
``range_id``, ``pid`` and ``attempt`` (``orchestration.worker.LinkLogHandler``); both formats
show them as fields (JSON keys; ``key=value`` in text).

``configure_logging`` is idempotent: calling it again replaces the handler it installed.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import IO, Any

# The accepted values of service.log_level / service.log_format (config.py and the CLI use these).
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
_LEVEL_NUMBERS = {name: getattr(logging, name.upper()) for name in LOG_LEVELS}

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}

# Chatty third-party loggers kept at WARNING unless debugging.
_NOISY = ("google", "urllib3", "werkzeug", "gcp_storage_emulator")

_MARK = "_rpcbackfill_handler"


def _timestamp(record: logging.LogRecord) -> str:
    t = datetime.fromtimestamp(record.created, tz=timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra={...}`` fields attached to ``record``."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": getattr(record, "pid", record.process),
        }
        for k, v in extra_fields(record).items():
            out.setdefault(k, v)  # never let an extra field hide the four fixed ones
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``ts LEVEL logger: msg k=v ...`` plus the traceback, if any, on following lines."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        extras = extra_fields(record)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str = "info", fmt: str = "text", stream: IO[str] | None = None) -> logging.Handler:
    """Install (or replace) rpcbackfill's handler on the root logger; return it."""
    if level.lower() not in _LEVEL_NUMBERS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, _MARK, False):
            root.removeHandler(h)
            h.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    setattr(handler, _MARK, True)
    root.addHandler(handler)
    lvl = _LEVEL_NUMBERS[level.lower()]
    root.setLevel(lvl)
    for name in _NOISY:
        logging.getLogger(name).setLevel(lvl if lvl == logging.DEBUG else max(lvl, logging.WARNING))
    logging.captureWarnings(True)
    return handler


def debug_enabled() -> bool:
    """True when the root logger lets DEBUG records through."""
    return logging.getLogger().isEnabledFor(logging.DEBUG)
