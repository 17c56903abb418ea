"""The state store protocol and the plain data it keeps (all of it already sanitized)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol

from ..alerting import AlertState, Notification, Silence
from ..analyse.outcomes import (
    Baseline,
    WindowEntry,
    baseline_from_json,
    baseline_to_json,
    window_from_json,
    window_to_json,
)
from ..model import Dialect, Observation

OUTBOX_TTL_SECONDS = 3 * 86400

log = logging.getLogger("doorman")


class StateError(Exception):
    """The state store cannot be read or written; the message says which and why."""


class StateConflict(StateError):
    """Another check committed first (the version read is no longer current)."""


@dataclass(frozen=True)
class WorkerRecord:
    """What Doorman remembers of a worker, by hash only."""

    last_seen: float | None = None
    silent_since: float | None = None
    forgotten: bool = False
    concurrency: int | None = None
    companion: bool | None = None  # whether it runs the companion (None: not known)


@dataclass(frozen=True)
class TargetState:
    version: int = 0
    last_sample: dict[str, Any] | None = None
    roster: dict[str, WorkerRecord] = field(default_factory=dict)
    observations: dict[str, Observation] = field(default_factory=dict)
    visibility_timeout: float | None = None
    last_discovery: float | None = None
    alerts: dict[str, AlertState] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    dialect: Dialect | None = None  # the broker's key naming, as learned
    # The companions' counters as last read (by worker hash), when, and the failure window.
    outcomes_at: float | None = None
    baselines: dict[str, Baseline] = field(default_factory=dict)
    outcome_window: list[WindowEntry] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        # Built by hand: dataclasses.asdict deep-copies the history and sample on every commit,
        # which was most of a 1,000-queue check. Everything here is already JSON-ready.
        return {
            "last_sample": self.last_sample,
            "roster": {k: asdict(r) for k, r in self.roster.items()},
            "observations": {
                k: {"fingerprint": o.fingerprint, "first_seen": o.first_seen}
                for k, o in self.observations.items()
            },
            "visibility_timeout": self.visibility_timeout,
            "last_discovery": self.last_discovery,
            "alerts": {k: a.to_json() for k, a in self.alerts.items()},
            "history": self.history,
            "dialect": self.dialect.to_json() if self.dialect is not None else None,
            "outcomes_at": self.outcomes_at,
            "baselines": {k: baseline_to_json(b) for k, b in self.baselines.items()},
            "outcome_window": [window_to_json(e) for e in self.outcome_window],
        }

    @classmethod
    def from_json(cls, version: int, body: Any) -> TargetState:
        """Rebuild a stored state; raises StateError naming the first field of the wrong shape."""
        if not isinstance(body, dict):
            raise StateError("stored state has an unexpected shape (not an object)")
        last_sample = body.get("last_sample")
        if last_sample is not None and not isinstance(last_sample, dict):
            raise StateError("stored state has an unexpected shape (last_sample)")
        return cls(
            version=version,
            last_sample=last_sample,
            roster={k: _worker_record(k, v) for k, v in _mapping(body, "roster").items()},
            observations={k: _observation(k, v) for k, v in _mapping(body, "observations").items()},
            visibility_timeout=_optional_number(body, "visibility_timeout"),
            last_discovery=_optional_number(body, "last_discovery"),
            alerts={k: _alert(k, v) for k, v in _mapping(body, "alerts").items()},
            history=_history(body),
            # Shaped like nothing it knows (an older Doorman, a hand edit): learn it again.
            dialect=Dialect.from_json(body.get("dialect")),
            **_outcomes(body),
        )


# What a stored baseline or window entry of a wrong shape raises when read back.
_SHAPE_ERRORS = (AttributeError, KeyError, TypeError, ValueError, OverflowError, StateError)


def _outcomes(body: dict[str, Any]) -> dict[str, Any]:
    """The companions' baselines and window, entry by entry: one shaped like nothing known
    (another version, a hand edit) is dropped and logged, so that worker starts a new
    baseline; the others are kept."""
    found: dict[str, Any] = {"baselines": {}, "outcome_window": []}
    dropped = 0
    try:
        found["outcomes_at"] = _optional_number(body, "outcomes_at")
    except _SHAPE_ERRORS:
        dropped += 1
    baselines = body.get("baselines")
    for key, value in (baselines if isinstance(baselines, dict) else {}).items():
        try:
            found["baselines"][str(key)] = baseline_from_json(value)
        except _SHAPE_ERRORS:
            dropped += 1
    window = body.get("outcome_window")
    for entry in window if isinstance(window, list) else []:
        try:
            found["outcome_window"].append(window_from_json(entry))
        except _SHAPE_ERRORS:
            dropped += 1
    if dropped:
        log.warning("state: %d stored task-outcome entries of an unknown shape dropped", dropped)
    return found


def _alert(key: str, value: Any) -> AlertState:
    try:
        return AlertState.from_json(value)
    except (TypeError, ValueError, KeyError):
        raise _shape_error(f"alerts.{key}") from None


def decode_silences(bodies: Iterable[str], now: float | None) -> list[Silence]:
    """The stored silences active at ``now`` (all when None), in the order given.

    A row that does not hold a silence (hand-edited, or written by something else) is
    skipped: one bad row must not stop every check that loads the silences.
    """
    found: list[Silence] = []
    for body in bodies:
        try:
            silence = Silence.from_json(json.loads(body))
        except (TypeError, ValueError):
            continue
        if now is None or silence.active(now):
            found.append(silence)
    return found


def _history(body: dict[str, Any]) -> list[dict[str, Any]]:
    value = body.get("history")
    if value is None:
        return []
    if not isinstance(value, list) or not all(
        isinstance(e, dict) and _is_number(e.get("t")) and isinstance(e.get("q"), dict)
        for e in value
    ):
        raise _shape_error("history")
    return value


def _shape_error(where: str) -> StateError:
    return StateError(f"stored state has an unexpected shape ({where[:80]})")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _optional_number(body: dict[str, Any], key: str, where: str = "") -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if not _is_number(value):
        raise _shape_error(where + key)
    return float(value)


def _mapping(body: dict[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _shape_error(key)
    return value


def _worker_record(key: str, value: Any) -> WorkerRecord:
    where = f"roster.{key}."
    if not isinstance(value, dict) or set(value) - {f.name for f in fields(WorkerRecord)}:
        raise _shape_error(where.rstrip("."))
    concurrency = value.get("concurrency")
    forgotten = value.get("forgotten", False)
    companion = value.get("companion")
    if (
        (concurrency is not None and not isinstance(concurrency, int))
        or not isinstance(forgotten, bool)
        or not (companion is None or isinstance(companion, bool))
    ):
        raise _shape_error(where.rstrip("."))
    return WorkerRecord(
        last_seen=_optional_number(value, "last_seen", where),
        silent_since=_optional_number(value, "silent_since", where),
        forgotten=forgotten,
        concurrency=concurrency,
        companion=companion,
    )


def _observation(key: str, value: Any) -> Observation:
    where = f"observations.{key}"
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("fingerprint"), str)
        or not _is_number(value.get("first_seen"))
    ):
        raise _shape_error(where)
    return Observation(fingerprint=value["fingerprint"], first_seen=float(value["first_seen"]))


@dataclass(frozen=True)
class OutboxItem:
    """A notification committed with the alert state that caused it, awaiting delivery."""

    id: str
    target: str
    created_at: float
    notification: Notification
    channels_done: frozenset[str] = frozenset()  # channels that already took (or refused) it


# The store is split by who needs what: a check loads and commits its target's state and reads
# the active silences (CheckStore); delivery works the outbox (Outbox); the silence commands
# add and remove silences (SilenceStore). A backend (SQLite, DynamoDB) is all of them
# (StateStore); a stand-in implements only the part it stands in for.


class TargetStore(Protocol):
    """A target's state, read whole and written under its version."""

    def load(self, target: str) -> TargetState:
        """The stored state (version 0 and empty when there is none). Raises StateError."""
        ...

    def commit(
        self,
        target: str,
        state: TargetState,
        expected_version: int,
        outbox: Sequence[Notification] = (),
    ) -> TargetState:
        """Atomically write ``state`` and queue ``outbox``, if the version is still current.

        Returns the state with its new version. Raises StateConflict when another writer
        committed first (nothing is written, nothing queued), StateError when the store
        cannot be written.
        """
        ...


class Outbox(Protocol):
    """The notifications committed with the states that caused them, until delivered."""

    def undelivered(self, target: str, limit: int = 100) -> list[OutboxItem]:
        """Queued notifications of ``target`` not yet marked delivered, oldest first."""
        ...

    def mark_delivered(self, items: Sequence[OutboxItem], now: float) -> None:
        """Record that these notifications went out (already delivered ones are left as they are).

        Takes the OutboxItems as listed: a key-value store finds an item by its target and
        time, which a bare id does not carry. Raises StateError when the store cannot be
        written.
        """
        ...

    def mark_channel(self, item: OutboxItem, channel: str) -> None:
        """Record that ``channel`` took (or refused for good) ``item``, which stays queued for
        the channels still owed it: the next check does not send it twice to this one."""
        ...


class SilenceReader(Protocol):
    def silences(self, now: float | None = None) -> list[Silence]:
        """Every stored silence (only those active at ``now`` when given). Raises StateError."""
        ...


class SilenceStore(SilenceReader, Protocol):
    def add_silence(self, silence: Silence) -> None:
        """Store ``silence`` (replacing one with its id). Raises StateError."""
        ...

    def remove_silence(self, silence_id: str) -> bool:
        """True when a silence with that id existed. Raises StateError."""
        ...


class CheckStore(TargetStore, SilenceReader, Protocol):
    """What one check needs: its target's state, and the silences active now."""


class StateStore(CheckStore, Outbox, SilenceStore, Protocol):
    """A whole backend, owned (and closed) by whoever opened it."""

    def close(self) -> None: ...
