"""Task outcomes from the companions: deltas, restarts, first readings, the window, the
failure-rate and expiry rules, the stored form."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from chalicelib.alert_types import AlertType
from chalicelib.analyse.outcomes import (
    MAX_STORED_BYTES,
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


def run(
    workers, baselines=None, window=(), *, now=100.0, since=40.0, seconds=300.0, keep_silent=0.0
):
    return step_outcomes(
        workers,
        baselines or {},
        list(window),
        now=now,
        since=since,
        window_seconds=seconds,
        keep_silent_for=keep_silent,
    )


def base_of(r: CompanionRaw, at: float = 40.0) -> Baseline:
    """``r`` as the previous check (at ``at``, the default ``since`` of ``run``) stored it."""
    return Baseline(r.boot, r.started, dict(r.tasks), dict(r.waits), at=at)


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
    assert out.sample.tasks == () and out.sample.counted == 0
    assert out.sample.not_counted == ("w1",)  # read, only not differenced


def test_a_first_reading_counts_nothing_unless_the_worker_started_since() -> None:
    old = raw(started=0.0, send=TaskCounters(succeeded=50))
    assert run([worker("w1", old)]).sample.tasks == ()
    new = raw(started=60.0, send=TaskCounters(succeeded=2))
    assert run([worker("w1", new)]).sample.tasks[0].counters.succeeded == 2
    assert run([worker("w1", new)], since=None).sample.tasks == ()


def test_a_dead_worker_past_its_keep_time_loses_its_baseline() -> None:
    counters = raw(send=TaskCounters(succeeded=5))
    out = run([worker("w1", counters, status="offline")], {"w1": base_of(counters)})
    assert out.baselines == {} and out.sample.counted == 0 and out.sample.not_counted == ()
    assert out.window == []  # nothing measured: the window is not fed


def test_workers_without_the_companion_are_named_and_nothing_is_invented() -> None:
    from chalicelib.payload import companion_json

    plain = replace(worker("w1", None), companion=False)
    out = run([plain])
    assert out.sample.counted == 0 and out.sample.not_counted == () and out.baselines == {}
    sample = replace(sample_with(out.sample), workers=(plain,))
    assert companion_json(sample)["without"] == ["w1"]
    assert list(task_failure_rate(sample, Trends(), Thresholds())) == []


def test_the_window_keeps_what_is_younger_than_its_length() -> None:
    window = [
        WindowEntry(0.0, {"send": TaskCounters(failed=7)}),
        WindowEntry(60.0, {"send": TaskCounters(succeeded=1, failed=1)}),
    ]
    before = raw(send=TaskCounters(succeeded=1))
    after = raw(send=TaskCounters(succeeded=4))
    base = {"w1": base_of(before, at=260.0)}
    out = run([worker("w1", after)], base, window, now=320.0, since=260.0)
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


def test_baselines_over_the_bound_lose_histograms_then_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chalicelib.analyse import outcomes as module

    timed = TaskCounters(succeeded=1, runtime=hist(0.05, 0.5, 5.0))
    two = raw(a=timed, b=timed)
    lean = len(json.dumps(module.baseline_to_json(module._without_histograms(base_of(two)))))
    monkeypatch.setattr(module, "MAX_STORED_BYTES", 2 * lean + lean // 2)
    out = run([worker("w1", two), worker("w2", two), worker("w3", two)])
    assert sorted(out.baselines) == ["w1", "w2"] and out.not_kept == ("w3",)
    assert out.histograms_dropped
    assert all(not b.histograms and not b.waits for b in out.baselines.values())
    assert all(c.runtime is None for b in out.baselines.values() for c in b.tasks.values())
    # The next difference of a baseline kept without histograms has counts only.
    later = raw(a=TaskCounters(succeeded=3, runtime=hist(0.05, 0.5, 5.0, 1, 1)), b=timed)
    nxt = run([worker("w1", later)], out.baselines, now=160.0, since=100.0)
    (task,) = nxt.sample.tasks
    assert (task.name, task.counters.succeeded, task.counters.runtime) == ("a", 2, None)


def test_a_state_of_many_workers_and_names_fits_one_dynamodb_item() -> None:
    """40 workers of 1,000 task names each, with run-time histograms spread over many
    buckets: what the state keeps, compressed as the DynamoDB store does, stays well under
    the size it keeps for one item."""
    import random
    import zlib

    from chalicelib.state import TargetState
    from chalicelib.state.dynamodb import MAX_ITEM_BYTES

    rng = random.Random(7)
    bounds = tuple(float(b) for b in range(1, 44))
    names = [f"proj.billing.tasks.charge_customer_{i:04d}" for i in range(1000)]

    def counters() -> TaskCounters:
        counts = tuple(rng.randrange(0, 10**6) for _ in range(len(bounds) + 1))
        runtime = Histogram(sum(counts), rng.random() * 1e6, rng.random() * 1e3, counts)
        return TaskCounters(*(rng.randrange(0, 10**9) for _ in range(6)), runtime=runtime)

    workers = [
        worker(
            f"w-{n:08x}", CompanionRaw(f"{n:016x}", 50.0, bounds, {m: counters() for m in names})
        )
        for n in range(40)
    ]
    out = run(workers)
    assert out.histograms_dropped and out.not_kept  # the bound was reached, and said
    body = json.dumps(TargetState(baselines=out.baselines).to_json(), separators=(",", ":"))
    assert len(body) <= MAX_STORED_BYTES + 1000
    assert len(zlib.compress(body.encode(), 6)) < MAX_ITEM_BYTES // 2


def test_a_silent_worker_keeps_its_baseline_and_is_differenced_when_back() -> None:
    before = raw(t=TaskCounters(succeeded=5, failed=12))
    base = {"w1": base_of(before, at=1000.0)}
    gone = run(
        [worker("w1", None, status="offline")], base, now=1060.0, since=1000.0, keep_silent=3600.0
    )
    assert gone.baselines["w1"].at == 1000.0  # kept, untouched
    back = raw(t=TaskCounters(succeeded=10, failed=12))
    out = run([worker("w1", back)], gone.baselines, now=1120.0, since=1060.0, keep_silent=3600.0)
    (task,) = out.sample.tasks
    assert (task.counters.succeeded, task.counters.failed) == (5, 0)


def test_old_outcomes_are_not_recent_and_the_future_is_not_kept() -> None:
    failed = raw(t=TaskCounters(failed=20))
    # Counted over a gap longer than the window: shown for the interval, not in the window.
    late = run([worker("w1", failed)], {"w1": base_of(raw(), at=100.0)}, now=3660.0, since=100.0)
    assert late.sample.tasks[0].counters.failed == 20 and late.sample.window == {}
    # A clock that went back: nothing of the window's future is kept, nothing is counted.
    window = [WindowEntry(10_000.0, {"t": TaskCounters(failed=20)})]
    back = run(
        [worker("w1", failed)],
        {"w1": base_of(raw(), at=10_000.0)},
        window,
        now=6400.0,
        since=10_000.0,
    )
    assert back.sample.window == {} and back.sample.tasks == () and back.window == []
    assert back.sample.not_counted == ("w1",)


def test_a_change_of_naming_starts_new_baselines() -> None:
    before = raw(t=TaskCounters(succeeded=1))
    base = {"w1": replace(base_of(before), naming="scrubbed")}
    after = raw(t=TaskCounters(succeeded=1, failed=50))
    out = step_outcomes(
        [worker("w1", after)], base, [], now=100.0, since=40.0, window_seconds=300.0, naming="plain"
    )
    assert out.sample.tasks == () and out.sample.not_counted == ("w1",)


@pytest.mark.parametrize(
    "bad",
    [
        {"boot": "b", "started": 1e400, "tasks": {}, "waits": {}},
        {
            "boot": "b",
            "started": 1.0,
            "tasks": {"t": [1, 2, 3, 4, 5, 6, [1, 1.0, 1.0, 300_000_000, 0]]},
            "waits": {},
        },
        {"boot": "b", "started": 1.0, "tasks": {"t": [1, 2, 3, 4, 5, -6]}, "waits": {}},
        {"boot": "b", "started": 1.0, "tasks": {"t": "many"}, "waits": {}},
        {"boot": "b", "started": 1.0, "tasks": {}, "waits": {"q": [1, 1.0, 1.0, 5, 4, 1, 1, 1]}},
    ],
)
def test_a_malformed_stored_baseline_is_dropped_alone(
    bad: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    """Infinity, a 300,000,000-bucket histogram, a negative count, a wrong shape: the state
    loads, quickly and without the memory asked for; that worker's baseline is dropped
    (learnt again) and said, the other worker's and the window are kept."""
    import time

    from chalicelib.analyse.outcomes import baseline_to_json, window_to_json
    from chalicelib.state import TargetState

    good = base_of(raw(t=TaskCounters(succeeded=4, runtime=hist(0.05))))
    entry = WindowEntry(4.0, {"t": TaskCounters(failed=1)}, "scrubbed")
    body = {
        "baselines": {"w-1": bad, "w-2": baseline_to_json(good)},
        "outcome_window": [window_to_json(entry), {"at": "soon"}],
        "outcomes_at": 5.0,
    }
    started = time.perf_counter()
    state = TargetState.from_json(3, body)
    assert time.perf_counter() - started < 1.0
    assert state.version == 3 and state.outcomes_at == 5.0
    assert state.baselines == {"w-2": good} and state.outcome_window == [entry]
    assert "2 stored task-outcome entries of an unknown shape dropped" in caplog.text


def test_a_check_that_is_not_committed_withholds_its_task_figures(tmp_path) -> None:
    """A real SQLite store that another check moved on refuses the commit: the payload then
    reports no task figures, which the next check (from the old baseline) reports once."""
    from chalicelib.check import Stepped
    from chalicelib.runner import _commit
    from chalicelib.state import TargetState
    from chalicelib.state.sqlite import SqliteStore

    store = SqliteStore(str(tmp_path / "state.db"))
    try:
        store.commit("t", TargetState(), 0, ())  # another check: version 1 now
        payload = {
            "metrics": {"tasks_succeeded": 3, "tasks_failed": 9, "tasks_expired": 0},
            "tasks": [{"name": "x", "failed": 9}],
            "queues": [{"name": "celery", "wait_p50_sec": 0.1, "wait_p95_sec": 0.2}],
            "companion": {"workers": 1, "without": []},
            "notifications": [],
            "errors": [],
        }
        stepped = Stepped(payload, sample_with(None), TargetState(), ())
        _, committed = _commit(store, "t", TargetState(version=0), stepped)
    finally:
        store.close()
    assert not committed
    assert payload["tasks"] == [] and payload["metrics"]["tasks_failed"] is None
    assert "wait_p50_sec" not in payload["queues"][0]
    assert "not saved" in payload["companion"]["withheld"]
    assert payload["errors"][0]["kind"] == "conflict"


def test_task_alerts_are_held_while_no_companion_can_be_read() -> None:
    from chalicelib.alerting import AlertState, Policy, step
    from chalicelib.check import outcome_alerts_unseen
    from chalicelib.model import OutcomeSample, Severity

    firing = AlertState(
        key="task_failure_rate:t:send",
        type="task_failure_rate",
        severity=Severity.CRITICAL,
        state="firing",
        title="Task failing: send",
        message="m",
        first_seen=0.0,
        last_seen=100.0,
        since=0.0,
        notified=True,
    )
    alerts = {firing.key: firing}
    policy = Policy(resolve_after=2)
    blind_to_it = OutcomeSample(counted=0, not_counted=("w1",))
    for now in (160.0, 220.0, 280.0):
        unseen = outcome_alerts_unseen(blind_to_it, now, hold_for=3600.0)
        alerts, notes = step(alerts, [], target="t", now=now, policy=policy, unseen=unseen)
        assert list(alerts) == [firing.key] and notes == []  # held, no resolve
    seeing = OutcomeSample(counted=1)
    for now in (340.0, 400.0):
        unseen = outcome_alerts_unseen(seeing, now, hold_for=3600.0)
        alerts, notes = step(alerts, [], target="t", now=now, policy=policy, unseen=unseen)
    assert alerts == {} and [n.action for n in notes] == ["resolve"]
    # Held no longer than a silent worker is remembered.
    late = outcome_alerts_unseen(blind_to_it, 100.0 + 3600.0, hold_for=3600.0)
    assert late is not None and not late(firing)


def test_an_online_worker_whose_counters_were_not_read_keeps_its_baseline() -> None:
    """Its doorman reply failed or timed out this check: the runs between the last good
    reading and the next one are counted then, not lost."""
    first = run([worker("w1", raw(t=TaskCounters(succeeded=10)))], now=100.0, since=None)
    unread = replace(worker("w1", None), companion=True)
    second = run([unread], first.baselines, now=160.0, since=100.0, keep_silent=3600.0)
    assert "w1" in second.baselines
    later = raw(t=TaskCounters(succeeded=10, failed=20))
    third = run([worker("w1", later)], second.baselines, now=220.0, since=160.0)
    (task,) = third.sample.tasks
    assert (task.counters.succeeded, task.counters.failed) == (0, 20)


def test_window_entries_of_another_naming_are_dropped() -> None:
    plain = WindowEntry(90.0, {"tasks.mail_jane@example.com": TaskCounters(failed=9)}, "plain")
    out = step_outcomes(
        [], {}, [plain], now=100.0, since=40.0, window_seconds=300.0, naming="scrubbed"
    )
    assert out.sample.window == {} and out.window == []
    kept = step_outcomes(
        [], {}, [plain], now=100.0, since=40.0, window_seconds=300.0, naming="plain"
    )
    assert list(kept.sample.window) == ["tasks.mail_jane@example.com"]
