"""The alert type catalogue: the names stay as they were (payload, alert keys and stored
state hold them), everything reads it, and a misspelt type is a type error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chalicelib.alert_types import ALERT_TYPE_NAMES, BLIND_TYPE, CATALOGUE, AlertType, kind_of
from chalicelib.alerting import Policy, muted_types
from chalicelib.analyse.rules import evaluate
from chalicelib.analyse.trends import Trends
from chalicelib.model import Finding, Sample, Severity
from chalicelib.settings import ALERT_TYPES, ConfigError, load_settings
from chalicelib.thresholds import Thresholds

ROOT = Path(__file__).resolve().parents[2]

# The names as they were spelt before the catalogue: they are data, never renamed.
NAMES = (
    "redis_unreachable",
    "celery_disconnected",
    "workers_down",
    "worker_offline",
    "backlog_explosion",
    "high_latency",
    "stuck_task",
    "queue_growing",
    "ghost_workers",
    "saturation_high",
    "orphaned_tasks",
    "redis_memory",
    "config_risk",
    "redis_permission",
    "task_failure_rate",
    "tasks_expired",
)


def finding(type_: str, severity: Severity = Severity.WARNING) -> Finding:
    return Finding(type=type_, severity=severity, title="t", message="m")


def test_names_are_unchanged_and_settings_take_exactly_them() -> None:
    assert tuple(t.value for t in AlertType) == NAMES
    assert ALERT_TYPE_NAMES == NAMES == ALERT_TYPES
    assert set(CATALOGUE) == set(AlertType)
    assert all(kind.type is t for t, kind in CATALOGUE.items())


def test_a_type_is_its_name_in_text_keys_and_json() -> None:
    import json

    f = finding(AlertType.QUEUE_GROWING)
    assert f.key("prod") == "queue_growing:prod"
    assert json.dumps({"type": f.type}) == '{"type": "queue_growing"}'
    assert AlertType.QUEUE_GROWING == "queue_growing"
    assert {"queue_growing": 1}[AlertType.QUEUE_GROWING] == 1


def test_alerts_and_notifications_of_a_finding_serialize_as_with_plain_names() -> None:
    """A Finding's type is an AlertType; what the alert lifecycle makes of it is stored and
    sent byte for byte as it was when types were plain strings."""
    import json
    from dataclasses import replace

    from chalicelib.alerting import step

    def stored(kind: str) -> tuple[str, str]:
        f = replace(finding(AlertType.WORKERS_DOWN, Severity.EMERGENCY), type=kind)
        alerts, notes = step({}, [f], target="prod", now=100.0, policy=Policy())
        (alert,) = alerts.values()
        (note,) = notes
        return json.dumps(alert.to_json(), sort_keys=True), json.dumps(note.to_json())

    as_member, as_text = stored(AlertType.WORKERS_DOWN), stored("workers_down")
    assert as_member == as_text
    assert '"type": "workers_down"' in as_member[0] and '"type": "workers_down"' in as_member[1]


def test_workers_down_inhibits_what_it_always_did() -> None:
    old = {"backlog_explosion", "high_latency", "queue_growing", "ghost_workers", "saturation_high"}
    assert old == CATALOGUE[AlertType.WORKERS_DOWN].inhibits
    assert muted_types([finding("workers_down")]) == old
    assert muted_types([finding("stuck_task")]) == set()
    assert muted_types([finding(BLIND_TYPE), finding("workers_down")]) is None


def test_pending_checks_default_from_the_catalogue() -> None:
    policy = Policy()
    assert policy.checks_to_fire(finding("redis_unreachable", Severity.CRITICAL)) == 1
    assert policy.checks_to_fire(finding("workers_down", Severity.EMERGENCY)) == 1
    assert policy.checks_to_fire(finding("stuck_task")) == 2
    assert policy.checks_to_fire(finding("not_in_the_catalogue")) == 2
    assert Policy(pending_checks={"stuck_task": 5}).checks_to_fire(finding("stuck_task")) == 5
    assert kind_of("redis_unreachable") is CATALOGUE[AlertType.REDIS_UNREACHABLE]
    assert kind_of("nope") is None


def test_settings_refuse_a_type_not_in_the_catalogue() -> None:
    settings = load_settings(environ={"DOORMAN_ALERT_PENDING_CHECKS": "queue_growing=4"})
    assert settings.alert_pending_checks == {"queue_growing": 4}
    with pytest.raises(ConfigError, match="unknown alert type 'queue_grow'"):
        load_settings(environ={"DOORMAN_ALERT_PENDING_CHECKS": "queue_grow=4"})


def test_rules_emit_catalogue_types() -> None:
    blind = Sample(
        target="t",
        timestamp=0.0,
        duration_ms=1.0,
        redis_ok=False,
        queues=(),
        workers=(),
        anomalies=(),
        errors=(),
        redis={},
        unacked_total=0,
        visibility_timeout_sec=None,
        workers_probed=False,
        discovery_truncated=False,
        observations={},
    )
    (found,) = evaluate(blind, Trends(), Thresholds())
    kind = CATALOGUE[AlertType.REDIS_UNREACHABLE]
    assert found.type is AlertType.REDIS_UNREACHABLE
    assert (found.severity, found.title) == (kind.severity, kind.title)


@pytest.mark.parametrize(
    "inhibits",
    [
        "frozenset({AlertType.BACKLOG_EXPLOSON})",  # a misspelt member
        'frozenset({"backlog_explosion"})',  # a bare string
    ],
)
def test_a_typo_in_what_workers_down_inhibits_is_a_type_error(
    tmp_path: Path, inhibits: str
) -> None:
    source = (
        "from chalicelib.alert_types import AlertKind, AlertType\n"
        "from chalicelib.model import Severity\n"
        "KIND = AlertKind(AlertType.WORKERS_DOWN, Severity.EMERGENCY, 'All workers down',"
        f" inhibits={inhibits})\n"
    )
    good = source.replace(inhibits, "frozenset({AlertType.BACKLOG_EXPLOSION})")
    _assert_only_bad_is_a_type_error(tmp_path, source, good)


@pytest.mark.parametrize(
    "kind",
    [
        "AlertType.QUEUE_GROWNG",  # a misspelt member
        '"queue_growing"',  # a bare string
    ],
)
def test_a_finding_of_a_type_not_from_the_catalogue_is_a_type_error(
    tmp_path: Path, kind: str
) -> None:
    source = (
        "from chalicelib.alert_types import AlertType\n"
        "from chalicelib.model import Finding, Severity\n"
        f"FOUND = Finding(type={kind}, severity=Severity.WARNING, title='t', message='m')\n"
    )
    good = source.replace(kind, "AlertType.QUEUE_GROWING")
    _assert_only_bad_is_a_type_error(tmp_path, source, good)


def _assert_only_bad_is_a_type_error(tmp_path: Path, bad_source: str, good_source: str) -> None:
    """mypy --strict passes ``good_source`` and finds an error on line 3 of ``bad_source``."""
    results = []
    for name, text in (("bad.py", bad_source), ("good.py", good_source)):
        (tmp_path / name).write_text(text)
        results.append(
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "mypy",
                    "--strict",
                    "--follow-imports=silent",
                    "--cache-dir",
                    str(tmp_path / "cache"),
                    str(tmp_path / name),
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
        )
    bad, ok = results
    assert ok.returncode == 0, ok.stdout
    assert bad.returncode == 1, bad.stdout
    assert "bad.py:3: error" in bad.stdout


def _constant_findings() -> dict[str, set[tuple[str, str]]]:
    """Each type's (severity, title) pairs that analyse/ writes as constants in a Finding."""
    import ast

    found: dict[str, set[tuple[str, str]]] = {}
    for path in sorted((ROOT / "chalicelib" / "analyse").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Finding"):
                continue
            kw = {k.arg: k.value for k in node.keywords}
            type_, severity, title = kw.get("type"), kw.get("severity"), kw.get("title")
            assert isinstance(type_, ast.Attribute), f"{path.name}: a type not from AlertType"
            assert getattr(type_.value, "id", "") == "AlertType"
            if isinstance(severity, ast.Attribute) and isinstance(title, ast.Constant):
                found.setdefault(type_.attr, set()).add((severity.attr, title.value))
    return found


def test_the_catalogue_names_the_rules_usual_severity_and_title() -> None:
    """Where a rule writes a fixed severity and title, the catalogue's are one of them; and
    every Finding in analyse/ takes its type from AlertType (never a bare string)."""
    found = _constant_findings()
    assert len(found) >= 10
    for member, pairs in found.items():
        kind = CATALOGUE[AlertType[member]]
        assert (kind.severity.name, kind.title) in pairs, member
