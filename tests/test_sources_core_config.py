"""The per-range stellar-core configuration the driver generates from the operator's file."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpcbackfill.config import PUBNET_PASSPHRASE, TESTNET_PASSPHRASE
from rpcbackfill.errors import CorePreflightError
from rpcbackfill.sources import core_config
from rpcbackfill.sources.core_config import (
    DEFAULT_KEYS,
    FORCED_KEYS,
    META_FLAGS,
    CoreToml,
    archive_get_command,
    archive_url_of,
    dumps,
)
from tests.lib.core import pubnet_shaped

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

NET = PUBNET_PASSPHRASE
HIST = "curl -sf https://archive.example/{name}/{0} -o {1}"


def load(tmp_path: Path, text: str, urls: tuple[str, ...] = ()) -> CoreToml:
    p = tmp_path / "core.cfg"
    p.write_text(text)
    return CoreToml.load(p, network_passphrase=NET, history_archive_urls=urls)


def test_pubnet_shaped_file_gets_the_driver_keys_and_keeps_the_rest(tmp_path):
    text = pubnet_shaped(HIST)
    operator = tomllib.loads(text)
    ct = load(tmp_path, text)
    out = tomllib.loads(ct.render("range 3"))
    assert out["DATABASE"] == "sqlite3://stellar.db" and out["BUCKET_DIR_PATH"] == "buckets"
    assert out["NETWORK_PASSPHRASE"] == NET
    for k, v in FORCED_KEYS.items():
        assert out[k] == v and type(out[k]) is type(v), k
    for k in META_FLAGS:
        assert out[k] is True, k
    for k, v in DEFAULT_KEYS.items():
        assert out[k] == v
    # the operator's quorum and archives, untouched
    assert out["VALIDATORS"] == operator["VALIDATORS"] and out["HOME_DOMAINS"] == operator["HOME_DOMAINS"]
    assert out["PEER_PORT"] == 11725
    assert "HISTORY" not in out and "QUORUM_SET" not in out
    # what was replaced is said
    assert any(n.startswith("HTTP_PORT = 11626") for n in ct.notes)
    assert any(n.startswith("FAILURE_SAFETY = 1") for n in ct.notes)
    assert ct.archive_url == "https://archive.example/org0_0"


@pytest.mark.parametrize("key, value", [("DATABASE", '"sqlite3://stellar.db"'), ("BUCKET_DIR_PATH", '"buckets"')])
def test_per_range_keys_are_refused(tmp_path, key, value):
    with pytest.raises(CorePreflightError, match=f"sets {key}: rpcbackfill gives every range its own {key}"):
        load(tmp_path, pubnet_shaped(HIST, extra=f"{key} = {value}"))


def test_network_passphrase_must_match(tmp_path):
    text = pubnet_shaped(HIST).replace(NET, TESTNET_PASSPHRASE)
    with pytest.raises(CorePreflightError, match="NETWORK_PASSPHRASE 'Test SDF Network"):
        load(tmp_path, text)
    no_passphrase = "\n".join(x for x in pubnet_shaped(HIST).splitlines() if not x.startswith("NETWORK_PASSPHRASE"))
    assert load(tmp_path, no_passphrase).values["NETWORK_PASSPHRASE"] == NET


@pytest.mark.parametrize("flag", META_FLAGS)
def test_meta_flag_set_false_is_refused(tmp_path, flag):
    with pytest.raises(CorePreflightError, match=f"sets {flag} = false: captive-core ledgers would differ"):
        load(tmp_path, pubnet_shaped(HIST, extra=f"{flag} = false"))
    assert load(tmp_path, pubnet_shaped(HIST, extra=f"{flag} = true")).values[flag] is True


def test_operator_defaults_win_over_driver_defaults(tmp_path):
    ct = load(tmp_path, pubnet_shaped(HIST, extra="BUCKETLIST_DB_MEMORY_FOR_CACHING = 3000"))
    assert ct.values["BUCKETLIST_DB_MEMORY_FOR_CACHING"] == 3000


def test_history_archive_urls_fill_a_file_without_history(tmp_path):
    text = f'NETWORK_PASSPHRASE = "{NET}"\n'
    with pytest.raises(CorePreflightError, match="names no history archive"):
        load(tmp_path, text)
    ct = load(tmp_path, text, ("https://a.example/x", "file:///srv/archive"))
    assert ct.values["HISTORY"] == {
        "h0": {"get": "curl -sf https://a.example/x/{0} -o {1}"},
        "h1": {"get": "cp /srv/archive/{0} {1}"},
    }
    assert ct.archive_url == "https://a.example/x"
    # no quorum at all: a placeholder quorum set core can start with
    assert ct.values["QUORUM_SET"]["VALIDATORS"] == [core_config.PLACEHOLDER_VALIDATOR]
    # a file with its own archives keeps them (and has them checked); history_archive_urls are not used
    ct = load(tmp_path, pubnet_shaped(HIST), ("https://b.example",))
    assert "HISTORY" not in ct.values and ct.archive_url == "https://archive.example/org0_0"
    assert any("history_archive_urls not used" in n for n in ct.notes)


def test_history_table_archives_come_first(tmp_path):
    text = pubnet_shaped(HIST) + '\n[HISTORY.mine]\nget = "cp /data/archive/{0} {1}"\n'
    assert load(tmp_path, text).archive_url == "file:///data/archive"


@pytest.mark.parametrize(
    "command, url",
    [
        ("curl -sf https://h.example/prd/core_live_001/{0} -o {1}", "https://h.example/prd/core_live_001"),
        ("wget -q http://10.0.0.1:8000/{0} -O {1}", "http://10.0.0.1:8000"),
        ("cp /var/archive/{0} {1}", "file:///var/archive"),
        ("aws s3 cp s3://bucket/archive/{0} {1}", None),
        ("curl -sf 'https://unterminated/{0} -o {1}", None),
        ("my-fetcher {0} {1}", None),
    ],
)
def test_archive_url_of_get_commands(command, url):
    assert archive_url_of(command) == url


def test_archive_get_command_round_trips():
    for url in ("https://h.example/a/b", "file:///srv/my archive"):
        assert archive_url_of(archive_get_command(url)) == url


def test_invalid_operator_file(tmp_path):
    with pytest.raises(CorePreflightError, match="invalid TOML"):
        load(tmp_path, "NETWORK_PASSPHRASE = \n")
    with pytest.raises(CorePreflightError, match="cannot read captive-core config"):
        CoreToml.load(tmp_path / "absent.cfg", network_passphrase=NET)


# --- the TOML writer -------------------------------------------------------------------------------

keys = st.text(min_size=1, max_size=12)
scalars = (
    st.text(max_size=20)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.booleans()
    | st.floats(allow_nan=False)
)
arrays = st.lists(scalars, max_size=4) | st.lists(st.lists(st.integers(), max_size=3), max_size=3)


def tables(depth: int):
    leaf = st.dictionaries(keys, scalars | arrays, max_size=4)
    if depth == 0:
        return leaf
    sub = tables(depth - 1)
    return st.dictionaries(keys, scalars | arrays | sub | st.lists(sub, min_size=1, max_size=3), max_size=5)


@settings(max_examples=300, deadline=None)
@given(doc=tables(2))
def test_dumps_round_trips_through_tomllib(doc):
    assert tomllib.loads(dumps(doc)) == doc


def test_dumps_special_values():
    doc = {
        "s": 'a "quoted" \\ back\tslash\n\x01\x7f',
        "weird key": 1,
        "inf": math.inf,
        "ninf": -math.inf,
        "HISTORY": {"h.0": {"get": "curl {0} -o {1}"}},
        "empty": {},
        "A": [{"B": [{"C": 1}]}],
    }
    text = dumps(doc)
    assert tomllib.loads(text) == doc
    assert "[[A]]" in text and "[[A.B]]" in text and '[HISTORY."h.0"]' in text


# --- the archive's latest checkpoint (pre-flight) ---------------------------------------------------


def test_archive_latest_ledger_over_http_and_file(tmp_path):
    from rpcbackfill.sources.captive_core import archive_latest_ledger
    from tests.lib.core import make_archive, serve_dir

    archive = make_archive(tmp_path / "a", 12345, NET)
    assert archive_latest_ledger(f"file://{archive}", NET) == 12345
    with serve_dir(tmp_path) as url:
        assert archive_latest_ledger(f"{url}/a", NET) == 12345
        assert archive_latest_ledger(f"{url}/a/", NET) == 12345
        with pytest.raises(
            CorePreflightError,
            match=r"cannot read history archive state .*/b/\.well-known/stellar-history\.json: HTTP 404",
        ):
            archive_latest_ledger(f"{url}/b", NET)
        with pytest.raises(CorePreflightError, match="is of network 'Public Global"):
            archive_latest_ledger(f"{url}/a", TESTNET_PASSPHRASE)
    state = archive / ".well-known" / "stellar-history.json"
    for body, why in (
        ("{", "not valid"),
        ('{"version": 2}', "not valid: 'currentLedger'"),
        ('{"currentLedger": "63"}', "currentLedger is '63'"),
        ("[]", "not valid"),
    ):
        state.write_text(body)
        with pytest.raises(CorePreflightError, match=why):
            archive_latest_ledger(f"file://{archive}", NET)
    with pytest.raises(CorePreflightError, match="cannot read history archive state"):
        archive_latest_ledger(f"file://{tmp_path / 'absent'}", NET)
