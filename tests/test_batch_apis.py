"""The per-batch ingest APIs: one Python-level call per batch of ledgers instead of per ledger.

Each is checked against its per-ledger counterpart on the same input: same stored bytes (chunk,
spill), same chain state, same ledger stream -- and the same errors at the same ledger."""

from __future__ import annotations

import random

import pytest

from rpcbackfill.config import PUBNET_PASSPHRASE, BufferedStorageConfig
from rpcbackfill.errors import LedgerAuthError, LedgerSequenceError, SourceError
from rpcbackfill.index import TxHashSpill
from rpcbackfill.ledgerauth import HashChain, verify_ledger
from rpcbackfill.ledgermath import CHUNK_SIZE, chunk_first_ledger
from rpcbackfill.paths import spill_shard_path
from rpcbackfill.records import NSHARDS
from rpcbackfill.sources.base import Ledger, LedgerBatchSource, iter_batches
from rpcbackfill.sources.datalake import DataLakeSource
from rpcbackfill.sources.layout import LakeSchema, write_lake
from rpcbackfill.sources.metered import MeteredSource
from rpcbackfill.stores import lfs
from tests.lib.ledgers import chain as make_chain

NET = PUBNET_PASSPHRASE


@pytest.fixture(scope="module")
def chain():
    return make_chain(2, 300)  # [(seq, lcm)], hash-chained


def _split(rnd: random.Random, n: int, most: int) -> list[int]:
    """Random batch lengths (1..most) summing to n."""
    out = []
    while n:
        k = min(n, rnd.randint(1, most))
        out.append(k)
        n -= k
    return out


# --- ChunkWriter.append_many ----------------------------------------------------------------------


@pytest.fixture(params=["one call", "runs", "per ledger"])
def multi_max(request, monkeypatch):
    """The compression paths of append_many: one multi_compress_to_buffer call per batch, runs of
    a few ledgers (and lone ledgers larger than the cap), or one call per ledger."""
    from rpcbackfill.stores.lfs import writer

    if request.param == "per ledger":
        monkeypatch.setattr(writer, "_MULTI_MAX_BYTES", 0)
    elif request.param == "runs":
        monkeypatch.setattr(writer, "_MULTI_MAX_BYTES", 20_000)
    return request.param


def test_append_many_writes_the_same_chunk_as_append(tmp_path, chain, multi_max):
    ledgers = [lcm for _, lcm in chain[:200]]
    first = chunk_first_ledger(0)
    with lfs.ChunkWriter(tmp_path / "one", 0, tmp_path / "w1") as w:
        for i, x in enumerate(ledgers):
            w.append(first + i, x)
        p1 = w.sync()
        w.finish(allow_partial=True)
    rnd = random.Random(5)
    with lfs.ChunkWriter(tmp_path / "many", 0, tmp_path / "w2") as w:
        seq = first
        for k in _split(rnd, len(ledgers), 40):
            views = [memoryview(x) for x in ledgers[seq - first : seq - first + k]]
            if k == 1 and rnd.random() < 0.5:
                w.append(seq, views[0])  # the two calls mix freely
            else:
                w.append_many(seq, views)
            seq += k
        w.append_many(seq, [])  # nothing: a no-op
        assert w.sync() == p1
        w.finish(allow_partial=True)
    for a, b in zip(lfs.chunk_paths(tmp_path / "one", 0), lfs.chunk_paths(tmp_path / "many", 0)):
        assert a.read_bytes() == b.read_bytes()
    assert lfs.verify_chunk(tmp_path / "many", 0, expect_ledgers=None).ledgers == 200


def test_append_many_resumes_like_append(tmp_path, chain):
    ledgers = [lcm for _, lcm in chain[:60]]
    first = chunk_first_ledger(0)
    w = lfs.ChunkWriter(tmp_path / "b", 0, tmp_path / "w")
    w.append_many(first, ledgers[:25])
    prog = w.sync()
    w.append_many(first + 25, ledgers[25:30])  # not synced: lost by the "crash"
    w.close()
    with lfs.ChunkWriter(tmp_path / "b", 0, tmp_path / "w", resume=prog) as w2:
        assert w2.next_ledger == first + 25
        w2.append_many(first + 25, ledgers[25:])
        w2.finish(allow_partial=True)
    with lfs.ChunkReader(tmp_path / "b", 0) as r:
        assert [x for _, x in r] == ledgers


def test_append_many_rejects_wrong_start_and_overflow(tmp_path, chain):
    ledgers = [lcm for _, lcm in chain[:3]]
    first = chunk_first_ledger(0)
    with lfs.ChunkWriter(tmp_path / "b", 0, tmp_path / "w") as w:
        with pytest.raises(LedgerSequenceError, match=f"expected {first}"):
            w.append_many(first + 1, ledgers)
        w._n = CHUNK_SIZE - 2  # noqa: SLF001 - position the writer at the chunk's end cheaply
        with pytest.raises(LedgerSequenceError, match="past its last ledger"):
            w.append_many(first + CHUNK_SIZE - 2, ledgers)


# --- TxHashSpill.add_many -------------------------------------------------------------------------


def test_spill_add_many_equals_add(tmp_path):
    rnd = random.Random(9)
    per_ledger = [rnd.randbytes(32 * rnd.choice([0, 1, 3, 7])) for _ in range(500)]
    one = TxHashSpill(tmp_path / "one")
    for i, h in enumerate(per_ledger):
        one.add(1000 + i, h)
    c1 = one.sync()
    one.close()
    many = TxHashSpill(tmp_path / "many")
    i = 0
    for k in _split(rnd, len(per_ledger), 60):
        many.add_many(1000 + i, per_ledger[i : i + k])
        i += k
    assert many.sync() == c1
    many.close()
    assert sum(c1) == sum(len(h) // 32 for h in per_ledger)
    for s in range(NSHARDS):
        assert spill_shard_path(tmp_path / "one", s).read_bytes() == spill_shard_path(tmp_path / "many", s).read_bytes()
    with pytest.raises(ValueError, match="uint32"):
        TxHashSpill(tmp_path / "x").add_many((1 << 32) - 1, [b"", b""])


# --- HashChain.add_many ---------------------------------------------------------------------------


def _authed(seq: int, lcm: bytes) -> Ledger:
    s, h, prev, hashes = verify_ledger(lcm)
    return Ledger(s, lcm, hashes, h, prev)


def test_chain_add_many_equals_add(chain):
    ledgers = [_authed(s, x) for s, x in chain[:50]]
    ledgers[20] = Ledger(ledgers[20].seq, ledgers[20].lcm, ledgers[20].tx_hashes)  # not authenticated by the source
    a, b = HashChain(), HashChain()
    for x in ledgers:
        a.add(x)
    b.add_many(ledgers[:17])
    b.add_many(ledgers[17:])
    assert (a.last_seq, a.last_hash, a.checked, a.unlinked) == (b.last_seq, b.last_hash, b.checked, b.unlinked)
    assert (b.checked, b.unlinked) == (50, 1)


def test_chain_add_many_breaks_where_add_breaks(chain):
    ledgers = [_authed(s, x) for s, x in chain[:10]]
    bad = ledgers[6]
    ledgers[6] = bad._replace(prev_hash=bytes(32))
    b = HashChain()
    with pytest.raises(LedgerAuthError, match=f"ledger {bad.seq}: broken hash chain"):
        b.add_many(ledgers)
    assert (b.last_seq, b.checked) == (ledgers[5].seq, 6)  # the ledgers before it stay linked


# --- DataLakeSource.get_batch / MeteredSource.get_batch / iter_batches ----------------------------


@pytest.fixture(scope="module", params=[1, 8])
def lake(request, tmp_path_factory, chain):
    root = tmp_path_factory.mktemp(f"lake{request.param}")
    write_lake(root, chain, LakeSchema(NET, ledgers_per_batch=request.param, batches_per_partition=4))
    return root


def _cfg(root) -> BufferedStorageConfig:
    return BufferedStorageConfig(bucket_path=str(root), buffer_size=16, num_workers=3, retry_limit=0)


def test_get_batch_is_the_get_ledger_stream(lake, chain):
    want = {s: x for s, x in chain}
    rnd = random.Random(11)
    first, last = 7, 260
    with DataLakeSource(_cfg(lake), NET) as src:
        assert isinstance(src, LedgerBatchSource)
        src.prepare_range(first, last)
        got: list[Ledger] = []
        seq = first
        while seq <= last:
            if rnd.random() < 0.2:
                got.append(src.get_ledger(seq))
            else:
                k = rnd.randint(1, 50)
                b = src.get_batch(seq, k)
                assert 1 <= len(b) <= k
                got += b
            seq = got[-1].seq + 1
        with pytest.raises(SourceError):
            src.get_batch(last + 1, 5)  # beyond the prepared range
    assert [x.seq for x in got] == list(range(first, last + 1))
    assert all(bytes(x.lcm) == want[x.seq] for x in got)


def test_get_batch_out_of_order_raises(lake):
    with DataLakeSource(_cfg(lake), NET) as src:
        src.prepare_range(2, 50)
        b = src.get_batch(2, 5)  # 1 to 5 ledgers: as many as the workers had ready
        nxt = b[-1].seq + 1
        for wrong in (nxt - 1, nxt + 1):  # behind and ahead of the stream
            with pytest.raises(LedgerSequenceError, match="out of order"):
                src.get_batch(wrong, 5)
        assert src.get_batch(nxt, 5)[0].seq == nxt  # the right call still works


def test_metered_batches_count_every_ledger(lake, chain):
    with MeteredSource(DataLakeSource(_cfg(lake), NET), "buffered_storage") as src:
        src.prepare_range(2, 201)
        batches = list(iter_batches(src, 2, 201, 64))
        snap = src.snapshot()
    assert [x.seq for b in batches for x in b] == list(range(2, 202))
    assert max(map(len, batches)) <= 64
    assert snap.fetches == 200 == sum(snap.fetch_buckets)
    assert snap.bytes_read > 0
