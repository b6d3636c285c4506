"""Data-lake source (spec section 5) over a local directory and over GCS (real emulator + fault proxy)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from rpcbackfill.config import PUBNET_PASSPHRASE, TESTNET_PASSPHRASE, BufferedStorageConfig, default_config
from rpcbackfill.errors import (
    Cancelled,
    LakeConfigError,
    LedgerSequenceError,
    MissingLedgerError,
    SourceError,
)
from rpcbackfill.sources import layout, open_source
from rpcbackfill.sources.base import Ledger, LedgerSource
from rpcbackfill.sources.datalake import DataLakeSource
from rpcbackfill.sources.layout import LakeSchema, write_lake
from rpcbackfill.sources.objstore.local import LocalStore
from tests.lib.gcs_fault_proxy import TRANSIENT_FAULTS, FaultProxy
from tests.lib.ledgers import chain as make_chain
from tests.lib.oracle import sdk_reference
from tests.lib.sources import Emulator, upload_lake

NET = PUBNET_PASSPHRASE


@pytest.fixture(scope="module")
def chain():
    """Ledgers 2..401, consecutive and hash-chained."""
    return dict(make_chain(2, 400))


@pytest.fixture(scope="module")
def lake(tmp_path_factory, chain):
    root = tmp_path_factory.mktemp("lake")
    write_lake(root, sorted(chain.items()), LakeSchema(NET, ledgers_per_batch=8, batches_per_partition=4))
    return root


def cfg(path, **kw) -> BufferedStorageConfig:
    kw.setdefault("buffer_size", 4)
    kw.setdefault("num_workers", 3)
    kw.setdefault("retry_limit", 2)
    kw.setdefault("retry_wait", 0.01)
    return BufferedStorageConfig(bucket_path=str(path), **kw)


def test_ledger_carries_its_scan(lake, chain):
    """Each ledger comes with the sequence and tx hashes of the batch scan (stellar-sdk as oracle),
    its bytes a view into the decompressed batch."""
    with DataLakeSource(cfg(lake), NET) as src:
        src.prepare_range(30, 45)
        for q in range(30, 46):
            ledger = src.get_ledger(q)
            sdk_seq, sdk_hashes, _, _ = sdk_reference(chain[q])
            assert isinstance(ledger, Ledger) and isinstance(ledger.lcm, memoryview)
            assert (ledger.seq, bytes(ledger.lcm), ledger.tx_hashes) == (sdk_seq, chain[q], sdk_hashes)
            assert sdk_seq == q


def read_all(src, first, last):
    src.prepare_range(first, last)
    return [src.get_ledger(s).lcm for s in range(first, last + 1)]


class FlakyStore(LocalStore):
    """A real LocalStore that fails chosen keys a number of times (fault injection)."""

    def __init__(self, root, faults: dict[str, list[Exception]]):
        super().__init__(root)
        self.faults = faults
        self.gets: list[str] = []
        self.listings = 0
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            self.gets.append(key)
            errs = self.faults.get(key)
            err = errs.pop(0) if errs else None
        if err is not None:
            raise err
        return super().get(key)

    def list_keys(self, *a, **kw):
        self.listings += 1
        return super().list_keys(*a, **kw)


# --- local lakes --------------------------------------------------------------------------------


@pytest.mark.parametrize("first,last", [(2, 401), (10, 10), (17, 250), (100, 103), (33, 64)])
def test_local_range(lake, chain, first, last):
    with DataLakeSource(cfg(lake), NET, threading.Event()) as src:
        assert isinstance(src, LedgerSource)
        got = read_all(src, first, last)
    assert got == [chain[s] for s in range(first, last + 1)]


def test_file_url_and_factory(lake, chain, tmp_path):
    c = default_config(tmp_path, buffered_storage=cfg(f"file://{lake}"))
    with open_source(c, threading.Event()) as src:
        assert isinstance(src, DataLakeSource)
        assert read_all(src, 50, 60) == [chain[s] for s in range(50, 61)]


def test_legacy_extension_and_no_content_size(tmp_path, chain):
    s = LakeSchema(NET, 1, 10, file_ext=".xdr.zstd")
    write_lake(tmp_path, [(q, chain[q]) for q in range(20, 60)], s, content_size=False)
    with DataLakeSource(cfg(tmp_path), NET) as src:
        assert read_all(src, 20, 59) == [chain[q] for q in range(20, 60)]
        assert src.schema.file_ext == ".xdr.zstd"


def test_real_galexie_file(tmp_path, fixtures_dir, fixture_ledgers):
    # A real lake object (no content size in its frame) served from a one-file lake.
    name = "FCD285FF--53312000.xdr.zstd"
    (tmp_path / name).write_bytes((fixtures_dir / name).read_bytes())
    layout.write_manifest(tmp_path, LakeSchema(NET, 1, 1))
    want = next(f.lcm for f in fixture_ledgers if f.seq == 53312000)
    with DataLakeSource(cfg(tmp_path), NET) as src:
        assert read_all(src, 53312000, 53312000) == [want]


def test_passphrase_mismatch(lake):
    with DataLakeSource(cfg(lake), TESTNET_PASSPHRASE) as src:
        with pytest.raises(LakeConfigError, match="passphrase") as ei:
            src.prepare_range(10, 20)
    assert TESTNET_PASSPHRASE in str(ei.value) and NET in str(ei.value)


def test_schema_contradiction(lake):
    with DataLakeSource(cfg(lake), NET, expected_schema=LakeSchema(NET, 1, 64000)) as src:
        with pytest.raises(LakeConfigError, match="ledgersPerBatch is 8 in the lake but 1"):
            src.prepare_range(10, 20)


def test_missing_manifest(tmp_path, chain):
    write_lake(tmp_path, [(q, chain[q]) for q in range(2, 5)], LakeSchema(NET, 1, 1), manifest=False)
    with DataLakeSource(cfg(tmp_path), NET) as src:
        with pytest.raises(LakeConfigError, match="manifest"):
            src.prepare_range(2, 4)


def test_bad_bucket_paths(tmp_path):
    for path, match in [
        ("", "empty"),
        (str(tmp_path / "nope"), "does not exist"),
        ("azure://x/y", "scheme"),
        ("s3:///y", "must name a bucket"),
    ]:
        with DataLakeSource(cfg(path), NET) as src:
            with pytest.raises(LakeConfigError, match=match):
                src.prepare_range(2, 3)


@pytest.mark.parametrize("first,last", [(2, 500), (1000, 1001), (401, 402)])
def test_range_not_in_lake(lake, first, last):
    store = FlakyStore(lake, {})
    with DataLakeSource(cfg(lake), NET, store=store) as src:
        with pytest.raises(MissingLedgerError, match="does not hold range"):
            src.prepare_range(first, last)
        assert not src._threads  # no work started


def test_missing_object_inside_range_is_fatal_never_retried(tmp_path, chain):
    s = LakeSchema(NET, 4, 2)
    write_lake(tmp_path, sorted(chain.items()), s)
    key = layout.object_key(100, s)
    os.unlink(tmp_path / key)
    store = FlakyStore(tmp_path, {})
    with DataLakeSource(cfg(tmp_path, retry_limit=5), NET, store=store) as src:
        src.prepare_range(2, 300)
        got = []
        with pytest.raises(MissingLedgerError) as ei:
            for q in range(2, 301):
                got.append(src.get_ledger(q).lcm)
        assert q == 100  # raised when reached: every ledger before it was delivered
        assert got == [chain[x] for x in range(2, 100)]
        # nothing after the failed file was fetched beyond what was already in flight
        assert all(
            layout.parse_file_name(k.split("/")[-1])[0] <= 100 + 4 * src.config.buffer_size
            for k in store.gets
            if k not in (".config.json", layout.object_key(300, s))
        )
    assert "ledger 100" in str(ei.value) and key in str(ei.value)
    assert store.gets.count(key) == 1  # never retried
    assert src.stats["retries"] == 0


@pytest.mark.parametrize("prefetch", [True, False])
def test_transient_errors_are_retried(tmp_path, chain, prefetch):
    from rpcbackfill.errors import TransientSourceError

    s = LakeSchema(NET, 2, 3)
    write_lake(tmp_path, sorted(chain.items()), s)
    k1, k2 = layout.object_key(40, s), layout.object_key(80, s)
    corrupt = tmp_path / layout.object_key(120, s)
    good = corrupt.read_bytes()
    store = FlakyStore(tmp_path, {k1: [TransientSourceError("HTTP 503")] * 2, k2: [TransientSourceError("reset")]})
    # a corrupt zstd object that gets fixed behind our back after the first read
    calls = {"n": 0}
    orig_get = store.get

    def get(key):
        if key == layout.object_key(120, s):
            calls["n"] += 1
            if calls["n"] == 1:
                return good[: len(good) // 2]  # truncated body
        return orig_get(key)

    store.get = get
    with DataLakeSource(cfg(tmp_path, retry_limit=2), NET, store=store, prefetch=prefetch) as src:
        got = read_all(src, 30, 200)
    assert got == [chain[q] for q in range(30, 201)]
    assert store.gets.count(k1) == 3 and store.gets.count(k2) == 2 and calls["n"] == 2
    assert src.stats["retries"] == 4


# --- inline reads (prefetch=False: a chunk worker reading a local lake) -------------------------


def read_batches(src, first, last, size):
    out, seq = [], first
    while seq <= last:
        b = src.get_batch(seq, size)
        assert b and b[0].seq == seq
        out.append(b)
        seq += len(b)
    return out


def test_inline_reads_no_thread_full_batches(lake, chain):
    """prefetch=False on a local lake: no download thread; every batch but the last is full
    (files are read on demand until it is) and the ledgers are the lake's."""
    with DataLakeSource(cfg(lake), NET, prefetch=False) as src:
        src.prepare_range(17, 250)
        assert src._threads == []
        batches = read_batches(src, 17, 250, 37)
    assert [len(b) for b in batches[:-1]] == [37] * (len(batches) - 1)
    got = [x for b in batches for x in b]
    assert [x.seq for x in got] == list(range(17, 251))
    assert [bytes(x.lcm) for x in got] == [chain[q] for q in range(17, 251)]
    with DataLakeSource(cfg(lake), NET, prefetch=True) as src:  # the default keeps its workers
        src.prepare_range(17, 250)
        assert len(src._threads) > 0


def test_inline_reads_bounded_by_max_buffer_bytes(lake, chain):
    """Inline reads keep the read-ahead mode's memory bound: a batch stops at the file that
    brings it to max_buffer_bytes (always at least one file), however many ledgers were asked."""
    one_file = sum(len(chain[q]) for q in range(8, 16))  # files hold 8 ledgers, aligned: 8..15
    with DataLakeSource(cfg(lake), NET, prefetch=False, max_buffer_bytes=1) as src:
        src.prepare_range(8, 207)
        batches = read_batches(src, 8, 207, 100)
    assert [len(b) for b in batches] == [8] * 25
    assert [x.seq for b in batches for x in b] == list(range(8, 208))
    with DataLakeSource(cfg(lake), NET, prefetch=False, max_buffer_bytes=2 * one_file + 1) as src:
        src.prepare_range(8, 207)
        batches = read_batches(src, 8, 207, 100)
    # two files stay under the bound, the third reaches it: 24 ledgers per call, never the 100 asked
    assert max(len(b) for b in batches) == 24 and len(batches[0]) == 24
    assert [bytes(x.lcm) for b in batches for x in b] == [chain[q] for q in range(8, 208)]


def test_known_schema_reads_no_manifest_and_no_listing(tmp_path, chain):
    """A source given the layout an earlier source resolved (``known_schema``: what a chunk
    worker's later chunks get) neither reads the manifest nor lists the lake, and reads the
    same ledgers -- even with the manifest gone; without it the manifest is required."""
    write_lake(tmp_path, sorted(chain.items()), LakeSchema(NET, 4, 2))
    first = FlakyStore(tmp_path, {})
    with DataLakeSource(cfg(tmp_path), NET, store=first) as src:
        assert read_all(src, 10, 60) == [chain[q] for q in range(10, 61)]
        resolved = src.schema
    assert layout.MANIFEST_NAME in first.gets and first.listings == 1
    os.unlink(tmp_path / layout.MANIFEST_NAME)
    again = FlakyStore(tmp_path, {})
    with DataLakeSource(cfg(tmp_path), NET, store=again, known_schema=resolved, prefetch=False) as src:
        assert read_all(src, 30, 90) == [chain[q] for q in range(30, 91)]
        assert src.schema == resolved
    assert layout.MANIFEST_NAME not in again.gets and again.listings == 0
    with pytest.raises(LakeConfigError, match="manifest"):
        with DataLakeSource(cfg(tmp_path), NET, store=FlakyStore(tmp_path, {})) as src:
            src.prepare_range(30, 90)


def test_inline_reads_deliver_ledgers_before_a_missing_file(tmp_path, chain):
    """A file that fails for good in the middle of a batch: the ledgers before it are returned,
    the next call raises (MissingLedgerError, never retried), nothing after it is read."""
    s = LakeSchema(NET, 4, 2)
    write_lake(tmp_path, sorted(chain.items()), s)
    key = layout.object_key(100, s)
    os.unlink(tmp_path / key)
    store = FlakyStore(tmp_path, {})
    with DataLakeSource(cfg(tmp_path, retry_limit=5), NET, store=store, prefetch=False) as src:
        src.prepare_range(2, 300)
        got = []
        seq = 2
        with pytest.raises(MissingLedgerError, match="ledger 100"):
            while True:
                b = src.get_batch(seq, 50)
                got += [bytes(x.lcm) for x in b]
                seq += len(b)
        assert seq == 100 and got == [chain[q] for q in range(2, 100)]
    assert store.gets.count(key) == 1
    read = [layout.parse_file_name(k.split("/")[-1])[0] for k in store.gets if k != ".config.json"]
    assert max(x for x in read if x != layout.parse_file_name(layout.object_key(300, s).split("/")[-1])[0]) == 100


def test_retries_exhausted(tmp_path, chain):
    s = LakeSchema(NET, 1, 1)
    write_lake(tmp_path, [(q, chain[q]) for q in range(2, 40)], s)
    key = layout.object_key(20, s)
    (tmp_path / key).write_bytes(b"\x28\xb5\x2f\xfd garbage that is not zstd")
    store = FlakyStore(tmp_path, {})
    with DataLakeSource(cfg(tmp_path, retry_limit=3), NET, store=store) as src:
        src.prepare_range(2, 39)
        with pytest.raises(SourceError, match="giving up after 4 attempts") as ei:
            for q in range(2, 40):
                assert src.get_ledger(q).lcm == chain[q]
        assert q == 20
    assert key in str(ei.value) and "zstd" in str(ei.value)
    assert store.gets.count(key) == 4


def test_out_of_order_and_lifecycle(lake, chain):
    src = DataLakeSource(cfg(lake), NET)
    with pytest.raises(SourceError, match="before prepare_range"):
        src.get_ledger(2)
    src.prepare_range(10, 20)
    assert src.get_ledger(10).lcm == chain[10]
    with pytest.raises(LedgerSequenceError, match="expected ledger 11"):
        src.get_ledger(12)
    with pytest.raises(SourceError, match="twice"):
        src.prepare_range(10, 20)
    src.close()
    src.close()  # idempotent
    assert not any(t.is_alive() for t in src._threads)
    with pytest.raises(SourceError, match="closed"):
        src.get_ledger(11)


def test_buffer_is_bounded(tmp_path, chain):
    s = LakeSchema(NET, 1, 1)
    write_lake(tmp_path, sorted(chain.items()), s)
    size = max(len(v) for v in chain.values())
    with DataLakeSource(cfg(tmp_path, buffer_size=5, num_workers=4), NET, max_buffer_bytes=2 * size) as src:
        src.prepare_range(2, 401)
        worst_window = worst_bytes = 0
        for q in range(2, 402):
            assert src.get_ledger(q).lcm == chain[q]
            if q % 7 == 0:
                time.sleep(0.01)  # a slow consumer lets workers run ahead as far as allowed
            with src._cv:
                worst_window = max(worst_window, src._next_claim - src._next_take)
                worst_bytes = max(worst_bytes, src._ready_bytes)
    assert worst_window <= 5
    # parked bytes stay within the cap plus what the workers had in flight
    assert worst_bytes <= 2 * size + 4 * size


def test_cancel_stops_workers_promptly(tmp_path, chain):
    s = LakeSchema(NET, 1, 1)
    write_lake(tmp_path, [(q, chain[q]) for q in range(2, 60)], s)
    stall = threading.Event()

    class StallStore(LocalStore):
        def get(self, key):
            if key == layout.object_key(5, s):
                stall.wait(30)
            return super().get(key)

    cancel = threading.Event()
    src = DataLakeSource(cfg(tmp_path, num_workers=3), NET, cancel, store=StallStore(tmp_path))
    src.prepare_range(2, 59)
    assert src.get_ledger(2).lcm == chain[2]
    threading.Timer(0.2, cancel.set).start()
    t0 = time.monotonic()
    with pytest.raises(Cancelled):
        for q in range(3, 60):
            src.get_ledger(q)
    assert time.monotonic() - t0 < 5
    stall.set()
    src.close()
    assert not any(t.is_alive() for t in src._threads)


def test_cancel_during_backoff(tmp_path, chain):
    from rpcbackfill.errors import TransientSourceError

    s = LakeSchema(NET, 1, 1)
    write_lake(tmp_path, [(q, chain[q]) for q in range(2, 10)], s)
    store = FlakyStore(tmp_path, {layout.object_key(4, s): [TransientSourceError("503")] * 10})
    cancel = threading.Event()
    src = DataLakeSource(cfg(tmp_path, retry_limit=10, retry_wait=20.0), NET, cancel, store=store)
    src.prepare_range(2, 9)
    src.get_ledger(2)
    src.get_ledger(3)
    threading.Timer(0.2, cancel.set).start()
    with pytest.raises(Cancelled):
        src.get_ledger(4)
    src.close()
    assert not any(t.is_alive() for t in src._threads)


# --- GCS through the emulator ------------------------------------------------------------------


@pytest.fixture(scope="session")
def emulator():
    emu = Emulator()
    yield emu
    emu.close()


@pytest.fixture(scope="module")
def gcs_lake(emulator, lake):
    """The module's lake uploaded to gs://lake/pubnet on the emulator, behind a fault proxy."""
    client = emulator.client()
    upload_lake(client, "lake", "pubnet", lake)
    proxy = FaultProxy("127.0.0.1", emulator.port)
    yield proxy
    proxy.close()


@pytest.fixture
def gcs_env(gcs_lake, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_lake.host)
    gcs_lake.clear()
    yield gcs_lake
    gcs_lake.clear()


def test_gcs_range(gcs_env, chain):
    with DataLakeSource(cfg("gs://lake/pubnet"), NET) as src:
        assert read_all(src, 5, 150) == [chain[q] for q in range(5, 151)]
        assert src.schema.ledgers_per_batch == 8
    assert any("alt=media" in p for _, p, _ in gcs_env.log)


@pytest.mark.parametrize("fault,kw", TRANSIENT_FAULTS)
def test_gcs_transient_faults(gcs_env, chain, fault, kw):
    s = LakeSchema(NET, 8, 4)
    key = layout.object_key(60, s)
    gcs_env.add(key, fault, times=2, **kw)
    with DataLakeSource(cfg("gs://lake/pubnet", retry_limit=3), NET) as src:
        assert read_all(src, 30, 100) == [chain[q] for q in range(30, 101)]
        assert src.stats["retries"] == 2
    assert [f for _, p, f in gcs_env.log if key in p and "alt=media" in p] == [fault, fault, ""]


def test_gcs_slow_response_times_out_and_retries(gcs_env, chain):
    s = LakeSchema(NET, 8, 4)
    key = layout.object_key(60, s)
    gcs_env.add(key, "slow", times=1, delay=1.5)
    with DataLakeSource(cfg("gs://lake/pubnet", retry_limit=2), NET, request_timeout=(2.0, 0.5)) as src:
        assert read_all(src, 55, 70) == [chain[q] for q in range(55, 71)]
        assert src.stats["retries"] == 1


def test_gcs_missing_object(gcs_env, chain):
    s = LakeSchema(NET, 8, 4)
    key = layout.object_key(200, s)
    gcs_env.add(key, "status", code=404, times=-1)
    with DataLakeSource(cfg("gs://lake/pubnet", retry_limit=3), NET) as src:
        src.prepare_range(100, 300)
        with pytest.raises(MissingLedgerError, match="ledger 200") as ei:
            for q in range(100, 301):
                assert src.get_ledger(q).lcm == chain[q]
        assert q == 200
        assert src.stats["retries"] == 0
    assert f"gs://lake/pubnet/{key}" in str(ei.value)
    assert len([p for _, p, f in gcs_env.log if key in p]) == 1


def test_gcs_range_check_and_manifest(gcs_env):
    with DataLakeSource(cfg("gs://lake/pubnet"), NET) as src:
        with pytest.raises(MissingLedgerError, match="does not hold"):
            src.prepare_range(300, 600)
    with DataLakeSource(cfg("gs://lake/elsewhere"), NET) as src:
        with pytest.raises(LakeConfigError, match="manifest"):
            src.prepare_range(2, 3)
    with DataLakeSource(cfg("gs://lake/pubnet"), TESTNET_PASSPHRASE) as src:
        with pytest.raises(LakeConfigError, match="passphrase"):
            src.prepare_range(2, 3)


def test_gcs_preflight_no_bucket_and_forbidden(gcs_env):
    from rpcbackfill.sources.checks import check_lake

    assert check_lake(cfg("gs://lake/pubnet"), NET, 2, 401).ledgers_per_batch == 8
    with pytest.raises(SourceError, match="bucket nobucket does not exist") as ei:
        check_lake(cfg("gs://nobucket/pubnet"), NET, 2, 10)
    assert type(ei.value) is SourceError
    gcs_env.add("/lake/", "status", code=403, times=-1)
    with pytest.raises(SourceError) as ei:
        check_lake(cfg("gs://lake/pubnet"), NET, 2, 10)
    assert str(ei.value) == (
        "data lake pre-flight check failed: gs://lake/pubnet/.config.json: access to bucket lake denied (HTTP 403)"
    )


def test_gcs_persistent_5xx_gives_up(gcs_env, chain):
    s = LakeSchema(NET, 8, 4)
    key = layout.object_key(64, s)
    gcs_env.add(key, "status", code=500, times=-1)
    with DataLakeSource(cfg("gs://lake/pubnet", retry_limit=2), NET) as src:
        src.prepare_range(40, 90)
        with pytest.raises(SourceError, match="giving up after 3 attempts") as ei:
            for q in range(40, 91):
                assert src.get_ledger(q).lcm == chain[q]
        assert q == 64
    assert "500" in str(ei.value)


def test_legacy_extension_found_without_listing_hint(tmp_path, chain):
    # the first listed keys hold no lake file (junk sorts first), so detection falls back to probing
    s = LakeSchema(NET, 2, 8, file_ext=".xdr.zstd")
    write_lake(tmp_path, [(q, chain[q]) for q in range(2, 50)], s)
    for i in range(20):
        (tmp_path / f"0-notes-{i:02d}.txt").write_text("not a lake file")
    assert layout.detect_ext_from_names(LocalStore(tmp_path).list_keys(16)) is None
    with DataLakeSource(cfg(tmp_path), NET) as src:
        assert read_all(src, 5, 40) == [chain[q] for q in range(5, 41)]
        assert src.schema.file_ext == ".xdr.zstd"


def test_factory_rejects_unknown_backend(tmp_path):
    from rpcbackfill.errors import ConfigError

    c = default_config(tmp_path, ledger_backend="s3")
    with pytest.raises(ConfigError, match="ledger_backend"):
        open_source(c, threading.Event())


def test_gcs_anonymous_fallback(monkeypatch, tmp_path):
    # no usable application-default credentials: public lakes are read anonymously
    from google.auth.credentials import AnonymousCredentials

    from rpcbackfill.sources.objstore import gcs

    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
    client = gcs.make_client()
    assert isinstance(client._credentials, AnonymousCredentials)
    store = gcs.GcsStore("gs://public-bucket/some/prefix/", client=client)
    assert (store.bucket_name, store.prefix) == ("public-bucket", "some/prefix/")
    with pytest.raises(LakeConfigError, match="gs://bucket/prefix"):
        gcs.GcsStore("gs:///nobucket", client=client)


def test_gcs_unreachable_endpoint_retries_then_fails(monkeypatch):
    from tests.lib.net import free_port

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")  # nothing listens
    with DataLakeSource(cfg("gs://lake/pubnet", retry_limit=2), NET) as src:
        with pytest.raises(SourceError, match="giving up after 3 attempts") as ei:
            src.prepare_range(2, 10)
        assert src.stats["retries"] == 2
    assert "gs://lake/pubnet/.config.json" in str(ei.value) and "Connection" in str(ei.value)


@pytest.mark.parametrize("written,claimed", [((4, 8), (1, 8)), ((1, 8), (1, 1)), ((1, 1), (1, 8)), ((2, 4), (2, 8))])
def test_files_contradicting_manifest(tmp_path, chain, written, claimed):
    write_lake(tmp_path, [(q, chain[q]) for q in range(8, 40)], LakeSchema(NET, *written))
    layout.write_manifest(tmp_path, LakeSchema(NET, *claimed))  # a manifest that lies
    with DataLakeSource(cfg(tmp_path), NET) as src:
        with pytest.raises(LakeConfigError, match="contradicts the manifest"):
            src.prepare_range(10, 20)
        assert not src._threads
