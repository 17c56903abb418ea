"""One check as a pure step: stored state, snapshot, settings and clock in; new state,
notifications and payload out.

Nothing here reads the network, the state store or the wall clock: ``runner`` is the shell
that loads the state, collects the snapshot, calls ``step`` and commits what it returns (or
not, for a dry run), and the audit calls ``step`` in a loop with the state kept in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .alert_types import AlertType
from .alerting import AlertState, Notification, Policy, Silence
from .alerting import step as alert_step
from .analyse.anomalies import find_anomalies
from .analyse.outcomes import MAX_STORED_BYTES, Outcomes, step_outcomes
from .analyse.rules import evaluate
from .analyse.trends import HISTORY_LENGTH, Trends, compute_trends, history_entry
from .collect import ProbePlan
from .model import OutcomeSample, ProbeError, Sample, Snapshot, WorkerSample
from .payload import alert_json, build_payload, notification_json, trends_json
from .sanitize import Hasher, sanitize
from .settings import Settings
from .state import TargetState, WorkerRecord

FORGOTTEN_RETENTION_SECONDS = 7 * 86400


@dataclass(frozen=True)
class Stepped:
    """What one step decided: nothing of it is stored or sent until the shell commits it."""

    payload: dict[str, Any]
    sample: Sample
    state: TargetState
    notifications: tuple[Notification, ...]


def discovery(state: TargetState, settings: Settings, now: float) -> str:
    """How hard this check looks for workers: "always", "if_none" or "never".

    The pidbox bindings name every worker with remote control; a broadcast (which always
    waits its full timeout) only looks for the ones they miss, now and then.
    """
    if state.last_discovery is None:
        return "if_none"
    if now - state.last_discovery >= settings.worker_discovery_interval_seconds:
        return "always"
    return "never"


def probe_plan(state: TargetState, settings: Settings, now: float, hasher: Hasher) -> ProbePlan:
    """What the stored state tells the collector: whom to skip, whether to discover, and
    the broker facts learned before (visibility timeout, key dialect)."""
    discover = discovery(state, settings, now)
    forgotten = {h for h, r in state.roster.items() if r.forgotten}
    roster = state.roster

    def companion_of(name: str) -> bool | None:
        record = roster.get(hasher.worker(name))
        return record.companion if record is not None else None

    return ProbePlan(
        skip_worker=lambda name: discover != "always" and hasher.worker(name) in forgotten,
        discover_workers=discover,
        visibility_timeout=state.visibility_timeout,
        dialect=state.dialect,
        companion_of=companion_of,
    )


def step(
    state: TargetState,
    snapshot: Snapshot,
    settings: Settings,
    *,
    hasher: Hasher,
    now: float,
    silences: Sequence[Silence] = (),
    errors: Sequence[ProbeError] = (),
    elapsed_ms: Callable[[], float] = lambda: 0.0,
) -> Stepped:
    """Sanitize ``snapshot``, analyse it against ``state`` and decide the alerts.

    ``errors`` are the shell's own (an unreadable state store); ``elapsed_ms`` reads how long
    the check has taken so far, for the payload's ``duration_ms``.
    """
    sample, roster = observe(state, snapshot, settings, hasher=hasher, now=now)
    outcomes = measure_outcomes(state, sample, settings, now)
    sample = replace(
        sample,
        errors=sample.errors + tuple(errors) + _outcome_errors(outcomes),
        outcomes=outcomes.sample if outcomes is not None else None,
    )
    entry = history_entry(sample, state.history)
    trends = compute_trends(state.history, sample, entry)
    alerts, notifications = alert_step(
        state.alerts,
        evaluate(sample, trends, settings.thresholds),
        target=settings.target,
        now=now,
        policy=Policy(
            cooldown_seconds=settings.alert_cooldown_seconds,
            resolve_after=settings.alert_resolve_after_checks,
            pending_checks=settings.alert_pending_checks,
        ),
        silences=list(silences),
        blind=not sample.redis_ok,
        unseen=outcome_alerts_unseen(sample.outcomes, now, settings.worker_forget_after_seconds),
    )
    sample = replace(sample, duration_ms=round(elapsed_ms(), 2))
    payload = build_payload(
        sample,
        alerts=[alert_json(a) for a in sorted(alerts.values(), key=_alert_order)],
        notifications=[notification_json(n) for n in notifications],
        trends=trends_json(trends, sample),
    )
    new_state = replace(
        _learned(state, snapshot, settings, now),
        last_sample=_stored_sample(payload),
        roster=roster,
        observations=sample.observations,
        alerts=alerts,
        history=([*state.history, entry] if sample.redis_ok else state.history)[-HISTORY_LENGTH:],
    )
    if outcomes is not None:
        new_state = replace(
            new_state, outcomes_at=now, baselines=outcomes.baselines, outcome_window=outcomes.window
        )
    return Stepped(payload, sample, new_state, tuple(notifications))


def outcome_alerts_unseen(
    outcomes: OutcomeSample | None, now: float, hold_for: float
) -> Callable[[AlertState], bool] | None:
    """When no companion's counters could be differenced this check, the alerts made of
    them are not seen, not over: held (for ``hold_for`` seconds at most, after which a
    silent worker is forgotten) instead of resolved for lack of data."""
    if outcomes is not None and outcomes.counted:
        return None

    def unseen(alert: AlertState) -> bool:
        from_companion = alert.type == AlertType.TASK_FAILURE_RATE or (
            alert.type == AlertType.TASKS_EXPIRED and alert.queue is None
        )
        return from_companion and now - alert.last_seen < hold_for

    return unseen


def _outcome_errors(outcomes: Outcomes | None) -> tuple[ProbeError, ...]:
    """What the state could not keep of the companions' counters, said."""
    if outcomes is None:
        return ()
    errors = []
    if outcomes.histograms_dropped:
        errors.append(
            ProbeError(
                "outcomes",
                "too_large",
                f"the companions' counters take more than {MAX_STORED_BYTES // 1000} KB of"
                " state: their run-time and wait histograms are not kept, so run times and"
                " queue waits are not measured next check",
            )
        )
    if outcomes.not_kept:
        errors.append(
            ProbeError(
                "outcomes",
                "too_many",
                f"the companion counters of {len(outcomes.not_kept)} worker(s) are not kept"
                f" (over {MAX_STORED_BYTES // 1000} KB of state even without histograms):"
                " their task outcomes are not measured",
            )
        )
    return tuple(errors)


def _learned(state: TargetState, snapshot: Snapshot, settings: Settings, now: float) -> TargetState:
    """``state`` with what this snapshot taught about the broker: the visibility timeout,
    the key dialect, and when workers were last looked for."""
    learned_vt = next(
        (w.visibility_timeout_sec for w in snapshot.workers if w.visibility_timeout_sec), None
    )
    discovered = discovery(state, settings, now) != "never" and snapshot.workers_probed
    return replace(
        state,
        visibility_timeout=learned_vt or state.visibility_timeout,
        last_discovery=now if discovered else state.last_discovery,
        dialect=snapshot.dialect or state.dialect,
    )


def observe(
    state: TargetState, snapshot: Snapshot, settings: Settings, *, hasher: Hasher, now: float
) -> tuple[Sample, dict[str, WorkerRecord]]:
    """The sanitized sample (with the roster's vanished workers and the anomalies) and the
    next roster."""
    sample, unacked = sanitize(
        snapshot,
        hasher=hasher,
        previous_observations=state.observations,
        scrub_names=settings.sanitize_task_signatures,
    )
    roster, reported = update_roster(
        state.roster,
        sample.workers,
        now,
        settings.worker_forget_after_seconds,
        snapshot.workers_probed,
    )
    sample = replace(sample, workers=reported)
    anomalies = find_anomalies(sample, unacked, settings.thresholds)
    return replace(sample, anomalies=anomalies), roster


def measure_outcomes(
    state: TargetState, sample: Sample, settings: Settings, now: float
) -> Outcomes | None:
    """The companions' outcomes of this check (None when the workers were not asked)."""
    if not sample.workers_probed:
        return None
    return step_outcomes(
        sample.workers,
        state.baselines,
        state.outcome_window,
        now=now,
        since=state.outcomes_at,
        window_seconds=settings.failure_window_seconds,
        naming="scrubbed" if settings.sanitize_task_signatures else "plain",
        keep_silent_for=settings.worker_forget_after_seconds,
    )


def audit_trends(samples: Sequence[Sample]) -> Trends:
    """The trends of a run of samples taken together (the audit's), the last one current."""
    history: list[dict[str, Any]] = []
    for earlier in samples[:-1]:
        if earlier.redis_ok:
            history.append(history_entry(earlier, history))
    return compute_trends(history, samples[-1])


# --- the roster ---------------------------------------------------------------------------------


def _offline_entry(id_hash: str, record: WorkerRecord) -> WorkerSample:
    return WorkerSample(
        id_hash=id_hash,
        status="offline",
        concurrency=record.concurrency,
        active=0,
        reserved=0,
        scheduled=0,
        pool=None,
        queues=(),
        processed_total=0,
        processed={},
        prefetch_count=None,
        uptime_sec=None,
        tasks=(),
    )


def _unknown_entry(id_hash: str, record: WorkerRecord) -> WorkerSample:
    return replace(_offline_entry(id_hash, record), status="unknown")


def update_roster(
    roster: dict[str, WorkerRecord],
    workers: tuple[WorkerSample, ...],
    now: float,
    forget_after: float,
    probed: bool,
) -> tuple[dict[str, WorkerRecord], tuple[WorkerSample, ...]]:
    """The next roster, and the workers to report (adding known ones that vanished).

    A worker that stops answering stays reported (offline) until it has been silent for
    ``forget_after`` seconds; then it is forgotten: no longer addressed, so a long-dead worker
    does not make every check wait for its answer. A check that could not ask the workers
    (Redis down) changes nothing.
    """
    if not probed:
        return dict(roster), tuple(
            _unknown_entry(h, r) for h, r in roster.items() if not r.forgotten
        )
    new: dict[str, WorkerRecord] = {}
    report: list[WorkerSample] = []
    for w in workers:
        previous = roster.get(w.id_hash, WorkerRecord())
        if w.status == "online":
            companion = previous.companion if w.companion is None else w.companion
            new[w.id_hash] = WorkerRecord(
                last_seen=now, concurrency=w.concurrency, companion=companion
            )
            report.append(w)
            continue
        silent_since = previous.silent_since or now
        forgotten = now - silent_since >= forget_after
        new[w.id_hash] = replace(previous, silent_since=silent_since, forgotten=forgotten)
        if not forgotten:
            report.append(replace(w, concurrency=previous.concurrency))
    for id_hash, record in roster.items():
        if id_hash not in new:
            _carry_vanished(id_hash, record, now, forget_after, new, report)
    return new, tuple(report)


def _carry_vanished(
    id_hash: str,
    record: WorkerRecord,
    now: float,
    forget_after: float,
    new: dict[str, WorkerRecord],
    report: list[WorkerSample],
) -> None:
    """A known worker this check did not see at all: offline until forgotten, and kept
    forgotten (so it is not addressed) for a week after it fell silent."""
    silent_since = record.silent_since or now
    if record.forgotten:
        if now - silent_since < FORGOTTEN_RETENTION_SECONDS:
            new[id_hash] = record
        return
    forgotten = now - silent_since >= forget_after
    new[id_hash] = replace(record, silent_since=silent_since, forgotten=forgotten)
    if not forgotten:
        report.append(_offline_entry(id_hash, record))


def _alert_order(alert: AlertState) -> tuple[int, int, str]:
    return (0 if alert.state == "firing" else 1, -alert.severity.rank, alert.key)


def _stored_sample(payload: dict[str, Any]) -> dict[str, Any]:
    """The part of the payload kept as the last sample (already sanitized)."""
    keys = ("timestamp", "metrics", "queues", "workers", "anomalies", "alerts", "trends")
    return {k: payload[k] for k in keys if k in payload}
