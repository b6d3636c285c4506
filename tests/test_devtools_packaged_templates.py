"""The template ledgers shipped in the package (for `make demo` on a fresh machine) are the
same ledgers as the test fixtures (tests/fixtures/), and yield the same templates."""

from __future__ import annotations

import base64

from rpcbackfill.devtools import templates as t


def test_packaged_templates_equal_fixture_templates(fixtures_dir):
    packaged = t._load_pubnet_templates(str(t.PACKAGED_TEMPLATES_DIR))
    fixture = t._load_pubnet_templates(str(fixtures_dir))
    assert len(packaged.txs) == len(fixture.txs) > 0
    assert packaged.txs == fixture.txs
    assert packaged.skeleton == fixture.skeleton


def test_packaged_ledger_bytes_identical_to_fixtures(fixtures_dir):
    d = t.PACKAGED_TEMPLATES_DIR
    assert (d / t.PUBNET_V1_FILE).read_bytes() == (fixtures_dir / t.PUBNET_V1_FILE).read_bytes()
    packaged_lines = t._read_ttp_text(d / t.PUBNET_TTP_FILE).split()
    fixture_lines = (fixtures_dir / t.PUBNET_TTP_FILE).read_text().split()
    assert [base64.b64decode(x) for x in packaged_lines] == [base64.b64decode(x) for x in fixture_lines]


def test_default_templates_are_the_packaged_ones():
    assert t.load_pubnet_templates() is t._load_pubnet_templates(str(t.PACKAGED_TEMPLATES_DIR.resolve()))
