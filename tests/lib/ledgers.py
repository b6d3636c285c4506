"""Consecutive, hash-chained ledgers for tests: the product's own generator, nothing else.

Built on ``rpcbackfill.devtools.lakegen.LedgerGenerator`` (the engine of
``stellar-rpc dev generate-lake``), with the template ledgers of tests/fixtures/.  Each ledger is
a real-looking LedgerCloseMeta whose header hash is sha256 of its header and whose
``previousLedgerHash`` is the hash of the ledger before, so sources that check the chain accept
it.  By default the chain alternates LedgerCloseMeta V1 (even sequences) and V0 (odd), so every
consumer sees both encodings; ``tx_per_ledger`` is the mean density (small by default: fast
tests, ledgers of a few KB).

The generator is checked against the stellar-sdk oracle in tests/test_testlib.py and, in depth,
in tests/test_devtools_lakegen.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache

from rpcbackfill.devtools.lakegen import GenOptions, LedgerGenerator, anchor_hash

from . import FIXTURES

DEFAULT_TX_PER_LEDGER = 2.0
BOTH_VERSIONS = (1, 0)


@lru_cache(maxsize=16)
def generator(lcm_version: int = 1, tx_per_ledger: float = DEFAULT_TX_PER_LEDGER, seed: int = 0) -> LedgerGenerator:
    """The (cached) product generator for these options, templated from tests/fixtures/."""
    return LedgerGenerator(
        GenOptions(seed=seed, tx_per_ledger=tx_per_ledger, lcm_version=lcm_version, templates_dir=str(FIXTURES))
    )


def iter_chain(
    first: int,
    count: int,
    *,
    versions: Sequence[int] = BOTH_VERSIONS,
    tx_per_ledger: float = DEFAULT_TX_PER_LEDGER,
    seed: int = 0,
    prev_hash: bytes | None = None,
) -> Iterator[tuple[int, bytes]]:
    """``(seq, LedgerCloseMeta XDR)`` for ``first .. first+count-1``; ledger ``seq`` has version
    ``versions[seq % len(versions)]``; the ledger before ``first`` has hash ``prev_hash``
    (default: the generator's pseudo-random anchor)."""
    gens = [generator(v, tx_per_ledger, seed) for v in versions]
    prev = anchor_hash(seed, first - 1) if prev_hash is None else prev_hash
    for seq in range(first, first + count):
        lcm, prev, _ = gens[seq % len(gens)].build(seq, prev)
        yield seq, lcm


def chain(first: int, count: int, **kw) -> list[tuple[int, bytes]]:
    """``list(iter_chain(first, count, **kw))``."""
    return list(iter_chain(first, count, **kw))


def ledger_bytes(first: int, count: int, **kw) -> list[bytes]:
    """Just the XDR of ``chain(first, count)``, in order."""
    return [lcm for _, lcm in iter_chain(first, count, **kw)]


def ledger_at(seq: int, **kw) -> bytes:
    """One generated ledger with sequence ``seq``."""
    return ledger_bytes(seq, 1, **kw)[0]
