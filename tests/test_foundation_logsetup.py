"""Log handler setup: text and JSON lines, extra fields, idempotence."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from rpcbackfill.logsetup import configure_logging

pytestmark = pytest.mark.usefixtures("restore_root_logging")


def test_json_lines_carry_fixed_and_extra_fields():
    buf = io.StringIO()
    configure_logging("info", "json", stream=buf)
    log = logging.getLogger("rpcbackfill.test.json")
    log.info("range %d checkpoint", 3, extra={"range_id": 3, "ledger": 30001, "path": object})
    log.debug("hidden at info")
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["level"] == "info" and rec["logger"] == "rpcbackfill.test.json"
    assert rec["msg"] == "range 3 checkpoint"
    assert rec["range_id"] == 3 and rec["ledger"] == 30001
    assert rec["path"] == str(object)  # non-JSON values are stringified, never dropped
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rec["ts"])


def test_json_exception_and_no_field_hijack():
    buf = io.StringIO()
    configure_logging("debug", "json", stream=buf)
    try:
        raise ValueError("bad byte")
    except ValueError:
        logging.getLogger("x").exception("failed", extra={"level_hint": 1})
    rec = json.loads(buf.getvalue())
    assert rec["level"] == "error" and "ValueError: bad byte" in rec["exc"]
    assert rec["level_hint"] == 1


def test_text_format_with_extras():
    buf = io.StringIO()
    configure_logging("warning", "text", stream=buf)
    log = logging.getLogger("rpcbackfill.test.text")
    log.info("dropped")
    log.warning("slow source", extra={"ledger": 7})
    out = buf.getvalue()
    assert "dropped" not in out
    assert re.fullmatch(r"\S+Z WARNING rpcbackfill\.test\.text: slow source ledger=7\n", out)


def test_reconfigure_replaces_handler():
    a, b = io.StringIO(), io.StringIO()
    configure_logging("info", "text", stream=a)
    configure_logging("info", "json", stream=b)
    logging.getLogger("y").info("once")
    assert a.getvalue() == ""
    assert json.loads(b.getvalue())["msg"] == "once"
    ours = [h for h in logging.getLogger().handlers if getattr(h, "_rpcbackfill_handler", False)]
    assert len(ours) == 1


@pytest.mark.parametrize("level, fmt", [("loud", "text"), ("info", "xml")])
def test_rejects_unknown_level_or_format(level, fmt):
    with pytest.raises(ValueError):
        configure_logging(level, fmt, stream=io.StringIO())


def test_library_modules_configure_no_handlers():
    import rpcbackfill.config  # noqa: F401
    import rpcbackfill.ledgermath  # noqa: F401

    assert logging.getLogger("rpcbackfill").handlers == []
