"""One check, wired: load state -> collect -> sanitize -> analyse -> commit -> payload."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from .alerting import AlertState, Notification, Policy, Silence, step
from .analyse.anomalies import find_anomalies
from .analyse.rules import evaluate
from .analyse.trends import HISTORY_LENGTH, compute_trends, history_entry
from .collect import Collector, ProbePlan
from .model import ProbeError, Sample, WorkerSample
from .payload import alert_json, build_payload, notification_json, trends_json
from .sanitize import Hasher, sanitize
from .settings import Settings
from .state import CheckStore, StateConflict, StateError, TargetState, WorkerRecord

log = logging.getLogger("doorman")

FORGOTTEN_RETENTION_SECONDS = 7 * 86400


@dataclass(frozen=True)
class CheckResult:
    payload: dict[str, Any]
    sample: Sample
    state: TargetState
    notifications: tuple[Notification, ...] = ()
    committed: bool = False


@dataclass
class Deps:
    collector: Collector
    store: CheckStore | None  # a backend, or a stand-in (the audit's)
    hasher: Hasher
    clock: Callable[[], float] = time.time


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
            new[w.id_hash] = WorkerRecord(last_seen=now, concurrency=w.concurrency)
            report.append(w)
            continue
        silent_since = previous.silent_since or now
        forgotten = now - silent_since >= forget_after
        new[w.id_hash] = replace(previous, silent_since=silent_since, forgotten=forgotten)
        if not forgotten:
            report.append(replace(w, concurrency=previous.concurrency))
    for id_hash, record in roster.items():
        if id_hash in new:
            continue
        silent_since = record.silent_since or now
        if record.forgotten:
            if now - silent_since < FORGOTTEN_RETENTION_SECONDS:
                new[id_hash] = record
            continue
        forgotten = now - silent_since >= forget_after
        new[id_hash] = replace(record, silent_since=silent_since, forgotten=forgotten)
        if not forgotten:
            report.append(_offline_entry(id_hash, record))
    return new, tuple(report)


def _unknown_entry(id_hash: str, record: WorkerRecord) -> WorkerSample:
    return replace(_offline_entry(id_hash, record), status="unknown")


def run_check(settings: Settings, deps: Deps, *, dry_run: bool = False) -> CheckResult:
    """Run one check. Never raises for a broken Redis, worker or state store.

    With ``dry_run`` nothing is committed: the alert states and notifications are computed
    and reported, but the state (and so the outbox) stays as it was.
    """
    started = time.perf_counter()
    errors: list[ProbeError] = []
    state = TargetState()
    silences: list[Silence] = []
    store_ok = deps.store is not None
    now = deps.clock()
    if deps.store is not None:
        try:
            state = deps.store.load(settings.target)
            silences = deps.store.silences(now)
        except StateError as exc:
            store_ok = False
            errors.append(ProbeError("state", "unreadable", str(exc)))
            log.error("state store unreadable; this check will not be saved")

    hasher = deps.hasher
    forgotten = {h for h, r in state.roster.items() if r.forgotten}
    # The pidbox bindings name every worker with remote control; a broadcast (which always
    # waits its full timeout) only looks for the ones they miss, now and then.
    if state.last_discovery is None:
        discover = "if_none"
    elif now - state.last_discovery >= settings.worker_discovery_interval_seconds:
        discover = "always"
    else:
        discover = "never"
    plan = ProbePlan(
        skip_worker=lambda name: discover != "always" and hasher.worker(name) in forgotten,
        discover_workers=discover,
        visibility_timeout=state.visibility_timeout,
        dialect=state.dialect,
    )
    snapshot = deps.collector.collect(plan, clock=lambda: now)
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
    sample = replace(
        sample,
        workers=reported,
        anomalies=find_anomalies(replace(sample, workers=reported), unacked, settings.thresholds),
        errors=sample.errors + tuple(errors),
    )

    entry = history_entry(sample, state.history)
    trends = compute_trends(state.history, sample, entry)
    findings = evaluate(sample, trends, settings.thresholds)
    policy = Policy(
        cooldown_seconds=settings.alert_cooldown_seconds,
        resolve_after=settings.alert_resolve_after_checks,
        pending_checks=settings.alert_pending_checks,
    )
    alerts, notifications = step(
        state.alerts,
        findings,
        target=settings.target,
        now=now,
        policy=policy,
        silences=silences,
        blind=not sample.redis_ok,
    )
    history = [*state.history, entry] if sample.redis_ok else state.history
    learned_vt = next(
        (w.visibility_timeout_sec for w in snapshot.workers if w.visibility_timeout_sec), None
    )
    sample = replace(sample, duration_ms=round((time.perf_counter() - started) * 1000.0, 2))
    payload = build_payload(
        sample,
        alerts=[alert_json(a) for a in sorted(alerts.values(), key=_alert_order)],
        notifications=[notification_json(n) for n in notifications],
        trends=trends_json(trends, sample),
    )
    new_state = TargetState(
        version=state.version,
        last_sample=_stored_sample(payload),
        roster=roster,
        observations=sample.observations,
        visibility_timeout=learned_vt or state.visibility_timeout,
        last_discovery=(
            now if (discover != "never" and snapshot.workers_probed) else state.last_discovery
        ),
        alerts=alerts,
        history=history[-HISTORY_LENGTH:],
        dialect=snapshot.dialect or state.dialect,
    )
    committed = False
    if dry_run:
        payload["dry_run"] = True
    elif deps.store is not None and store_ok:
        try:
            new_state = deps.store.commit(settings.target, new_state, state.version, notifications)
            committed = True
        except StateConflict as exc:
            # Another check of this target won the race: it owns these notifications.
            payload["notifications"] = []
            payload["errors"].append(
                {"component": "state", "kind": "conflict", "message": str(exc)}
            )
            log.warning("state commit lost to a concurrent check; nothing queued")
        except StateError as exc:
            payload["errors"].append(
                {"component": "state", "kind": "commit_failed", "message": str(exc)}
            )
            log.error("state commit failed: %s", type(exc).__name__)
    log.info(
        "check done: %d queues, %d pending, %d/%d workers alive, %d alerts, %d notifications,"
        " %d errors, %.1f ms",
        len(sample.queues),
        sample.total_pending,
        sample.alive_workers,
        len(sample.workers),
        len(alerts),
        len(notifications),
        len(payload["errors"]),
        sample.duration_ms,
    )
    return CheckResult(
        payload=payload,
        sample=sample,
        state=new_state,
        notifications=tuple(notifications),
        committed=committed,
    )


def _alert_order(alert: AlertState) -> tuple[int, int, str]:
    return (0 if alert.state == "firing" else 1, -alert.severity.rank, alert.key)


def _stored_sample(payload: dict[str, Any]) -> dict[str, Any]:
    """The part of the payload kept as the last sample (already sanitized)."""
    keys = ("timestamp", "metrics", "queues", "workers", "anomalies", "alerts", "trends")
    return {k: payload[k] for k in keys if k in payload}
