"""Ledger math of spec section 1: ranges, chunks and checkpoints.

All functions are pure and take ``range_size`` explicitly where it matters (default
10,000,000).  Ledger 2 is the first ledger of the chain.
"""

from __future__ import annotations

from .errors import InputError, LedgerRangeError

FIRST_LEDGER = 2
# Largest ledger sequence: sequences are XDR uint32 (also bounds lake object names, spec section 5).
UINT32_MAX = 2**32 - 1
DEFAULT_RANGE_SIZE = 10_000_000
CHUNK_SIZE = 10_000
DEFAULT_CHECKPOINT_INTERVAL = 1_000


def check_range_size(range_size: int) -> None:
    if not isinstance(range_size, int) or range_size <= 0 or range_size % CHUNK_SIZE:
        raise InputError(f"range_size must be a positive multiple of {CHUNK_SIZE}, got {range_size!r}")


def range_first_ledger(n: int, range_size: int = DEFAULT_RANGE_SIZE) -> int:
    return n * range_size + FIRST_LEDGER


def range_last_ledger(n: int, range_size: int = DEFAULT_RANGE_SIZE) -> int:
    return (n + 1) * range_size + FIRST_LEDGER - 1


def range_of_ledger(ledger: int, range_size: int = DEFAULT_RANGE_SIZE) -> int:
    if ledger < FIRST_LEDGER:
        raise ValueError(f"ledger {ledger} precedes the first ledger {FIRST_LEDGER}")
    return (ledger - FIRST_LEDGER) // range_size


def chunk_first_ledger(c: int) -> int:
    return c * CHUNK_SIZE + FIRST_LEDGER


def chunk_last_ledger(c: int) -> int:
    return (c + 1) * CHUNK_SIZE + FIRST_LEDGER - 1


def chunk_of_ledger(ledger: int) -> int:
    if ledger < FIRST_LEDGER:
        raise ValueError(f"ledger {ledger} precedes the first ledger {FIRST_LEDGER}")
    return (ledger - FIRST_LEDGER) // CHUNK_SIZE


def is_checkpoint_ledger(ledger: int, interval: int = DEFAULT_CHECKPOINT_INTERVAL) -> bool:
    return ledger > 1 and (ledger - 1) % interval == 0


def is_range_first_ledger(ledger: int, range_size: int = DEFAULT_RANGE_SIZE) -> bool:
    return ledger >= FIRST_LEDGER and (ledger - FIRST_LEDGER) % range_size == 0


def is_range_last_ledger(ledger: int, range_size: int = DEFAULT_RANGE_SIZE) -> bool:
    return ledger >= FIRST_LEDGER - 1 + range_size and (ledger - FIRST_LEDGER + 1) % range_size == 0


def ranges_between(start: int, end: int, range_size: int = DEFAULT_RANGE_SIZE) -> list[int]:
    """Validate ``[start, end]`` per spec section 2 and return the range ids it covers."""
    check_range_size(range_size)
    problems = []
    if not is_range_first_ledger(start, range_size):
        problems.append(
            "--start-ledger must be rangeFirstLedger(N) for some N (valid: "
            f"{range_first_ledger(0, range_size)}, {range_first_ledger(1, range_size)}, ...), got {start}"
        )
    if not is_range_last_ledger(end, range_size):
        problems.append(
            "--end-ledger must be rangeLastLedger(N) for some N (valid: "
            f"{range_last_ledger(0, range_size)}, {range_last_ledger(1, range_size)}, ...), got {end}"
        )
    if not problems and end <= start:
        problems.append(f"--end-ledger ({end}) must be greater than --start-ledger ({start})")
    if problems:
        raise LedgerRangeError("; ".join(problems))
    return list(range(range_of_ledger(start, range_size), range_of_ledger(end, range_size) + 1))
