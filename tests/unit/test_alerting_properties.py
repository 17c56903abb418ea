"""Properties of the alert lifecycle over random sequences of checks.

Each generated run is a list of checks: a clock step, a random subset of a few alert kinds
with random severities, or a blind check (Redis unreachable). Silences and the policy are
random too. The lifecycle's notifications are checked against the invariants the design
promises, and against a small reference model written here from the specification.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.alerting import (
    ESCALATE,
    RENOTIFY,
    RESOLVE,
    TRIGGER,
    AlertState,
    Notification,
    Policy,
    Silence,
    step,
)
from chalicelib.model import Finding, Severity

pytestmark = pytest.mark.slow  # hundreds of examples a test: the full suite only

TARGET = "prod"
BLIND = "redis_unreachable"
INHIBITED = {
    "backlog_explosion",
    "high_latency",
    "queue_growing",
    "ghost_workers",
    "saturation_high",
}
RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2, Severity.EMERGENCY: 3}
SEVERITIES = list(RANK)

# (type, subject, queue): a few alert keys, two of them of one type.
KINDS: tuple[tuple[str, str, str | None], ...] = (
    ("workers_down", "", None),
    ("backlog_explosion", "", None),
    ("high_latency", "q1", "q1"),
    ("high_latency", "q2", "q2"),
    ("stuck_task", "t-1", None),
    ("redis_memory", "", None),
)
TYPES = sorted({k[0] for k in KINDS} | {BLIND})


def finding(kind: tuple[str, str, str | None], severity: Severity) -> Finding:
    type_, subject, queue = kind
    return Finding(
        type=type_,
        severity=severity,
        title=f"{type_} {subject}".strip(),
        message=f"{type_} is {severity.value}",
        subject=subject,
        queue=queue,
    )


def key_of(kind: tuple[str, str, str | None]) -> str:
    return finding(kind, Severity.INFO).key(TARGET)


BLIND_KEY = finding((BLIND, "", None), Severity.CRITICAL).key(TARGET)


@dataclass(frozen=True)
class Check:
    dt: float
    blind: bool
    findings: tuple[Finding, ...]


@st.composite
def checks(draw: st.DrawFn) -> Check:
    dt = float(draw(st.integers(min_value=1, max_value=400)))
    blind = draw(st.booleans()) and draw(st.booleans())  # about one check in four
    if blind:
        found = [finding((BLIND, "", None), Severity.CRITICAL)]
        # What a blind check claims about anything else must not count.
        if draw(st.booleans()):
            kind = draw(st.sampled_from(KINDS))
            found.append(finding(kind, draw(st.sampled_from(SEVERITIES))))
        return Check(dt, True, tuple(found))
    kinds = draw(st.lists(st.sampled_from(KINDS), max_size=len(KINDS)))
    found = [finding(kind, draw(st.sampled_from(SEVERITIES))) for kind in kinds]
    return Check(dt, False, tuple(found))


@st.composite
def silences(draw: st.DrawFn, horizon: float) -> list[Silence]:
    out = []
    for i in range(draw(st.integers(min_value=0, max_value=3))):
        start = draw(st.floats(min_value=-100, max_value=horizon))
        length = draw(st.floats(min_value=1, max_value=horizon + 100))
        out.append(
            Silence(
                id=f"s{i}",
                starts_at=start,
                ends_at=start + length,
                type=draw(st.none() | st.sampled_from(TYPES)),
                target=draw(st.sampled_from([None, TARGET, "other"])),
                queue=draw(st.sampled_from([None, "q1"])),
            )
        )
    return out


policies = st.builds(
    Policy,
    cooldown_seconds=st.sampled_from([0.0, 60.0, 300.0, 900.0]),
    resolve_after=st.integers(min_value=1, max_value=3),
    pending_checks=st.dictionaries(
        st.sampled_from(TYPES), st.integers(min_value=0, max_value=3), max_size=3
    ),
)


@dataclass
class Run:
    policy: Policy
    silences: list[Silence]
    checks: list[Check]
    times: list[float] = field(default_factory=list)
    states: list[dict[str, AlertState]] = field(default_factory=list)  # after each check
    notes: list[list[Notification]] = field(default_factory=list)


@st.composite
def runs(draw: st.DrawFn) -> Run:
    seq = draw(st.lists(checks(), min_size=1, max_size=30))
    horizon = sum(c.dt for c in seq)
    return Run(draw(policies), draw(silences(horizon)), seq)


def play(run: Run) -> Run:
    alerts: dict[str, AlertState] = {}
    now = 1_000.0
    for check in run.checks:
        now += check.dt
        before = dict(alerts)
        alerts, notes = step(
            alerts,
            check.findings,
            target=TARGET,
            now=now,
            policy=run.policy,
            silences=run.silences,
            blind=check.blind,
        )
        assert before == dict(before)  # the input mapping is not mutated (sanity)
        run.times.append(now)
        run.states.append(dict(alerts))
        run.notes.append(list(notes))
    return run


# --- the reference model ------------------------------------------------------------------


@dataclass
class Ref:
    type: str
    severity: Severity
    breaches: int = 0
    firing: bool = False
    clean: int = 0
    told: bool = False  # a trigger went out and no resolve since
    told_at: float = 0.0
    told_severity: Severity = Severity.INFO


def needed(policy: Policy, f: Finding) -> int:
    if f.type in policy.pending_checks:
        return max(1, policy.pending_checks[f.type])
    return 1 if f.severity == Severity.EMERGENCY or f.type == BLIND else 2


def muted(f: Finding, present: set[str], run: Run, now: float) -> bool:
    if BLIND in present and f.type != BLIND:
        return True
    if "workers_down" in present and f.type in INHIBITED:
        return True
    return any(
        s.starts_at <= now < s.ends_at
        and s.type in (None, f.type)
        and s.target in (None, TARGET)
        and s.queue in (None, f.queue)
        for s in run.silences
    )


def reference(run: Run) -> list[list[tuple[str, str, Severity]]]:
    """(action, key, severity) per check, from the specification alone."""
    policy = run.policy
    refs: dict[str, Ref] = {}
    out: list[list[tuple[str, str, Severity]]] = []
    now = 1_000.0
    for check in run.checks:
        now += check.dt
        notes: list[tuple[str, str, Severity]] = []
        seen: dict[str, Finding] = {}
        for f in check.findings:
            if check.blind and f.type != BLIND:
                continue
            k = f.key(TARGET)
            if k not in seen or RANK[f.severity] > RANK[seen[k].severity]:
                seen[k] = f
        present = {f.type for f in seen.values()}
        for k, f in seen.items():
            r = refs.setdefault(k, Ref(f.type, f.severity))
            r.severity, r.breaches, r.clean = f.severity, r.breaches + 1, 0
            if r.breaches >= needed(policy, f):
                r.firing = True
            if not r.firing or muted(f, present, run, now):
                continue
            if not r.told:
                action: str | None = TRIGGER
            elif RANK[f.severity] > RANK[r.told_severity]:
                action = ESCALATE
            elif now - r.told_at >= policy.cooldown_seconds:
                action = RENOTIFY
            else:
                action = None
            if action:
                notes.append((action, k, f.severity))
                r.told, r.told_at, r.told_severity = True, now, f.severity
        for k in [k for k in refs if k not in seen]:
            r = refs[k]
            if check.blind and r.type != BLIND:
                continue
            if not r.firing:
                del refs[k]
                continue
            r.clean += 1
            if r.clean >= policy.resolve_after:
                if r.told:
                    notes.append((RESOLVE, k, r.severity))
                del refs[k]
        out.append(notes)
    return out


def summary(notes: Sequence[Notification]) -> list[tuple[str, str, Severity]]:
    return [(n.action, n.key, n.severity) for n in notes]


FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- properties ---------------------------------------------------------------------------


@FAST
@given(runs())
def test_lifecycle_matches_the_reference_model(run: Run) -> None:
    play(run)
    expected = reference(run)
    for i, notes in enumerate(run.notes):
        assert sorted(summary(notes)) == sorted(expected[i]), f"check {i}"
        assert all(n.at == run.times[i] and n.target == TARGET for n in notes)
        for n in notes:
            if n.action != RESOLVE:
                assert run.states[i][n.key].state == "firing"
                assert run.states[i][n.key].last_notified == run.times[i]


@FAST
@given(runs())
def test_no_second_trigger_without_resolve_cooldown_or_escalation(run: Run) -> None:
    play(run)
    open_: dict[str, Notification] = {}  # key -> last non-resolve notification since trigger
    for notes in run.notes:
        assert len({n.key for n in notes}) == len(notes), "one notification per key per check"
        for n in notes:
            last = open_.get(n.key)
            if n.action == RESOLVE:
                assert last is not None, f"resolve of {n.key} without a trigger"
                del open_[n.key]
                continue
            if last is None:
                assert n.action == TRIGGER, f"{n.action} of {n.key} before any trigger"
            elif n.action == ESCALATE:
                assert RANK[n.severity] > RANK[last.severity]
            else:
                assert n.action == RENOTIFY, f"second trigger of {n.key}"
                assert n.at - last.at >= run.policy.cooldown_seconds
            open_[n.key] = n


@FAST
@given(runs())
def test_a_firing_alert_that_stops_breaching_resolves_exactly_once(run: Run) -> None:
    play(run)
    m = run.policy.resolve_after
    triggered: set[str] = set()
    clean: dict[str, int] = {}  # firing key -> consecutive seeing checks without its finding
    firing: set[str] = set()
    for i, check in enumerate(run.checks):
        keys = {f.key(TARGET) for f in check.findings if not check.blind or f.type == BLIND}
        resolved = {n.key for n in run.notes[i] if n.action == RESOLVE}
        for key in list(firing):
            if key in keys:
                clean[key] = 0
            elif not check.blind or key == BLIND_KEY:
                clean[key] += 1
            if clean[key] == m:
                assert key not in run.states[i], f"{key} still kept after {m} clean checks"
                assert (key in resolved) == (key in triggered), key
                firing.discard(key)
                triggered.discard(key)
            else:
                assert key not in resolved, f"{key} resolved after {clean[key]} clean checks"
        for n in run.notes[i]:
            if n.action == TRIGGER:
                triggered.add(n.key)
        for key, alert in run.states[i].items():
            if alert.state == "firing" and key not in firing:
                firing.add(key)
                clean[key] = 0
        assert resolved <= set(clean), "a resolve for an alert that never fired"


@FAST
@given(runs())
def test_muted_for_its_whole_life_sends_nothing(run: Run) -> None:
    play(run)
    lives: dict[str, list[Notification]] = {}  # key -> what it sent in its current life
    always_muted: dict[str, bool] = {}
    finished: list[tuple[bool, list[Notification]]] = []
    now = 1_000.0
    for i, check in enumerate(run.checks):
        now += check.dt
        seen = [f for f in check.findings if not check.blind or f.type == BLIND]
        present = {f.type for f in seen}
        for f in seen:
            k = f.key(TARGET)
            lives.setdefault(k, [])
            always_muted[k] = always_muted.get(k, True) and muted(f, present, run, now)
        for n in run.notes[i]:
            lives[n.key].append(n)
        for k in [k for k in lives if k not in run.states[i]]:
            finished.append((always_muted.pop(k), lives.pop(k)))
    finished += [(always_muted[k], sent) for k, sent in lives.items()]
    for was_muted, sent in finished:
        if was_muted:
            assert sent == [], sent


@FAST
@given(runs())
def test_blind_checks_change_nothing_but_the_redis_alert(run: Run) -> None:
    play(run)
    previous: dict[str, AlertState] = {}
    for i, check in enumerate(run.checks):
        if check.blind:
            others = {k: a for k, a in previous.items() if a.type != BLIND}
            assert {k: a for k, a in run.states[i].items() if a.type != BLIND} == others
            assert all(n.type == BLIND for n in run.notes[i]), run.notes[i]
        previous = run.states[i]


@FAST
@given(runs())
def test_notification_ids_are_unique(run: Run) -> None:
    play(run)
    ids = [n.id for notes in run.notes for n in notes]
    assert len(ids) == len(set(ids))


@FAST
@given(runs())
def test_states_round_trip_through_json(run: Run) -> None:
    play(run)
    for alerts in run.states:
        for alert in alerts.values():
            assert AlertState.from_json(alert.to_json()) == alert
    for notes in run.notes:
        for note in notes:
            assert Notification.from_json(note.to_json()) == note


# --- a few fixed stories the properties generalize ------------------------------------------


def _play(policy: Policy, *checks: tuple[float, Sequence[Finding], bool]) -> list[list[Any]]:
    alerts: dict[str, AlertState] = {}
    out = []
    for now, found, blind in checks:
        alerts, notes = step(alerts, found, target=TARGET, now=now, policy=policy, blind=blind)
        out.append([(n.action, n.severity.value) for n in notes])
    return out


def test_escalation_from_warning_to_critical_bypasses_the_cooldown() -> None:
    lat = KINDS[2]
    warn, crit = finding(lat, Severity.WARNING), finding(lat, Severity.CRITICAL)
    got = _play(Policy(), (0, [warn], False), (30, [warn], False), (60, [crit], False))
    assert got == [[], [("trigger", "warning")], [("escalate", "critical")]]


def test_the_highest_severity_of_one_key_wins() -> None:
    lat = KINDS[2]
    found = [finding(lat, Severity.CRITICAL), finding(lat, Severity.WARNING)]
    alerts, _ = step({}, found, target=TARGET, now=0, policy=Policy())
    assert [a.severity for a in alerts.values()] == [Severity.CRITICAL]
    alerts, _ = step({}, found[::-1], target=TARGET, now=0, policy=Policy())
    assert [a.severity for a in alerts.values()] == [Severity.CRITICAL]


def test_pending_needs_consecutive_breaches_and_per_type_override() -> None:
    backlog = finding(KINDS[1], Severity.CRITICAL)
    default = _play(Policy(), (0, [backlog], False), (60, [], False), (120, [backlog], False))
    assert default == [[], [], []], "a gap restarts the count"
    three = Policy(pending_checks={"backlog_explosion": 3})
    got = _play(three, *[(60.0 * i, [backlog], False) for i in range(3)])
    assert got == [[], [], [("trigger", "critical")]]
    down = finding(KINDS[0], Severity.EMERGENCY)
    assert _play(Policy(), (0, [down], False)) == [[("trigger", "emergency")]]
