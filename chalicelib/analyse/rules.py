"""The alert rules: each a pure function of the sample, its trends and the thresholds.

Every rule returns the findings it makes (possibly none); ``RULES`` lists them in the order
they are evaluated. Only sanitized data is read, so every text built here is safe to send.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import replace

from ..alert_types import AlertType
from ..model import Finding, Sample, Severity
from ..sanitize import names_queue
from ..thresholds import Thresholds
from .deep import EVICTING, EVICTION_ADVICE
from .task_rules import task_failure_rate, tasks_expired
from .trends import GHOST_SATURATION, HIGH_SATURATION, Trends

Rule = Callable[[Sample, Trends, Thresholds], Iterable[Finding]]

MEMORY_LIMIT_PCT = 90


def _workers_asked(sample: Sample) -> bool:
    return sample.redis_ok and sample.workers_probed


def redis_unreachable(sample: Sample, _t: Trends, _th: Thresholds) -> Iterable[Finding]:
    if sample.redis_ok:
        return
    cause = next((e for e in sample.errors if e.component == "redis"), None)
    message = cause.message if cause else "Redis could not be reached"
    yield Finding(
        type=AlertType.REDIS_UNREACHABLE,
        severity=Severity.CRITICAL,
        title="Redis unreachable",
        message=f"{message}; nothing about the queues or workers could be seen.",
        details={"cause": cause.kind if cause else "unknown"},
        recommendation="Check that Redis is up and reachable from Doorman, and its credentials.",
    )


def _dialect_unsure(sample: Sample) -> bool:
    """The broker's key naming is guessed, not confirmed: silence may be Doorman's own."""
    return any(e.kind == "dialect" for e in sample.errors)


def workers_gone(sample: Sample, _t: Trends, _th: Thresholds) -> Iterable[Finding]:
    if not _workers_asked(sample) or sample.alive_workers > 0 or _dialect_unsure(sample):
        return
    pending = sample.total_pending
    if pending > 0:
        yield Finding(
            type=AlertType.WORKERS_DOWN,
            severity=Severity.EMERGENCY,
            title="All workers down",
            message=f"No workers responding but {pending} tasks are pending",
            details={"total_pending": pending, "known_workers": len(sample.workers)},
            recommendation="Restart the Celery workers; tasks are piling up unprocessed.",
        )
    else:
        yield Finding(
            type=AlertType.CELERY_DISCONNECTED,
            severity=Severity.WARNING,
            title="No Celery worker answers",
            message="No worker answered remote control; no task is waiting yet.",
            details={"known_workers": len(sample.workers)},
            recommendation="Check that the workers run and can reach the broker.",
        )


def redis_permission(sample: Sample, _t: Trends, _th: Thresholds) -> Iterable[Finding]:
    """Commands the broker refused to Doorman's user: part of the check is blind.

    Its own warning, never ``redis_unreachable``: everything that could be read is reported,
    and the message says what could not be and why.
    """
    denied = [e for e in sample.errors if e.kind == "permission"]
    if not denied:
        return
    yield Finding(
        type=AlertType.REDIS_PERMISSION,
        severity=Severity.WARNING,
        title="Redis denies commands Doorman needs",
        message="; ".join(e.message for e in denied[:5])
        + (f" (and {len(denied) - 5} more)" if len(denied) > 5 else ""),
        details={"denied": len(denied)},
        recommendation="Grant the commands named (see the README's least-privilege section),"
        " or accept that these figures are not measured.",
    )


def _largest(sample: Sample, n: int = 3) -> str:
    top = sorted(sample.queues, key=lambda q: -q.depth)[:n]
    return ", ".join(f"{q.name} ({q.depth})" for q in top if q.depth)


def backlog_explosion(sample: Sample, _t: Trends, th: Thresholds) -> Iterable[Finding]:
    pending = sample.total_pending
    if pending <= th.max_queue_size:
        return
    yield Finding(
        type=AlertType.BACKLOG_EXPLOSION,
        severity=Severity.CRITICAL,
        title="Backlog explosion",
        message=(
            f"Total pending tasks ({pending}) exceeds threshold ({th.max_queue_size});"
            f" largest queues: {_largest(sample)}"
        ),
        details={
            "total_pending": pending,
            "threshold": th.max_queue_size,
            **{
                f"queues.{q.name}": q.depth
                for q in sorted(sample.queues, key=lambda q: -q.depth)[:5]
            },
        },
        recommendation="Add workers for the largest queues or find what stopped them draining.",
    )


def stuck_tasks(sample: Sample, _t: Trends, th: Thresholds) -> Iterable[Finding]:
    for anomaly in sample.anomalies:
        if anomaly.type != "stuck_task":
            continue
        yield Finding(
            type=AlertType.STUCK_TASK,
            severity=Severity.WARNING,
            subject=anomaly.task_id_hash or "",
            title="Task stuck",
            message=(
                f"Task {anomaly.task_name} ({anomaly.task_id_hash}) has been running for"
                f" {anomaly.duration_sec:.0f} s (limit {th.max_task_runtime_seconds:.0f} s)"
            ),
            details={
                "task_name": anomaly.task_name,
                "task_id_hash": anomaly.task_id_hash,
                "duration_sec": anomaly.duration_sec,
                "worker_id_hash": anomaly.worker_id_hash,
            },
            recommendation="Set a task time limit, or look at what the task waits for.",
        )


def high_latency(sample: Sample, _t: Trends, th: Thresholds) -> Iterable[Finding]:
    for q in sample.queues:
        if q.latency_sec is None or q.latency_sec <= th.max_wait_time_seconds:
            continue
        is_critical = names_queue(th.critical_queues, q.name)
        bound = "at least " if q.latency_is_lower_bound else ""
        yield Finding(
            type=AlertType.HIGH_LATENCY,
            severity=Severity.CRITICAL if is_critical else Severity.WARNING,
            subject=q.name,
            queue=q.name,
            title=f"High latency on {q.name}",
            message=(
                f"The oldest task in {q.name} has waited {bound}{q.latency_sec:.0f} s"
                f" (threshold {th.max_wait_time_seconds:.0f} s, {q.depth} waiting)"
            ),
            details={
                "queue": q.name,
                "latency_sec": q.latency_sec,
                "latency_source": q.latency_source,
                "threshold": th.max_wait_time_seconds,
                "depth": q.depth,
                "critical_queue": is_critical,
            },
            recommendation=f"Scale the workers that consume '{q.name}'.",
        )


def worker_offline(sample: Sample, _t: Trends, _th: Thresholds) -> Iterable[Finding]:
    if not _workers_asked(sample) or sample.alive_workers == 0:
        return  # all down: workers_down / celery_disconnected say it better
    alive = sample.alive_workers
    for w in sample.workers:
        if w.status not in {"offline", "not_answering"}:
            continue
        yield Finding(
            type=AlertType.WORKER_OFFLINE,
            severity=Severity.CRITICAL if alive < 2 else Severity.WARNING,
            subject=w.id_hash,
            title=f"Worker {w.id_hash} {w.status.replace('_', ' ')}",
            message=(
                f"Worker {w.id_hash} is {w.status.replace('_', ' ')};"
                f" {alive} worker(s) still answer"
            ),
            details={"worker_id_hash": w.id_hash, "status": w.status, "alive_workers": alive},
            recommendation="Restart the worker or check its host; use 'doorman whois' to name it.",
        )


def orphaned_tasks(sample: Sample, _t: Trends, _th: Thresholds) -> Iterable[Finding]:
    orphans = [a for a in sample.anomalies if a.type == "orphaned_task"]
    if not orphans:
        return
    oldest = max(a.duration_sec for a in orphans)
    yield Finding(
        type=AlertType.ORPHANED_TASKS,
        severity=Severity.WARNING,
        title="Orphaned tasks",
        message=(
            f"{len(orphans)} unacknowledged task(s) older than the visibility timeout are held"
            f" by no live worker (oldest {oldest:.0f} s); Redis will deliver them again"
        ),
        details={"count": len(orphans), "oldest_sec": oldest},
        recommendation="Enable task_acks_late with task_reject_on_worker_lost, and find why"
        " workers die mid-task.",
    )


def redis_memory(sample: Sample, _t: Trends, _th: Thresholds) -> Iterable[Finding]:
    info = sample.redis
    used, limit = info.get("used_memory"), info.get("maxmemory")
    policy = info.get("maxmemory_policy")
    if (
        isinstance(used, int)
        and isinstance(limit, int)
        and limit > 0
        and used * 100 >= MEMORY_LIMIT_PCT * limit  # integers: 0.9 * 100 != 90
    ):
        pct = round(100.0 * used / limit, 1)
        yield Finding(
            type=AlertType.REDIS_MEMORY,
            severity=Severity.CRITICAL,
            title="Redis memory almost full",
            message=f"Redis uses {pct}% of maxmemory ({used} of {limit} bytes)",
            details={"used_memory": used, "maxmemory": limit, "used_pct": pct, "policy": policy},
            recommendation="Drain the queues or raise maxmemory before writes fail or keys go.",
        )
    elif isinstance(policy, str) and policy in EVICTING:
        yield Finding(
            type=AlertType.REDIS_MEMORY,
            severity=Severity.WARNING,
            title="Redis may evict queues",
            message=f"Eviction policy {policy} can delete queue keys (and their tasks) when full",
            details={"maxmemory": limit, "policy": policy},
            recommendation=EVICTION_ADVICE + ".",
        )


def growth(sample: Sample, trends: Trends, th: Thresholds) -> Iterable[Finding]:
    """A finding per growing queue, then what the workers' saturation says of the growth."""
    if not sample.redis_ok or not trends.growing:
        return
    yield from _growing_queues(sample, trends, th)
    yield from _growth_cause(sample, trends)


def _growing_queues(sample: Sample, trends: Trends, th: Thresholds) -> Iterable[Finding]:
    total_rate = trends.growth_per_min
    for t in trends.growing:
        left = th.max_queue_size - sample.total_pending
        eta_min = round(left / total_rate, 1) if total_rate > 0 and left > 0 else None
        when = f"; {th.max_queue_size} reached in about {eta_min} min" if eta_min else ""
        yield Finding(
            type=AlertType.QUEUE_GROWING,
            severity=Severity.WARNING,
            subject=t.name,
            queue=t.name,
            title=f"Queue {t.name} growing",
            message=f"{t.name} grew from {t.first} to {t.last} (+{t.rate_per_min}/min){when}",
            details={
                "queue": t.name,
                "rate_per_min": t.rate_per_min,
                "from": t.first,
                "to": t.last,
                "minutes_to_threshold": eta_min,
            },
        )


def _growth_cause(sample: Sample, trends: Trends) -> Iterable[Finding]:
    """Ghost workers (answering, little busy, queues growing) or saturated ones, if either."""
    saturation = sample.saturation_pct
    names = ", ".join(t.name for t in trends.growing)
    if sample.alive_workers > 0 and saturation < GHOST_SATURATION:
        yield Finding(
            type=AlertType.GHOST_WORKERS,
            severity=Severity.WARNING,
            title="Ghost workers",
            message=(
                f"{names} growing while saturation is low ({saturation:.1f}%): workers answer but"
                " do not take tasks"
            ),
            details={"saturation_pct": saturation, "growing": names},
            recommendation="Check the workers consume these queues (-Q) and reach the broker.",
        )
    elif saturation > HIGH_SATURATION:
        extra = _extra_slots(sample, trends)
        more = f"; about {extra} more worker slot(s) would drain it" if extra else ""
        yield Finding(
            type=AlertType.SATURATION_HIGH,
            severity=Severity.WARNING,
            title="Workers saturated",
            message=f"Saturation {saturation:.1f}% while {names} grow(s){more}",
            details={
                "saturation_pct": saturation,
                "growth_per_min": trends.growth_per_min,
                "throughput_per_min": trends.throughput_per_min,
                "extra_slots": extra,
            },
            recommendation="Add workers or concurrency for the growing queues.",
        )


def _extra_slots(sample: Sample, trends: Trends) -> int | None:
    """Slots needed to absorb the growth at the measured throughput per busy slot."""
    throughput = trends.throughput_per_min
    if not throughput or sample.total_active <= 0:
        return None
    per_slot = throughput / sample.total_active
    return max(1, math.ceil(trends.growth_per_min / per_slot)) if per_slot > 0 else None


RULES: tuple[Rule, ...] = (
    redis_unreachable,
    redis_permission,
    workers_gone,
    backlog_explosion,
    stuck_tasks,
    high_latency,
    worker_offline,
    orphaned_tasks,
    redis_memory,
    growth,
    task_failure_rate,
    tasks_expired,
)


def evaluate(sample: Sample, trends: Trends, thresholds: Thresholds) -> list[Finding]:
    """Every finding of every rule, in rule order.

    A sample taken without Redis says nothing reliable about queues, workers or memory (a
    probe may have died half-way): only ``redis_unreachable`` is concluded from it.
    """
    rules = RULES if sample.redis_ok else (redis_unreachable,)
    return limit_findings([f for rule in rules for f in rule(sample, trends, thresholds)])


MAX_PER_TYPE = 10
MAX_FINDINGS = 60


def limit_findings(findings: list[Finding]) -> list[Finding]:
    """At most MAX_PER_TYPE findings of a type and MAX_FINDINGS in all, most severe first.

    One alert per stuck task or growing queue is useful for a few and noise for hundreds, and
    every alert is state written with each check (a DynamoDB transaction holds 100 items). The
    payload's anomalies and queues still list everything; the kept findings say how many more.
    """
    by_type: dict[AlertType, list[Finding]] = {}
    for f in findings:
        by_type.setdefault(f.type, []).append(f)
    kept: list[Finding] = []
    for group in by_type.values():
        group.sort(key=lambda f: -f.severity.rank)  # stable: rule order within a severity
        extra = len(group) - MAX_PER_TYPE
        if extra > 0:
            group = [
                replace(f, message=f"{f.message} (and {extra} more like it)")
                for f in group[:MAX_PER_TYPE]
            ]
        kept.extend(group)
    if len(kept) > MAX_FINDINGS:
        kept.sort(key=lambda f: -f.severity.rank)
        kept = kept[:MAX_FINDINGS]
    return kept
