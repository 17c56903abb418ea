"""The JSON document of one check, with the field names of the earlier agent's schema."""

from __future__ import annotations

from typing import Any

from .alerting import AlertState, Notification
from .analyse.outcomes import COUNTERS, counters_add, failure_rate, quantile
from .analyse.trends import Trends, diagnosis
from .model import (
    Anomaly,
    OutcomeSample,
    QueueSample,
    Sample,
    TaskCounters,
    TaskOutcome,
    WorkerSample,
)
from .text import iso

PRIVACY = {
    "args_accessed": False,
    "kwargs_accessed": False,
    "results_accessed": False,
    "message_bodies_read": False,
    "hostnames": "hashed",
    "task_ids": "hashed",
}


def _queue(q: QueueSample, outcomes: OutcomeSample | None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": q.name,
        "depth": q.depth,
        "latency_sec": q.latency_sec,
        "latency_source": q.latency_source,
    }
    if q.latency_is_lower_bound:
        doc["latency_is_lower_bound"] = True
    if len(q.depth_by_priority) > 1 or any(k != 0 for k in q.depth_by_priority):
        doc["depth_by_priority"] = {str(k): v for k, v in q.depth_by_priority.items()}
    if q.oldest_task:
        doc["oldest_task"] = q.oldest_task
    if q.unreadable_messages:
        doc["unreadable_messages"] = True
    if q.serializers and q.serializers != ("json",):
        doc["serializers"] = list(q.serializers)
    if q.redelivered:
        doc["redelivered"] = True
    if q.problem:
        doc["problem"] = q.problem
    if q.latency_window_exhausted:
        doc["latency_window_exhausted"] = True
    if q.expired_waiting:
        doc["expired_waiting"] = q.expired_waiting
    waits = outcomes.waits.get(q.name) if outcomes is not None else None
    if outcomes is not None and waits is not None:
        doc["wait_p50_sec"] = _seconds(quantile(waits, outcomes.bounds, 0.5))
        doc["wait_p95_sec"] = _seconds(quantile(waits, outcomes.bounds, 0.95))
    return doc


def _seconds(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


def _worker(w: WorkerSample) -> dict[str, Any]:
    doc: dict[str, Any] = {"id_hash": w.id_hash, "status": w.status, "concurrency": w.concurrency}
    doc["companion"] = w.companion is True
    if w.status == "online":
        doc.update(
            active=w.active,
            reserved=w.reserved,
            scheduled=w.scheduled,
            pool=w.pool,
            queues=list(w.queues),
            processed_total=w.processed_total,
        )
        if w.detail_age_sec:
            doc["detail_age_sec"] = w.detail_age_sec
    return doc


def _anomaly(a: Anomaly) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "type": a.type,
        "task_id_hash": a.task_id_hash,
        "task_name": a.task_name,
        "duration_sec": a.duration_sec,
    }
    if a.worker_id_hash:
        doc["worker_id_hash"] = a.worker_id_hash
    if a.queue:
        doc["queue"] = a.queue
    return doc


def alert_json(alert: AlertState) -> dict[str, Any]:
    """An alert as the payload lists it (pending or firing)."""
    doc: dict[str, Any] = {
        "type": alert.type,
        "severity": alert.severity.value,
        "state": alert.state,
        "key": alert.key,
        "title": alert.title,
        "message": alert.message,
        "since": iso(alert.since if alert.since is not None else alert.first_seen),
    }
    if alert.queue:
        doc["queue"] = alert.queue
    if alert.recommendation:
        doc["recommendation"] = alert.recommendation
    return doc


def notification_json(note: Notification) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": note.id,
        "action": note.action,
        "type": note.type,
        "severity": note.severity.value,
        "key": note.key,
        "title": note.title,
    }
    if note.queue:
        doc["queue"] = note.queue
    return doc


def trends_json(trends: Trends, sample: Sample) -> dict[str, Any]:
    return {
        "samples": trends.samples,
        "diagnosis": diagnosis(
            sample.saturation_pct, trends, sample.total_pending, sample.alive_workers
        ),
        "throughput_per_min": trends.throughput_per_min,
        "queues": {
            name: {"rate_per_min": t.rate_per_min, "growing": t.growing}
            for name, t in trends.queues.items()
            if t.samples > 1
        },
    }


def _task(t: TaskOutcome, bounds: tuple[float, ...]) -> dict[str, Any]:
    c = t.counters
    doc: dict[str, Any] = {"name": t.name, **{n: getattr(c, n) for n in COUNTERS}}
    rate = failure_rate(c)
    doc["failure_rate"] = round(rate, 4) if rate is not None else None
    runtime = c.runtime
    doc["runtime_avg_sec"] = _seconds(runtime.total / runtime.count) if runtime else None
    doc["runtime_p95_sec"] = _seconds(quantile(runtime, bounds, 0.95))
    return doc


OUTCOME_METRICS = ("tasks_succeeded", "tasks_failed", "tasks_expired", "failure_rate_pct")


def outcome_metrics(outcomes: OutcomeSample | None) -> dict[str, Any]:
    """The target's task figures since the previous check; None where not measured (no
    companion answered, or each one only gave its first counters)."""
    if outcomes is None or not outcomes.counted:
        return dict.fromkeys(OUTCOME_METRICS)
    total = TaskCounters()
    for t in outcomes.tasks:
        total = counters_add(total, t.counters, runtime=False)
    rate = failure_rate(total)
    return {
        "tasks_succeeded": total.succeeded,
        "tasks_failed": total.failed,
        "tasks_expired": total.expired,
        "failure_rate_pct": round(rate * 100.0, 2) if rate is not None else None,
    }


def companion_json(sample: Sample) -> dict[str, Any]:
    """Which answering workers run the companion, and what is not measured without it."""
    outcomes = sample.outcomes
    online = [w for w in sample.workers if w.status == "online"]
    without = [w.id_hash for w in online if w.companion is not True]
    doc: dict[str, Any] = {"workers": len(online) - len(without), "without": without}
    if without:
        doc["not_measured"] = (
            "task outcomes (failures, retries, expiries), run times and exact queue waits of"
            f" {len(without)} worker(s) without the companion; their running tasks are asked"
            " with active, whose replies carry task arguments to Doorman (dropped on arrival)"
        )
    if outcomes is not None and outcomes.not_counted:
        # Read for the first time (or restarted long ago): figures from the next check.
        doc["not_counted"] = list(outcomes.not_counted)
        if not outcomes.counted:
            doc["first_reading"] = True
    return doc


def withhold_outcomes(payload: dict[str, Any], reason: str) -> None:
    """Take the task figures out of a check that was not committed: its baselines were not
    saved, so the next check counts the same runs again, and they must be reported once."""
    payload["tasks"] = []
    payload["metrics"].update(dict.fromkeys(OUTCOME_METRICS))
    for queue in payload["queues"]:
        queue.pop("wait_p50_sec", None)
        queue.pop("wait_p95_sec", None)
    payload.setdefault("companion", {})["withheld"] = reason


def build_payload(
    sample: Sample,
    *,
    alerts: list[dict[str, Any]] | None = None,
    notifications: list[dict[str, Any]] | None = None,
    trends: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything here comes from the sanitized sample; nothing raw can reach it."""
    stuck = sum(1 for a in sample.anomalies if a.type == "stuck_task")
    orphaned = sum(1 for a in sample.anomalies if a.type == "orphaned_task")
    largest = max(sample.queues, key=lambda q: q.latency_sec or 0.0, default=None)
    metrics: dict[str, Any] = {
        "total_pending": sample.total_pending,
        "total_active": sample.total_active,
        "saturation_pct": sample.saturation_pct,
        "max_latency_sec": sample.max_latency_sec,
        "alive_workers": sample.alive_workers,
        "total_workers": len(sample.workers),
        "total_concurrency": sample.total_concurrency,
        "queues": len(sample.queues),
        "queues_not_shown": sample.queues_not_shown,
        "stuck_tasks": stuck,
        "orphaned_tasks": orphaned,
        "unacked_total": sample.unacked_total,
        "redis_connected": sample.redis_ok,
        "celery_connected": sample.alive_workers > 0,
        **outcome_metrics(sample.outcomes),
    }
    if largest is not None and (largest.latency_sec or 0) > 0:
        metrics["max_latency_queue"] = largest.name
    return {
        "target": sample.target,
        "timestamp": iso(sample.timestamp),
        "check_duration_ms": round(sample.duration_ms, 1),
        "metrics": metrics,
        "queues": [_queue(q, sample.outcomes) for q in sample.queues],
        "workers": [_worker(w) for w in sample.workers],
        "tasks": [_task(t, sample.outcomes.bounds) for t in sample.outcomes.tasks]
        if sample.outcomes is not None
        else [],
        "companion": companion_json(sample),
        "anomalies": [_anomaly(a) for a in sample.anomalies],
        "trends": trends or {},
        "redis": dict(sample.redis),
        "errors": [
            {"component": e.component, "kind": e.kind, "message": e.message} for e in sample.errors
        ],
        "alerts": alerts or [],
        "notifications": notifications or [],
        "privacy": dict(PRIVACY),
    }
