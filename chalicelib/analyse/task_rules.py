"""The rules on task outcomes: failure rates (from the worker companions) and tasks discarded
at expiry (from the companions, and from waiting messages already past their ``expires``).

No figure is invented: without a companion there is no failure rate, so no finding.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..alert_types import AlertType
from ..model import Finding, Sample, Severity, TaskCounters
from ..text import fmt_seconds
from ..thresholds import Thresholds
from .outcomes import failure_rate, finished
from .trends import Trends

CRITICAL_FAILURE_RATE_PCT = 50.0


def failure_severity(counters: TaskCounters, th: Thresholds) -> Severity | None:
    """How bad one task name's failure rate is: None under the threshold, or before
    ``min_task_volume`` runs ended; critical above CRITICAL_FAILURE_RATE_PCT."""
    rate = failure_rate(counters)
    if rate is None or finished(counters) < th.min_task_volume:
        return None
    if rate * 100.0 > CRITICAL_FAILURE_RATE_PCT:
        return Severity.CRITICAL
    return Severity.WARNING if rate * 100.0 > th.max_failure_rate_pct else None


def task_failure_rate(sample: Sample, _t: Trends, th: Thresholds) -> Iterable[Finding]:
    """Per task name: its failure rate over the failure window, once enough runs ended."""
    outcomes = sample.outcomes
    if outcomes is None:
        return
    window = fmt_seconds(outcomes.window_seconds)
    for name, counters in outcomes.window.items():
        severity = failure_severity(counters, th)
        if severity is None:
            continue
        runs = finished(counters)
        pct = 100.0 * counters.failed / runs
        yield Finding(
            type=AlertType.TASK_FAILURE_RATE,
            severity=severity,
            title=f"Task failing: {name}",
            message=(
                f"{name}: {counters.failed} of {runs} runs failed in the last {window}"
                f" ({pct:.0f}%, threshold {th.max_failure_rate_pct:g}%)"
            ),
            subject=name,
            details={
                "task": name,
                "failed": counters.failed,
                "runs": runs,
                "failure_rate_pct": round(pct, 1),
                "window_sec": outcomes.window_seconds,
            },
            recommendation="Look at this task's errors in the workers' logs (Doorman never"
            " reads them) and at what it depends on",
        )


def tasks_expired(sample: Sample, _t: Trends, _th: Thresholds) -> Iterable[Finding]:
    """Tasks discarded unrun because their ``expires`` passed: counted by the companions
    over the failure window, or seen waiting past it at the old end of a queue."""
    outcomes = sample.outcomes
    if outcomes is not None:
        window = fmt_seconds(outcomes.window_seconds)
        for name, counters in outcomes.window.items():
            if counters.expired:
                yield Finding(
                    type=AlertType.TASKS_EXPIRED,
                    severity=Severity.WARNING,
                    title=f"Tasks expired: {name}",
                    message=f"{counters.expired} run(s) of {name} were discarded unrun at"
                    f" their expiry time in the last {window}",
                    subject=name,
                    details={"task": name, "expired": counters.expired},
                    recommendation=_EXPIRY_ADVICE,
                )
    for q in sample.queues:
        if q.expired_waiting:
            yield Finding(
                type=AlertType.TASKS_EXPIRED,
                severity=Severity.WARNING,
                title=f"Tasks expired: queue {q.name}",
                message=f"At least {q.expired_waiting} task(s) waiting in '{q.name}' are past"
                " their expiry time: a worker will discard them unrun",
                subject=f"queue:{q.name}",
                queue=q.name,
                details={"queue": q.name, "expired_waiting": q.expired_waiting},
                recommendation=_EXPIRY_ADVICE,
            )


_EXPIRY_ADVICE = (
    "Tasks wait longer than their expires allows: add workers for the queue, or give the"
    " task a longer expires; each expired run is a run that never happens"
)
