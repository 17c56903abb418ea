"""Task outcomes from the companions: deltas, restarts, first readings, the window, the
failure-rate and expiry rules, the stored form."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from chalicelib.alert_types import AlertType
from chalicelib.analyse.outcomes import (
    Baseline,
    WindowEntry,
    baseline_from_json,
    baseline_to_json,
    quantile,
    step_outcomes,
    window_from_json,
    window_to_json,
)
from chalicelib.analyse.task_rules import task_failure_rate, tasks_expired
from chalicelib.analyse.trends import Trends
from chalicelib.model import (
    CompanionRaw,
    Histogram,
    QueueSample,
    Sample,
    TaskCounters,
    WorkerSample,
)
from chalicelib.thresholds import Thresholds

BOUNDS = (0.1, 1.0, 10.0)


def hist(*values: float) -> Histogram:
    counts = [0] * (len(BOUNDS) + 1)
    for v in values:
        counts[next((i for i, b in enumerate(BOUNDS) if v <= b), len(BOUNDS))] += 1
    return Histogram(len(values), sum(values), max(values, default=0.0), tuple(counts))


def raw(boot: str = "b1", started: float = 0.0, **tasks: TaskCounters) -> CompanionRaw:
    return CompanionRaw(boot=boot, started=started, bounds=BOUNDS, tasks=dict(tasks))


def worker(wid: str, outcomes: CompanionRaw | None, status: str = "online") -> WorkerSample:
    return WorkerSample(
        id_hash=wid,
        status=status,
        concurrency=2,
        active=0,
        reserved=0,
        scheduled=0,
        pool="prefork",
        queues=(),
        processed_total=0,
        processed={},
        prefetch_count=None,
        uptime_sec=None,
        tasks=(),
        companion=outcomes is not None,
        outcomes=outcomes,
    )


def run(workers, baselines=None, window=(), *, now=100.0, since=40.0, seconds=300.0):
    return step_outcomes(
        workers, baselines or {}, list(window), now=now, since=since, window_seconds=seconds
    )


def base_of(r: CompanionRaw) -> Baseline:
    return Baseline(r.boot, r.started, dict(r.tasks), dict(r.waits))


def test_the_interval_is_the_difference_of_two_readings_of_one_boot() -> None:
    before = raw(send=TaskCounters(succeeded=5, failed=1, runtime=hist(0.05, 0.05, 0.5)))
    after = raw(send=TaskCounters(succeeded=9, failed=3, runtime=hist(0.05, 0.05, 0.5, 2, 2)))
    out = run([worker("w1", after)], {"w1": base_of(before)})
    (task,) = out.sample.tasks
    assert (task.name, task.counters.succeeded, task.counters.failed) == ("send", 4, 2)
    assert task.counters.runtime is not None and task.counters.runtime.count == 2
    assert out.sample.counted == 1 and out.baselines["w1"].boot == "b1"


def test_a_restart_is_a_reset_not_a_negative_rate() -> None:
    before = raw("old", 0.0, send=TaskCounters(succeeded=500))
    # Restarted after the previous check (since=40): all it counted is new.
    after = raw("new", 50.0, send=TaskCounters(succeeded=3, failed=1))
    out = run([worker("w1", after)], {"w1": base_of(before)})
    (task,) = out.sample.tasks
    assert (task.counters.succeeded, task.counters.failed) == (3, 1)
    # Restarted long ago (unseen in between): a new baseline, nothing counted.
    out = run([worker("w1", replace(after, started=10.0))], {"w1": base_of(before)})
    assert out.sample.tasks == () and out.sample.counted == 0 and out.sample.measured


def test_a_first_reading_counts_nothing_unless_the_worker_started_since() -> None:
    old = raw(started=0.0, send=TaskCounters(succeeded=50))
    assert run([worker("w1", old)]).sample.tasks == ()
    new = raw(started=60.0, send=TaskCounters(succeeded=2))
    assert run([worker("w1", new)]).sample.tasks[0].counters.succeeded == 2
    assert run([worker("w1", new)], since=None).sample.tasks == ()


def test_a_dead_worker_loses_its_baseline() -> None:
    counters = raw(send=TaskCounters(succeeded=5))
    out = run([worker("w1", counters, status="offline")], {"w1": base_of(counters)})
    assert out.baselines == {} and not out.sample.measured
    assert out.window == []  # nothing measured: the window is not fed


def test_workers_without_the_companion_are_named_and_nothing_is_invented() -> None:
    out = run([worker("w1", None)])
    assert not out.sample.measured and out.sample.without == ("w1",)
    sample = sample_with(out.sample)
    assert list(task_failure_rate(sample, Trends(), Thresholds())) == []


def test_the_window_keeps_what_is_younger_than_its_length() -> None:
    window = [
        WindowEntry(0.0, {"send": TaskCounters(failed=7)}),
        WindowEntry(60.0, {"send": TaskCounters(succeeded=1, failed=1)}),
    ]
    before = raw(send=TaskCounters(succeeded=1))
    after = raw(send=TaskCounters(succeeded=4))
    out = run([worker("w1", after)], {"w1": base_of(before)}, window, now=320.0, since=260.0)
    assert [e.at for e in out.window] == [60.0, 320.0]
    assert out.sample.window["send"] == TaskCounters(succeeded=4, failed=1)


def sample_with(outcomes, queues=()) -> Sample:
    return Sample(
        target="t",
        timestamp=0.0,
        duration_ms=0.0,
        redis_ok=True,
        queues=tuple(queues),
        workers=(),
        anomalies=(),
        errors=(),
        redis={},
        unacked_total=0,
        visibility_timeout_sec=None,
        workers_probed=True,
        discovery_truncated=False,
        observations={},
        outcomes=outcomes,
    )


@pytest.mark.parametrize(
    ("succeeded", "failed", "expected"),
    [
        (9, 1, None),  # 10 % is not above 10 %
        (8, 2, "warning"),  # 20 %
        (4, 6, "critical"),  # 60 %
        (0, 9, None),  # 9 runs: under the minimum volume of 10
        (5, 5, "warning"),  # 50 % is not above 50 %
    ],
)
def test_failure_rate_thresholds(succeeded: int, failed: int, expected: str | None) -> None:
    before = raw(send=TaskCounters())
    after = raw(send=TaskCounters(succeeded=succeeded, failed=failed, retried=30))
    out = run([worker("w1", after)], {"w1": base_of(before)})
    found = list(task_failure_rate(sample_with(out.sample), Trends(), Thresholds()))
    assert [f.severity.value for f in found] == ([expected] if expected else [])
    for f in found:
        assert f.type is AlertType.TASK_FAILURE_RATE and f.subject == "send"
        assert f.details["failed"] == failed and f.details["runs"] == succeeded + failed


def test_expired_tasks_from_the_companion_and_from_waiting_messages() -> None:
    before = raw(send=TaskCounters())
    after = raw(send=TaskCounters(succeeded=1, expired=4))
    out = run([worker("w1", after)], {"w1": base_of(before)})
    queue = QueueSample(
        name="emails",
        depth=3,
        latency_sec=1.0,
        latency_source="observed",
        latency_is_lower_bound=True,
        depth_by_priority={0: 3},
        oldest_task=None,
        unreadable_messages=False,
        serializers=("json",),
        redelivered=False,
        problem=None,
        expired_waiting=2,
    )
    found = list(tasks_expired(sample_with(out.sample, [queue]), Trends(), Thresholds()))
    assert [(f.subject, f.queue) for f in found] == [("send", None), ("queue:emails", "emails")]
    assert found[0].details["expired"] == 4 and found[1].details["expired_waiting"] == 2


def test_quantiles_of_a_histogram() -> None:
    h = hist(*([0.05] * 90), *([5.0] * 10))
    p50, p95 = quantile(h, BOUNDS, 0.5), quantile(h, BOUNDS, 0.95)
    assert p50 is not None and 0.0 < p50 <= 0.1
    assert p95 is not None and 1.0 < p95 <= 10.0
    assert quantile(Histogram(), BOUNDS, 0.5) is None
    assert quantile(h, (0.1, 1.0), 0.5) is None  # other bounds: not comparable


def test_the_stored_form_round_trips() -> None:
    b = Baseline(
        "b1",
        12.5,
        {"send": TaskCounters(1, 2, 3, 4, 5, 6, hist(0.05, 3.0)), "x": TaskCounters(expired=1)},
        {"emails": hist(0.5, 0.7)},
    )
    assert baseline_from_json(json.loads(json.dumps(baseline_to_json(b)))) == b
    e = WindowEntry(3.0, {"send": TaskCounters(failed=2)})
    assert window_from_json(json.loads(json.dumps(window_to_json(e)))) == e


def test_baselines_over_the_bound_are_not_kept_and_said(monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.analyse import outcomes as module

    monkeypatch.setattr(module, "MAX_STORED_ENTRIES", 4)
    two = raw(a=TaskCounters(succeeded=1), b=TaskCounters(succeeded=1))
    out = run([worker("w1", two), worker("w2", two), worker("w3", two)])
    assert sorted(out.baselines) == ["w1", "w2"] and out.not_kept == ("w3",)
    assert out.sample.measured


def test_a_state_at_the_bound_fits_one_dynamodb_item() -> None:
    """20 workers of 1,000 task names each, with run-time histograms: the stored state, as
    the DynamoDB store compresses it, stays under the size it keeps for one item."""
    import zlib

    from chalicelib.analyse.outcomes import MAX_STORED_ENTRIES
    from chalicelib.state import TargetState
    from chalicelib.state.dynamodb import MAX_ITEM_BYTES

    bounds = tuple(float(b) for b in range(1, 44))
    counts = tuple([0] * 10 + [3, 9, 27, 4] + [0] * 30)
    runtime = Histogram(43, 81.5, 9.75, counts)
    names = [f"proj.billing.tasks.charge_customer_{i:04d}" for i in range(1000)]
    baselines = {
        f"w-{n:08x}": Baseline(
            f"{n:016x}",
            1.7e9 + n,
            {name: TaskCounters(1234 + n, 56, 7, 0, 1, 2, runtime) for name in names},
            {},
        )
        for n in range(MAX_STORED_ENTRIES // len(names))
    }
    assert sum(len(b.tasks) for b in baselines.values()) == MAX_STORED_ENTRIES
    assert len(bounds) + 1 == len(counts)
    body = json.dumps(TargetState(baselines=baselines).to_json(), separators=(",", ":"))
    assert len(zlib.compress(body.encode(), 6)) < MAX_ITEM_BYTES
