"""Whether a process is still running, read from /proc (a zombie counts as gone: it is dead, only
not reaped yet by its parent)."""

from __future__ import annotations

import time
from pathlib import Path


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in state


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    """Poll until ``pid`` is gone (signals are delivered asynchronously); whether it is."""
    deadline = time.monotonic() + timeout
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return gone(pid)
