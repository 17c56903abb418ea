"""The audit's report, built from its samples without I/O: sections of rows, recommendations
and the exit code."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..analyse.deep import ConfigCheck
from ..analyse.outcomes import counters_add, failure_rate
from ..analyse.task_rules import failure_severity
from ..analyse.trends import Trends, diagnosis
from ..model import (
    Finding,
    ProbeError,
    QueueSample,
    Sample,
    Severity,
    TaskCounters,
    WorkerSample,
)
from ..text import count, fmt_bytes, fmt_seconds, safe_text
from ..thresholds import Thresholds

EXIT_HEALTHY, EXIT_WARNINGS, EXIT_CRITICAL = 0, 1, 2
MAX_QUEUE_ROWS = 25

OK, WARNING, CRITICAL, UNKNOWN, INFO = "ok", "warning", "critical", "unknown", "info"


@dataclass(frozen=True)
class Audit:
    samples: tuple[Sample, ...]
    trends: Trends
    findings: tuple[Finding, ...]
    deep: tuple[ConfigCheck, ...] | None
    deep_errors: tuple[ProbeError, ...]
    thresholds: Thresholds
    interval: float
    elapsed: float
    deep_requested: bool = False

    @property
    def last(self) -> Sample:
        return self.samples[-1]


def rights_check(excess: tuple[str, ...] | None) -> ConfigCheck:
    """The audit's line on Doorman's own rights: a warning when its Redis user can harm the
    broker (FLUSHALL, CONFIG SET, DEL or LPOP on a queue, ...), which a monitor never needs."""
    label = "Doorman's Redis rights"
    if excess is None:
        return ConfigCheck("doorman_rights", label, UNKNOWN, "unknown (MULTI refused)")
    if not excess:
        return ConfigCheck("doorman_rights", label, OK, "no more than Doorman needs")
    return ConfigCheck(
        "doorman_rights",
        label,
        WARNING,
        f"more than Doorman needs: it can run {', '.join(excess)}",
        "Give Doorman a Redis user of its own with the rules 'doorman acl' prints (README:"
        " Running with least privilege): a monitor should not be able to harm the broker",
    )


@dataclass(frozen=True)
class Row:
    level: str  # ok | warning | critical | unknown | info
    cells: tuple[str, ...]
    note: str = ""  # shown after the cells, in the row's colour (e.g. "CONGESTED")


@dataclass(frozen=True)
class Section:
    title: str
    rows: tuple[Row, ...]


@dataclass(frozen=True)
class Recommendation:
    severity: Severity
    title: str
    text: str
    count: int = 1
    detail: str = ""  # what was found, shown under the advice


@dataclass(frozen=True)
class Report:
    target: str
    timestamp: str
    samples: int
    interval: float
    deep: bool
    level: str  # healthy | warning | critical
    counts: dict[str, int]
    sections: tuple[Section, ...]
    recommendations: tuple[Recommendation, ...]
    elapsed: float
    exit_code: int = field(default=EXIT_HEALTHY)


def _worst(severities: Iterable[Severity]) -> Severity:
    """The highest severity, by rank (``Severity.INFO`` when there is none)."""
    return max(severities, key=lambda s: s.rank, default=Severity.INFO)


def level_of(severity: Severity) -> str:
    if severity.rank >= Severity.CRITICAL.rank:
        return CRITICAL
    return WARNING if severity.rank >= Severity.WARNING.rank else OK


def _latency(q: QueueSample) -> str:
    if q.depth == 0 or q.latency_source in {"empty", "not_due"}:
        return "ETA not due" if q.latency_source == "not_due" else ""
    if q.latency_sec is None:
        return "latency unknown"
    source = {
        "producer_header": "exact, producer header",
        "expires": "exact, from expires",
        "observed": "since first seen",
    }.get(q.latency_source, q.latency_source)
    bound = "≥ " if q.latency_is_lower_bound else ""
    return f"latency {bound}{fmt_seconds(q.latency_sec)} ({source})"


def _arrow(delta: int) -> str:
    if delta > 0:
        return f"↑+{delta}"
    if delta < 0:
        return f"↓{delta}"
    return "→"


def _series(samples: Sequence[Sample]) -> dict[str, list[int]]:
    """Depth of each queue over the samples that saw it (in order)."""
    series: dict[str, list[int]] = {}
    for sample in samples:
        if not sample.redis_ok:
            continue
        for q in sample.queues:
            series.setdefault(q.name, []).append(q.depth)
    return series


def _infrastructure(audit: Audit, findings_by_type: dict[str, list[Finding]]) -> Section:
    last = audit.last
    rows: list[Row] = []
    info = last.redis
    if last.redis_ok:
        version = info.get("version")
        rows.append(
            Row(OK, ("Redis", "connected" + (f" (Redis {safe_text(version)})" if version else "")))
        )
        used, limit = info.get("used_memory"), info.get("maxmemory")
        if isinstance(used, int):
            if isinstance(limit, int) and limit > 0:
                pct = 100.0 * used / limit
                memory = f"{fmt_bytes(used)} of {fmt_bytes(limit)} ({pct:.0f}%)"
            else:
                memory = f"{fmt_bytes(used)} used, no maxmemory"
            level = level_of(_worst(f.severity for f in findings_by_type.get("redis_memory", [])))
            rows.append(Row(level, ("Memory", memory)))
    else:
        cause = next((e for e in last.errors if e.component == "redis"), None)
        rows.append(
            Row(
                CRITICAL,
                ("Redis", "unreachable" + (f": {safe_text(cause.message)}" if cause else "")),
            )
        )
    if last.redis_ok:
        known, alive = len(last.workers), last.alive_workers
        text = f"{alive} of {count(known, 'worker')} answering" if known else "no worker answers"
        if alive == known and known:
            level = OK
        elif alive == 0:
            level = CRITICAL if last.total_pending else WARNING
        else:
            level = WARNING
        rows.append(Row(level, ("Celery", text)))
    else:
        rows.append(Row(UNKNOWN, ("Celery", "not checked (Redis unreachable)")))
    for error in (*last.errors, *audit.deep_errors):
        if error.component == "redis" and not last.redis_ok:
            continue
        rows.append(
            Row(WARNING, ("Error", f"{error.component}/{error.kind}: {safe_text(error.message)}"))
        )
    return Section("Infrastructure", tuple(rows))


def _workers(audit: Audit, findings_by_subject: dict[str, Finding]) -> Section:
    rows: list[Row] = []
    for w in sorted(audit.last.workers, key=lambda w: (w.status != "online", w.id_hash)):
        rows.append(_worker_row(w, findings_by_subject.get(w.id_hash), audit.last.alive_workers))
    if not rows:
        rows.append(Row(CRITICAL if audit.last.total_pending else WARNING, ("no worker known",)))
    return Section("Workers", tuple(rows))


def _worker_row(w: WorkerSample, finding: Finding | None, alive: int) -> Row:
    if w.status == "online":
        slots = f"{w.active}/{w.concurrency} slots" if w.concurrency else f"{w.active} active"
        detail = ", ".join(safe_text(q) for q in w.queues[:4])
        if len(w.queues) > 4:
            detail += f" +{len(w.queues) - 4}"
        cells = (w.id_hash, "online", slots, f"{w.pool or '?'} · {detail}" if detail else "")
        if w.concurrency and w.active >= w.concurrency:
            return Row(WARNING, cells, "at capacity")
        return Row(OK, cells)
    if w.status == "unknown":
        return Row(UNKNOWN, (w.id_hash, "unknown (Redis unreachable)"))
    level = level_of(finding.severity) if finding else (CRITICAL if alive == 0 else WARNING)
    return Row(level, (w.id_hash, w.status.replace("_", " ")))


def _queues(audit: Audit, findings: Sequence[Finding]) -> Section:
    th = audit.thresholds
    series = _series(audit.samples)
    by_queue: dict[str, Severity] = {}
    for f in findings:
        if f.queue:
            by_queue[f.queue] = _worst((by_queue.get(f.queue, Severity.INFO), f.severity))
    rows: list[Row] = []
    queues = sorted(audit.last.queues, key=lambda q: (-q.depth, q.name))
    for q in queues[:MAX_QUEUE_ROWS]:
        congested = q.depth > th.max_queue_size or (
            q.latency_sec is not None and q.depth > 0 and q.latency_sec > th.max_wait_time_seconds
        )
        severity = by_queue.get(q.name, Severity.INFO)
        if q.depth > th.max_queue_size:
            severity = _worst((severity, Severity.CRITICAL))
        elif congested or q.problem:
            severity = _worst((severity, Severity.WARNING))
        trend = ""
        if len(audit.samples) > 1 and q.name in series:
            points = series[q.name]
            trend = _arrow(points[-1] - points[0])
        cells = (
            safe_text(q.name),
            f"{q.depth} pending" if q.depth else "empty",
            _latency(q),
            trend,
        )
        note = "CONGESTED" if congested else ""
        if q.problem:
            note = (note + " " if note else "") + safe_text(q.problem)
        rows.append(Row(level_of(severity), cells, note))
    if len(queues) > MAX_QUEUE_ROWS:
        rows.append(Row(INFO, (f"... and {len(queues) - MAX_QUEUE_ROWS} more queue(s)",)))
    if not rows:
        rows.append(Row(UNKNOWN if not audit.last.redis_ok else OK, ("no queue found",)))
    return Section("Queues", tuple(rows))


def _metrics(audit: Audit) -> Section:
    last, th = audit.last, audit.thresholds
    slots, busy = last.total_concurrency, last.total_active
    saturation = last.saturation_pct
    rows = [
        Row(
            WARNING if saturation >= 90 else OK,
            (
                "Saturation",
                f"{saturation:.1f}% ({busy}/{slots} slots busy,"
                f" headroom {count(max(slots - busy, 0), 'slot')})",
            ),
        )
    ]
    latency = last.max_latency_sec
    where = max(last.queues, key=lambda q: q.latency_sec or 0.0, default=None)
    at = f" ({safe_text(where.name)})" if where is not None and latency > 0 else ""
    within = (
        ""
        if latency > th.max_wait_time_seconds
        else f", threshold {fmt_seconds(th.max_wait_time_seconds)}"
    )
    rows.append(
        Row(
            WARNING if latency > th.max_wait_time_seconds else OK,
            ("Max latency", f"{fmt_seconds(latency)}{at}{within}"),
        )
    )
    pending = last.total_pending
    rows.append(
        Row(
            CRITICAL if pending > th.max_queue_size else OK,
            (
                "Total pending",
                f"{count(pending, 'task')} in {count(len(last.queues), 'queue')},"
                f" threshold {th.max_queue_size}",
            ),
        )
    )
    if audit.trends.throughput_per_min is not None:
        rows.append(Row(INFO, ("Throughput", f"{audit.trends.throughput_per_min:g} tasks/min")))
    return Section("Metrics", tuple(rows))


_DIAGNOSES = {
    "need_more_workers": "queues grow and workers are saturated: more workers needed",
    "ghost_workers": "queues grow while workers are mostly idle: ghost workers?",
    "growing": "queues grow",
    "at_capacity": "workers saturated, queues stable",
    "normal": "stable",
    "healthy": "stable, nothing waiting",
}


def _trends(audit: Audit) -> Section:
    series = _series(audit.samples)
    span = audit.samples[-1].timestamp - audit.samples[0].timestamp
    changed = sorted(
        ((name, points) for name, points in series.items() if points[-1] != points[0]),
        key=lambda item: (-abs(item[1][-1] - item[1][0]), item[0]),
    )
    rows: list[Row] = []
    for name, points in changed[:MAX_QUEUE_ROWS]:
        delta = points[-1] - points[0]
        rate = f", {delta * 60.0 / span:+.0f}/min" if span > 0 else ""
        rows.append(
            Row(
                WARNING if delta > 0 else OK,
                (
                    f"{_arrow(delta)[0]} {safe_text(name)}",
                    f"{delta:+d} tasks ({points[0]} → {points[-1]}){rate}",
                ),
            )
        )
    if not changed:
        rows.append(Row(OK, ("→ no queue changed depth",)))
    last = audit.last
    verdict = diagnosis(last.saturation_pct, audit.trends, last.total_pending, last.alive_workers)
    rows.append(Row(INFO, ("Diagnosis", _DIAGNOSES.get(verdict, verdict))))
    title = f"Trends (over {len(audit.samples)} samples, {fmt_seconds(max(span, 0.0))})"
    return Section(title, tuple(rows))


def _configuration(checks: Sequence[ConfigCheck]) -> Section:
    rows = tuple(
        Row(c.status if c.status in {OK, WARNING} else UNKNOWN, (c.label, safe_text(c.result)))
        for c in checks
    )
    return Section("Configuration Analysis", rows)


def _fallback_recommendation(f: Finding) -> str:
    if f.type == "queue_growing" and f.queue:
        return (
            f"Watch '{f.queue}': if it keeps growing, add workers consuming it or find what"
            " slows them down"
        )
    return f.message


def _recommendations(audit: Audit) -> tuple[Recommendation, ...]:
    found: list[Recommendation] = []
    for f in audit.findings:
        text = f.recommendation or _fallback_recommendation(f)
        detail = f.message if text != f.message else ""
        found.append(
            Recommendation(
                f.severity, safe_text(f.title), safe_text(text), detail=safe_text(detail)
            )
        )
    for w in audit.last.workers:
        if w.status == "online" and w.concurrency and w.active >= w.concurrency:
            found.append(
                Recommendation(
                    Severity.WARNING,
                    f"Worker {w.id_hash} at capacity ({w.active}/{w.concurrency} slots)",
                    "Raise its --concurrency or add workers for its queues before tasks wait",
                )
            )
    for check in audit.deep or ():
        if check.status == WARNING and check.recommendation:
            found.append(
                Recommendation(Severity.WARNING, check.label, safe_text(check.recommendation))
            )
    merged: dict[tuple[str, str], Recommendation] = {}
    for r in found:
        key = (r.title, r.text)
        if key in merged:
            old = merged[key]
            merged[key] = Recommendation(
                _worst((old.severity, r.severity)), r.title, r.text, old.count + 1, old.detail
            )
        else:
            merged[key] = r
    return tuple(sorted(merged.values(), key=lambda r: -r.severity.rank))


def _task_totals(samples: Sequence[Sample]) -> tuple[dict[str, TaskCounters], bool]:
    """Every task name's outcomes over the audit's samples (each one's interval), and
    whether any interval could be measured at all."""
    totals: dict[str, TaskCounters] = {}
    counted = False
    for sample in samples:
        outcomes = sample.outcomes
        if outcomes is None or not outcomes.counted:
            continue
        counted = True
        for t in outcomes.tasks:
            old = totals.get(t.name)
            totals[t.name] = counters_add(old, t.counters) if old else t.counters
    return totals, counted


def _task_row(name: str, c: TaskCounters, th: Thresholds) -> Row:
    rate = failure_rate(c)
    severity = failure_severity(c, th)
    level = level_of(severity) if severity is not None else (WARNING if c.expired else OK)
    ran = f"{c.succeeded} ok, {c.failed} failed" + (
        f" ({rate * 100.0:.0f}%)" if rate is not None and c.failed else ""
    )
    others = ", ".join(f"{getattr(c, k)} {k}" for k in ("retried", "expired") if getattr(c, k))
    return Row(level, (safe_text(name), ran, others))


def _tasks(audit: Audit) -> Section | None:
    """Task outcomes over the audit, from the worker companions; what is not measured."""
    last = audit.last
    online = [w for w in last.workers if w.status == "online"]
    if not online:
        return None
    totals, counted = _task_totals(audit.samples)
    ranked = sorted(totals.items(), key=lambda item: (-item[1].failed, item[0]))
    rows = [_task_row(name, c, audit.thresholds) for name, c in ranked[:MAX_QUEUE_ROWS]]
    if len(ranked) > MAX_QUEUE_ROWS:
        rows.append(Row(INFO, (f"... and {len(ranked) - MAX_QUEUE_ROWS} more task name(s)",)))
    with_companion = [w for w in online if w.companion]
    if with_companion and not counted:
        rows.append(
            Row(INFO, ("counters read for the first time: take 2 samples to see outcomes",))
        )
    elif with_companion and not totals:
        rows.append(Row(OK, ("no task ended during the audit",)))
    without = [w.id_hash for w in online if not w.companion]
    if without:
        rows.append(
            Row(
                UNKNOWN,
                (
                    "Not measured",
                    f"{count(len(without), 'worker')} without the companion"
                    f" ({', '.join(without[:4])}{', ...' if len(without) > 4 else ''}):"
                    " failures, expiries and queue waits",
                ),
            )
        )
    return Section("Task outcomes", tuple(rows))


def build_report(audit: Audit, target: str, timestamp: str) -> Report:
    findings = list(audit.findings)
    by_type: dict[str, list[Finding]] = {}
    by_subject: dict[str, Finding] = {}
    for f in findings:
        by_type.setdefault(f.type, []).append(f)
        if f.subject:
            by_subject[f.subject] = f
    sections = [
        _infrastructure(audit, by_type),
        _workers(audit, by_subject),
        _queues(audit, findings),
        _metrics(audit),
    ]
    tasks = _tasks(audit)
    if tasks is not None:
        sections.append(tasks)
    if len(audit.samples) > 1:
        sections.append(_trends(audit))
    if audit.deep is not None:
        sections.append(_configuration(audit.deep))
    elif audit.deep_requested:
        skipped = Row(UNKNOWN, ("not run: Redis unreachable",))
        sections.append(Section("Configuration Analysis", (skipped,)))
    recommendations = _recommendations(audit)
    counts: dict[str, int] = {}
    for r in recommendations:
        counts[r.severity.value] = counts.get(r.severity.value, 0) + r.count
    worst = _worst(r.severity for r in recommendations)
    if worst.rank >= Severity.CRITICAL.rank:
        level, code = CRITICAL, EXIT_CRITICAL
    elif worst.rank >= Severity.WARNING.rank:
        level, code = WARNING, EXIT_WARNINGS
    else:
        level, code = "healthy", EXIT_HEALTHY
    return Report(
        target=safe_text(target),
        timestamp=timestamp,
        samples=len(audit.samples),
        interval=audit.interval,
        deep=audit.deep is not None,
        level=level,
        counts=counts,
        sections=tuple(sections),
        recommendations=recommendations,
        elapsed=audit.elapsed,
        exit_code=code,
    )
