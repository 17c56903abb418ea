"""``doorman audit``: a human report of one cluster, with an exit code for CI.

The audit runs N ordinary checks S seconds apart with ``run_check(..., dry_run=True)``: it
reads the stored state (roster, observations) but never writes it, so it changes no alert
state and sends nothing. Between its own samples it carries the state forward in memory, so
the later samples know the workers and oldest messages the earlier ones saw. The findings
are evaluated directly on the last sample and the trends of the audit's own samples (no
pending-for-N), and their severities decide the exit code: 2 when any is critical or an
emergency, 1 for warnings (config risks and workers at capacity included), else 0.

Everything shown comes from sanitized samples and the allow-listed worker settings; names
are printed with control characters escaped, and colour is used only on a terminal when
``NO_COLOR`` is not set.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TextIO

from .alerting import Notification, Silence
from .analyse.deep import ConfigCheck, ConfValue, analyse, fmt_bytes, fmt_seconds
from .analyse.rules import evaluate
from .analyse.trends import Trends, compute_trends, diagnosis, history_entry
from .model import Finding, ProbeError, QueueSample, Sample, Severity, WorkerSample
from .report import safe_text
from .runner import CheckResult, Deps, run_check
from .sanitize import Hasher
from .settings import ConfigError, Settings, Thresholds
from .state import CheckStore, StateError, TargetState

if TYPE_CHECKING:
    from .collect import Collector

EXIT_HEALTHY, EXIT_WARNINGS, EXIT_CRITICAL = 0, 1, 2
MAX_SAMPLES = 1000
MAX_INTERVAL = 3600.0
MAX_QUEUE_ROWS = 25
RULE = 64

OK, WARNING, CRITICAL, UNKNOWN, INFO = "ok", "warning", "critical", "unknown", "info"


# --- sampling ----------------------------------------------------------------------------------


class _ReadOnlyStore:
    """The real store read once; later loads return the state the previous sample left.

    Nothing is ever written: the audit must not move alerts, the roster or the outbox.
    """

    def __init__(self, inner: CheckStore) -> None:
        self._inner = inner
        self._state: TargetState | None = None

    def advance(self, state: TargetState) -> None:
        self._state = state

    def load(self, target: str) -> TargetState:
        if self._state is None:
            self._state = self._inner.load(target)
        return self._state

    def commit(
        self,
        target: str,
        state: TargetState,
        expected_version: int,
        outbox: Sequence[Notification] = (),
    ) -> TargetState:
        raise StateError("the audit does not write the state")

    def silences(self, now: float | None = None) -> list[Silence]:
        # Silences only mute notifications, and the audit sends none and shows none: no
        # need to read them for every sample.
        return []


@dataclass(frozen=True)
class DeepData:
    """What ``--deep`` collects beyond a check, already reduced to safe values."""

    redis_config: dict[str, str] | None  # CONFIG GET save/appendonly; None when refused
    confs: dict[str, dict[str, ConfValue]]  # allow-listed Celery settings by worker hash
    errors: tuple[ProbeError, ...] = ()
    # Commands Doorman's Redis user may run and never needs (FLUSHALL, ...); None: unknown.
    excess_rights: tuple[str, ...] | None = None


DeepProbe = Callable[["Collector", Sample, Hasher], DeepData]


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


def collect_deep(collector: Collector, sample: Sample, hasher: Hasher) -> DeepData:
    """Persistence settings from Redis and the allow-listed settings of the live workers.

    Uses the audit's own collector: the workers that answered its last sample are asked by
    name (``destination=``), so the broadcast ends as soon as they have all answered.
    """
    config, errors = collector.persistence_config()
    online = {w.id_hash for w in sample.workers if w.status == "online"}
    result = collector.worker_conf(lambda name: hasher.worker(name) in online)
    confs = {hasher.worker(name): dict(conf) for name, conf in result.confs.items()}
    return DeepData(
        config, confs, errors + result.errors, excess_rights=_excess_rights(collector.settings)
    )


def _excess_rights(settings: Settings) -> tuple[str, ...] | None:
    """What Doorman's Redis user may do beyond its needs (see ``acl.excess_rights``), or
    None when that cannot be told (Redis gone meanwhile, MULTI refused)."""
    import redis

    from .acl import excess_rights_of

    try:
        return excess_rights_of(settings)
    except (redis.RedisError, OSError, ValueError):
        return None


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


def run_audit(
    settings: Settings,
    deps: Deps,
    *,
    samples: int = 1,
    interval: float = 10.0,
    deep: bool = False,
    progress: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    deep_probe: DeepProbe = collect_deep,
) -> Audit:
    """Take ``samples`` dry-run checks ``interval`` seconds apart; analyse the result."""
    started = time.monotonic()
    store = _ReadOnlyStore(deps.store) if deps.store is not None else None
    sampling = Deps(collector=deps.collector, store=store, hasher=deps.hasher, clock=deps.clock)
    results: list[CheckResult] = []
    for index in range(samples):
        if index:
            sleep(max(0.0, started + index * interval - time.monotonic()))
        if progress is not None:
            progress(f"Sampling {index + 1}/{samples}...")
        result = run_check(settings, sampling, dry_run=True)
        if store is not None:
            store.advance(result.state)
        results.append(result)
    taken = tuple(r.sample for r in results)
    last = taken[-1]
    history: list[dict[str, Any]] = []
    for earlier in taken[:-1]:
        if earlier.redis_ok:
            history.append(history_entry(earlier, history))
    trends = compute_trends(history, last)
    findings = tuple(evaluate(last, trends, settings.thresholds))
    checks: tuple[ConfigCheck, ...] | None = None
    deep_errors: tuple[ProbeError, ...] = ()
    if deep and last.redis_ok:
        if progress is not None:
            progress("Checking the configuration...")
        data = deep_probe(deps.collector, last, deps.hasher)
        checks = (
            *analyse(
                last.redis,
                last.workers,
                data.confs,
                now=deps.clock(),
                redis_config=data.redis_config,
                queues=last.queues,
            ),
            rights_check(data.excess_rights),
        )
        deep_errors = data.errors
    return Audit(
        samples=taken,
        trends=trends,
        findings=findings,
        deep=checks,
        deep_errors=deep_errors,
        thresholds=settings.thresholds,
        interval=interval,
        elapsed=time.monotonic() - started,
        deep_requested=deep,
    )


# --- the report model --------------------------------------------------------------------------


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


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _worst(severities: Iterable[Severity]) -> Severity:
    """The highest severity, by rank (``Severity.INFO`` when there is none)."""
    return max(severities, key=lambda s: s.rank, default=Severity.INFO)


def _level(severity: Severity) -> str:
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
            level = _level(_worst(f.severity for f in findings_by_type.get("redis_memory", [])))
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
        text = f"{alive} of {_count(known, 'worker')} answering" if known else "no worker answers"
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
    level = _level(finding.severity) if finding else (CRITICAL if alive == 0 else WARNING)
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
        rows.append(Row(_level(severity), cells, note))
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
                f" headroom {_count(max(slots - busy, 0), 'slot')})",
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
                f"{_count(pending, 'task')} in {_count(len(last.queues), 'queue')},"
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


# --- rendering ---------------------------------------------------------------------------------

_COLOURS = {
    OK: "\033[32m",
    WARNING: "\033[33m",
    CRITICAL: "\033[31m",
    UNKNOWN: "\033[2m",
    INFO: "\033[36m",
    "bold": "\033[1m",
    "dim": "\033[2m",
}
_RESET = "\033[0m"
_GLYPHS = {OK: "✓", WARNING: "!", CRITICAL: "✗", UNKNOWN: "?", INFO: "·"}
_ASCII = str.maketrans(
    {
        "✓": "+",
        "✗": "x",
        "·": "-",
        "↑": "^",
        "↓": "v",
        "→": "->",
        "≥": ">=",
        "═": "=",
        "•": "*",
        "—": "-",
        "×": "x",
    }
)


def use_colour(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def render(report: Report, *, colour: bool = False) -> str:
    def paint(text: str, style: str) -> str:
        return f"{_COLOURS[style]}{text}{_RESET}" if colour and text else text

    rule = "═" * RULE
    plural = "s" if report.samples != 1 else ""
    how = f"{report.samples} sample{plural}"
    if report.samples > 1:
        how += f", {fmt_seconds(report.interval)} apart"
    if report.deep:
        how += ", deep"
    lines = [
        paint(f"Doorman audit — target {report.target}", "bold"),
        paint(f"{report.timestamp} · {how}", "dim"),
        rule,
    ]
    plurals = {"warning": "warnings", "emergency": "emergencies"}
    summary = ", ".join(
        f"{report.counts[s.value]} "
        + (plurals.get(s.value, s.value) if report.counts[s.value] > 1 else s.value)
        for s in sorted((Severity(k) for k in report.counts), key=lambda s: -s.rank)
    )
    status_style = {"healthy": OK}.get(report.level, report.level)
    lines.append(
        paint(f"{_GLYPHS[status_style]} Status: {report.level.upper()}", status_style)
        + (f" ({summary})" if summary else "")
    )
    for section in report.sections:
        lines.append("")
        lines.append(paint(section.title, "bold"))
        widths: dict[int, int] = {}
        for row in section.rows:
            for index, cell in enumerate(row.cells[:-1]):
                widths[index] = min(max(widths.get(index, 0), len(safe_text(cell))), 40)
        for row in section.rows:
            # Every cell escaped here too, whoever built the row (escaped text is unchanged).
            cells = [
                safe_text(cell).ljust(widths.get(i, 0))
                if i < len(row.cells) - 1
                else safe_text(cell)
                for i, cell in enumerate(row.cells)
            ]
            text = "  ".join(cells).rstrip()
            if row.note:
                text += " — " + paint(safe_text(row.note), row.level)
            lines.append(f"  {paint(_GLYPHS[row.level], row.level)} {text}")
    lines.append("")
    lines.append(rule)
    lines.append(paint("Recommendations", "bold"))
    if not report.recommendations:
        lines.append(f"  {paint(_GLYPHS[OK], OK)} nothing to do")
    for r in report.recommendations:
        times = f" (×{r.count})" if r.count > 1 else ""
        tag = paint(f"[{r.severity.value}]", _level(r.severity))
        lines.append(f"  • {tag} {safe_text(r.title)}{times}: {safe_text(r.text)}")
        if r.detail:
            more = " (the first of them)" if r.count > 1 else ""
            lines.append("    " + paint(safe_text(r.detail) + more, "dim"))
    lines.append("")
    lines.append(rule)
    closing = {
        "healthy": "All systems healthy",
        WARNING: "Warnings found",
        CRITICAL: "Critical problems found",
    }[report.level]
    lines.append(
        paint(f"{_GLYPHS[status_style]} {closing} (exit {report.exit_code})", status_style)
    )
    lines.append(f"Audit completed in {report.elapsed:.1f} s")
    return "\n".join(lines)


def encodable(text: str, stream: TextIO) -> str:
    """``text``, with ASCII stand-ins for the glyphs when ``stream`` cannot encode them."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return text.translate(_ASCII).encode("ascii", "replace").decode("ascii")
    return text


# --- the command -------------------------------------------------------------------------------


def _progress(stream: TextIO, samples: int) -> Callable[[str], None] | None:
    tty = bool(getattr(stream, "isatty", None) and stream.isatty())
    if not tty and samples < 2:
        return None

    def show(text: str) -> None:
        if tty:
            stream.write("\r\033[K" + text)
        else:
            stream.write(text + "\n")
        stream.flush()

    return show


def cmd_audit(args: argparse.Namespace) -> int:
    from .cli import _settings, make_deps
    from .payload import iso

    samples, interval = args.samples, args.sample_interval
    if not 1 <= samples <= MAX_SAMPLES:
        raise ConfigError(f"--samples: must be between 1 and {MAX_SAMPLES}")
    if not 0 <= interval <= MAX_INTERVAL:
        raise ConfigError(f"--interval: must be between 0 and {MAX_INTERVAL:.0f} seconds")
    # An audit measures over its own few samples, so each one asks the workers everything
    # (stats included: the throughput is measured between the audit's samples).
    settings = replace(_settings(args), worker_detail_interval_seconds=0.0)
    deps = make_deps(settings)
    progress = _progress(sys.stderr, samples)
    try:
        audit = run_audit(
            settings, deps, samples=samples, interval=interval, deep=args.deep, progress=progress
        )
    finally:
        if progress is not None and sys.stderr.isatty():
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
        deps.collector.close()
        if deps.store is not None:
            deps.store.close()
    report = build_report(audit, settings.target, iso(audit.samples[0].timestamp))
    text = render(report, colour=use_colour(sys.stdout))
    sys.stdout.write(encodable(text, sys.stdout) + "\n")
    sys.stdout.flush()
    return report.exit_code
