"""Data-lake layout (spec section 5): keys, manifest, batch encoding, local writer."""

from __future__ import annotations

import io
import json
import os
import struct

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from rpcbackfill.config import PUBNET_PASSPHRASE, TESTNET_PASSPHRASE
from rpcbackfill.errors import LakeConfigError
from rpcbackfill.sources import layout
from rpcbackfill.sources.layout import LakeSchema, batch_start, object_key, write_lake
from tests.lib.ledgers import chain as make_chain
from tests.lib.ledgers import iter_chain
from tests.lib.oracle import sdk_seq_and_hashes, sdk_split_batch


def _decompress(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()


def test_spec_example_key():
    s = LakeSchema(PUBNET_PASSPHRASE)
    assert object_key(50000000, s) == "FD054DFF--49984000-50047999/FD050F7F--50000000.xdr.zst"
    assert batch_start(50000000, s) == 50000000


def test_fixture_file_names(fixtures_dir):
    # Fixture files come from real lakes with one ledger per file and no partitions.
    names = sorted(p.name for p in fixtures_dir.glob("F*.xdr.zst*"))
    assert names
    for name in names:
        start, end, ext = layout.parse_file_name(name)
        assert start == end
        s = LakeSchema(PUBNET_PASSPHRASE, ledgers_per_batch=1, batches_per_partition=1, file_ext=ext)
        assert object_key(start, s) == name


def test_multi_ledger_names():
    s = LakeSchema(PUBNET_PASSPHRASE, ledgers_per_batch=64, batches_per_partition=10)
    # 640 ledgers per partition; ledger 700 is in partition 640..1279, file 640..703
    assert layout.partition_prefix(700, s) == f"{0xFFFFFFFF - 640:08X}--640-1279/"
    assert layout.file_name(700, s) == f"{0xFFFFFFFF - 640:08X}--640-703.xdr.zst"
    assert batch_start(700, s) == 640 and batch_start(703, s) == 640 and batch_start(704, s) == 704
    assert list(layout.batch_starts(2, 130, s)) == [0, 64, 128]
    assert list(layout.batch_starts(5, 4, s)) == []
    # hex is uppercase
    assert object_key(10, LakeSchema("x", 1, 1)) == "FFFFFFF5--10.xdr.zst"


@settings(max_examples=300, deadline=None)
@given(
    seq=st.integers(0, 0xFFFFFFFF - 64 * 64000),
    lpb=st.integers(1, 64),
    bpp=st.integers(1, 64000),
    legacy=st.booleans(),
)
def test_key_properties(seq, lpb, bpp, legacy):
    s = LakeSchema("net", lpb, bpp, file_ext=layout.LEGACY_FILE_EXT if legacy else layout.FILE_EXT)
    key = object_key(seq, s)
    parts = key.split("/")
    assert len(parts) == (2 if bpp > 1 else 1)
    start, end, ext = layout.parse_file_name(parts[-1])
    assert ext == s.file_ext
    assert start <= seq <= end and end - start + 1 == lpb and start % lpb == 0
    assert ("-" in parts[-1][10:]) == (lpb > 1)
    if bpp > 1:
        pstart, pend = layout.parse_partition_name(parts[0])
        assert pstart <= start and end <= pend and pend - pstart + 1 == lpb * bpp
    # every ledger of the same file maps to the same key
    assert object_key(start, s) == key and object_key(end, s) == key
    # a key never contradicts its own schema, and does contradict a different layout
    assert layout.first_key_contradicting([".config.json", key], s) is None
    other = LakeSchema("net", lpb + 1, bpp)
    assert layout.first_key_contradicting([key], other) == (None if object_key(start, other) == key else key)


@settings(max_examples=200, deadline=None)
@given(
    lpb=st.integers(1, 64),
    bpp=st.integers(1, 50),
    legacy=st.booleans(),
    walks=st.lists(st.tuples(st.integers(0, 0xFFFFFFFF), st.integers(1, 300)), min_size=1, max_size=4),
)
def test_object_keys_cache_agrees_with_object_key(lpb, bpp, legacy, walks):
    """The per-partition cache of ObjectKeys gives object_key's answer for in-order walks across
    partition edges, jumps back and forth, and the top of the uint32 range."""
    s = LakeSchema("net", lpb, bpp, file_ext=layout.LEGACY_FILE_EXT if legacy else layout.FILE_EXT)
    keys = layout.ObjectKeys(s)
    for seq, n in walks:
        for start in layout.batch_starts(seq, min(seq + n, 0xFFFFFFFF), s):
            assert keys(start) == object_key(start, s)
    with pytest.raises(ValueError):
        keys(-1)
    if lpb > 1:
        with pytest.raises(ValueError, match="not a file boundary"):
            keys(lpb * 1000 + 1)


def test_parse_names_reject_inconsistent():
    assert layout.parse_file_name("FD050F7F--50000000.xdr.zst") == (50000000, 50000000, ".xdr.zst")
    assert layout.parse_file_name("FD050F7E--50000000.xdr.zst") is None  # hex disagrees
    assert layout.parse_file_name("fd050f7f--50000000.xdr.zst") is None  # lowercase hex
    assert layout.parse_file_name("FD050F7F--50000000.xdr.gz") is None
    assert layout.parse_file_name(".config.json") is None
    assert layout.parse_partition_name("FD054DFF--49984000-50047999/") == (49984000, 50047999)
    assert layout.parse_partition_name("FD054DFF--49984000") is None


def test_schema_validation():
    with pytest.raises(LakeConfigError, match="ledgers_per_batch"):
        LakeSchema("n", ledgers_per_batch=0)
    with pytest.raises(LakeConfigError, match="compression"):
        LakeSchema("n", compression="gzip")
    with pytest.raises(LakeConfigError, match="networkPassphrase"):
        LakeSchema("")
    with pytest.raises(LakeConfigError, match="file_ext"):
        LakeSchema("n", file_ext=".xdr")


def test_manifest_round_trip(tmp_path):
    s = LakeSchema(TESTNET_PASSPHRASE, ledgers_per_batch=8, batches_per_partition=100)
    layout.write_manifest(tmp_path, s)
    d = json.loads((tmp_path / ".config.json").read_text())
    assert d == {
        "networkPassphrase": TESTNET_PASSPHRASE,
        "version": "1.0",
        "compression": "zstd",
        "ledgersPerBatch": 8,
        "batchesPerPartition": 100,
    }
    assert layout.read_manifest(tmp_path) == s


@pytest.mark.parametrize(
    "content,match",
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "expected a JSON object"),
        (b'{"networkPassphrase": "x", "ledgersPerBatch": 1}', "missing 'batchesPerPartition'"),
        (b'{"networkPassphrase": "x", "ledgersPerBatch": "1", "batchesPerPartition": 1}', "ledgers_per_batch"),
        (b'{"networkPassphrase": "x", "ledgersPerBatch": 1, "batchesPerPartition": 1, "compression": "lz4"}', "lz4"),
    ],
)
def test_manifest_errors(tmp_path, content, match):
    (tmp_path / ".config.json").write_bytes(content)
    with pytest.raises(LakeConfigError, match=match) as ei:
        layout.read_manifest(tmp_path)
    assert ".config.json" in str(ei.value)


def test_manifest_missing(tmp_path):
    with pytest.raises(LakeConfigError, match="manifest not found"):
        layout.read_manifest(tmp_path)


def test_encode_batch_matches_real_galexie_file(fixtures_dir, fixture_ledgers):
    # FCD285FF--53312000.xdr.zstd is a real Galexie object: our batch bytes must equal its content.
    raw = _decompress((fixtures_dir / "FCD285FF--53312000.xdr.zstd").read_bytes())
    lcm = next(f.lcm for f in fixture_ledgers if f.seq == 53312000)
    assert layout.encode_batch(53312000, [lcm]) == raw
    assert struct.unpack_from(">III", raw) == (53312000, 53312000, 1)  # LedgerCloseMetaBatch header


def test_write_lake_reproduces_fixture_bucket(tmp_path, fixtures_dir, fixture_ledgers):
    # ledgers 997..999 are a consecutive run in a real testnet bucket: rewrite and compare.
    lcms = {f.seq: f.lcm for f in fixture_ledgers if f.source.startswith("FFFFFC")}
    assert sorted(lcms) == [997, 998, 999]
    s = LakeSchema(TESTNET_PASSPHRASE, 1, 1)
    st_ = write_lake(tmp_path, sorted(lcms.items()), s)
    assert (st_.first, st_.last, st_.files, st_.ledgers) == (997, 999, 3, 3)
    for seq in (997, 998, 999):
        name = object_key(seq, s)
        ours = _decompress((tmp_path / name).read_bytes())
        theirs = _decompress((fixtures_dir / name).read_bytes())
        assert ours == theirs


@pytest.mark.parametrize("lpb,bpp,first,count", [(1, 64000, 2, 5), (4, 3, 2, 30), (64, 1, 100, 200), (3, 2, 7, 1)])
def test_write_lake_layout(tmp_path, lpb, bpp, first, count):
    s = LakeSchema(PUBNET_PASSPHRASE, lpb, bpp)
    ledgers = make_chain(first, count)
    stats = write_lake(tmp_path, iter(ledgers), s, content_size=False)
    want_files = {object_key(q, s) for q, _ in ledgers}
    got_files = {
        os.path.relpath(os.path.join(d, f), tmp_path)
        for d, _, fs in os.walk(tmp_path)
        for f in fs
        if f != ".config.json"
    }
    assert got_files == want_files and stats.files == len(want_files)
    assert layout.read_manifest(tmp_path) == s
    seen = []
    for key in sorted(want_files, key=lambda k: layout.parse_file_name(k.split("/")[-1])[0]):
        data = (tmp_path / key).read_bytes()
        # no content size in the frame header when asked
        assert zstandard.get_frame_parameters(data).content_size == zstandard.CONTENTSIZE_UNKNOWN
        start, end, metas = sdk_split_batch(_decompress(data))
        fstart, fend, _ = layout.parse_file_name(key.split("/")[-1])
        assert fstart <= start <= end <= fend
        assert [sdk_seq_and_hashes(m)[0] for m in metas] == list(range(start, end + 1))
        seen.extend(metas)
    assert seen == [lcm for _, lcm in ledgers]
    assert stats.compressed_bytes == sum((tmp_path / k).stat().st_size for k in want_files)
    # no temp files left behind
    assert not [f for _, _, fs in os.walk(tmp_path) for f in fs if f.endswith(".tmp")]


def test_write_lake_rejects_gap(tmp_path):
    ledgers = make_chain(10, 3)
    with pytest.raises(ValueError, match="consecutive"):
        write_lake(tmp_path, [ledgers[0], ledgers[2]], LakeSchema("n", 1, 1))
    assert not (tmp_path / ".config.json").exists()  # an incomplete lake has no manifest


def test_detect_legacy_extension(tmp_path):
    s = LakeSchema("n", 2, 4, file_ext=layout.LEGACY_FILE_EXT)
    write_lake(tmp_path, iter_chain(40, 10), s)
    assert layout.detect_local_file_ext(tmp_path) == ".xdr.zstd"
    assert layout.read_manifest(tmp_path).file_ext == ".xdr.zstd"
    s1 = LakeSchema("n", 1, 1, file_ext=layout.LEGACY_FILE_EXT)
    write_lake(tmp_path / "flat", iter_chain(40, 2), s1)
    assert layout.read_manifest(tmp_path / "flat") == s1
