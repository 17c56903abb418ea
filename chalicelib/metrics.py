"""The metric catalogue, and the check's log lines: a few CloudWatch metrics (EMF), the rest
plain properties read by Logs Insights.

The check function runs in the VPC without internet, so it never calls ``PutMetricData``:
it prints JSON lines to stdout. Each custom metric series costs $0.30 a month whether anyone
looks at it or not, so only what an alarm needs is a metric:

- one line per target (``"doorman": "check"``): an EMF document whose only metric, by
  default, is the heartbeat ``CheckSucceeded`` (dimension ``target``; the per-target "no
  check" watchdog alarm). Every other target figure (pending, latency, workers, ...) is a
  property of the same line, which CloudWatch Logs keeps and does not bill as a metric;
- the task outcomes since the previous check (``TasksSucceeded``, ``TasksFailed``,
  ``TasksExpired``, ``FailureRatePct``, from workers running the companion) are properties
  of that line too: the alerts on them (``task_failure_rate``, ``tasks_expired``) are
  Doorman's own, so no CloudWatch alarm needs them, and four more series a target ($1.20 a
  month) would buy only graphs the dashboards already draw from the log. Per task name
  there is nothing at all: the names are unbounded, and stay in the payload's ``tasks[]``;
- one line per queue (``"doorman": "queue"``), the largest queues first and at most
  ``max_logged_queues`` of them: the queue's depth and latency as properties. A queue named
  in ``metric_queues`` gets its line as an EMF document instead, with ``QueueDepth`` and
  ``QueueLatencySec`` as metrics (dimensions ``target``, ``queue``): two series each, for
  users who alarm on that queue.

The dashboards draw everything else with CloudWatch Logs Insights over the check function's
log group, from the same field names (``chalicelib.dashboard``).

``CheckSucceeded`` is 1 when the check reached Redis and 0 when it did not. It is emitted by
every check that ran, so its absence means the target was not checked (the watchdog alarm);
a 0 is the ``redis_unreachable`` alert's business. When Redis was not reached, the figures
read from Redis are left out rather than sent as zeros, so a graph shows a gap instead of an
empty queue. The same holds for a task figure the check did not measure (no worker runs the
companion, or only first readings): ``null`` in the payload, nothing in the line, never 0.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Collection, Iterable, Mapping
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
# The field that says what a line is, for Logs Insights' filters.
KIND_FIELD = "doorman"
CHECK_KIND = "check"
QUEUE_KIND = "queue"
# Queue lines per check at most: ~70 bytes each, so 100 queues log ~7 KB a check (0.3 GB a
# month at one check a minute, $0.15). Queues named in metric_queues always get theirs.
DEFAULT_MAX_LOGGED_QUEUES = 100
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
    # A billed CloudWatch metric (an alarm needs it); otherwise a property of the log line.
    billed: bool = False


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
        billed=True,
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
    # Task outcomes, from the workers' companions: log fields, not metrics (see the module's
    # docstring). Left out when not measured (null), so a graph shows a gap, not "no failures".
    MetricDef(
        "TasksSucceeded",
        "Count",
        _T,
        "Tasks that succeeded since the previous check (workers with the companion)",
        "metrics.tasks_succeeded",
        _field("metrics", "tasks_succeeded"),
    ),
    MetricDef(
        "TasksFailed",
        "Count",
        _T,
        "Tasks that failed since the previous check (workers with the companion)",
        "metrics.tasks_failed",
        _field("metrics", "tasks_failed"),
    ),
    MetricDef(
        "TasksExpired",
        "Count",
        _T,
        "Tasks discarded at their expiry since the previous check (workers with the companion)",
        "metrics.tasks_expired",
        _field("metrics", "tasks_expired"),
    ),
    MetricDef(
        "FailureRatePct",
        "Percent",
        _T,
        "Failed runs as a share of the finished ones since the previous check (left out when"
        " none finished)",
        "metrics.failure_rate_pct",
        _field("metrics", "failure_rate_pct"),
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
# What every check publishes as custom metrics; queue metrics only for metric_queues.
BILLED_TARGET_METRICS: tuple[MetricDef, ...] = tuple(m for m in TARGET_METRICS if m.billed)


def metric(name: str) -> MetricDef:
    """The catalogue entry called ``name``; raises KeyError for an unknown name."""
    for m in CATALOGUE:
        if m.name == name:
            return m
    raise KeyError(name)


def billed_series(metric_queues: int = 0) -> int:
    """The custom metrics (name x dimension values) one target's checks define: the billed
    target metrics, plus both queue metrics of each queue named in ``metric_queues``."""
    return len(BILLED_TARGET_METRICS) + len(QUEUE_METRICS) * max(0, metric_queues)


def select_queues(
    queues: list[Mapping[str, Any]],
    limit: int,
    *,
    pinned: Collection[str] = (),
) -> list[Mapping[str, Any]]:
    """The queues that get a line: every pinned one, then the deepest, ``limit`` in all
    (pinned ones are kept even beyond it: they are metrics an alarm watches).

    Ties are broken by latency and then by name, so the same payload always gives the same
    choice.
    """
    named = [q for q in queues if isinstance(q.get("name"), str) and q.get("name")]

    def order(q: Mapping[str, Any]) -> tuple[int, float, float, str]:
        return (
            0 if names_queue(pinned, q["name"]) else 1,
            -(_number(q.get("depth")) or 0.0),
            -(_number(q.get("latency_sec")) or 0.0),
            str(q["name"]),
        )

    ordered = sorted(named, key=order)
    pins = sum(1 for q in ordered if names_queue(pinned, q["name"])) if pinned else 0
    return ordered[: max(pins, max(0, limit))]


def _timestamp(payload: Mapping[str, Any]) -> datetime:
    raw = payload.get("timestamp")
    if isinstance(raw, str):
        try:
            return datetime.fromisoformat(raw)
        except ValueError:
            pass
    return datetime.now(tz=UTC)


def _document(
    when: datetime,
    dimensions: dict[str, str],
    values: list[tuple[MetricDef, float]],
    properties: Mapping[str, object],
) -> dict[str, Any]:
    """An EMF document of ``values`` (metrics) with ``properties`` (not metrics) beside."""
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
    for m, _value in values:
        # Powertools writes [1.0]; EMF takes a plain number too, and Logs Insights reads a
        # list as "CheckSucceeded.0": the dashboards' queries name the plain field.
        if isinstance(doc.get(m.name), list) and len(doc[m.name]) == 1:
            doc[m.name] = _compact(doc[m.name][0])
    return {**doc, **properties}


def _compact(value: float) -> int | float:
    """A property value as short as it can be written (5, not 5.0): bytes logged are billed."""
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def build_documents(
    payload: Mapping[str, Any],
    *,
    target: str,
    metric_queues: Collection[str] = (),
    max_logged_queues: int = DEFAULT_MAX_LOGGED_QUEUES,
) -> list[dict[str, Any]]:
    """The lines of one check's payload: the target's first, then one per queue logged.

    The target line is an EMF document of the billed target metrics, the other target
    figures as properties. A queue line is an EMF document when the queue is named in
    ``metric_queues`` (raw names, matched as :func:`sanitize.names_queue` does), else a
    plain JSON object with the same fields.
    """
    when = _timestamp(payload)
    redis_ok = _check_succeeded(payload) == 1.0
    billed: list[tuple[MetricDef, float]] = []
    properties: dict[str, object] = {KIND_FIELD: CHECK_KIND}
    for m in TARGET_METRICS:
        if m.needs_redis and not redis_ok:
            continue
        value = m.extract(payload)
        if value is None:
            continue
        if m.billed:
            billed.append((m, value))
        else:
            properties[m.name] = _compact(value)
    queues = [q for q in payload.get("queues") or [] if isinstance(q, Mapping)]
    chosen = select_queues(queues, max_logged_queues, pinned=metric_queues) if redis_ok else []
    if redis_ok:
        properties["QueuesLogged"] = len(chosen)
    docs = [_document(when, {TARGET_DIMENSION: target}, billed, properties)]
    for queue in chosen:
        name = str(queue["name"])
        per_queue = [(m, v) for m in QUEUE_METRICS if (v := m.extract(queue)) is not None]
        if not per_queue:
            continue
        if names_queue(metric_queues, name):
            dims = {TARGET_DIMENSION: target, QUEUE_DIMENSION: name}
            docs.append(_document(when, dims, per_queue, {KIND_FIELD: QUEUE_KIND}))
        else:
            line: dict[str, Any] = {
                KIND_FIELD: QUEUE_KIND,
                TARGET_DIMENSION: target,
                QUEUE_DIMENSION: name,
            }
            line.update((m.name, _compact(v)) for m, v in per_queue)
            docs.append(line)
    return docs


def emit_metrics(
    payload: dict[str, Any],
    *,
    target: str,
    metric_queues: Collection[str] = (),
    max_logged_queues: int = DEFAULT_MAX_LOGGED_QUEUES,
    stream: TextIO | None = None,
) -> list[dict[str, Any]]:
    """Write one check's lines (see :func:`build_documents`) to ``stream`` (stdout) and
    return them as written.

    Nothing is written, and ``[]`` returned, when powertools' metrics are disabled
    (``POWERTOOLS_METRICS_DISABLED=true``). Raises ValueError only for a catalogue that
    would break CloudWatch's limits, which the tests rule out.
    """
    if is_metrics_disabled():
        return []
    docs = build_documents(
        payload, target=target, metric_queues=metric_queues, max_logged_queues=max_logged_queues
    )
    out = stream if stream is not None else sys.stdout
    # One write: the Lambda runtime turns each line into one log event, and one write keeps
    # the lines of one check together.
    out.write("".join(json.dumps(d, separators=(",", ":")) + "\n" for d in docs))
    out.flush()
    return docs


def series_defined(
    lines: Iterable[Mapping[str, Any]],
) -> set[tuple[str, str, tuple[tuple[str, str], ...]]]:
    """The metric series EMF ``lines`` define: (namespace, metric, dimension values), as
    CloudWatch counts custom metrics. Lines without ``_aws`` define none."""
    found: set[tuple[str, str, tuple[tuple[str, str], ...]]] = set()
    for line in lines:
        aws = line.get("_aws")
        if not isinstance(aws, Mapping):
            continue
        for directive in aws.get("CloudWatchMetrics") or []:
            for dims in directive.get("Dimensions") or [[]]:
                key = tuple((str(d), str(line.get(d))) for d in dims)
                for m in directive.get("Metrics") or []:
                    found.add((str(directive.get("Namespace")), str(m.get("Name")), key))
    return found
