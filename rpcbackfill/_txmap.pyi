"""Type stubs for the native LedgerCloseMeta mapper of the read path (ext/_txmap.pyx)."""

from __future__ import annotations

from typing_extensions import Buffer

def ledger_map(
    buf: Buffer, want: Buffer | None = None
) -> tuple[int, int, int, int, int, int, bytes, bytes, int, list[int]]: ...
