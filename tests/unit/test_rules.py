"""The alert rules, one by one: the edges of each threshold and the words of each message.

Samples are built by hand from the model's dataclasses; nothing here touches Redis.
"""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.analyse import rules
from chalicelib.analyse.trends import QueueTrend, Trends
from chalicelib.model import (
    Anomaly,
    Finding,
    ProbeError,
    QueueSample,
    Sample,
    Severity,
    WorkerSample,
)
from chalicelib.thresholds import Thresholds

TH = Thresholds()
NO_TRENDS = Trends()


def queue(name: str, depth: int = 0, latency: float | None = None, **kw: Any) -> QueueSample:
    return QueueSample(
        name=name,
        depth=depth,
        latency_sec=latency,
        latency_source=kw.pop("latency_source", "producer_header" if latency else "none"),
        latency_is_lower_bound=kw.pop("lower_bound", False),
        depth_by_priority={},
        oldest_task=None,
        unreadable_messages=False,
        serializers=(),
        redelivered=False,
        problem=None,
    )


def worker(
    id_hash: str,
    status: str = "online",
    *,
    concurrency: int | None = 4,
    active: int = 0,
    processed_total: int = 0,
    uptime_sec: int | None = 100,
) -> WorkerSample:
    return WorkerSample(
        id_hash=id_hash,
        status=status,
        concurrency=concurrency,
        active=active if status == "online" else 0,
        reserved=0,
        scheduled=0,
        pool="prefork",
        queues=("celery",),
        processed_total=processed_total,
        processed={"tasks.quick": processed_total} if processed_total else {},
        prefetch_count=None,
        uptime_sec=uptime_sec,
        tasks=(),
    )


def sample(
    queues: tuple[QueueSample, ...] = (),
    workers: tuple[WorkerSample, ...] = (),
    *,
    redis_ok: bool = True,
    workers_probed: bool = True,
    anomalies: tuple[Anomaly, ...] = (),
    redis: dict[str, object] | None = None,
    errors: tuple[ProbeError, ...] = (),
    ts: float = 1_000.0,
) -> Sample:
    return Sample(
        target="prod",
        timestamp=ts,
        duration_ms=1.0,
        redis_ok=redis_ok,
        queues=queues,
        workers=workers,
        anomalies=anomalies,
        errors=errors,
        redis=redis or {},
        unacked_total=0,
        visibility_timeout_sec=None,
        workers_probed=workers_probed and redis_ok,
        discovery_truncated=False,
        observations={},
    )


def of(findings: list[Finding], kind: str) -> list[Finding]:
    return [f for f in findings if f.type == kind]


def run(s: Sample, trends: Trends = NO_TRENDS, th: Thresholds = TH) -> list[Finding]:
    return rules.evaluate(s, trends, th)


def growing(*specs: tuple[str, int, int, float]) -> Trends:
    return Trends(
        queues={
            name: QueueTrend(name, first, last, 3, rate, True) for name, first, last, rate in specs
        },
        throughput_per_min=None,
        samples=3,
    )


# --- redis_unreachable ----------------------------------------------------------------------


def test_unreachable_redis_is_one_critical_finding_naming_the_cause() -> None:
    err = ProbeError("redis", "connection_refused", "Connection refused by 127.0.0.1:1")
    found = run(sample(redis_ok=False, errors=(err,)))
    assert [(f.type, f.severity) for f in found] == [("redis_unreachable", Severity.CRITICAL)]
    assert found[0].message.startswith("Connection refused by 127.0.0.1:1;")
    assert found[0].details["cause"] == "connection_refused"


def test_a_blind_check_finds_nothing_else() -> None:
    dead = sample(
        (queue("celery", 5000, latency=9999.0),),
        (worker("w-1", "unknown"),),
        redis_ok=False,
        redis={"used_memory": 100, "maxmemory": 100},
    )
    assert [f.type for f in run(dead, growing(("celery", 1, 5000, 100.0)))] == ["redis_unreachable"]


# --- workers_down / celery_disconnected ------------------------------------------------------


def test_no_worker_and_nothing_pending_is_celery_disconnected_warning() -> None:
    found = run(sample((queue("celery", 0),)))
    assert [(f.type, f.severity) for f in found] == [("celery_disconnected", Severity.WARNING)]


@pytest.mark.parametrize("pending", [1, 5, 1234])
def test_no_worker_and_pending_tasks_is_workers_down_emergency(pending: int) -> None:
    found = of(
        run(sample((queue("celery", pending),), (worker("w-1", "offline"),))), "workers_down"
    )
    assert len(found) == 1
    assert found[0].severity == Severity.EMERGENCY
    assert found[0].message == f"No workers responding but {pending} tasks are pending"
    assert found[0].details["total_pending"] == pending


def test_one_worker_that_answers_means_no_worker_alert() -> None:
    found = run(sample((queue("celery", 5),), (worker("w-1"), worker("w-2", "not_answering"))))
    assert not of(found, "workers_down") and not of(found, "celery_disconnected")


def test_workers_not_asked_is_not_workers_down() -> None:
    assert run(sample((queue("celery", 5),), workers_probed=False)) == []


# --- backlog_explosion ------------------------------------------------------------------------


def test_backlog_fires_only_above_the_threshold() -> None:
    th = Thresholds(max_queue_size=10)
    live = (worker("w-1"),)
    at = sample((queue("a", 6), queue("b", 4)), live)
    over = sample((queue("a", 7), queue("b", 4)), live)
    assert of(run(at, th=th), "backlog_explosion") == []
    (finding,) = of(run(over, th=th), "backlog_explosion")
    assert finding.severity == Severity.CRITICAL
    assert "(11)" in finding.message and "threshold (10)" in finding.message


def test_backlog_message_names_the_largest_queues_largest_first() -> None:
    qs = (queue("small", 1), queue("big", 900), queue("empty", 0), queue("mid", 300))
    qs += (queue("tiny", 0), queue("other", 2))
    (finding,) = of(run(sample(qs, (worker("w-1"),))), "backlog_explosion")
    assert finding.message == (
        "Total pending tasks (1203) exceeds threshold (1000); largest queues:"
        " big (900), mid (300), other (2)"
    )
    assert finding.details["threshold"] == 1000
    assert finding.details["queues.big"] == 900


def test_backlog_default_threshold_is_1000() -> None:
    live = (worker("w-1"),)
    assert of(run(sample((queue("celery", 1000),), live)), "backlog_explosion") == []
    assert len(of(run(sample((queue("celery", 1001),), live)), "backlog_explosion")) == 1


# --- high_latency ---------------------------------------------------------------------------


def test_latency_fires_only_above_the_wait_threshold() -> None:
    live = (worker("w-1"),)
    assert of(run(sample((queue("celery", 3, 60.0),), live)), "high_latency") == []
    (finding,) = of(run(sample((queue("celery", 3, 60.5),), live)), "high_latency")
    assert finding.severity == Severity.WARNING
    assert finding.subject == "celery" and finding.queue == "celery"
    assert finding.message == (
        "The oldest task in celery has waited 60 s (threshold 60 s, 3 waiting)"
    )


def test_latency_is_critical_only_on_a_critical_queue() -> None:
    th = Thresholds(critical_queues=("payments",))
    qs = (queue("payments", 2, 120.0), queue("reports", 2, 120.0), queue("payments~2", 1, 99.0))
    found = {
        f.subject: f.severity for f in of(run(sample(qs, (worker("w-1"),)), th=th), "high_latency")
    }
    assert found == {
        "payments": Severity.CRITICAL,
        "reports": Severity.WARNING,
        "payments~2": Severity.CRITICAL,  # a name kept apart by a collision suffix
    }


def test_a_critical_queue_is_matched_by_its_scrubbed_name() -> None:
    th = Thresholds(critical_queues=("emails-jane@acme.com",))
    qs = (queue("emails-[email]", 1, 300.0),)
    (finding,) = of(run(sample(qs, (worker("w-1"),)), th=th), "high_latency")
    assert finding.severity == Severity.CRITICAL


def test_a_lower_bound_latency_says_at_least() -> None:
    qs = (queue("celery", 1, 90.0, lower_bound=True, latency_source="observed"),)
    (finding,) = of(run(sample(qs, (worker("w-1"),))), "high_latency")
    assert "waited at least 90 s" in finding.message


# --- worker_offline -------------------------------------------------------------------------


def test_offline_worker_is_critical_when_fewer_than_two_answer() -> None:
    one_left = sample((), (worker("w-1"), worker("w-2", "offline")))
    (finding,) = of(run(one_left), "worker_offline")
    assert finding.severity == Severity.CRITICAL
    assert finding.subject == "w-2"
    assert finding.message == "Worker w-2 is offline; 1 worker(s) still answer"


def test_offline_worker_is_a_warning_when_two_still_answer() -> None:
    two_left = sample((), (worker("w-1"), worker("w-2"), worker("w-3", "not_answering")))
    (finding,) = of(run(two_left), "worker_offline")
    assert finding.severity == Severity.WARNING
    assert finding.message == "Worker w-3 is not answering; 2 worker(s) still answer"


def test_all_workers_gone_is_not_worker_offline() -> None:
    found = run(sample((), (worker("w-1", "offline"), worker("w-2", "offline"))))
    assert of(found, "worker_offline") == []
    assert [f.type for f in found] == ["celery_disconnected"]


# --- stuck and orphaned tasks ------------------------------------------------------------------


def test_stuck_task_names_task_and_limit() -> None:
    stuck = Anomaly("stuck_task", "t-abc", "tasks.sleep", 2000.4, worker_id_hash="w-1")
    (finding,) = of(run(sample((), (worker("w-1"),), anomalies=(stuck,))), "stuck_task")
    assert finding.severity == Severity.WARNING and finding.subject == "t-abc"
    assert finding.message == (
        "Task tasks.sleep (t-abc) has been running for 2000 s (limit 1800 s)"
    )


def test_orphans_are_one_warning_with_count_and_oldest() -> None:
    orphans = tuple(Anomaly("orphaned_task", f"t-{i}", "tasks.sleep", 10.0 * i) for i in (1, 7))
    (finding,) = of(run(sample((), (worker("w-1"),), anomalies=orphans)), "orphaned_tasks")
    assert finding.details == {"count": 2, "oldest_sec": 70.0}
    assert finding.message.startswith("2 unacknowledged task(s)")


# --- redis_memory ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("used", "limit", "fires"),
    [(89, 100, False), (90, 100, True), (899_999, 1_000_000, False), (900_000, 1_000_000, True)],
)
def test_memory_is_critical_from_90_percent(used: int, limit: int, fires: bool) -> None:
    info: dict[str, object] = {
        "used_memory": used,
        "maxmemory": limit,
        "maxmemory_policy": "noeviction",
    }
    found = of(run(sample((), (worker("w-1"),), redis=info)), "redis_memory")
    assert [f.severity for f in found] == ([Severity.CRITICAL] if fires else [])
    if fires:
        pct = round(100.0 * used / limit, 1)
        assert found[0].message == f"Redis uses {pct}% of maxmemory ({used} of {limit} bytes)"


def test_memory_without_a_limit_is_not_full() -> None:
    info: dict[str, object] = {"used_memory": 10**9, "maxmemory": 0}
    assert of(run(sample((), (worker("w-1"),), redis=info)), "redis_memory") == []


@pytest.mark.parametrize("policy", ["allkeys-lru", "allkeys-lfu", "allkeys-random"])
def test_an_evicting_policy_is_a_warning(policy: str) -> None:
    info: dict[str, object] = {"used_memory": 10, "maxmemory": 100, "maxmemory_policy": policy}
    (finding,) = of(run(sample((), (worker("w-1"),), redis=info)), "redis_memory")
    assert finding.severity == Severity.WARNING
    assert policy in finding.message
    # The same advice as the audit's configuration check, which flags noeviction.
    assert finding.recommendation and "volatile-lru" in finding.recommendation
    assert "noeviction" not in finding.recommendation


@pytest.mark.parametrize("policy", ["noeviction", "volatile-lru", None])
def test_a_safe_policy_is_no_finding(policy: str | None) -> None:
    info: dict[str, object] = {"used_memory": 10, "maxmemory": 100, "maxmemory_policy": policy}
    assert of(run(sample((), (worker("w-1"),), redis=info)), "redis_memory") == []


def test_full_memory_with_an_evicting_policy_is_one_critical_finding() -> None:
    info: dict[str, object] = {
        "used_memory": 95,
        "maxmemory": 100,
        "maxmemory_policy": "allkeys-lru",
    }
    found = of(run(sample((), (worker("w-1"),), redis=info)), "redis_memory")
    assert [f.severity for f in found] == [Severity.CRITICAL]


# --- queue_growing, ghost_workers, saturation_high -------------------------------------------


def test_growing_queue_gives_rate_and_projected_time() -> None:
    th = Thresholds(max_queue_size=1000)
    s = sample((queue("celery", 400),), (worker("w-1", active=2),))
    (finding,) = of(run(s, growing(("celery", 100, 400, 60.0)), th), "queue_growing")
    assert finding.severity == Severity.WARNING and finding.queue == "celery"
    assert finding.message == (
        "celery grew from 100 to 400 (+60.0/min); 1000 reached in about 10.0 min"
    )
    assert finding.details["minutes_to_threshold"] == 10.0


def test_growing_past_the_threshold_has_no_projection() -> None:
    th = Thresholds(max_queue_size=10)
    s = sample((queue("celery", 40),), (worker("w-1", active=2),))
    (finding,) = of(run(s, growing(("celery", 10, 40, 30.0)), th), "queue_growing")
    assert finding.message == "celery grew from 10 to 40 (+30.0/min)"
    assert finding.details["minutes_to_threshold"] is None


def test_a_stable_queue_is_not_growing() -> None:
    trends = Trends(queues={"celery": QueueTrend("celery", 5, 5, 3, 0.0, False)}, samples=3)
    s = sample((queue("celery", 5),), (worker("w-1", active=4),))
    assert [f.type for f in run(s, trends)] == []


@pytest.mark.parametrize(("active", "ghost"), [(0, True), (1, True), (2, False)])
def test_ghost_workers_below_30_percent_saturation(active: int, ghost: bool) -> None:
    # 5 slots: 1 busy is 20 %, 2 busy is 40 %.
    s = sample((queue("celery", 50),), (worker("w-1", concurrency=5, active=active),))
    found = run(s, growing(("celery", 10, 50, 20.0)))
    assert bool(of(found, "ghost_workers")) is ghost
    if ghost:
        assert of(found, "ghost_workers")[0].message == (
            f"celery growing while saturation is low ({20.0 * active:.1f}%): workers answer"
            " but do not take tasks"
        )


def test_exactly_30_percent_is_not_ghost() -> None:
    s = sample((queue("celery", 50),), (worker("w-1", concurrency=10, active=3),))
    assert of(run(s, growing(("celery", 10, 50, 20.0))), "ghost_workers") == []


def test_no_live_worker_is_not_ghost_workers() -> None:
    s = sample((queue("celery", 50),), (worker("w-1", "offline"),))
    found = run(s, growing(("celery", 10, 50, 20.0)))
    assert of(found, "ghost_workers") == [] and of(found, "workers_down")


@pytest.mark.parametrize(("active", "high"), [(9, False), (10, True)])
def test_saturation_high_above_90_percent_while_growing(active: int, high: bool) -> None:
    s = sample((queue("celery", 50),), (worker("w-1", concurrency=10, active=active),))
    assert bool(of(run(s, growing(("celery", 10, 50, 20.0))), "saturation_high")) is high


def test_saturation_high_estimates_the_extra_slots_from_throughput() -> None:
    # 10 busy slots complete 50 tasks/min (5 per slot); the queues grow by 12/min in all:
    # ceil(12 / 5) = 3 more slots.
    s = sample(
        (queue("a", 50), queue("b", 20)),
        (worker("w-1", concurrency=4, active=4), worker("w-2", concurrency=6, active=6)),
    )
    trends = growing(("a", 10, 50, 8.0), ("b", 5, 20, 4.0))
    trends = Trends(queues=trends.queues, throughput_per_min=50.0, samples=3)
    (finding,) = of(run(s, trends), "saturation_high")
    assert finding.details["extra_slots"] == 3
    assert finding.message == (
        "Saturation 100.0% while a, b grow(s); about 3 more worker slot(s) would drain it"
    )


def test_saturation_high_without_throughput_makes_no_estimate() -> None:
    s = sample((queue("a", 50),), (worker("w-1", concurrency=2, active=2),))
    (finding,) = of(run(s, growing(("a", 10, 50, 8.0))), "saturation_high")
    assert finding.details["extra_slots"] is None
    assert finding.message == "Saturation 100.0% while a grow(s)"


def test_between_30_and_90_percent_only_the_queue_grows() -> None:
    s = sample((queue("celery", 50),), (worker("w-1", concurrency=10, active=5),))
    found = run(s, growing(("celery", 10, 50, 20.0)))
    assert [f.type for f in found] == ["queue_growing"]


def test_a_healthy_sample_finds_nothing() -> None:
    s = sample((queue("celery", 3, 1.0),), (worker("w-1", active=1), worker("w-2")))
    assert run(s) == []


def test_findings_are_capped_per_type_and_in_total_keeping_the_most_severe():
    from chalicelib.analyse.rules import MAX_FINDINGS, MAX_PER_TYPE, limit_findings
    from chalicelib.model import Finding, Severity

    many = [
        Finding("high_latency", Severity.WARNING, "t", f"m{i}", subject=f"q{i}") for i in range(30)
    ] + [Finding("high_latency", Severity.CRITICAL, "t", "crit", subject="payments")]
    kept = limit_findings(many)
    assert len(kept) == MAX_PER_TYPE
    assert kept[0].subject == "payments"
    assert all("(and 21 more like it)" in f.message for f in kept)

    flood = [
        Finding(f"type{t}", Severity.WARNING, "t", "m", subject=f"s{i}")
        for t in range(12)
        for i in range(8)
    ] + [Finding("workers_down", Severity.EMERGENCY, "t", "m")]
    kept = limit_findings(flood)
    assert len(kept) == MAX_FINDINGS
    assert any(f.type == "workers_down" for f in kept)
