"""The template ledgers shipped in the package (for `make demo` on a fresh machine) are the
same ledgers as the shared fixtures, and yield the same templates."""

from __future__ import annotations

import base64

from rpcbackfill.devtools import templates as t


def test_packaged_templates_equal_fixture_templates(fixtures_dir):
    packaged = t._load_pubnet_templates(str(t.PACKAGED_TEMPLATES_DIR))
    shared = t._load_pubnet_templates(str(fixtures_dir))
    assert len(packaged.txs) == len(shared.txs) > 0
    assert packaged.txs == shared.txs
    assert packaged.skeleton == shared.skeleton


def test_packaged_ledger_bytes_identical_to_fixtures(fixtures_dir):
    d = t.PACKAGED_TEMPLATES_DIR
    assert (d / t.PUBNET_V1_FILE).read_bytes() == (fixtures_dir / t.PUBNET_V1_FILE).read_bytes()
    packaged_lines = t._read_ttp_text(d / t.PUBNET_TTP_FILE).split()
    shared_lines = (fixtures_dir / t.PUBNET_TTP_FILE).read_text().split()
    assert [base64.b64decode(x) for x in packaged_lines] == [base64.b64decode(x) for x in shared_lines]


def test_default_dir_falls_back_to_packaged(monkeypatch, tmp_path):
    monkeypatch.delenv("RPCBACKFILL_FIXTURES", raising=False)
    monkeypatch.setattr(t, "__file__", str(tmp_path / "a" / "b" / "c" / "templates.py"))
    assert t.default_templates_dir() == t.PACKAGED_TEMPLATES_DIR
