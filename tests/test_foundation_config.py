"""Configuration loading and validation (spec section 3), in process."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from rpcbackfill.config import (
    KEYS,
    PUBNET_PASSPHRASE,
    Config,
    default_config,
    example_config_text,
    load_config,
    reference_table,
)
from rpcbackfill.errors import ConfigError, InputError, LedgerRangeError

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def problems_of(excinfo) -> list[str]:
    return excinfo.value.problems


@pytest.fixture
def cfgdir(tmp_path) -> Path:
    d = tmp_path / "etc"
    d.mkdir()
    return d


# --- defaults and the minimal file --------------------------------------------------------------


def test_minimal_file_gives_every_default(cfgdir, tmp_path):
    f = write(cfgdir / "c.toml", '[service]\ndata_dir = "/srv/rpc"\n')
    cfg = load_config(f, env={}, cwd=tmp_path)
    assert isinstance(cfg, Config)
    assert cfg == default_config("/srv/rpc")
    assert cfg.service.network_passphrase == PUBNET_PASSPHRASE
    assert cfg.meta_store.path == Path("/srv/rpc/meta/rocksdb")
    assert cfg.backfill.buffered_storage.bucket_path == ""


def test_every_key_settable_from_toml(cfgdir, tmp_path):
    lake = tmp_path / "lake"
    lake.mkdir()
    core = tmp_path / "stellar-core"
    write(core, "#!/bin/sh\n")
    core.chmod(0o755)
    corecfg = write(tmp_path / "core.cfg", "X=1\n")
    text = f"""
[service]
data_dir = "{tmp_path / "data"}"
network_passphrase = "Test SDF Network ; September 2015"
http_port = 0
log_level = "DEBUG"
log_format = "json"
[meta_store]
path = "m"
[active_stores]
ledger_path = "al"
txhash_path = "/abs/at"
[immutable_stores]
ledgers_base = "il"
txhash_base = "it"
[rocksdb]
block_cache_mb = 1
write_buffer_mb = 2
max_write_buffer_number = 3
[backfill]
start_ledger = 10002
end_ledger = 30001
ledger_backend = "captive_core"
parallel_ranges = 7
checkpoint_interval = 500
range_size = 10000
max_retries = 0
[backfill.buffered_storage]
bucket_path = "{lake}"
buffer_size = 11
num_workers = 12
retry_limit = 13
retry_wait = 2
[backfill.captive_core]
binary_path = "{core}"
config_path = "{corecfg}"
"""
    cfg = load_config(write(cfgdir / "all.toml", text), env={}, cwd=tmp_path, for_backfill=True)
    d = tmp_path / "data"
    assert cfg.service.data_dir == d
    assert cfg.service.network_passphrase == "Test SDF Network ; September 2015"
    assert (cfg.service.http_port, cfg.service.log_level, cfg.service.log_format) == (0, "debug", "json")
    assert cfg.meta_store.path == d / "m"
    assert cfg.active_stores.ledger_path == d / "al"
    assert cfg.active_stores.txhash_path == Path("/abs/at")
    assert (cfg.immutable_stores.ledgers_base, cfg.immutable_stores.txhash_base) == (d / "il", d / "it")
    assert (cfg.rocksdb.block_cache_mb, cfg.rocksdb.write_buffer_mb, cfg.rocksdb.max_write_buffer_number) == (1, 2, 3)
    b = cfg.backfill
    assert (b.start_ledger, b.end_ledger, b.ledger_backend) == (10002, 30001, "captive_core")
    assert (b.parallel_ranges, b.checkpoint_interval, b.range_size, b.max_retries) == (7, 500, 10000, 0)
    bs = b.buffered_storage
    assert (bs.bucket_path, bs.buffer_size, bs.num_workers, bs.retry_limit) == (str(lake), 11, 12, 13)
    assert bs.retry_wait == 2.0 and isinstance(bs.retry_wait, float)
    assert (b.captive_core.binary_path, b.captive_core.config_path) == (core, corecfg)


# --- precedence: flag > env > toml > default ------------------------------------------------------


@pytest.mark.parametrize(
    "dotted, toml_val, env_val, flag_val, default, expect_attr",
    [
        ("backfill.parallel_ranges", "3", "4", 5, 2, ("backfill", "parallel_ranges")),
        ("service.log_level", '"warning"', "error", "debug", "info", ("service", "log_level")),
        ("service.health_stall_threshold", "1000", "2000", "3000", 120.0, ("service", "health_stall_threshold")),
        (
            "backfill.buffered_storage.retry_wait",
            "0.5",
            "0.25",
            "0.125",
            1.0,
            ("backfill", "buffered_storage", "retry_wait"),
        ),
    ],
)
@pytest.mark.parametrize("layers", ["default", "toml", "toml+env", "toml+env+flag", "env", "flag", "toml+flag"])
def test_precedence(cfgdir, tmp_path, dotted, toml_val, env_val, flag_val, default, expect_attr, layers):
    section, name = dotted.rsplit(".", 1)
    text = '[service]\ndata_dir = "d"\n'
    if "toml" in layers:
        text += f"{name} = {toml_val}\n" if section == "service" else f"[{section}]\n{name} = {toml_val}\n"
    env = {"STELLAR_RPC_" + dotted.upper().replace(".", "_"): env_val} if "env" in layers else {}
    overrides = {dotted: flag_val} if "flag" in layers else {}
    cfg = load_config(write(cfgdir / "p.toml", text), env=env, overrides=overrides, cwd=tmp_path)
    got = cfg
    for a in expect_attr:
        got = getattr(got, a)
    if "flag" in layers:
        want = flag_val
    elif "env" in layers:
        want = env_val
    elif "toml" in layers:
        want = toml_val.strip('"')
    else:
        want = default
    assert str(got) == str(type(got)(want))


def test_data_dir_precedence_and_bases(cfgdir, tmp_path):
    f = write(cfgdir / "c.toml", '[service]\ndata_dir = "from-file"\n')
    work = tmp_path / "work"
    work.mkdir()
    assert load_config(f, env={}, cwd=work).service.data_dir == cfgdir / "from-file"
    env = {"STELLAR_RPC_SERVICE_DATA_DIR": "from-env"}
    assert load_config(f, env=env, cwd=work).service.data_dir == work / "from-env"
    cfg = load_config(f, env=env, overrides={"service.data_dir": "from-flag"}, cwd=work)
    assert cfg.service.data_dir == work / "from-flag"
    # the other paths follow data_dir whatever its source
    assert cfg.meta_store.path == work / "from-flag" / "meta" / "rocksdb"


def test_flag_none_means_absent(cfgdir, tmp_path):
    f = write(cfgdir / "c.toml", '[service]\ndata_dir = "d"\n[backfill]\nparallel_ranges = 6\n')
    cfg = load_config(f, env={}, overrides={"backfill.parallel_ranges": None}, cwd=tmp_path)
    assert cfg.backfill.parallel_ranges == 6


def test_no_file_env_only(tmp_path):
    cfg = load_config(None, env={"STELLAR_RPC_SERVICE_DATA_DIR": str(tmp_path), "OTHER": "x"}, cwd=tmp_path)
    assert cfg == default_config(tmp_path)


def test_env_values_are_parsed(tmp_path):
    env = {
        "STELLAR_RPC_SERVICE_DATA_DIR": str(tmp_path),
        "STELLAR_RPC_BACKFILL_BUFFERED_STORAGE_NUM_WORKERS": " 1_000 ",
        "STELLAR_RPC_SERVICE_LOG_LEVEL": "WARNING",
    }
    cfg = load_config(None, env=env, cwd=tmp_path)
    assert cfg.backfill.buffered_storage.num_workers == 1000
    assert cfg.service.log_level == "warning"


# --- unknown keys and wrong types ---------------------------------------------------------------------


D = '[service]\ndata_dir = "d"\n'


@pytest.mark.parametrize(
    "text, fragments",
    [
        (D + "[servic]\n", ["unknown section [servic]", "did you mean 'service'", "accepted: service, meta_store"]),
        (D + "port = 1\n", ["unknown key 'port' in [service]", "accepted: data_dir, network_passphrase, http_port"]),
        (
            D + "[backfill.buffered_storage]\nbucket = 'x'\n",
            ["unknown key 'bucket' in [backfill.buffered_storage]", "bucket_path"],
        ),
        (
            D + "[backfill.core]\nx = 1\n",
            ["unknown key 'core' in [backfill]", "tables: buffered_storage, captive_core"],
        ),
        (D + "[backfill]\nrange_sise = 10000\n", ["'range_sise'", "did you mean 'range_size'"]),
        ("top = 1\n" + D, ["unknown section [top]"]),
    ],
)
def test_unknown_keys_rejected(cfgdir, tmp_path, text, fragments):
    with pytest.raises(ConfigError) as ei:
        load_config(write(cfgdir / "u.toml", text), env={}, cwd=tmp_path)
    assert len(problems_of(ei)) == 1, problems_of(ei)
    for f in fragments:
        assert f in str(ei.value), str(ei.value)


def test_unknown_env_and_flag_keys_rejected(tmp_path):
    env = {
        "STELLAR_RPC_SERVICE_DATA_DIR": "d",
        "STELLAR_RPC_BACKFILL_PARALEL_RANGES": "3",
        "STELLAR_RPC_CONFIG_PATH": "x",
    }
    with pytest.raises(ConfigError) as ei:
        load_config(None, env=env, overrides={"backfill.nope": "1"}, cwd=tmp_path)
    ps = problems_of(ei)
    assert len(ps) == 2, ps
    assert "STELLAR_RPC_BACKFILL_PARALEL_RANGES" in ps[0] and "STELLAR_RPC_BACKFILL_PARALLEL_RANGES" in ps[0]
    assert "'backfill.nope'" in ps[1]


@pytest.mark.parametrize(
    "line, section, fragment",
    [
        ('http_port = "8080"', "service", "service.http_port (from file"),
        ("http_port = true", "service", "must be an integer, got bool"),
        ("http_port = 80.5", "service", "must be an integer, got float"),
        ("http_port = 70000", "service", "between 0 and 65535"),
        ("log_level = 3", "service", "service.log_level"),
        ('log_level = "verbose"', "service", "one of debug, info, warning, error; got 'verbose'"),
        ('log_format = "xml"', "service", "one of text, json"),
        ('network_passphrase = ""', "service", "must not be empty"),
        ("parallel_ranges = 0", "backfill", "backfill.parallel_ranges"),
        ('ledger_backend = "gcs"', "backfill", "buffered_storage, captive_core"),
        ("start_ledger = 1", "backfill", "backfill.start_ledger"),
        ("start_ledger = 4294967296", "backfill", "between 2 and 4294967295"),
        ("max_retries = -1", "backfill", "between 0 and 1000"),
        ("range_size = 12345", "backfill", "range_size must be a positive multiple of 10000"),
        ("block_cache_mb = [1]", "rocksdb", "must be an integer, got list"),
        ('retry_wait = "1s"', "backfill.buffered_storage", "must be a number"),
        ("retry_wait = nan", "backfill.buffered_storage", "finite"),
        ("binary_path = 5", "backfill.captive_core", "must be a string, got int"),
        ("path = 1", "meta_store", "meta_store.path"),
        ("compression_level = 0", "immutable_stores", "between 1 and 22"),
        ("compression_level = 23", "immutable_stores", "between 1 and 22"),
        ('compression_level = "max"', "immutable_stores", "immutable_stores.compression_level"),
    ],
)
def test_wrong_types_and_values(cfgdir, tmp_path, line, section, fragment):
    text = '[service]\ndata_dir = "d"\n' + (f"{line}\n" if section == "service" else f"[{section}]\n{line}\n")
    with pytest.raises(ConfigError) as ei:
        load_config(write(cfgdir / "t.toml", text), env={}, cwd=tmp_path)
    assert len(problems_of(ei)) == 1, problems_of(ei)
    assert fragment in problems_of(ei)[0]


def test_section_must_be_a_table(cfgdir, tmp_path):
    with pytest.raises(ConfigError) as ei:
        load_config(write(cfgdir / "t.toml", 'rocksdb = 3\n[service]\ndata_dir = "d"\n'), env={}, cwd=tmp_path)
    assert "[rocksdb] must be a table" in str(ei.value)


def test_every_problem_at_once(cfgdir, tmp_path):
    text = """
[service]
http_port = -1
log_format = "yaml"
colour = true
[backfill]
parallel_ranges = "two"
range_size = 15000
[backfill.buffered_storage]
num_workers = 0
"""
    env = {"STELLAR_RPC_ROCKSDB_WRITE_BUFFER_MB": "lots"}
    with pytest.raises(ConfigError) as ei:
        load_config(write(cfgdir / "many.toml", text), env=env, cwd=tmp_path)
    ps = problems_of(ei)
    expected = [
        "unknown key 'colour'",
        "service.data_dir is required",
        "service.http_port",
        "service.log_format",
        "backfill.parallel_ranges",
        "backfill.range_size",
        "backfill.buffered_storage.num_workers",
        "rocksdb.write_buffer_mb (from env STELLAR_RPC_ROCKSDB_WRITE_BUFFER_MB)",
    ]
    assert len(ps) == len(expected), ps
    for e in expected:
        assert sum(e in p for p in ps) == 1, (e, ps)
    assert "\n" not in str(ei.value)
    assert ei.value.exit_code == 2


def test_checkpoint_interval_cannot_exceed_range_size(cfgdir, tmp_path):
    text = '[service]\ndata_dir = "d"\n[backfill]\nrange_size = 10000\ncheckpoint_interval = 20000\n'
    with pytest.raises(ConfigError, match="checkpoint_interval"):
        load_config(write(cfgdir / "c.toml", text), env={}, cwd=tmp_path)


# --- paths ---------------------------------------------------------------------------------------------


def test_relative_paths_resolve_against_data_dir(cfgdir, tmp_path):
    text = """
[service]
data_dir = "../state"
[meta_store]
path = "m/db"
[immutable_stores]
ledgers_base = "/elsewhere/ledgers"
[backfill.buffered_storage]
bucket_path = "../lake"
[backfill.captive_core]
config_path = "core/core.cfg"
"""
    cfg = load_config(write(cfgdir / "r.toml", text), env={}, cwd=tmp_path / "nowhere")
    state = tmp_path / "state"
    assert cfg.service.data_dir == state
    assert cfg.meta_store.path == state / "m" / "db"
    assert cfg.immutable_stores.ledgers_base == Path("/elsewhere/ledgers")
    assert cfg.immutable_stores.txhash_base == state / "immutable" / "txhash"
    assert cfg.backfill.buffered_storage.bucket_path == str(tmp_path / "lake")
    assert cfg.backfill.captive_core.config_path == state / "core" / "core.cfg"


def test_home_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = load_config(None, env={"STELLAR_RPC_SERVICE_DATA_DIR": "~/rpc"}, cwd="/")
    assert cfg.service.data_dir == tmp_path / "rpc"


@pytest.mark.parametrize(
    "bucket, expect",
    [
        ("gs://bucket/prefix/", "gs://bucket/prefix"),
        ("gs://bucket", "gs://bucket"),
        ("file:///srv/lake", "file:///srv/lake"),
        (
            "s3://aws-public-blockchain/v1.1/stellar/ledgers/pubnet/",
            "s3://aws-public-blockchain/v1.1/stellar/ledgers/pubnet",
        ),
        ("s3://bucket", "s3://bucket"),
    ],
)
def test_bucket_urls_kept(tmp_path, bucket, expect):
    env = {"STELLAR_RPC_SERVICE_DATA_DIR": str(tmp_path), "STELLAR_RPC_BACKFILL_BUFFERED_STORAGE_BUCKET_PATH": bucket}
    assert load_config(None, env=env).backfill.buffered_storage.bucket_path == expect


@pytest.mark.parametrize(
    "bucket, fragment",
    [
        ("gs://", "must name a bucket"),
        ("s3:///prefix", "must name a bucket"),
        ("file://lake", "must be absolute"),
        ("azure://b/p", "unsupported scheme"),
    ],
)
def test_bad_bucket_urls(tmp_path, bucket, fragment):
    env = {"STELLAR_RPC_SERVICE_DATA_DIR": str(tmp_path), "STELLAR_RPC_BACKFILL_BUFFERED_STORAGE_BUCKET_PATH": bucket}
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        load_config(None, env=env)


def test_s3_keys_parse_and_apply_only_to_s3(tmp_path):
    base = {
        "STELLAR_RPC_SERVICE_DATA_DIR": str(tmp_path),
        "STELLAR_RPC_BACKFILL_BUFFERED_STORAGE_BUCKET_PATH": "s3://b/p",
    }
    env = dict(
        base,
        STELLAR_RPC_BACKFILL_BUFFERED_STORAGE_ANONYMOUS="yes",
        STELLAR_RPC_BACKFILL_BUFFERED_STORAGE_FORCE_PATH_STYLE="true",
        STELLAR_RPC_BACKFILL_BUFFERED_STORAGE_REGION="us-east-2",
        STELLAR_RPC_BACKFILL_BUFFERED_STORAGE_ENDPOINT_URL="http://127.0.0.1:9000",
    )
    bs = load_config(
        None, env=env, for_backfill=True, overrides={"backfill.start_ledger": 2, "backfill.end_ledger": 10_000_001}
    ).backfill.buffered_storage
    assert (bs.anonymous, bs.force_path_style, bs.region, bs.endpoint_url) == (
        True,
        True,
        "us-east-2",
        "http://127.0.0.1:9000",
    )
    with pytest.raises(ConfigError, match="must be true or false"):
        load_config(None, env=dict(base, STELLAR_RPC_BACKFILL_BUFFERED_STORAGE_ANONYMOUS="maybe"))
    lake = tmp_path / "lake"
    lake.mkdir()
    bad = dict(
        base,
        STELLAR_RPC_BACKFILL_BUFFERED_STORAGE_BUCKET_PATH=str(lake),
        STELLAR_RPC_BACKFILL_BUFFERED_STORAGE_REGION="us-east-2",
        STELLAR_RPC_BACKFILL_BUFFERED_STORAGE_ENDPOINT_URL="ftp://x",
    )
    with pytest.raises(ConfigError) as ei:
        load_config(
            None, env=bad, for_backfill=True, overrides={"backfill.start_ledger": 2, "backfill.end_ledger": 10_000_001}
        )
    probs = problems_of(ei)
    assert any("region applies only to s3://bucket/prefix lakes" in p for p in probs), probs
    assert any("endpoint_url must be an http:// or https:// URL" in p for p in probs), probs


def test_data_dir_is_a_file(tmp_path):
    f = write(tmp_path / "plain", "x")
    with pytest.raises(ConfigError) as ei:
        load_config(None, env={"STELLAR_RPC_SERVICE_DATA_DIR": str(f)})
    assert problems_of(ei) == [f"service.data_dir {f} exists and is not a directory"]


def test_data_dir_under_a_file(tmp_path):
    f = write(tmp_path / "plain", "x")
    with pytest.raises(ConfigError, match="is not a directory"):
        load_config(None, env={"STELLAR_RPC_SERVICE_DATA_DIR": str(f / "sub" / "dir")})


def test_store_path_that_is_a_file(tmp_path):
    write(tmp_path / "meta" / "rocksdb", "not a db")
    with pytest.raises(ConfigError, match=r"meta_store.path .* exists and is not a directory"):
        load_config(None, env={"STELLAR_RPC_SERVICE_DATA_DIR": str(tmp_path)})


def test_data_dir_missing_is_fine(tmp_path):
    assert load_config(None, env={"STELLAR_RPC_SERVICE_DATA_DIR": str(tmp_path / "a" / "b")}).service.data_dir == (
        tmp_path / "a" / "b"
    )
    assert not (tmp_path / "a").exists()  # loading has no side effects


# --- config file problems -------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as ei:
        load_config(tmp_path / "nope.toml", env={})
    assert str(ei.value) == f"config file {tmp_path / 'nope.toml'} does not exist"


def test_directory_as_file(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path, env={})


def test_not_utf8(tmp_path):
    f = tmp_path / "bin.toml"
    f.write_bytes(b'[service]\ndata_dir = "d"\n# \xff\xfe\n')
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(line 3\)"):
        load_config(f, env={})


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path):
    f = write(tmp_path / "secret.toml", '[service]\ndata_dir = "d"\n')
    f.chmod(0)
    with pytest.raises(ConfigError, match="cannot read config file .*secret.toml"):
        load_config(f, env={})


@pytest.mark.parametrize(
    "text, line",
    [('[service]\ndata_dir = "d"\nhttp_port = = 1\n', 3), ("[service\n", 1), ('[service]\ndata_dir = "d\n', 2)],
)
def test_malformed_toml_names_file_and_line(tmp_path, text, line):
    f = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError) as ei:
        load_config(f, env={})
    msg = str(ei.value)
    assert msg.startswith(f"config file {f}: invalid TOML: ")
    assert f"line {line}" in msg and "\n" not in msg


def test_relative_config_path_uses_cwd(cfgdir):
    write(cfgdir / "c.toml", '[service]\ndata_dir = "x"\n')
    assert load_config("c.toml", env={}, cwd=cfgdir).service.data_dir == cfgdir / "x"


# --- backfill mode ----------------------------------------------------------------------------------------


def backfill_env(tmp_path, **extra) -> dict[str, str]:
    lake = tmp_path / "lake"
    lake.mkdir(exist_ok=True)
    env = {
        "STELLAR_RPC_SERVICE_DATA_DIR": str(tmp_path / "data"),
        "STELLAR_RPC_BACKFILL_BUFFERED_STORAGE_BUCKET_PATH": str(lake),
    }
    env.update({f"STELLAR_RPC_BACKFILL_{k.upper()}": str(v) for k, v in extra.items()})
    return env


def test_backfill_start_end_from_toml_and_flags(cfgdir, tmp_path):
    f = write(
        cfgdir / "b.toml",
        '[service]\ndata_dir = "d"\n[backfill]\nstart_ledger = 2\nend_ledger = 30000001\n',
    )
    env = {"STELLAR_RPC_BACKFILL_BUFFERED_STORAGE_BUCKET_PATH": "gs://b/p"}
    cfg = load_config(f, env=env, for_backfill=True)
    assert (cfg.backfill.start_ledger, cfg.backfill.end_ledger) == (2, 30000001)
    cfg = load_config(f, env=env, overrides={"backfill.start_ledger": 10000002}, for_backfill=True)
    assert (cfg.backfill.start_ledger, cfg.backfill.end_ledger) == (10000002, 30000001)


def test_backfill_needs_start_and_end(tmp_path):
    with pytest.raises(LedgerRangeError) as ei:
        load_config(None, env=backfill_env(tmp_path), for_backfill=True)
    assert "--start-ledger" in str(ei.value) and "--end-ledger" in str(ei.value)
    # outside backfill mode they are optional
    assert load_config(None, env=backfill_env(tmp_path)).backfill.start_ledger is None


@pytest.mark.parametrize(
    "start, end, fragment",
    [
        (100, 10000001, "--start-ledger must be rangeFirstLedger(N) for some N (valid: 2, 10000002, ...)"),
        (2, 10000000, "--end-ledger must be rangeLastLedger(N)"),
        (10000002, 10000001, "must be greater than"),
    ],
)
def test_backfill_range_rules(tmp_path, start, end, fragment):
    with pytest.raises(LedgerRangeError) as ei:
        load_config(None, env=backfill_env(tmp_path, start_ledger=start, end_ledger=end), for_backfill=True)
    assert fragment in str(ei.value)


def test_backfill_range_rules_use_configured_range_size(tmp_path):
    env = backfill_env(tmp_path, start_ledger=2, end_ledger=20001, range_size=10000)
    cfg = load_config(None, env=env, for_backfill=True)
    assert cfg.backfill.range_size == 10000
    env = backfill_env(tmp_path, start_ledger=2, end_ledger=10001, range_size=20000)
    with pytest.raises(LedgerRangeError, match="valid: 20001, 40001"):
        load_config(None, env=env, for_backfill=True)


def test_range_problem_plus_other_problem_is_config_error(tmp_path):
    env = backfill_env(tmp_path, start_ledger=100, end_ledger=10000001, parallel_ranges=0)
    with pytest.raises(ConfigError) as ei:
        load_config(None, env=env, for_backfill=True)
    assert not isinstance(ei.value, LedgerRangeError)
    assert len(problems_of(ei)) == 2


def test_buffered_storage_requires_bucket(tmp_path):
    env = {
        "STELLAR_RPC_SERVICE_DATA_DIR": str(tmp_path),
        "STELLAR_RPC_BACKFILL_START_LEDGER": "2",
        "STELLAR_RPC_BACKFILL_END_LEDGER": "10000001",
    }
    with pytest.raises(ConfigError, match="bucket_path is required"):
        load_config(None, env=env, for_backfill=True)
    env["STELLAR_RPC_BACKFILL_BUFFERED_STORAGE_BUCKET_PATH"] = "no-such-lake"
    with pytest.raises(ConfigError, match="no-such-lake is not an existing directory"):
        load_config(None, env=env, for_backfill=True)


def test_captive_core_requires_binary_and_config(tmp_path):
    env = backfill_env(tmp_path, start_ledger=2, end_ledger=10000001, ledger_backend="captive_core")
    with pytest.raises(ConfigError) as ei:
        load_config(None, env=env, for_backfill=True)
    ps = problems_of(ei)
    assert any("backfill.captive_core.binary_path is required" in p for p in ps)
    assert any("backfill.captive_core.config_path is required" in p for p in ps)
    assert len(ps) == 2


def test_captive_core_files_checked(tmp_path):
    binary = write(tmp_path / "core", "#!/bin/sh\n")
    binary.chmod(0o644)
    env = backfill_env(tmp_path, start_ledger=2, end_ledger=10000001, ledger_backend="captive_core")
    env["STELLAR_RPC_BACKFILL_CAPTIVE_CORE_BINARY_PATH"] = str(binary)
    env["STELLAR_RPC_BACKFILL_CAPTIVE_CORE_CONFIG_PATH"] = str(tmp_path / "missing.cfg")
    with pytest.raises(ConfigError) as ei:
        load_config(None, env=env, for_backfill=True)
    ps = problems_of(ei)
    assert any(f"{binary} is not executable" in p for p in ps), ps
    assert any("missing.cfg does not exist" in p for p in ps), ps
    binary.chmod(0o755)
    write(tmp_path / "missing.cfg", "X=1\n")
    cfg = load_config(None, env=env, for_backfill=True)
    assert cfg.backfill.captive_core.binary_path == binary


def test_captive_core_bare_name_found_on_path(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    binary = write(bindir / "stellar-core", "#!/bin/sh\n")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    env = backfill_env(tmp_path, start_ledger=2, end_ledger=10000001, ledger_backend="captive_core")
    env["STELLAR_RPC_BACKFILL_CAPTIVE_CORE_BINARY_PATH"] = "stellar-core"
    env["STELLAR_RPC_BACKFILL_CAPTIVE_CORE_CONFIG_PATH"] = str(write(tmp_path / "c.cfg", "X=1\n"))
    assert load_config(None, env=env, for_backfill=True).backfill.captive_core.binary_path == binary


# --- shipped files --------------------------------------------------------------------------------------------


def test_example_file_is_generated_text():
    assert (REPO / "config" / "example.toml").read_text() == example_config_text()


def test_example_parses_and_holds_defaults(tmp_path):
    f = write(tmp_path / "example.toml", example_config_text())
    cfg = load_config(f, env={}, for_backfill=False)
    base = default_config(cfg.service.data_dir)
    assert cfg.service == base.service
    assert cfg.rocksdb == base.rocksdb
    assert cfg.meta_store == base.meta_store and cfg.immutable_stores == base.immutable_stores
    assert cfg.backfill.buffered_storage.bucket_path.startswith("s3://")
    assert cfg.backfill.range_size == base.backfill.range_size
    # every key appears, set or commented out
    text = example_config_text()
    for key in KEYS:
        assert re.search(rf"^(# )?{key.name} = ", text, re.M), key.dotted


def test_uncommenting_every_example_key_still_parses(tmp_path):
    text = re.sub(r"^# (\w+ = )", r"\1", example_config_text(), flags=re.M)
    cfg = load_config(write(tmp_path / "full.toml", text), env={})
    assert cfg.backfill.start_ledger == 2 and cfg.backfill.end_ledger == 10000001


def test_demo_config_paths(tmp_path):
    cfg = load_config(REPO / "config" / "demo.toml", env={}, cwd=tmp_path)
    assert cfg.service.data_dir == REPO / "demo-data" / "data"
    assert cfg.backfill.buffered_storage.bucket_path == str(REPO / "demo-data" / "lake")
    assert (cfg.backfill.range_size, cfg.backfill.checkpoint_interval, cfg.backfill.parallel_ranges) == (10000, 1000, 2)
    assert cfg.backfill.ledger_backend == "buffered_storage"


def test_docs_reference_table_is_derived_from_keys():
    doc = (REPO / "docs" / "configuration.md").read_text()
    table = reference_table()
    assert table in doc, "docs/configuration.md Reference table differs from config.reference_table()"
    for key in KEYS:
        assert f"`{key.dotted}`" in table and f"`{key.env}`" in table, key.dotted


def test_config_error_is_input_error():
    assert issubclass(ConfigError, InputError) and ConfigError("x").exit_code == 2
