"""The executor seam: retry policy without processes, error classes deciding retries, the
typed update path, and the coordinator driving the in-process runner end to end."""

from __future__ import annotations

import pytest

from rpcbackfill import errors
from rpcbackfill.errors import MetaStoreError
from rpcbackfill.meta.store import Checkpoint, MetaStore, RangeState
from rpcbackfill.orchestration import api
from rpcbackfill.orchestration.coordinator import Coordinator, RetryPolicy
from rpcbackfill.orchestration.executor import Outcome
from rpcbackfill.orchestration.inprocess_runner import InProcessRunner
from rpcbackfill.orchestration.orchestrator import RangeOrchestrator
from rpcbackfill.orchestration.updates import ForwardingMeta, SaveCheckpoint, StartIngesting
from tests.lib.orchestration import RS, active_leftovers, check_backfill_result, fast_options, make_config, make_lake

LAST = 2 * RS + 1


@pytest.fixture(scope="module")
def lake3(tmp_path_factory):
    return make_lake(tmp_path_factory.getbasetemp() / "lake-3ranges", 2, 3 * RS + 1)


def test_retry_policy_backoff_limit_and_fatal():
    p = RetryPolicy(max_retries=2, backoff_s=1.0, backoff_max_s=3.0)
    transient = Outcome.failed(0, errors.TransientSourceError("503 from the lake"))
    d1, d2, d3 = p.failed(transient), p.failed(transient), p.failed(transient)
    assert (d1.attempts, d1.retry_in_s) == (1, 1.0)
    assert (d2.attempts, d2.retry_in_s) == (2, 2.0)
    assert (d3.attempts, d3.retry_in_s) == (3, None) and d3.reason == "503 from the lake (after 3 attempts)"
    # ranges count separately; a non-retryable failure ends the range at its first attempt
    d = p.failed(Outcome.failed(1, errors.DiskFullError("no space left on device")))
    assert (d.attempts, d.retry_in_s, d.reason) == (1, None, "no space left on device")
    assert RetryPolicy(10, 1.0, 3.0, attempts={0: 4}).failed(transient).retry_in_s == 3.0  # capped


@pytest.mark.parametrize(
    "exc, retryable",
    [
        (errors.TransientSourceError("x"), True),
        (errors.LedgerSequenceError("x"), True),
        (errors.IndexBuildError("x"), True),
        (errors.XdrError("x"), True),
        (errors.MissingLedgerError("x"), False),
        (errors.LakeConfigError("x"), False),
        (errors.SourceConfigError("x"), False),
        (errors.ConfigError(["a", "b"]), False),
        (errors.DiskFullError("x"), False),
        (errors.CorruptStoreError("x"), False),
        (errors.MetaStoreError("x"), False),
        (ModuleNotFoundError("No module named 'rpcbackfill._lcm'"), False),
        (RuntimeError("a bug"), True),
    ],
)
def test_error_class_decides_retry(exc, retryable):
    assert errors.is_retryable(exc) is retryable
    assert Outcome.failed(3, exc).retryable is retryable


def test_forwarding_meta_sends_typed_updates_for_its_own_range_only():
    sent = []
    fm = ForwardingMeta(4, sent.append)
    fm.start_ingesting(4, "/spill")
    fm.checkpoint(4, Checkpoint(1001, 1000, [0] * 16))
    assert sent == [StartIngesting("/spill"), SaveCheckpoint(Checkpoint(1001, 1000, [0] * 16))]
    with pytest.raises(MetaStoreError, match="range 4: refused update StartTransition for range 5"):
        fm.start_transition(5)
    assert len(sent) == 2


def test_coordinator_inprocess_runner_retry_fatal_and_complete(tmp_path, lake3):
    """Range 0 fails once with a retryable error, then completes; range 1 raises ImportError
    (a broken installation) and is FAILED at once, without retries."""
    cfg = make_config(tmp_path / "data", lake3, 2, LAST, parallel_ranges=2, max_retries=3)
    calls: dict[int, int] = {}

    def orchestrator(config, info, meta, cancel, **kw):
        calls[info.id] = calls.get(info.id, 0) + 1
        orch = RangeOrchestrator(config, info, meta, cancel, **kw)
        if info.id == 0 and calls[0] == 1:
            real = orch._checkpoint

            def fail_after_first_checkpoint(*a, **k):
                real(*a, **k)
                raise errors.TransientSourceError("lake returned 503")

            orch._checkpoint = fail_after_first_checkpoint
        elif info.id == 1:
            orch.run = lambda: (_ for _ in ()).throw(ModuleNotFoundError("No module named 'rpcbackfill._lcm'"))
        return orch

    coord = Coordinator(
        cfg, fast_options(), runner=lambda settings, host: InProcessRunner(settings, host, orchestrator)
    )
    assert coord.run() == 1
    assert calls == {0: 2, 1: 1}
    st = api.status(cfg)
    r0, r1 = st.ranges
    assert r0.state == RangeState.COMPLETE and r0.attempts == 1 and r0.error is None
    assert r1.state == RangeState.FAILED and r1.attempts == 1 and "rpcbackfill._lcm" in r1.error
    # the live report of the finished run: progress snapshots arrived through the runner
    live = coord.report()
    assert live.ranges[0].progress is not None and live.ranges[0].progress.ledgers_done == RS
    assert live.ranges[0].ledgers_done == RS and live.run_state == "failed"
    check_backfill_result(cfg, lake3, 2, RS + 1)

    # the next run resumes range 1 (FAILED -> PENDING) and completes it; attempts start over
    coord = Coordinator(cfg, fast_options(), runner=InProcessRunner)
    assert coord.run() == 0
    st = api.status(cfg)
    assert st.complete and [r.attempts for r in st.ranges] == [1, 0]
    m = MetaStore(cfg.meta_store.path, read_only=True)
    try:
        assert m.range_info(1).error is None
    finally:
        m.close()
    check_backfill_result(cfg, lake3, 2, LAST)
    assert active_leftovers(cfg) == []
