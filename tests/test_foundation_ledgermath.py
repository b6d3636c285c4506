"""Ledger math of spec section 1-2: ranges, chunks, checkpoints, start/end validation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpcbackfill.errors import InputError, LedgerRangeError
from rpcbackfill.ledgermath import (
    CHUNK_SIZE,
    DEFAULT_RANGE_SIZE,
    check_range_size,
    chunk_first_ledger,
    chunk_last_ledger,
    chunk_of_ledger,
    is_checkpoint_ledger,
    is_range_first_ledger,
    is_range_last_ledger,
    range_first_ledger,
    range_last_ledger,
    range_of_ledger,
    ranges_between,
)

FAST = settings(max_examples=150, deadline=None)
range_sizes = st.integers(1, 2000).map(lambda k: k * CHUNK_SIZE)
ledgers = st.integers(2, 2**32 - 1)


# --- spec examples ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, first, last",
    [(0, 2, 10_000_001), (1, 10_000_002, 20_000_001), (2, 20_000_002, 30_000_001), (5, 50_000_002, 60_000_001)],
)
def test_range_bounds_default_size(n, first, last):
    assert range_first_ledger(n) == first
    assert range_last_ledger(n) == last
    assert range_of_ledger(first) == n
    assert range_of_ledger(last) == n
    assert range_of_ledger(last + 1) == n + 1
    assert is_range_first_ledger(first) and not is_range_first_ledger(first + 1)
    assert is_range_last_ledger(last) and not is_range_last_ledger(last - 1)


def test_range_bounds_small_range_size():
    assert range_first_ledger(0, 10_000) == 2
    assert range_last_ledger(0, 10_000) == 10_001
    assert range_first_ledger(1, 10_000) == 10_002
    assert range_last_ledger(1, 10_000) == 20_001
    assert range_of_ledger(20_001, 10_000) == 1
    assert range_of_ledger(20_002, 10_000) == 2


@pytest.mark.parametrize(
    "c, first, last",
    [(0, 2, 10_001), (1, 10_002, 20_001), (999, 9_990_002, 10_000_001), (5000, 50_000_002, 50_010_001)],
)
def test_chunk_bounds(c, first, last):
    assert chunk_first_ledger(c) == first
    assert chunk_last_ledger(c) == last
    assert chunk_of_ledger(first) == c
    assert chunk_of_ledger(last) == c
    assert chunk_of_ledger(last + 1) == c + 1


def test_range_is_whole_chunks():
    # range 1 of the default size is chunks 1000..1999
    assert chunk_of_ledger(range_first_ledger(1)) == 1000
    assert chunk_of_ledger(range_last_ledger(1)) == 1999


@pytest.mark.parametrize("ledger", [1001, 2001, 3001, 10_000_001, 10_001])
def test_checkpoint_ledgers(ledger):
    assert is_checkpoint_ledger(ledger)


@pytest.mark.parametrize("ledger", [0, 1, 2, 1000, 1002, 2000, 10_000_002])
def test_non_checkpoint_ledgers(ledger):
    assert not is_checkpoint_ledger(ledger)


def test_checkpoint_custom_interval():
    assert is_checkpoint_ledger(65, 64)
    assert not is_checkpoint_ledger(64, 64)
    assert [L for L in range(1, 40) if is_checkpoint_ledger(L, 10)] == [11, 21, 31]


@pytest.mark.parametrize("bad", [0, 1])
def test_ledger_before_genesis_rejected(bad):
    with pytest.raises(ValueError):
        range_of_ledger(bad)
    with pytest.raises(ValueError):
        chunk_of_ledger(bad)


# --- start/end validation (seed doc examples) --------------------------------------------------


@pytest.mark.parametrize(
    "start, end, expected",
    [
        (2, 10_000_001, [0]),
        (2, 30_000_001, [0, 1, 2]),
        (30_000_002, 60_000_001, [3, 4, 5]),
        (10_000_002, 20_000_001, [1]),
    ],
)
def test_ranges_between_valid(start, end, expected):
    assert ranges_between(start, end) == expected


@pytest.mark.parametrize(
    "start, end, fragments",
    [
        (100, 10_000_001, ["--start-ledger must be rangeFirstLedger(N)", "valid: 2, 10000002", "got 100"]),
        (2, 10_000_000, ["--end-ledger must be rangeLastLedger(N)", "valid: 10000001, 20000001", "got 10000000"]),
        (10_000_000, 10_000_001, ["--start-ledger must be rangeFirstLedger(N)"]),
        (10_000_002, 10_000_001, ["must be greater than --start-ledger"]),
        (1, 0, ["--start-ledger", "--end-ledger"]),
    ],
)
def test_ranges_between_invalid(start, end, fragments):
    with pytest.raises(LedgerRangeError) as ei:
        ranges_between(start, end)
    msg = str(ei.value)
    assert "\n" not in msg
    for f in fragments:
        assert f in msg
    assert ei.value.exit_code == 2


def test_ranges_between_reports_both_bounds_at_once():
    with pytest.raises(LedgerRangeError) as ei:
        ranges_between(100, 10_000_000)
    assert "--start-ledger" in str(ei.value) and "--end-ledger" in str(ei.value)


def test_ranges_between_small_range_size_message_names_small_values():
    with pytest.raises(LedgerRangeError) as ei:
        ranges_between(3, 20_001, 10_000)
    assert "valid: 2, 10002" in str(ei.value)
    assert ranges_between(2, 20_001, 10_000) == [0, 1]


@pytest.mark.parametrize("good", [10_000, 20_000, DEFAULT_RANGE_SIZE])
def test_check_range_size_accepts(good):
    check_range_size(good)


@pytest.mark.parametrize("bad", [0, -10_000, 5_000, 15_000, 10_000.0, "10000", None, True])
def test_check_range_size_rejects(bad):
    with pytest.raises(InputError) as ei:
        check_range_size(bad)
    assert "multiple of 10000" in str(ei.value)


# --- properties ----------------------------------------------------------------------------------


@FAST
@given(range_sizes, ledgers)
def test_ledger_lies_in_its_range(rs, ledger):
    n = range_of_ledger(ledger, rs)
    assert range_first_ledger(n, rs) <= ledger <= range_last_ledger(n, rs)
    assert range_last_ledger(n, rs) - range_first_ledger(n, rs) + 1 == rs
    assert is_range_first_ledger(ledger, rs) == (ledger == range_first_ledger(n, rs))
    assert is_range_last_ledger(ledger, rs) == (ledger == range_last_ledger(n, rs))


@FAST
@given(ledgers)
def test_ledger_lies_in_its_chunk(ledger):
    c = chunk_of_ledger(ledger)
    assert chunk_first_ledger(c) <= ledger <= chunk_last_ledger(c)
    # chunk ends are exactly the checkpoints of interval 10000
    assert (ledger == chunk_last_ledger(c)) == is_checkpoint_ledger(ledger, CHUNK_SIZE)


@FAST
@given(range_sizes, st.integers(0, 400), st.integers(0, 400))
def test_range_boundaries_are_chunk_boundaries(rs, n, k):
    assert chunk_first_ledger(chunk_of_ledger(range_first_ledger(n, rs))) == range_first_ledger(n, rs)
    assert chunk_last_ledger(chunk_of_ledger(range_last_ledger(n, rs))) == range_last_ledger(n, rs)
    # ranges_between accepts exactly the pairs (first(a), last(b)) with a <= b
    a, b = min(n, k), max(n, k)
    assert ranges_between(range_first_ledger(a, rs), range_last_ledger(b, rs), rs) == list(range(a, b + 1))


@FAST
@given(range_sizes, ledgers, ledgers)
def test_ranges_between_rejects_non_boundaries(rs, start, end):
    valid = is_range_first_ledger(start, rs) and is_range_last_ledger(end, rs) and end > start
    if valid:
        ids = ranges_between(start, end, rs)
        assert ids[0] == range_of_ledger(start, rs) and ids[-1] == range_of_ledger(end, rs)
    else:
        with pytest.raises(LedgerRangeError):
            ranges_between(start, end, rs)
