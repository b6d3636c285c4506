"""Session fixtures shared by every test file: the real ledgers of tests/fixtures/ (read-only oracle).

Helpers that are not pytest fixtures live in tests/lib/.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.lib import FIXTURES
from tests.lib.fixtures import FixtureLedger, load_fixture_ledgers


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture(scope="session")
def fixture_ledgers(fixtures_dir) -> list[FixtureLedger]:
    """Every real ledger of tests/fixtures/, raw bytes plus expected hashes where known."""
    return load_fixture_ledgers()


@pytest.fixture
def restore_root_logging():
    """In-process CLI runs install a log handler on the root logger; take it away afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


# --- LFS tests ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sample_ledgers() -> list[bytes]:
    """A few small generated ledgers (both LedgerCloseMeta versions) for tests that need some
    valid LedgerCloseMeta bytes, whatever their sequence."""
    from tests.lib.ledgers import ledger_bytes

    out = ledger_bytes(2, 6)
    assert {lcm[:4] for lcm in out} == {b"\x00\x00\x00\x00", b"\x00\x00\x00\x01"}
    return out


@pytest.fixture(scope="session")
def full_chunk(tmp_path_factory):
    """A finished, full chunk 3 (ledgers 30002..40001): (base, ledgers, stats); copy before mutating."""
    from tests.lib.lfs import build_full_chunk

    return build_full_chunk(tmp_path_factory.mktemp("fullchunk"))
