"""Data-lake source over S3: boto3 against a real S3 server (moto in server mode on 127.0.0.1)
behind the fault-injecting proxy, with no AWS credentials anywhere (anonymous reads)."""

from __future__ import annotations

import pytest

from rpcbackfill.config import PUBNET_PASSPHRASE, BufferedStorageConfig
from rpcbackfill.errors import LakeConfigError, MissingLedgerError, SourceError
from rpcbackfill.sources import layout, objstore
from rpcbackfill.sources.checks import check_lake
from rpcbackfill.sources.datalake import DataLakeSource
from rpcbackfill.sources.layout import LakeSchema, write_lake
from tests.lib.gcs_fault_proxy import TRANSIENT_FAULTS, FaultProxy
from tests.lib.ledgers import chain as make_chain
from tests.lib.net import free_port
from tests.lib.s3 import MotoS3, apply_env, aws_env, upload_lake

NET = PUBNET_PASSPHRASE
SCHEMA = LakeSchema(NET, ledgers_per_batch=8, batches_per_partition=4)


@pytest.fixture(scope="module")
def chain():
    """Ledgers 2..401, consecutive and hash-chained."""
    return dict(make_chain(2, 400))


@pytest.fixture(scope="module")
def lake(tmp_path_factory, chain):
    root = tmp_path_factory.mktemp("s3lake")
    write_lake(root, sorted(chain.items()), SCHEMA, fsync=False)
    return root


@pytest.fixture(scope="module")
def s3(lake):
    """moto with the lake at s3://lake/pubnet (public), without manifest at s3://lake/bare,
    and privately at s3://private/pubnet; the proxy in front of it."""
    server = MotoS3()
    c = server.client()
    upload_lake(c, "lake", "pubnet", lake)
    upload_lake(c, "lake", "bare", lake, skip={layout.MANIFEST_NAME})
    upload_lake(c, "private", "pubnet", lake, public=False)
    proxy = FaultProxy("127.0.0.1", server.port)
    yield server, proxy
    proxy.close()
    server.close()


@pytest.fixture
def proxy(s3, monkeypatch, tmp_path):
    """No credentials; AWS_ENDPOINT_URL_S3 points at the proxy (the standard AWS variable)."""
    _, p = s3
    apply_env(monkeypatch, aws_env(tmp_path, AWS_ENDPOINT_URL_S3=p.host))
    p.clear()
    yield p
    p.clear()


def cfg(path, **kw) -> BufferedStorageConfig:
    kw.setdefault("buffer_size", 4)
    kw.setdefault("num_workers", 3)
    kw.setdefault("retry_limit", 2)
    kw.setdefault("retry_wait", 0.01)
    kw.setdefault("force_path_style", True)
    return BufferedStorageConfig(bucket_path=str(path), **kw)


def read_all(src, first, last):
    src.prepare_range(first, last)
    return [src.get_ledger(s).lcm for s in range(first, last + 1)]


def _key(seq: int) -> str:
    return layout.object_key(seq, SCHEMA)


def test_s3_range_anonymous_through_env_endpoint(proxy, chain):
    from botocore import UNSIGNED

    with DataLakeSource(cfg("s3://lake/pubnet"), NET) as src:
        assert read_all(src, 5, 150) == [chain[q] for q in range(5, 151)]
        assert src.schema.ledgers_per_batch == 8 and src.stats["retries"] == 0
        assert src._store._client.meta.config.signature_version is UNSIGNED
    assert any(p.startswith(f"/lake/pubnet/{_key(100)}") for m, p, _ in proxy.log if m == "GET")


def test_s3_endpoint_key_overrides_env(proxy, s3, chain):
    server, _ = s3
    # the configured endpoint wins over AWS_ENDPOINT_URL_S3 (here: the server itself, no proxy)
    with DataLakeSource(cfg("s3://lake/pubnet", endpoint_url=server.host), NET) as src:
        assert read_all(src, 2, 40) == [chain[q] for q in range(2, 41)]
    assert proxy.log == []


def test_s3_credentials_from_env_sign_requests(proxy, monkeypatch, chain):
    from botocore import UNSIGNED

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    with DataLakeSource(cfg("s3://private/pubnet"), NET) as src:
        assert read_all(src, 10, 30) == [chain[q] for q in range(10, 31)]
        assert src._store._client.meta.config.signature_version is not UNSIGNED
    # anonymous = true: unsigned even with credentials, so the private bucket refuses
    with DataLakeSource(cfg("s3://private/pubnet", anonymous=True), NET) as src:
        with pytest.raises(SourceError, match=r"access to bucket private denied \(HTTP 403"):
            src.prepare_range(10, 30)
        assert src.stats["retries"] == 0


@pytest.mark.parametrize("fault,kw", TRANSIENT_FAULTS)
def test_s3_transient_faults(proxy, chain, fault, kw):
    key = _key(60)
    proxy.add(key, fault, times=2, **kw)
    with DataLakeSource(cfg("s3://lake/pubnet", retry_limit=3), NET) as src:
        assert read_all(src, 30, 100) == [chain[q] for q in range(30, 101)]
        assert src.stats["retries"] == 2
    assert [f for m, p, f in proxy.log if key in p and m == "GET"] == [fault, fault, ""]


@pytest.mark.parametrize("fault", ["short", "corrupt"])
def test_s3_md5_etag_catches_bad_bodies_without_flexible_checksums(proxy, s3, lake, chain, fault):
    server, _ = s3
    if not server.client().list_objects_v2(Bucket="lake", Prefix="nocrc/", MaxKeys=1).get("Contents"):
        upload_lake(server.client(checksums=False), "lake", "nocrc", lake)
    key = _key(60)
    head = server.client().head_object(Bucket="lake", Key=f"nocrc/{key}", ChecksumMode="ENABLED")
    assert not any(k.startswith("Checksum") for k in head), head  # only the MD5 ETag protects these reads
    proxy.add(f"nocrc/{key}", fault, times=2)
    with DataLakeSource(cfg("s3://lake/nocrc", retry_limit=3), NET) as src:
        assert read_all(src, 50, 70) == [chain[q] for q in range(50, 71)]
        assert src.stats["retries"] == 2


def test_s3_slowdown_xml_error_is_transient(proxy, chain):
    # S3's own throttling answer: 503 with an XML <Code>SlowDown</Code> body
    from rpcbackfill.sources.objstore.s3 import S3Store

    store = S3Store("s3://lake/pubnet", options=objstore.StoreOptions(force_path_style=True))
    from botocore.exceptions import ClientError

    e = ClientError(
        {
            "Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."},
            "ResponseMetadata": {"HTTPStatusCode": 503},
        },
        "GetObject",
    )
    from rpcbackfill.errors import TransientSourceError

    assert isinstance(store._classify(e, "s3://lake/pubnet/k"), TransientSourceError)
    store.close()


def test_s3_slow_response_times_out_and_retries(proxy, chain):
    proxy.add(_key(60), "slow", times=1, delay=1.5)
    with DataLakeSource(cfg("s3://lake/pubnet"), NET, request_timeout=(2.0, 0.5)) as src:
        assert read_all(src, 55, 70) == [chain[q] for q in range(55, 71)]
        assert src.stats["retries"] == 1


def test_s3_missing_object_fatal_at_once(proxy, s3, lake, chain):
    server, _ = s3
    c = server.client()
    upload_lake(c, "lake", "holey", lake)
    key = _key(200)
    c.delete_object(Bucket="lake", Key=f"holey/{key}")
    with DataLakeSource(cfg("s3://lake/holey", retry_limit=3), NET) as src:
        src.prepare_range(100, 300)
        with pytest.raises(MissingLedgerError, match="ledger 200") as ei:
            for q in range(100, 301):
                assert src.get_ledger(q).lcm == chain[q]
        assert q == 200 and src.stats["retries"] == 0
    assert f"s3://lake/holey/{key}" in str(ei.value)
    assert len([p for m, p, _ in proxy.log if key in p and m == "GET"]) == 1


def test_s3_detect_gaps(proxy, s3, lake):
    # detect-gaps' partition listing (list_keys with a prefix) over S3 finds exactly the removed object
    from rpcbackfill.sources.gaps import detect_gaps
    from rpcbackfill.sources.objstore.s3 import S3Store

    server, _ = s3
    c = server.client()
    upload_lake(c, "lake", "gappy", lake)
    c.delete_object(Bucket="lake", Key=f"gappy/{_key(100)}")
    store = S3Store("s3://lake/gappy", options=objstore.StoreOptions(force_path_style=True))
    try:
        assert len(store.list_keys(None)) == sum(1 for p in lake.rglob("*") if p.is_file()) - 1  # one deleted
        assert store.list_keys(None, prefix=_key(100).split("/")[0] + "/") == sorted(
            k for k in store.list_keys(None) if k.startswith(_key(100).split("/")[0] + "/")
        )
        report = detect_gaps(store, 2, 401)
    finally:
        store.close()
    assert report.missing == [(96, 103)] and report.missing_keys == [_key(100)]


def test_s3_forbidden_and_no_such_bucket_are_not_retried(proxy, chain):
    proxy.add("/lake/pubnet", "status", code=403, times=-1)
    with DataLakeSource(cfg("s3://lake/pubnet", retry_limit=3), NET) as src:
        with pytest.raises(SourceError, match="access to bucket lake denied") as ei:
            src.prepare_range(2, 10)
        assert src.stats["retries"] == 0
    assert "\n" not in str(ei.value)
    proxy.clear()
    with DataLakeSource(cfg("s3://nosuchbucket/pubnet", retry_limit=3), NET) as src:
        with pytest.raises(SourceError, match="bucket nosuchbucket does not exist"):
            src.prepare_range(2, 10)
        assert src.stats["retries"] == 0


def test_s3_lake_without_manifest(proxy, chain):
    with DataLakeSource(cfg("s3://lake/bare"), NET) as src:
        with pytest.raises(LakeConfigError, match="ledgers_per_file and files_per_partition"):
            src.prepare_range(2, 10)
    with DataLakeSource(cfg("s3://lake/bare", ledgers_per_file=8, files_per_partition=4), NET) as src:
        assert read_all(src, 20, 120) == [chain[q] for q in range(20, 121)]
        assert src.schema == SCHEMA
    # a configured layout contradicting the object names is refused
    with DataLakeSource(cfg("s3://lake/bare", ledgers_per_file=1, files_per_partition=4), NET) as src:
        with pytest.raises(LakeConfigError, match="contradicts the configured layout"):
            src.prepare_range(2, 10)
    # with a manifest, configured values must agree with it, and the message names both
    with DataLakeSource(cfg("s3://lake/pubnet", ledgers_per_file=16, files_per_partition=4), NET) as src:
        with pytest.raises(LakeConfigError, match="ledgers_per_file = 16 in the configuration but ledgersPerBatch = 8"):
            src.prepare_range(2, 10)


# --- pre-flight -----------------------------------------------------------------------------


def test_preflight_passes_and_names_missing_ends(proxy):
    assert check_lake(cfg("s3://lake/pubnet"), NET, 2, 401) == SCHEMA
    with pytest.raises(MissingLedgerError, match=r"ledger 408: object s3://lake/pubnet/\S+ does not exist"):
        check_lake(cfg("s3://lake/pubnet"), NET, 2, 408)
    with pytest.raises(MissingLedgerError, match="pre-flight check failed: ledger 1000"):
        check_lake(cfg("s3://lake/pubnet"), NET, 1000, 1010)
    # existence checks only: no lake file is downloaded
    assert not any(m == "GET" and ".xdr.zst" in p for m, p, _ in proxy.log)


@pytest.mark.parametrize(
    "host,cause", [("http://lake.invalid:9000", "DNS lookup failed"), ("closed", "connection refused")]
)
def test_preflight_unreachable(proxy, monkeypatch, host, cause):
    url = f"http://127.0.0.1:{free_port()}" if host == "closed" else host
    with pytest.raises(SourceError) as ei:
        check_lake(cfg("s3://lake/pubnet", endpoint_url=url), NET, 2, 10, budget_s=2.0)
    msg = str(ei.value)
    assert "s3://lake/pubnet" in msg and cause in msg and url in msg and "\n" not in msg


def test_gcs_and_local_locations_share_the_registry(tmp_path):
    assert objstore.scheme_of("s3://b/p").name == "s3" and objstore.scheme_of("gs://b").name == "gs"
    assert objstore.scheme_of(str(tmp_path)).name == "file" and not objstore.scheme_of("file:///x").remote
    with pytest.raises(LakeConfigError, match="unsupported scheme"):
        objstore.open_store("ftp://x/y")
    store = objstore.open_store(str(tmp_path))
    assert isinstance(store, objstore.ObjectStore) and store.tuning.max_workers is not None
    # every store of the table satisfies the protocol (opening makes no request)
    for url in ("s3://b/p", "gs://b/p"):
        s = objstore.open_store(url, objstore.StoreOptions(anonymous=True, endpoint_url=None))
        try:
            assert isinstance(s, objstore.ObjectStore) and s.url == url and s.tuning.max_workers is None
        finally:
            s.close()


def test_preflight_checks_only_ranges_still_to_ingest(lake):
    from dataclasses import dataclass

    from rpcbackfill.config import default_config
    from rpcbackfill.sources import preflight

    @dataclass
    class R:
        state: str
        start_ledger: int
        end_ledger: int

    config = default_config(lake, buffered_storage=cfg(lake))
    # ranges already ingested need nothing from the lake (ledgers 402-500 are not in it)
    preflight(config, [R("COMPLETE", 2, 100), R("PENDING", 101, 300), R("TRANSITIONING", 301, 500)])
    preflight(config, [R("COMPLETE", 400, 500)])
    with pytest.raises(MissingLedgerError, match="ledger 500: object"):
        preflight(config, [R("COMPLETE", 2, 100), R("INGESTING", 301, 500)])


def test_lake_readable_but_not_listable(proxy, chain):
    # listing refused (403) while objects are readable: the manifest is enough, the extension is probed
    proxy.add("list-type=2", "status", code=403, times=-1)
    with DataLakeSource(cfg("s3://lake/pubnet"), NET) as src:
        assert read_all(src, 30, 60) == [chain[q] for q in range(30, 61)]
    assert check_lake(cfg("s3://lake/pubnet"), NET, 2, 401) == SCHEMA
    # without a manifest the listing is needed (layout check): refused with the cause
    with pytest.raises(SourceError, match="access to bucket lake denied"):
        check_lake(cfg("s3://lake/bare", ledgers_per_file=8, files_per_partition=4), NET, 2, 401)
