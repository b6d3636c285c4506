"""Progress that tells the truth: the transition's own steps in snapshots, lines and ETA; the
rich display never wider than the terminal; the first progress line of a non-TTY run soon.

Unit tests drive ``Progress`` with synthetic snapshots on a fake monotonic clock.  The CLI test
runs the real ``stellar-rpc`` without a terminal and holds the range at fault points (compact,
verify_shard) to read the progress lines the transition produces.
"""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from rpcbackfill.meta.store import LedgerPhase, RangeInfo, RangeState, TxHashPhase
from rpcbackfill.orchestration import faults
from rpcbackfill.orchestration.progress import TRANSITION_SHARE, LiveDisplay, Progress, ProgressSnapshot, fmt_eta
from rpcbackfill.orchestration.status import RangeStatus, StatusReport
from rpcbackfill.records import SHARD_DIGITS
from tests.lib.orchestration import LoggedBackfill, make_lake, wait_held, write_backfill_config

STEPS = 1 + 3 * len(SHARD_DIGITS)  # one chunk per 10,000-ledger range + 16 shards x 3 steps
TOTAL = 10_000


@pytest.fixture
def clock(monkeypatch):
    import rpcbackfill.orchestration.progress as pm

    t = [1000.0]
    monkeypatch.setattr(pm.time, "monotonic", lambda: t[0])
    return t


def _info(rid: int, state: str, done: int = 0, **kw) -> RangeInfo:
    ledger = LedgerPhase.WRITING_LFS if state == "TRANSITIONING" else LedgerPhase.INGESTING
    txhash = TxHashPhase.COMPACTING if state == "TRANSITIONING" else TxHashPhase.INGESTING
    return RangeInfo(
        rid,
        RangeState(state),
        start_ledger=rid * TOTAL + 2,
        end_ledger=(rid + 1) * TOTAL + 1,
        ledger_phase=ledger,
        txhash_phase=txhash,
        ledger_count=done,
        **kw,
    )


def _snap(done: int, steps: int = 0, rid: int = 0, tx: int = 0) -> ProgressSnapshot:
    return ProgressSnapshot(rid, done, TOTAL, tx, steps_done=steps, steps_total=STEPS)


def test_ingest_eta_includes_the_transition_still_to_come(clock):
    p = Progress(window_s=10)
    for i in range(11):  # 100 ledgers/s
        p.update(_snap(100 * i))
        clock[0] += 1.0
    live = p.live(0)
    assert live.ledgers_per_s == pytest.approx(100.0)
    ingest_left = (TOTAL - 1000) / 100.0
    assert live.eta_s == pytest.approx(ingest_left + TRANSITION_SHARE * TOTAL / 100.0)
    assert live.eta_s > ingest_left and live.steps_per_s is None


def test_transition_eta_from_measured_step_rate(clock):
    p = Progress(window_s=10)
    p.update(_snap(TOTAL - 100))
    clock[0] += 1.0
    p.update(_snap(TOTAL))  # ingestion done: the transition starts, no step timed yet
    live = p.live(0)
    assert live.eta_s is None and live.steps_per_s is None  # unknown, not 0m00s
    r = RangeStatus.of(_info(0, "TRANSITIONING", done=TOTAL), live)
    (line,) = StatusReport.of("backfill", 2, TOTAL + 1, TOTAL, [r]).progress_lines(10)
    assert f"transition 0/{STEPS} steps" in line and "ETA ?" in line
    assert "100.0%" not in line and "0m00s" not in line

    for i in range(1, 11):  # 2 steps per second
        clock[0] += 1.0
        p.update(_snap(TOTAL, steps=2 * i))
    live = p.live(0)
    assert live.steps_per_s == pytest.approx(2.0)
    assert live.eta_s == pytest.approx((STEPS - 20) / 2.0)
    # between snapshots the rate decays with the time spent on the current step
    clock[0] += 10.0
    assert p.live(0).eta_s == pytest.approx((STEPS - 20) / 1.0)

    info = _info(
        0,
        "TRANSITIONING",
        done=TOTAL,
        chunks_verified=1,
        shard_sorted={x: "p" for x in SHARD_DIGITS},
        shard_built={x: 1 for x in SHARD_DIGITS[:3]},
    )
    r = RangeStatus.of(info, live)
    assert (r.steps_done, r.steps_total, r.steps_per_s) == (20, STEPS, 2.0)
    rep = StatusReport.of("backfill", 2, TOTAL + 1, TOTAL, [r])
    ((line, fields),) = rep.progress_records(10)
    assert f"transition 20/{STEPS} steps" in line and "shards 16/16 compacted, 3/16 built, 0/16 verified" in line
    assert f"ETA {fmt_eta((STEPS - 20) / 2.0)}" in line and "2.00 steps/s" in line
    assert fields["steps_done"] == 20 and fields["steps_total"] == STEPS and fields["eta_s"] == r.eta_s
    assert rep.eta_s() == pytest.approx(r.eta_s)

    # all steps done: the range is about to be COMPLETE
    p.update(_snap(TOTAL, steps=STEPS))
    assert p.live(0).eta_s == 0.0


def test_resumed_transition_times_only_this_runs_steps(clock):
    p = Progress()
    p.update(_snap(TOTAL, steps=30))  # a resumed run starts with 30 steps done
    clock[0] += 4.0
    p.update(_snap(TOTAL, steps=32))
    assert p.live(0).steps_per_s == pytest.approx(0.5)
    p.update(_snap(TOTAL, steps=10))  # an older state (a new attempt): timing restarts
    clock[0] += 1.0
    assert p.live(0).steps_per_s is None and p.live(0).eta_s is None


def test_steps_from_the_record_without_a_live_snapshot():
    done = RangeStatus.of(_info(0, "COMPLETE", done=TOTAL))
    assert done.steps_done == done.steps_total == STEPS and done.fraction == 1.0
    info = _info(1, "TRANSITIONING", done=TOTAL, chunks_verified=1, shard_sorted={x: "p" for x in SHARD_DIGITS[:4]})
    r = RangeStatus.of(info)
    assert (r.steps_done, r.steps_total) == (5, STEPS)
    assert 1 / (1 + TRANSITION_SHARE) < r.fraction < 1.0  # ingestion done, transition partly


def test_run_eta_adds_pending_ranges_at_the_summed_rate(clock):
    p = Progress(window_s=10)
    for i in range(11):
        p.update(_snap(100 * i))
        clock[0] += 1.0
    running = RangeStatus.of(_info(0, "INGESTING"), p.live(0))
    pending = RangeStatus.of(_info(1, "PENDING"))
    rep = StatusReport.of("backfill", 2, 2 * TOTAL + 1, TOTAL, [running, pending])
    assert running.eta_s is not None
    assert rep.eta_s() == pytest.approx(running.eta_s + TOTAL * (1 + TRANSITION_SHARE) / 100.0)
    stalled = RangeStatus.of(_info(0, "INGESTING"))  # no rate known
    assert StatusReport.of("backfill", 2, TOTAL + 1, TOTAL, [stalled]).eta_s() is None


def _busy_report(clock) -> StatusReport:
    p = Progress(window_s=10)
    for i in range(11):
        p.update(ProgressSnapshot(0, 987 * i, TOTAL, 31_337 * i, steps_total=STEPS))
        p.update(ProgressSnapshot(1, TOTAL, TOTAL, 9, steps_done=3 * i, steps_total=STEPS))
        clock[0] += 1.0
    info1 = _info(1, "TRANSITIONING", done=TOTAL, chunks_verified=1, shard_sorted={x: "p" for x in SHARD_DIGITS})
    rows = [
        RangeStatus.of(_info(0, "INGESTING"), p.live(0)),
        RangeStatus.of(info1, p.live(1)),
        RangeStatus.of(_info(2, "PENDING")),
        RangeStatus.of(_info(3, "COMPLETE", done=TOTAL)),
    ]
    return StatusReport.of("backfill", 2, 4 * TOTAL + 1, TOTAL, rows, parallel_ranges=2)


@pytest.mark.parametrize("width", [40, 120])
def test_rich_display_fits_the_width(clock, width):
    rep = _busy_report(clock)
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(rep.renderable())
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # the total and one row per range in flight
    assert all(len(line) <= width for line in lines), lines
    assert lines[0].startswith("all") and lines[1].startswith("range 0") and lines[2].startswith("range 1")
    if width == 120:
        assert "ingest" in lines[1] and "ledgers/s" in lines[1]
        assert f"transition 30/{STEPS} steps" in lines[2] and "ETA" in lines[2]


def test_live_display_draws_on_a_terminal_within_its_width(clock):
    rep = _busy_report(clock)
    out = io.StringIO()
    d = LiveDisplay(rep.renderable, enabled=True, stream=out, width=40)
    d.draw()
    d.clear()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert "range 1" in text
    assert all(len(line) <= 40 for line in text.replace("\r", "\n").splitlines())


FIRST, LAST = 2, 10001


def test_cli_without_tty_reports_early_and_through_the_transition(tmp_path):
    lake = make_lake(tmp_path / "lake", FIRST, LAST, seed=5, tx_per_ledger=1.0)
    cfg = write_backfill_config(
        tmp_path,
        lake,
        service={"http_endpoint": "127.0.0.1:0", "progress_interval": "1s"},
        backfill={"parallel_ranges": 1},
    )
    hold = tmp_path / "hold"
    hold.mkdir()
    env = faults.hold_env(hold, "ingest:1", "compact:1", "verify_shard:1")
    with LoggedBackfill(cfg, FIRST, LAST, env=env, cwd=tmp_path) as run:
        p, lines = run.proc, run.lines

        def next_progress(after: int) -> int:
            """Index of the first progress line at or after ``after`` (the run keeps logging them)."""
            return run.wait_line(lambda line: "progress: range 0" in line, after, timeout=120)

        wait_held(hold, "ingest", p)  # the first ledger is ingested; the range waits
        first = next_progress(0)
        assert first < 8, lines[: first + 1]  # among the first few lines of the run
        faults.release(hold, "ingest")

        wait_held(hold, "compact", p)  # the first shard compacted, not yet recorded
        mark = len(lines)
        during_compact = lines[next_progress(mark)]
        faults.release(hold, "compact")

        wait_held(hold, "verify_shard", p)  # 16 shards compacted and built, verification starts
        mark = len(lines)
        during_verify = lines[next_progress(mark)]
        faults.release(hold, "verify_shard")
        assert run.wait() == 0
    for line in (during_compact, during_verify):
        assert "TRANSITIONING" in line or "ledger:" in line, line
        assert f"/{STEPS} steps" in line and "100.0%" not in line, line
        # the ETA is the transition's: steps left at the measured step rate (the parallel
        # transition may leave only the held step, so it can legitimately round to 0m00s)
        # (before a step has been timed there is no rate: "step rate ?, ETA ?")
        m = re.search(
            rf"transition (\d+)/{STEPS} steps .*?, (?:([\d.]+) steps/s|step rate \?), ETA (?:\?|(\d+)m(\d\d)s)", line
        )
        assert m, line
        done = int(m.group(1))
        assert done < STEPS, line
        if m.group(2) is None:
            assert m.group(3) is None, line  # no rate, no ETA
        else:
            rate, eta = float(m.group(2)), int(m.group(3)) * 60 + int(m.group(4))
            assert rate > 0 and abs(eta - (STEPS - done) / rate) <= 1.0, line
    done = int(re.search(rf"transition (\d+)/{STEPS} steps", during_verify).group(1))
    assert done >= 2 * len(SHARD_DIGITS)  # compacted and built were counted
    assert "shards 16/16 compacted, 16/16 built" in during_verify
    assert re.search(r"ETA \d+m\d\ds", during_verify), during_verify  # a measured step rate by then


def test_live_display_steps_aside_for_log_lines(clock):
    import logging

    rep = _busy_report(clock)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        d = LiveDisplay(rep.renderable, enabled=True, stream=out, width=60)
        d.draw()
        assert d._live is not None
        logging.getLogger("rpcbackfill.test").warning("a log line")
        assert d._live is None  # cleared before the record was written
        d.draw()
        d.close()
        assert d._live is None and d._before_log not in handler.filters
    finally:
        root.removeHandler(handler)
    assert "a log line" in out.getvalue()
