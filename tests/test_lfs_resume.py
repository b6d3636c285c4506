"""Crash safety of the LFS chunk writer: resume from a synced progress, atomic publish,
finished chunks never rewritten, damaged partials refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import rpcbackfill
from rpcbackfill.errors import CorruptStoreError, LedgerSequenceError, StoreError, UnsupportedFormatError
from rpcbackfill.ledgermath import CHUNK_SIZE, chunk_first_ledger
from rpcbackfill.paths import chunk_partial_paths
from rpcbackfill.stores import lfs
from rpcbackfill.stores.lfs import writer as lfs_writer
from tests.lib.lfs import make_ledgers

N = 200  # ledgers per test chunk (finished with allow_partial) -- keeps crash loops fast
SYNC_EVERY = 50
FIRST = chunk_first_ledger(6)


@pytest.fixture(scope="module")
def ledgers():
    return make_ledgers(FIRST, N)


@pytest.fixture(scope="module")
def expected(ledgers):
    return b"".join(lfs.compress_ledger(x) for x in ledgers)


def _finish_from(base, work, ledgers, progress):
    with lfs.ChunkWriter(base, 6, work, resume=progress) as w:
        start = progress.ledgers if progress else 0
        assert w.next_ledger == FIRST + start
        for k in range(start, len(ledgers)):
            w.append(FIRST + k, ledgers[k])
        return w.finish(allow_partial=True)


def _assert_chunk(base, expected, ledgers, work):
    d, _ = lfs.chunk_paths(base, 6)
    assert d.read_bytes() == expected
    assert lfs.verify_chunk(base, 6, expect_ledgers=N) == lfs.ChunkStats(N, len(expected), sum(map(len, ledgers)))
    assert sorted(os.listdir(work)) == []  # partials removed


@pytest.mark.parametrize("tail", ["none", "unsynced", "garbage"])
def test_resume_at_many_points(tmp_path, ledgers, expected, tail):
    """Stop after every 13th ledger; what was appended after the last sync (plus optional
    junk on both partials) is dropped by the resume, and the result is byte-exact."""
    for crash_at in range(0, N + 1, 13):
        base, work = tmp_path / f"b{crash_at}", tmp_path / f"w{crash_at}"
        w = lfs.ChunkWriter(base, 6, work)
        progress = None
        for k in range(crash_at):
            w.append(FIRST + k, ledgers[k])
            if (k + 1) % SYNC_EVERY == 0:
                progress = w.sync()
        if tail != "none":
            w.close()  # flushes the unsynced tail into the partial, beyond the progress
        if tail == "garbage":
            for p in chunk_partial_paths(work, 6):
                with open(p, "ab") as f:
                    f.write(os.urandom(77))
        del w
        assert not lfs.chunk_exists(base, 6)
        _finish_from(base, work, ledgers, progress)
        _assert_chunk(base, expected, ledgers, work)


_CHILD = textwrap.dedent(
    """
    import json, os, struct, sys
    from rpcbackfill.stores import lfs
    base, work, payload, prog_file, crash_at, resume = sys.argv[1:7]
    crash_at = int(crash_at)
    blob = open(payload, "rb").read()
    ledgers, pos = [], 0
    while pos < len(blob):
        (n,) = struct.unpack_from("<I", blob, pos)
        ledgers.append(blob[pos + 4 : pos + 4 + n])
        pos += 4 + n
    progress = lfs.ChunkProgress(**json.load(open(prog_file))) if resume == "1" else None
    w = lfs.ChunkWriter(base, 6, work, resume=progress)
    start = progress.ledgers if progress else 0
    for k in range(start, len(ledgers)):
        if k == crash_at:
            os._exit(9)  # a crash: no flush, no close, no cleanup
        w.append(%d + k, ledgers[k])
        if (k + 1) %% %d == 0:
            p = w.sync()
            tmp = prog_file + ".tmp"
            with open(tmp, "w") as f:
                json.dump({"chunk_id": p.chunk_id, "ledgers": p.ledgers, "data_bytes": p.data_bytes}, f)
            os.replace(tmp, prog_file)  # the "checkpoint"
    w.finish(allow_partial=True)
    """  # noqa: UP031  (a code template: its own braces would need doubling for format())
    % (FIRST, SYNC_EVERY)
)


@pytest.mark.slow
def test_resume_after_process_crashes(tmp_path, ledgers, expected):
    """Real processes killed (os._exit) at several points, each resumed by the next one."""
    payload = tmp_path / "payload"
    payload.write_bytes(b"".join(len(x).to_bytes(4, "little") + x for x in ledgers))
    base, work, prog = tmp_path / "b", tmp_path / "w", tmp_path / "progress.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(rpcbackfill.__file__).parents[1])] + sys.path))
    for crash_at in (0, 37, 50, 51, 149, 199, N + 1):  # N + 1: no crash, finish
        r = subprocess.run(
            [
                sys.executable,
                "-c",
                _CHILD,
                str(base),
                str(work),
                str(payload),
                str(prog),
                str(crash_at),
                "1" if prog.exists() else "0",
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        assert r.returncode == (0 if crash_at > N else 9), r.stderr
        if crash_at <= N:
            assert not lfs.chunk_exists(base, 6)
    _assert_chunk(base, expected, ledgers, work)
    assert json.loads(prog.read_text())["ledgers"] == N


def test_resume_full_chunk(tmp_path, full_chunk):
    base_ref, ledgers, stats = full_chunk
    first = chunk_first_ledger(3)
    w = lfs.ChunkWriter(tmp_path / "b", 3, tmp_path / "w")
    for k in range(7000):
        w.append(first + k, ledgers[k])
        if (k + 1) % 1000 == 0:
            progress = w.sync()
    for k in range(7000, 7500):
        w.append(first + k, ledgers[k])
    w.close()
    w2 = lfs.ChunkWriter(tmp_path / "b", 3, tmp_path / "w", resume=progress)
    assert w2.next_ledger == first + 7000
    for k in range(7000, CHUNK_SIZE):
        w2.append(first + k, ledgers[k])
    assert w2.finish() == stats  # raw_bytes include the ledgers compressed before the crash
    for a, b in zip(lfs.chunk_paths(tmp_path / "b", 3), lfs.chunk_paths(base_ref, 3)):
        assert a.read_bytes() == b.read_bytes()


# --- damaged or mismatched partials ------------------------------------------------------------


def _synced(tmp_path, ledgers, n=100):
    w = lfs.ChunkWriter(tmp_path / "b", 6, tmp_path / "w")
    for k in range(n):
        w.append(FIRST + k, ledgers[k])
    p = w.sync()
    w.close()
    return p


def test_truncated_partials_refused(tmp_path, ledgers):
    p = _synced(tmp_path, ledgers)
    dp, op = chunk_partial_paths(tmp_path / "w", 6)
    os.truncate(dp, p.data_bytes - 1)
    with pytest.raises(CorruptStoreError, match=f"progress records {p.data_bytes}"):
        lfs.ChunkWriter(tmp_path / "b", 6, tmp_path / "w", resume=p)
    p = _synced(tmp_path, ledgers)
    os.truncate(op, 16 + 16 * 99)
    with pytest.raises(CorruptStoreError, match="progress records 100 ledgers"):
        lfs.ChunkWriter(tmp_path / "b", 6, tmp_path / "w", resume=p)


def test_missing_partials_refused(tmp_path, ledgers):
    p = _synced(tmp_path, ledgers)
    chunk_partial_paths(tmp_path / "w", 6)[0].unlink()
    with pytest.raises(CorruptStoreError, match="missing"):
        lfs.ChunkWriter(tmp_path / "b", 6, tmp_path / "w", resume=p)


def test_flipped_byte_in_synced_data_refused(tmp_path, ledgers):
    p = _synced(tmp_path, ledgers)
    dp, _ = chunk_partial_paths(tmp_path / "w", 6)
    b = bytearray(dp.read_bytes())
    b[p.data_bytes // 2] ^= 0x01
    dp.write_bytes(bytes(b))
    with pytest.raises(CorruptStoreError, match="CRC"):
        lfs.ChunkWriter(tmp_path / "b", 6, tmp_path / "w", resume=p)


@pytest.mark.parametrize("damage", ["magic", "version", "chunk", "offsets", "random"])
def test_garbage_offsets_partial(tmp_path, ledgers, expected, damage):
    p = _synced(tmp_path, ledgers)
    _, op = chunk_partial_paths(tmp_path / "w", 6)
    b = bytearray(op.read_bytes())
    if damage == "magic":
        b[0] ^= 0xFF
    elif damage == "version":
        b[8] = 9
    elif damage == "chunk":
        b[12] = 7
    elif damage == "offsets":
        b[16 + 16 * 40 : 16 + 16 * 40 + 8] = (10**6).to_bytes(8, "little")
    else:
        b = bytearray(os.urandom(len(b)))
    op.write_bytes(bytes(b))
    err = UnsupportedFormatError if damage == "version" else CorruptStoreError
    with pytest.raises(err):
        lfs.ChunkWriter(tmp_path / "b", 6, tmp_path / "w", resume=p)
    # Without progress the garbage is discarded and the chunk rewritten from its first ledger.
    _finish_from(tmp_path / "b", tmp_path / "w", ledgers, None)
    _assert_chunk(tmp_path / "b", expected, ledgers, tmp_path / "w")


def test_progress_arguments_checked(tmp_path, ledgers):
    p = _synced(tmp_path, ledgers)
    with pytest.raises(ValueError, match="chunk 6, not chunk 5"):
        lfs.ChunkWriter(tmp_path / "b", 5, tmp_path / "w", resume=p)
    with pytest.raises(ValueError):
        lfs.ChunkWriter(tmp_path / "b", 6, tmp_path / "w", resume=lfs.ChunkProgress(6, CHUNK_SIZE + 1, 5))
    with pytest.raises(CorruptStoreError, match="disagree"):
        lfs.ChunkWriter(tmp_path / "b", 6, tmp_path / "w", resume=lfs.ChunkProgress(6, 100, p.data_bytes - 3))


def test_zero_progress_restarts(tmp_path, ledgers, expected):
    _synced(tmp_path, ledgers)
    _finish_from(tmp_path / "b", tmp_path / "w", ledgers, lfs.ChunkProgress(6, 0, 0))
    _assert_chunk(tmp_path / "b", expected, ledgers, tmp_path / "w")


# --- atomic publish, never rewrite ------------------------------------------------------------


def test_no_final_file_until_finish(tmp_path, ledgers):
    base = tmp_path / "b"
    d, i = lfs.chunk_paths(base, 6)
    with lfs.ChunkWriter(base, 6, tmp_path / "w") as w:
        for k in range(N):
            w.append(FIRST + k, ledgers[k])
            if k % 40 == 0:
                w.sync()
            assert not d.exists() and not i.exists()
        w.finish(allow_partial=True)
    assert lfs.chunk_exists(base, 6)
    assert sorted(p.name for p in d.parent.iterdir()) == [d.name, i.name]  # no temp files


def test_crash_between_data_and_index_publish(tmp_path, ledgers, expected, monkeypatch):
    base, work = tmp_path / "b", tmp_path / "w"
    w = lfs.ChunkWriter(base, 6, work)
    checkpoints = {}
    for k in range(N):
        w.append(FIRST + k, ledgers[k])
        if (k + 1) % SYNC_EVERY == 0:
            checkpoints[k + 1] = w.sync()

    def crash(*a, **kw):
        raise KeyboardInterrupt("simulated crash before the index rename")

    monkeypatch.setattr(lfs_writer, "atomic_write", crash)
    with pytest.raises(KeyboardInterrupt):
        w.finish(allow_partial=True)
    monkeypatch.undo()
    d, i = lfs.chunk_paths(base, 6)
    assert d.exists() and not i.exists() and not lfs.chunk_exists(base, 6)
    with pytest.raises(StoreError):
        w.append(FIRST + N, ledgers[0])  # the failed writer refuses further use
    # Resume from the last checkpoint: the partial is intact (the data was hard-linked).
    assert checkpoints[150] == lfs.ChunkProgress(6, 150, _bytes(ledgers, 150))
    _finish_from(base, work, ledgers, checkpoints[150])
    _assert_chunk(base, expected, ledgers, work)
    assert sorted(p.name for p in d.parent.iterdir()) == [d.name, i.name]  # no temp files left


def _bytes(ledgers, n):
    return sum(len(lfs.compress_ledger(x)) for x in ledgers[:n])


def test_finished_chunk_never_rewritten(tmp_path, ledgers, expected, monkeypatch):
    base, work = tmp_path / "b", tmp_path / "w"
    _finish_from(base, work, ledgers, None)
    d, i = lfs.chunk_paths(base, 6)
    before = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (d, i)]
    # Crash after finish() but before the checkpoint: the orchestrator replays from the last
    # checkpoint (150 ledgers) with stale partials lying around.
    dp, op = chunk_partial_paths(work, 6)
    dp.write_bytes(b"stale")
    op.write_bytes(b"stale")
    w = lfs.ChunkWriter(base, 6, work, resume=lfs.ChunkProgress(6, 150, _bytes(ledgers, 150)))
    assert w.complete and not dp.exists() and not op.exists()

    def no_compress(*a):
        raise AssertionError("a complete chunk must not be recompressed")

    monkeypatch.setattr(w, "_compress", no_compress)
    for k in range(150, N):
        w.append(FIRST + k, ledgers[k])
    assert w.sync() == lfs.ChunkProgress(6, N, len(expected))  # progress read from the final index
    with pytest.raises(LedgerSequenceError, match="past the end"):
        w.append(FIRST + N, ledgers[0])
    stats = w.finish(allow_partial=True)
    assert stats == lfs.ChunkStats(N, len(expected), sum(map(len, ledgers)))
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (d, i)] == before
    assert d.read_bytes() == expected


def test_complete_chunk_that_fails_verify_is_not_replaced(tmp_path, ledgers):
    base, work = tmp_path / "b", tmp_path / "w"
    _finish_from(base, work, ledgers, None)
    d, _ = lfs.chunk_paths(base, 6)
    b = bytearray(d.read_bytes())
    b[0] ^= 0xFF  # first frame's magic
    d.write_bytes(bytes(b))
    with lfs.ChunkWriter(base, 6, work) as w:
        for k in range(N):
            w.append(FIRST + k, ledgers[k])
        with pytest.raises(CorruptStoreError):
            w.finish(allow_partial=True)
    assert d.read_bytes() == bytes(b)
    lfs.remove_chunk(base, 6)
    assert not lfs.chunk_exists(base, 6) and not d.exists()


def test_progress_not_matching_finished_chunk(tmp_path, ledgers):
    base, work = tmp_path / "b", tmp_path / "w"
    _finish_from(base, work, ledgers, None)
    with pytest.raises(CorruptStoreError, match="does not match the finished chunk"):
        lfs.ChunkWriter(base, 6, work, resume=lfs.ChunkProgress(6, 150, _bytes(ledgers, 150) + 1))
    with pytest.raises(CorruptStoreError, match="does not match the finished chunk"):
        lfs.ChunkWriter(base, 6, work, resume=lfs.ChunkProgress(6, N + 1, 0))
    w = lfs.ChunkWriter(base, 6, work, resume=lfs.ChunkProgress(6, N, _bytes(ledgers, N)))
    assert w.complete and w.finish(allow_partial=True).ledgers == N


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm")
def test_publish_across_filesystems(tmp_path, ledgers, expected):
    """Work dir on another filesystem than ledgers_base: hard link impossible, data copied."""
    import tempfile

    work = tempfile.mkdtemp(prefix="lfs-work-", dir="/dev/shm")
    try:
        if os.stat(work).st_dev == os.stat(tmp_path).st_dev:
            pytest.skip("/dev/shm is on the same filesystem here")
        _finish_from(tmp_path / "b", work, ledgers, None)
        _assert_chunk(tmp_path / "b", expected, ledgers, work)
        d, i = lfs.chunk_paths(tmp_path / "b", 6)
        assert sorted(p.name for p in d.parent.iterdir()) == [d.name, i.name]
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
