"""Type stubs for the native LedgerCloseMeta mapper of the read path (ext/_txmap.pyx)."""

from __future__ import annotations

from typing_extensions import Buffer

def ledger_map(
    buf: Buffer,
) -> tuple[
    int,
    int,
    int,
    int,
    int,
    int,
    list[tuple[int, int, int, int, int, int, int]],
    list[tuple[int, int, int, int, int, int, int, int, int, int, int]],
]: ...
