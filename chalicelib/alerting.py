"""The alert lifecycle, pure: findings x alert states x clock -> new states + notifications.

An alert is *pending* until it has breached for N consecutive checks, then *firing*; it is
resolved (and forgotten) after M consecutive clean checks. Notifications go out on trigger,
on escalation to a higher severity (even inside the cooldown), on renotify once the cooldown
has passed, and on resolve. Inhibited or silenced alerts keep their state but send nothing;
an alert whose trigger was never sent is never resolved aloud. A check that could not see
(Redis unreachable) leaves every other alert exactly as it was.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .alert_types import BLIND_TYPE, AlertType, kind_of
from .model import Finding, Severity

TRIGGER, RENOTIFY, ESCALATE, RESOLVE = "trigger", "renotify", "escalate", "resolve"


@dataclass(frozen=True)
class Policy:
    cooldown_seconds: float = 300.0
    resolve_after: int = 2
    pending_checks: Mapping[str, int] = field(default_factory=dict)

    def checks_to_fire(self, finding: Finding) -> int:
        if finding.type in self.pending_checks:
            return max(1, self.pending_checks[finding.type])
        if finding.severity == Severity.EMERGENCY:
            return 1
        kind = kind_of(finding.type)
        return kind.pending_checks if kind is not None else 2


@dataclass(frozen=True)
class Silence:
    """Mutes matching alerts between ``starts_at`` and ``ends_at``; None matches anything."""

    id: str
    starts_at: float
    ends_at: float
    # Text rather than AlertType, as in AlertState and Notification: what is stored may name
    # a type of another Doorman version, and is kept (and matched) as it was written.
    type: str | None = None
    target: str | None = None
    queue: str | None = None
    comment: str = ""

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, finding: Finding, target: str, now: float) -> bool:
        return (
            self.active(now)
            and self.type in (None, finding.type)
            and self.target in (None, target)
            and self.queue in (None, finding.queue)
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, body: Any) -> Silence:
        """A stored silence; TypeError or ValueError when ``body`` is not one."""
        silence = cls(**body)  # TypeError for a non-mapping or unknown keys
        if not isinstance(silence.id, str) or not isinstance(silence.comment, str):
            raise TypeError("silence id and comment must be text")
        for bound in (silence.starts_at, silence.ends_at):
            if isinstance(bound, bool) or not isinstance(bound, int | float):
                raise TypeError("silence bounds must be numbers")
        if any(
            v is not None and not isinstance(v, str)
            for v in (silence.type, silence.target, silence.queue)
        ):
            raise TypeError("silence matchers must be text or null")
        return silence


@dataclass(frozen=True)
class AlertState:
    key: str
    type: str  # an AlertType's value, or a type of another version read back from the state
    severity: Severity
    state: str  # "pending" | "firing"
    title: str
    message: str
    first_seen: float
    last_seen: float
    breach_count: int = 1
    clean_count: int = 0
    since: float | None = None  # when it started firing
    notified: bool = False  # a trigger went out (so a resolve will too)
    last_notified: float | None = None
    notified_severity: Severity | None = None
    subject: str = ""
    queue: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    recommendation: str | None = None

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["severity"] = self.severity.value
        body["notified_severity"] = self.notified_severity.value if self.notified_severity else None
        return body

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> AlertState:
        data = dict(body)
        data["severity"] = Severity(data["severity"])
        ns = data.get("notified_severity")
        data["notified_severity"] = Severity(ns) if ns else None
        return cls(**data)


@dataclass(frozen=True)
class Notification:
    id: str
    action: str
    key: str
    type: str  # as in AlertState
    severity: Severity
    target: str
    title: str
    message: str
    at: float
    subject: str = ""
    queue: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    recommendation: str | None = None
    since: float | None = None

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["severity"] = self.severity.value
        return body

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Notification:
        data = dict(body)
        data["severity"] = Severity(data["severity"])
        return cls(**data)


def notification_id(key: str, action: str, at: float) -> str:
    """Stable for one event: a retried delivery carries the same id (and dedup key)."""
    return hashlib.sha256(f"{key}|{action}|{at:.6f}".encode()).hexdigest()[:24]


def _notify(action: str, alert: AlertState, target: str, now: float) -> Notification:
    return Notification(
        id=notification_id(alert.key, action, now),
        action=action,
        key=alert.key,
        type=alert.type,
        severity=alert.severity,
        target=target,
        title=alert.title,
        message=alert.message,
        at=now,
        subject=alert.subject,
        queue=alert.queue,
        details=dict(alert.details),
        recommendation=alert.recommendation,
        since=alert.since,
    )


def muted_types(findings: Iterable[Finding]) -> set[AlertType] | None:
    """Types inhibited by the findings present; None means every type but the blind one."""
    types = {f.type for f in findings}
    if BLIND_TYPE in types:
        return None
    muted: set[AlertType] = set()
    for name in types:
        kind = kind_of(name)
        if kind is not None:
            muted.update(kind.inhibits)
    return muted


def _dedupe(findings: Sequence[Finding], target: str) -> dict[str, Finding]:
    by_key: dict[str, Finding] = {}
    for f in findings:
        key = f.key(target)
        # Severity is a StrEnum: ``>`` would compare the strings, so compare ranks.
        if key not in by_key or f.severity.rank > by_key[key].severity.rank:
            by_key[key] = f
    return by_key


def step(
    alerts: Mapping[str, AlertState],
    findings: Sequence[Finding],
    *,
    target: str,
    now: float,
    policy: Policy,
    silences: Sequence[Silence] = (),
    blind: bool = False,
    unseen: Callable[[AlertState], bool] | None = None,
) -> tuple[dict[str, AlertState], list[Notification]]:
    """Advance every alert by one check. ``blind``: this check could not see the cluster;
    ``unseen``: the alerts this check could not see (their data is missing): neither is
    taken as evidence that an alert is over.

    Returns the new alert states and the notifications to send."""
    if blind:
        # What a blind check says about anything but Redis itself is not evidence.
        findings = [f for f in findings if f.type == BLIND_TYPE]
    by_key = _dedupe(findings, target)
    inhibited = muted_types(by_key.values())
    new: dict[str, AlertState] = {}
    out: list[Notification] = []

    for key, f in by_key.items():
        alert = _seen(alerts.get(key), key, f, now)
        if alert.state == "pending" and alert.breach_count >= policy.checks_to_fire(f):
            alert = replace(alert, state="firing", since=now)
        muted = (inhibited is None and f.type != BLIND_TYPE) or (
            inhibited is not None and f.type in inhibited
        )
        muted = muted or any(s.matches(f, target, now) for s in silences)
        if alert.state == "firing" and not muted:
            action = _action(alert, now, policy)
            if action is not None:
                out.append(_notify(action, alert, target, now))
                alert = replace(
                    alert, notified=True, last_notified=now, notified_severity=alert.severity
                )
        new[key] = alert

    for key, prev in alerts.items():
        if key not in by_key:
            hidden = blind or (unseen is not None and unseen(prev))
            kept = _unseen(prev, target=target, now=now, policy=policy, hidden=hidden, out=out)
            if kept is not None:
                new[key] = kept
    return new, out


def _seen(prev: AlertState | None, key: str, f: Finding, now: float) -> AlertState:
    """The alert of key ``key`` after a check that found ``f`` (new when ``prev`` is None)."""
    if prev is None:
        return AlertState(
            key=key,
            type=f.type,
            severity=f.severity,
            state="pending",
            title=f.title,
            message=f.message,
            first_seen=now,
            last_seen=now,
            subject=f.subject,
            queue=f.queue,
            details=dict(f.details),
            recommendation=f.recommendation,
        )
    return replace(
        prev,
        severity=f.severity,
        title=f.title,
        message=f.message,
        last_seen=now,
        breach_count=prev.breach_count + 1,
        clean_count=0,
        details=dict(f.details),
        recommendation=f.recommendation,
    )


def _unseen(
    prev: AlertState,
    *,
    target: str,
    now: float,
    policy: Policy,
    hidden: bool,
    out: list[Notification],
) -> AlertState | None:
    """An alert the check did not find: kept as it was (a check blind to it), one clean check
    further, or gone (None; a resolve appended to ``out`` when its trigger was sent)."""
    if hidden and prev.type != BLIND_TYPE:
        return prev  # unseen, not cleared
    clean = prev.clean_count + 1
    if prev.state == "pending":
        return None  # never fired: dropped quietly
    if clean >= policy.resolve_after:
        if prev.notified:
            out.append(_notify(RESOLVE, replace(prev, clean_count=clean), target, now))
        return None
    return replace(prev, clean_count=clean)


def _action(alert: AlertState, now: float, policy: Policy) -> str | None:
    if not alert.notified:
        return TRIGGER
    if alert.notified_severity is not None and alert.severity.rank > alert.notified_severity.rank:
        return ESCALATE
    if alert.last_notified is None or now - alert.last_notified >= policy.cooldown_seconds:
        return RENOTIFY
    return None
