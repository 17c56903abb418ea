"""The shell around one check: load the state, collect, step, commit.

The decisions are ``check.step``'s (pure); this module only does the I/O around it and turns
every failure of Redis, the workers or the state store into an ``errors[]`` entry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .alerting import Notification, Silence
from .check import Stepped, probe_plan, step
from .collect import Collector
from .model import ProbeError, Sample
from .payload import withhold_outcomes
from .sanitize import Hasher
from .settings import Settings
from .state import CheckStore, StateConflict, StateError, TargetState

log = logging.getLogger("doorman")


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
    store: CheckStore | None
    hasher: Hasher
    clock: Callable[[], float] = time.time


@dataclass(frozen=True)
class Loaded:
    """The stored state of a target as one check starts (empty when it could not be read)."""

    state: TargetState = field(default_factory=TargetState)
    silences: tuple[Silence, ...] = ()
    errors: tuple[ProbeError, ...] = ()
    writable: bool = False  # a store is there and answered: the check may commit


def load(store: CheckStore | None, target: str, now: float, *, silences: bool = True) -> Loaded:
    """Read ``target``'s state (and the silences in force unless ``silences`` is False)."""
    if store is None:
        return Loaded()
    try:
        return Loaded(
            store.load(target), tuple(store.silences(now)) if silences else (), writable=True
        )
    except StateError as exc:
        log.error("state store unreadable; this check will not be saved")
        return Loaded(errors=(ProbeError("state", "unreadable", str(exc)),))


def collect_and_step(
    settings: Settings, deps: Deps, loaded: Loaded, now: float, started: float
) -> Stepped:
    """Collect a snapshot as the stored state plans it, then take the pure step."""
    plan = probe_plan(loaded.state, settings, now, deps.hasher)
    snapshot = deps.collector.collect(plan, clock=lambda: now)
    return step(
        loaded.state,
        snapshot,
        settings,
        hasher=deps.hasher,
        now=now,
        silences=loaded.silences,
        errors=loaded.errors,
        elapsed_ms=lambda: (time.perf_counter() - started) * 1000.0,
    )


def run_check(settings: Settings, deps: Deps, *, dry_run: bool = False) -> CheckResult:
    """Run one check. Never raises for a broken Redis, worker or state store.

    With ``dry_run`` the step is taken but not committed: the alert states and notifications
    are computed and reported, but the state (and so the outbox) stays as it was.
    """
    started = time.perf_counter()
    now = deps.clock()
    loaded = load(deps.store, settings.target, now)
    stepped = collect_and_step(settings, deps, loaded, now, started)
    payload, state, committed = stepped.payload, stepped.state, False
    if dry_run:
        payload["dry_run"] = True
    elif deps.store is not None and loaded.writable:
        state, committed = _commit(deps.store, settings.target, loaded.state, stepped)
    _log_done(stepped)
    return CheckResult(payload, stepped.sample, state, stepped.notifications, committed)


def _commit(
    store: CheckStore, target: str, loaded: TargetState, stepped: Stepped
) -> tuple[TargetState, bool]:
    """Store the new state and its notifications in one write; on failure say so in the
    payload's errors (the notifications then stay unsent: the next check decides again)."""
    payload = stepped.payload
    try:
        state = store.commit(target, stepped.state, loaded.version, stepped.notifications)
        return state, True
    except StateConflict as exc:
        # Another check of this target won the race: it owns these notifications.
        payload["notifications"] = []
        withhold_outcomes(payload, "this check's state was not saved (another check won)")
        payload["errors"].append({"component": "state", "kind": "conflict", "message": str(exc)})
        log.warning("state commit lost to a concurrent check; nothing queued")
    except StateError as exc:
        payload["errors"].append(
            {"component": "state", "kind": "commit_failed", "message": str(exc)}
        )
        withhold_outcomes(payload, "this check's state was not saved")
        log.error("state commit failed: %s", type(exc).__name__)
    return stepped.state, False


def _log_done(stepped: Stepped) -> None:
    sample = stepped.sample
    log.info(
        "check done: %d queues, %d pending, %d/%d workers alive, %d alerts, %d notifications,"
        " %d errors, %.1f ms",
        len(sample.queues),
        sample.total_pending,
        sample.alive_workers,
        len(sample.workers),
        len(stepped.state.alerts),
        len(stepped.notifications),
        len(stepped.payload["errors"]),
        sample.duration_ms,
    )
