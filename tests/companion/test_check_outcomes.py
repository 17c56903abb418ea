"""The check with real companion workers: task figures since the previous check, the
failure-rate and expiry alerts, queue waits, and what a worker without the companion lacks."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.companion.conftest import Companions, outcomes, publish_header
from tests.conftest import Checker, WorkerFactory, run_cli

pytestmark = pytest.mark.slow  # real workers

SETTINGS = {"alert_pending_checks": {"task_failure_rate": 1}, "worker_timeout_seconds": 2.0}


def _tasks(payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in payload["tasks"]}


def _settled(companions: Companions, name: str, expected: dict[str, dict[str, int]]) -> None:
    """Wait until the worker's own counters hold ``expected`` (every task finished)."""
    companions.wait_for(
        name,
        lambda reply: all(
            outcomes(reply).get(task, {}).get(k, 0) >= v
            for task, counts in expected.items()
            for k, v in counts.items()
        ),
    )


def test_failures_retries_and_expiries_reach_the_payload_and_the_alerts(
    companions: Companions, checker: Any
) -> None:
    name = "outcomes@companion"
    companions.start(name, pool="prefork", concurrency=2)
    check: Checker = checker(**SETTINGS)
    first = check.check()
    (worker,) = first["workers"]
    assert worker["companion"] is True
    assert first["companion"]["without"] == [] and first["companion"].get("first_reading")
    assert first["metrics"]["tasks_failed"] is None  # a first reading says nothing yet

    with publish_header(companions.client):
        for _ in range(8):
            companions.send("comp.ok", 0.01)
        for _ in range(12):
            companions.send("comp.fail")
        companions.send("comp.retry", kwargs={"succeed_on": 1})
        soon = datetime.now(UTC) - timedelta(seconds=5)
        for _ in range(3):
            companions.send("comp.expire_me", expires=soon)
    _settled(
        companions,
        name,
        {
            "comp.ok": {"succeeded": 8},
            "comp.fail": {"failed": 12},
            "comp.retry": {"retried": 1, "succeeded": 1},
            "comp.expire_me": {"expired": 3},
        },
    )
    second = check.check()
    tasks = _tasks(second)
    assert {k: tasks["comp.ok"][k] for k in ("succeeded", "failed")} == {
        "succeeded": 8,
        "failed": 0,
    }
    assert tasks["comp.fail"]["failed"] == 12 and tasks["comp.fail"]["failure_rate"] == 1.0
    assert (tasks["comp.retry"]["retried"], tasks["comp.retry"]["succeeded"]) == (1, 1)
    assert tasks["comp.expire_me"]["expired"] == 3
    assert tasks["comp.expire_me"]["failure_rate"] is None  # none ran
    assert tasks["comp.ok"]["runtime_avg_sec"] is not None
    metrics = second["metrics"]
    assert (metrics["tasks_succeeded"], metrics["tasks_failed"], metrics["tasks_expired"]) == (
        9,
        12,
        3,
    )
    assert metrics["failure_rate_pct"] == pytest.approx(100 * 12 / 21, abs=0.01)
    (queue,) = [q for q in second["queues"] if q["name"] == "celery"]
    assert queue["wait_p50_sec"] is not None and queue["wait_p95_sec"] >= queue["wait_p50_sec"]
    firing = {(a["type"], a["severity"]) for a in second["alerts"] if a["state"] == "firing"}
    assert ("task_failure_rate", "critical") in firing  # 12 of 12 runs failed
    assert ("tasks_expired", "warning") in firing

    # Nothing new ran: the next interval counts nothing, and nothing counts twice.
    third = check.check()
    assert third["tasks"] == [] and third["metrics"]["tasks_failed"] == 0


def test_a_restarted_worker_is_a_reset_and_a_plain_worker_is_named(
    companions: Companions, checker: Any, workers: WorkerFactory
) -> None:
    name = "restart@companion"
    worker = companions.start(name, pool="threads", concurrency=2)
    workers.start("plain@nocompanion", pool="solo", concurrency=1, queues=("other",))
    check: Checker = checker(**SETTINGS)
    check.check()
    for _ in range(5):
        companions.send("comp.ok", 0.0)
    _settled(companions, name, {"comp.ok": {"succeeded": 5}})
    assert _tasks(check.check())["comp.ok"]["succeeded"] == 5

    worker.stop()
    worker = companions.start(name, pool="threads", concurrency=2)
    for _ in range(2):
        companions.send("comp.ok", 0.0)
    _settled(companions, name, {"comp.ok": {"succeeded": 2}})
    payload = check.check()
    # The restart began from zero: 2 since, not 2 - 5.
    assert _tasks(payload)["comp.ok"]["succeeded"] == 2
    assert payload["metrics"]["tasks_succeeded"] == 2
    by_status = {w["companion"] for w in payload["workers"] if w["status"] == "online"}
    assert by_status == {True, False}
    assert len(payload["companion"]["without"]) == 1
    assert "without the companion" in payload["companion"]["not_measured"]


def test_the_text_check_and_the_audit_show_outcomes_and_what_is_not_measured(
    companions: Companions, checker: Any, workers: WorkerFactory, tmp_path: Any
) -> None:
    name = "audit@companion"
    companions.start(name, pool="threads", concurrency=2)
    workers.start("plain@audit", pool="solo", concurrency=1, queues=("other",))
    check: Checker = checker(**SETTINGS)
    check.check()  # the baseline, kept in the state the audit reads
    for _ in range(12):
        companions.send("comp.fail")
    for _ in range(3):
        companions.send("comp.ok", 0.0)
    _settled(companions, name, {"comp.fail": {"failed": 12}, "comp.ok": {"succeeded": 3}})
    env = {"DOORMAN_HASH_SECRET": "test-secret", "NO_COLOR": "1"}
    common = ["--redis-url", check.url, "--state", str(check.state_path)]
    audit = run_cli(["audit", *common], env=env)
    out = audit.stdout
    assert audit.returncode == 2, out + audit.stderr  # 12 of 12 runs failed: critical
    section = out[out.index("Task outcomes") :]
    assert re.search(r"✗ comp\.fail +0 ok, 12 failed \(100%\)", section)
    assert re.search(r"✓ comp\.ok +3 ok, 0 failed", section)
    assert "1 worker without the companion" in section
    assert "Task failing: comp.fail" in out  # the recommendation of the finding

    text = run_cli(["check", "--once", "--format", "text", *common], env=env)
    assert "  Companion  1 worker(s) without it" in text.stdout
    # The audit changed nothing: the check still counts the 15 runs since its baseline.
    assert "  Tasks      3 succeeded, 12 failed, 0 expired since the last check" in text.stdout


def test_a_task_name_with_personal_data_is_counted_under_its_scrubbed_name(
    companions: Companions, checker: Any
) -> None:
    from tests.support.companion_app import PII_TASK_NAME

    name = "pii-name@companion"
    companions.start(name, pool="threads", concurrency=2)
    check: Checker = checker(**SETTINGS)
    check.check()
    companions.send(PII_TASK_NAME, kwargs={"fail_it": True})
    companions.send(PII_TASK_NAME)
    _settled(companions, name, {PII_TASK_NAME: {"failed": 1, "succeeded": 1}})
    payload = check.check()
    (task,) = payload["tasks"]
    assert (task["succeeded"], task["failed"]) == (1, 1)
    assert task["name"] == "[email]"  # the scrubber takes the whole dotted address
    stored = check.state_path.read_bytes()
    for planted in ("jane.doe", "example.com", "4111111111111111"):
        assert planted not in json.dumps(payload)
        assert planted.encode() not in stored
