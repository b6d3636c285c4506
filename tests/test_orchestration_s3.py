"""End-to-end backfills from an S3 lake (moto server on 127.0.0.1, no AWS credentials), and the
pre-flight check of every lake backend through the real ``stellar-rpc`` command line."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from rpcbackfill.config import PUBNET_PASSPHRASE
from rpcbackfill.orchestration import api
from rpcbackfill.sources import layout
from rpcbackfill.sources.layout import LakeSchema
from tests.lib import REPO
from tests.lib.net import free_port
from tests.lib.orchestration import RS, check_backfill_result, make_config, make_lake, run_to_end
from tests.lib.s3 import MotoS3, apply_env, aws_env, clean_environ, upload_lake

LAST = 2 * RS + 1
LAYOUT = LakeSchema(PUBNET_PASSPHRASE, ledgers_per_batch=8, batches_per_partition=64)  # make_lake's layout


@pytest.fixture(scope="module")
def lake2(tmp_path_factory) -> Path:
    return make_lake(tmp_path_factory.getbasetemp() / "lake-2ranges", 2, LAST)


@pytest.fixture(scope="module")
def s3():
    """The S3 server, holding small lakes for the pre-flight failures."""
    server = MotoS3()
    c = server.client()
    # Small lakes for the pre-flight failures: only the objects the check looks at (dummy bytes).
    c.create_bucket(Bucket="tiny", ACL="public-read")
    c.create_bucket(Bucket="private")
    for prefix, seqs, manifest in (("nofirst", [LAST], True), ("nolast", [2], True), ("bare", [2, LAST], False)):
        keys = [layout.object_key(q, LAYOUT) for q in seqs]
        if manifest:
            keys.append(layout.MANIFEST_NAME)
        for k in keys:
            body = layout.manifest_bytes(LAYOUT) if k == layout.MANIFEST_NAME else b"x"
            c.put_object(Bucket="tiny", Key=f"{prefix}/{k}", Body=body, ACL="public-read")
    c.put_object(Bucket="private", Key=f"pubnet/{layout.MANIFEST_NAME}", Body=layout.manifest_bytes(LAYOUT))
    yield server
    server.close()


@pytest.fixture(scope="module")
def s3_lake(s3, lake2):
    """The generated lake at s3://lake/pubnet (with manifest) and s3://lake/bare (without)."""
    c = s3.client()
    upload_lake(c, "lake", "pubnet", lake2)
    upload_lake(c, "lake", "bare", lake2, skip={layout.MANIFEST_NAME})
    return s3


def _s3_config(tmp_path, url, **bs):
    cfg = make_config(tmp_path / "data", Path("unused"), 2, LAST, parallel_ranges=2)
    b = dataclasses.replace(cfg.backfill.buffered_storage, bucket_path=url, force_path_style=True, **bs)
    return dataclasses.replace(cfg, backfill=dataclasses.replace(cfg.backfill, buffered_storage=b))


def test_backfill_from_s3_without_credentials(tmp_path, monkeypatch, s3_lake, lake2):
    s3 = s3_lake
    # endpoint from the standard AWS variable; no credentials: unsigned requests
    apply_env(monkeypatch, aws_env(tmp_path, AWS_ENDPOINT_URL_S3=s3.host))
    from rpcbackfill.sources.objstore import StoreOptions, open_store

    store = open_store("s3://lake/pubnet", StoreOptions(force_path_style=True))
    try:  # more than one listing page (S3 returns at most 1,000 keys per call)
        assert len(store.list_keys(None)) == sum(1 for p in lake2.rglob("*") if p.is_file()) > 2000
    finally:
        store.close()
    cfg = _s3_config(tmp_path, "s3://lake/pubnet")
    assert run_to_end(tmp_path, cfg) == 0
    n_ledgers, n_hashes = check_backfill_result(cfg, lake2, 2, LAST)
    assert n_ledgers == LAST - 1 and n_hashes > 0
    st = api.status(cfg)
    assert st.complete and st.counts == {"COMPLETE": 2} and st.tx_count == n_hashes


def test_backfill_from_s3_lake_without_manifest(tmp_path, monkeypatch, s3_lake, lake2):
    s3 = s3_lake
    # endpoint from the configuration; the layout from the configuration (no .config.json)
    apply_env(monkeypatch, aws_env(tmp_path))
    cfg = _s3_config(tmp_path, "s3://lake/bare", endpoint_url=s3.host, ledgers_per_file=8, files_per_partition=64)
    assert run_to_end(tmp_path, cfg) == 0
    n_ledgers, _ = check_backfill_result(cfg, lake2, 2, LAST)
    assert n_ledgers == LAST - 1


# --- pre-flight failures through the real command line ---------------------------------------


def _cli(tmp_path: Path, bucket_path: str, extra: str = "", env: dict | None = None):
    conf = tmp_path / "rpc.toml"
    conf.write_text(
        f'[service]\ndata_dir = "{tmp_path / "data"}"\nhttp_port = 0\n'
        f"[backfill]\nrange_size = {RS}\nparallel_ranges = 2\n"
        f'[backfill.buffered_storage]\nbucket_path = "{bucket_path}"\nretry_wait = 1.0\n{extra}'
    )
    script = Path(sys.executable).parent / "stellar-rpc"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "rpcbackfill"]
    full_env = clean_environ({**aws_env(tmp_path), "PYTHONPATH": str(REPO), **(env or {})})
    # the pre-flight must give up well within 30 s, whatever the cause
    r = subprocess.run(
        cmd + ["--backfill", "--start-ledger", "2", "--end-ledger", str(LAST), "--config-path", str(conf)],
        capture_output=True,
        env=full_env,
        timeout=30,
        check=False,
    )
    err = r.stderr.decode()
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert "Traceback" not in err, err
    assert len(errors) == 1, err
    return r.returncode, errors[0]


def _lake_dir(tmp_path: Path, seqs) -> Path:
    d = tmp_path / "locallake"
    for q in seqs:
        p = d / layout.object_key(q, LAYOUT)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    layout.write_manifest(d, LAYOUT, fsync=False)
    return d


def _cases(s3, tmp_path):
    path_style = "force_path_style = true\n"
    ep = f'endpoint_url = "{s3.host}"\n' + path_style
    closed = f"http://127.0.0.1:{free_port()}"
    return {
        "dns": (
            "s3://lake/pubnet",
            'endpoint_url = "http://lake.invalid:9000"\n' + path_style,
            None,
            ["s3://lake/pubnet", "http://lake.invalid:9000", "DNS lookup failed"],
        ),
        "refused": (
            "s3://lake/pubnet",
            f'endpoint_url = "{closed}"\n' + path_style,
            None,
            ["s3://lake/pubnet", closed, "connection refused"],
        ),
        "forbidden": (
            "s3://private/pubnet",
            ep,
            None,
            ["s3://private/pubnet", "access to bucket private denied (HTTP 403"],
        ),
        "no-bucket": (
            "s3://nosuchbucket/pubnet",
            ep,
            None,
            ["s3://nosuchbucket/pubnet", "bucket nosuchbucket does not exist"],
        ),
        "no-first": (
            "s3://tiny/nofirst",
            ep,
            None,
            ["ledger 2: object s3://tiny/nofirst/" + layout.object_key(2, LAYOUT), "does not exist"],
        ),
        "no-last": (
            "s3://tiny/nolast",
            ep,
            None,
            [f"ledger {LAST}: object s3://tiny/nolast/" + layout.object_key(LAST, LAYOUT), "does not exist"],
        ),
        "no-layout": (
            "s3://tiny/bare",
            ep,
            None,
            ["s3://tiny/bare", ".config.json not found", "ledgers_per_file, files_per_partition unset"],
        ),
        "bad-layout": (
            "s3://tiny/bare",
            ep + "ledgers_per_file = 1\nfiles_per_partition = 64\n",
            None,
            ["s3://tiny/bare", "contradicts the configured layout"],
        ),
        "layout-disagrees": (
            "s3://tiny/nolast",
            ep + "ledgers_per_file = 16\n",
            None,
            ["ledgers_per_file = 16 in the configuration but ledgersPerBatch = 8", "s3://tiny/nolast/.config.json"],
        ),
        "local-no-last": (
            str(_lake_dir(tmp_path, [2])),
            "",
            None,
            [f"ledger {LAST}: object {tmp_path / 'locallake'}/", "does not exist"],
        ),
        "gcs-refused": (
            "gs://lake/pubnet",
            "",
            {"STORAGE_EMULATOR_HOST": closed},
            ["gs://lake/pubnet", "connection refused"],
        ),
    }


CASES = [
    "dns",
    "refused",
    "forbidden",
    "no-bucket",
    "no-first",
    "no-last",
    "no-layout",
    "bad-layout",
    "layout-disagrees",
    "local-no-last",
    "gcs-refused",
]


@pytest.mark.parametrize("case", CASES)
def test_preflight_failure_exits_1_with_one_line(tmp_path, s3, case):
    bucket, extra, env, wants = _cases(s3, tmp_path)[case]
    rc, line = _cli(tmp_path, bucket, extra, env)
    assert rc == 1, line
    assert line.startswith("error: data lake pre-flight check failed: "), line
    for w in wants:
        assert w in line, (w, line)
    # nothing was ingested: every range is still PENDING
    assert not (tmp_path / "data" / "active" / "ledgers" / "0000").exists()
