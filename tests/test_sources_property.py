"""Property: for any lake layout, both sources yield exactly the range's ledgers, in order,
byte-identical to what was written to the lake."""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpcbackfill.config import PUBNET_PASSPHRASE, BufferedStorageConfig, CaptiveCoreConfig
from rpcbackfill.sources.captive_core import CaptiveCoreSource
from rpcbackfill.sources.datalake import DataLakeSource
from rpcbackfill.sources.layout import LakeSchema, write_lake
from tests.lib.core import make_archive
from tests.lib.ledgers import iter_chain

NET = PUBNET_PASSPHRASE
FAKE = Path(__file__).resolve().parent / "fake_stellar_core.py"
ENV = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
CHECKPOINT = 64  # the fake core replays from a multiple of this (like stellar-core's checkpoints)
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@st.composite
def lake_case(draw):
    lpb = draw(st.integers(1, 64))
    bpp = draw(st.one_of(st.integers(1, 4), st.integers(1, 64000)))
    first = draw(st.integers(2, 5000))
    last = first + draw(st.integers(0, 150))
    # the lake may start before the range (never after: the range must be in it)
    lake_first = max(2, first - draw(st.integers(0, 100)))
    lake_last = last + draw(st.integers(0, 70))
    return lpb, bpp, first, last, lake_first, lake_last


def _write(root, lpb, bpp, lake_first, lake_last, content_size=True):
    ledgers = dict(iter_chain(lake_first, lake_last - lake_first + 1))
    write_lake(root, sorted(ledgers.items()), LakeSchema(NET, lpb, bpp), content_size=content_size, fsync=False)
    return ledgers


@settings(max_examples=40, **SETTINGS)
@given(case=lake_case(), workers=st.integers(1, 8), buf=st.integers(1, 16), content_size=st.booleans())
def test_datalake_yields_exact_range(case, workers, buf, content_size):
    lpb, bpp, first, last, lake_first, lake_last = case
    with tempfile.TemporaryDirectory() as d:
        ledgers = _write(d, lpb, bpp, lake_first, lake_last, content_size)
        cfg = BufferedStorageConfig(bucket_path=d, buffer_size=buf, num_workers=workers, retry_limit=0)
        with DataLakeSource(cfg, NET, threading.Event()) as src:
            src.prepare_range(first, last)
            got = [src.get_ledger(q).lcm for q in range(first, last + 1)]
    assert got == [ledgers[q] for q in range(first, last + 1)]


@settings(max_examples=10, **SETTINGS)
@given(case=lake_case())
def test_captive_core_yields_exact_range(case):
    lpb, bpp, first, last, _, lake_last = case
    lake_first = max(2, first // CHECKPOINT * CHECKPOINT)  # what the fake core replays from
    with tempfile.TemporaryDirectory() as d:
        ledgers = _write(Path(d) / "lake", lpb, bpp, lake_first, lake_last)
        cfgp = Path(d) / "core.cfg"
        cfgp.write_text(f'NETWORK_PASSPHRASE="{NET}"\nFAKE_LAKE="{Path(d) / "lake"}"\nFAKE_CHECKPOINT="{CHECKPOINT}"\n')
        archive = make_archive(Path(d) / "archive", 1 << 30, NET)
        cc = CaptiveCoreConfig(
            binary_path=FAKE,
            config_path=cfgp,
            storage_path=Path(d) / "core",
            history_archive_urls=(f"file://{archive}",),
        )
        with CaptiveCoreSource(cc, threading.Event(), network_passphrase=NET, env=ENV) as src:
            src.prepare_range(first, last)
            got = [src.get_ledger(q).lcm for q in range(first, last + 1)]
    assert got == [ledgers[q] for q in range(first, last + 1)]
