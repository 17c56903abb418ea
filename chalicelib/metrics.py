"""The metric catalogue and its CloudWatch Embedded Metric Format (EMF) emission.

The check function runs in the VPC without internet, so it never calls ``PutMetricData``:
it prints EMF documents (one JSON object per line) to stdout, and CloudWatch Logs turns
them into metrics. The documents are built with powertools' EMF provider, one provider per
document, so no state is shared with a ``Metrics`` instance the handlers may use.

Every metric has the dimension ``target``; the per-queue metrics add ``queue``. One
document carries every target-wide metric; each reported queue gets a document of its own
(the value of a dimension is per document). Each per-queue series is a billed custom metric,
so their number is capped (``max_queue_series``) and the queues kept are the largest.

The heartbeat ``CheckSucceeded`` is 1 when the check reached Redis and 0 when it did not.
It is emitted by every check that ran, so its absence means the function did not run (the
watchdog alarm in ``infra/doorman.yaml``); a 0 is the ``redis_unreachable`` alert's business.
When Redis was not reached, the metrics read from Redis are left out rather than sent as
zeros, so a graph shows a gap instead of an empty queue.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
    AmazonCloudWatchEMFProvider,
)

from .sanitize import names_queue

NAMESPACE = "Doorman"
TARGET_DIMENSION = "target"
QUEUE_DIMENSION = "queue"
DEFAULT_MAX_QUEUE_SERIES = 20
# CloudWatch's EMF limits: 100 metrics per document, 30 dimensions per dimension set.
MAX_METRICS_PER_DOCUMENT = 100
MAX_DIMENSIONS = 30

Extract = Callable[[Mapping[str, Any]], float | None]


@dataclass(frozen=True)
class MetricDef:
    """One metric: its CloudWatch name and unit, and where its value comes from."""

    name: str
    unit: str
    dimensions: tuple[str, ...]
    description: str
    source: str  # the payload field(s), for people
    extract: Extract
    needs_redis: bool = True  # left out when the check could not reach Redis


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return None


def _field(*path: str) -> Extract:
    def extract(doc: Mapping[str, Any]) -> float | None:
        value: object = doc
        for key in path:
            if not isinstance(value, Mapping):
                return None
            value = value.get(key)
        return _number(value)

    return extract


def _alerts_firing(payload: Mapping[str, Any]) -> float:
    alerts = payload.get("alerts") or []
    return float(sum(1 for a in alerts if isinstance(a, Mapping) and a.get("state") == "firing"))


def _check_succeeded(payload: Mapping[str, Any]) -> float:
    metrics = payload.get("metrics") or {}
    return 1.0 if metrics.get("redis_connected") is True else 0.0


def _redis_memory_pct(payload: Mapping[str, Any]) -> float | None:
    info = payload.get("redis") or {}
    used, limit = info.get("used_memory"), info.get("maxmemory")
    # maxmemory 0 means "no limit": a percentage of nothing is not a number to graph.
    if isinstance(used, int) and isinstance(limit, int) and limit > 0:
        return round(100.0 * used / limit, 2)
    return None


def _queue_latency(queue: Mapping[str, Any]) -> float | None:
    latency = _number(queue.get("latency_sec"))
    if latency is None and queue.get("depth") == 0:
        return 0.0  # nothing waits, so nothing waits long
    return latency


_T = (TARGET_DIMENSION,)
_TQ = (TARGET_DIMENSION, QUEUE_DIMENSION)

TARGET_METRICS: tuple[MetricDef, ...] = (
    MetricDef(
        "CheckSucceeded",
        "Count",
        _T,
        "Heartbeat: 1 when the check reached Redis, 0 when it did not; missing when no check ran",
        "metrics.redis_connected",
        _check_succeeded,
        needs_redis=False,
    ),
    MetricDef(
        "CheckDurationMs",
        "Milliseconds",
        _T,
        "Wall time of one check, collection to commit",
        "check_duration_ms",
        _field("check_duration_ms"),
        needs_redis=False,
    ),
    MetricDef(
        "AlertsFiring",
        "Count",
        _T,
        "Alerts in the firing state after this check",
        "alerts[state=firing]",
        _alerts_firing,
        needs_redis=False,
    ),
    MetricDef(
        "TotalPending",
        "Count",
        _T,
        "Messages waiting in all reported queues",
        "metrics.total_pending",
        _field("metrics", "total_pending"),
    ),
    MetricDef(
        "TotalActive",
        "Count",
        _T,
        "Tasks running on the workers that answered",
        "metrics.total_active",
        _field("metrics", "total_active"),
    ),
    MetricDef(
        "SaturationPct",
        "Percent",
        _T,
        "Running tasks as a share of the answering workers' concurrency",
        "metrics.saturation_pct",
        _field("metrics", "saturation_pct"),
    ),
    MetricDef(
        "MaxLatencySec",
        "Seconds",
        _T,
        "Age of the oldest waiting message over all queues",
        "metrics.max_latency_sec",
        _field("metrics", "max_latency_sec"),
    ),
    MetricDef(
        "AliveWorkers",
        "Count",
        _T,
        "Workers that answered remote control",
        "metrics.alive_workers",
        _field("metrics", "alive_workers"),
    ),
    MetricDef(
        "TotalWorkers",
        "Count",
        _T,
        "Workers reported: answering, plus known ones that went silent",
        "metrics.total_workers",
        _field("metrics", "total_workers"),
    ),
    MetricDef(
        "StuckTasks",
        "Count",
        _T,
        "Tasks running longer than max_task_runtime_seconds",
        "metrics.stuck_tasks",
        _field("metrics", "stuck_tasks"),
    ),
    MetricDef(
        "RedisMemoryPct",
        "Percent",
        _T,
        "used_memory as a share of maxmemory (left out when Redis has no maxmemory)",
        "redis.used_memory / redis.maxmemory",
        _redis_memory_pct,
    ),
    MetricDef(
        "QueuesNotShown",
        "Count",
        _T,
        "Queues discovered but not reported (cut by max_queues): 0 unless truncated",
        "metrics.queues_not_shown",
        _field("metrics", "queues_not_shown"),
    ),
    MetricDef(
        "RedisClients",
        "Count",
        _T,
        "Connections open on Redis",
        "redis.connected_clients",
        _field("redis", "connected_clients"),
    ),
)

QUEUE_METRICS: tuple[MetricDef, ...] = (
    MetricDef(
        "QueueDepth",
        "Count",
        _TQ,
        "Messages waiting in one queue, all priorities",
        "queues[].depth",
        _field("depth"),
    ),
    MetricDef(
        "QueueLatencySec",
        "Seconds",
        _TQ,
        "Age of the oldest waiting message of one queue (0 when empty)",
        "queues[].latency_sec",
        _queue_latency,
    ),
)

CATALOGUE: tuple[MetricDef, ...] = TARGET_METRICS + QUEUE_METRICS


def metric(name: str) -> MetricDef:
    """The catalogue entry called ``name``; raises KeyError for an unknown name."""
    for m in CATALOGUE:
        if m.name == name:
            return m
    raise KeyError(name)


def billed_series(max_queue_series: int = DEFAULT_MAX_QUEUE_SERIES) -> int:
    """The most custom metrics (name x dimension values) one target can create."""
    return len(TARGET_METRICS) + max_queue_series - max_queue_series % len(QUEUE_METRICS)


def select_queues(
    queues: list[Mapping[str, Any]],
    max_queue_series: int,
    *,
    pinned: Collection[str] = (),
) -> list[Mapping[str, Any]]:
    """The queues that get per-queue series: pinned ones first, then the deepest.

    Ties are broken by latency and then by name, so the same payload always gives the same
    choice. ``max_queue_series`` counts series; each queue has ``len(QUEUE_METRICS)``.
    """
    limit = max(0, max_queue_series) // len(QUEUE_METRICS)
    named = [q for q in queues if isinstance(q.get("name"), str) and q.get("name")]

    def order(q: Mapping[str, Any]) -> tuple[int, float, float, str]:
        return (
            0 if names_queue(pinned, q["name"]) else 1,
            -(_number(q.get("depth")) or 0.0),
            -(_number(q.get("latency_sec")) or 0.0),
            str(q["name"]),
        )

    return sorted(named, key=order)[:limit]


def _timestamp(payload: Mapping[str, Any]) -> datetime:
    raw = payload.get("timestamp")
    if isinstance(raw, str):
        try:
            return datetime.fromisoformat(raw)
        except ValueError:
            pass
    return datetime.now(tz=UTC)


def _document(
    when: datetime, dimensions: dict[str, str], values: list[tuple[MetricDef, float]]
) -> dict[str, Any]:
    if len(values) >= MAX_METRICS_PER_DOCUMENT or len(dimensions) > MAX_DIMENSIONS:
        # Powertools would print a partial document itself at 100 metrics.
        raise ValueError("an EMF document exceeds CloudWatch's limits")
    provider = AmazonCloudWatchEMFProvider(namespace=NAMESPACE, service="")
    provider.set_timestamp(when)
    for dim, dim_value in dimensions.items():
        provider.add_dimension(name=dim, value=dim_value)
    for m, value in values:
        provider.add_metric(name=m.name, unit=m.unit, value=value)
    doc: dict[str, Any] = dict(provider.serialize_metric_set())
    return doc


def build_documents(
    payload: Mapping[str, Any],
    *,
    target: str,
    max_queue_series: int = DEFAULT_MAX_QUEUE_SERIES,
    pinned_queues: Collection[str] = (),
) -> list[dict[str, Any]]:
    """The EMF documents for one check's payload: the target's first, then one per queue."""
    when = _timestamp(payload)
    redis_ok = _check_succeeded(payload) == 1.0
    values: list[tuple[MetricDef, float]] = []
    for m in TARGET_METRICS:
        if m.needs_redis and not redis_ok:
            continue
        value = m.extract(payload)
        if value is not None:
            values.append((m, value))
    docs = [_document(when, {TARGET_DIMENSION: target}, values)]
    if not redis_ok:
        return docs
    queues = [q for q in payload.get("queues") or [] if isinstance(q, Mapping)]
    for queue in select_queues(queues, max_queue_series, pinned=pinned_queues):
        per_queue = [(m, v) for m in QUEUE_METRICS if (v := m.extract(queue)) is not None]
        if per_queue:
            dims = {TARGET_DIMENSION: target, QUEUE_DIMENSION: str(queue["name"])}
            docs.append(_document(when, dims, per_queue))
    return docs


def emit_metrics(
    payload: dict[str, Any],
    *,
    target: str,
    max_queue_series: int = DEFAULT_MAX_QUEUE_SERIES,
    stream: TextIO | None = None,
    pinned_queues: Collection[str] = (),
) -> list[dict[str, Any]]:
    """Write one check's metrics as EMF JSON lines to ``stream`` (stdout) and return them.

    Nothing is written, and ``[]`` returned, when powertools' metrics are disabled
    (``POWERTOOLS_METRICS_DISABLED=true``). Raises ValueError only for a catalogue that
    would break CloudWatch's limits, which the tests rule out.
    """
    if is_metrics_disabled():
        return []
    docs = build_documents(
        payload, target=target, max_queue_series=max_queue_series, pinned_queues=pinned_queues
    )
    out = stream if stream is not None else sys.stdout
    # One write: the Lambda runtime turns each line into one log event, and one write keeps
    # the lines of one check together.
    out.write("".join(json.dumps(d, separators=(",", ":")) + "\n" for d in docs))
    out.flush()
    return docs
