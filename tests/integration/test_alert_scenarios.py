"""The alert scenarios of the issue, end to end: real redis-server, real Celery workers.

Notifications are counted twice: in the payloads' ``notifications`` and in the state file's
outbox (an in-process check commits them there and delivers nothing).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from chalicelib.state.sqlite import SqliteStore
from tests.conftest import parse_one_json, producer, run_cli, wait_until

TARGET = "default"


def alerts_of(payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["type"]: a for a in payload["alerts"]}


def actions(payload: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(n["action"], n["type"], n["severity"]) for n in payload["notifications"]]


def outbox(path: Path) -> list[tuple[str, str, str]]:
    store = SqliteStore(str(path))
    try:
        items = store.undelivered(TARGET)
    finally:
        store.close()
    return [
        (i.notification.action, i.notification.type, i.notification.severity.value) for i in items
    ]


def enqueue(url: str, n: int, queue: str = "celery") -> None:
    app = producer(url)
    for _ in range(n):
        app.quick.apply_async(queue=queue)


def test_no_workers_and_empty_queues_is_a_celery_disconnected_warning(redis_server, checker):
    check = checker()
    first = check.check()
    alert = alerts_of(first)["celery_disconnected"]
    assert (alert["severity"], alert["state"]) == ("warning", "pending")
    assert first["notifications"] == []
    assert "workers_down" not in alerts_of(first)

    second = check.check()
    alert = alerts_of(second)["celery_disconnected"]
    assert (alert["severity"], alert["state"]) == ("warning", "firing")
    assert actions(second) == [("trigger", "celery_disconnected", "warning")]
    assert alert["key"] == f"celery_disconnected:{TARGET}"
    assert outbox(check.state_path) == [("trigger", "celery_disconnected", "warning")]


def test_workers_down_fires_at_once_notifies_once_and_resolves_once(redis_server, workers, checker):
    enqueue(redis_server.url, 5)
    check = checker()  # default policy: cooldown 300 s, resolve after 2 clean checks
    sent: list[tuple[str, str, str]] = []

    first = check.check()
    down = alerts_of(first)["workers_down"]
    assert (down["severity"], down["state"]) == ("emergency", "firing")
    assert down["message"] == "No workers responding but 5 tasks are pending"
    assert down["title"] and down["since"] == first["timestamp"]
    assert actions(first) == [("trigger", "workers_down", "emergency")]
    sent += actions(first)

    second = check.check()  # well inside the cooldown
    assert alerts_of(second)["workers_down"]["state"] == "firing"
    assert second["notifications"] == []
    assert alerts_of(second)["workers_down"]["since"] == down["since"]

    workers.start("w1@drain", concurrency=2, queues=("celery",))
    client = redis_server.client()
    wait_until(
        lambda: client.llen("celery") == 0 and client.zcard("unacked_index") == 0,
        15,
        "the worker to drain the queue",
    )
    after = []
    for _ in range(2):  # resolve_after
        payload = check.check()
        assert payload["metrics"]["alive_workers"] == 1
        assert payload["metrics"]["total_pending"] == 0
        after.append(payload)
        sent += actions(payload)
    assert "workers_down" in alerts_of(after[0]), "one clean check does not resolve"
    assert after[0]["notifications"] == []
    assert "workers_down" not in alerts_of(after[1])
    assert actions(after[1]) == [("resolve", "workers_down", "emergency")]

    again = check.check()
    sent += actions(again)
    assert again["alerts"] == [] and again["notifications"] == []

    expected = [("trigger", "workers_down", "emergency"), ("resolve", "workers_down", "emergency")]
    assert sent == expected
    assert outbox(check.state_path) == expected


def test_backlog_over_max_queue_size_is_critical_by_the_second_check(
    redis_server, workers, checker
):
    workers.start("w1@backlog", concurrency=1, queues=("celery",))
    enqueue(redis_server.url, 20, queue="idle")
    check = checker(**{"thresholds.max_queue_size": 10})

    first = check.check()
    assert first["metrics"]["alive_workers"] == 1
    assert first["metrics"]["total_pending"] == 20
    backlog = alerts_of(first)["backlog_explosion"]
    assert (backlog["severity"], backlog["state"]) == ("critical", "pending")
    assert "threshold (10)" in backlog["message"] and "idle (20)" in backlog["message"]
    assert "workers_down" not in alerts_of(first)

    second = check.check()
    backlog = alerts_of(second)["backlog_explosion"]
    assert (backlog["severity"], backlog["state"]) == ("critical", "firing")
    assert actions(second) == [("trigger", "backlog_explosion", "critical")]
    assert outbox(check.state_path) == [("trigger", "backlog_explosion", "critical")]


def test_redis_killed_is_redis_unreachable_and_leaves_the_other_alerts_alone(redis_server, checker):
    enqueue(redis_server.url, 5)
    check = checker()
    first = check.check()
    assert actions(first) == [("trigger", "workers_down", "emergency")]

    redis_server.stop()
    started = time.perf_counter()
    blind = check.check()
    took = time.perf_counter() - started
    assert took < 5, took
    assert blind["check_duration_ms"] < 5000
    assert blind["metrics"]["redis_connected"] is False

    found = alerts_of(blind)
    assert (found["redis_unreachable"]["severity"], found["redis_unreachable"]["state"]) == (
        "critical",
        "firing",
    )
    assert actions(blind) == [("trigger", "redis_unreachable", "critical")]
    # Not seen is not cleared: workers_down stays as it was, nothing resolves.
    assert found["workers_down"]["state"] == "firing"
    assert found["workers_down"]["since"] == alerts_of(first)["workers_down"]["since"]
    assert set(found) == {"redis_unreachable", "workers_down"}

    still = check.check()
    assert still["notifications"] == [], "inside the cooldown, and nothing resolves"
    assert set(alerts_of(still)) == {"redis_unreachable", "workers_down"}

    store = SqliteStore(str(check.state_path))
    try:
        state = store.load(TARGET)
    finally:
        store.close()
    assert state.alerts[f"workers_down:{TARGET}"].state == "firing"
    assert state.alerts[f"workers_down:{TARGET}"].clean_count == 0
    assert Counter(outbox(check.state_path)) == Counter(
        [("trigger", "workers_down", "emergency"), ("trigger", "redis_unreachable", "critical")]
    )


def _cli(url: str, state: Path, *extra: str) -> tuple[dict[str, Any], str]:
    result = run_cli(
        ["check", "--once", "--format", "json", "--redis-url", url, "--state", str(state), *extra]
    )
    assert result.returncode == 0, result.stderr
    return parse_one_json(result.stdout), result.stderr


def test_cli_prints_the_trigger_once_and_dry_run_sends_nothing(redis_server, tmp_path):
    enqueue(redis_server.url, 5)
    state = tmp_path / "cli.db"

    doc, err = _cli(redis_server.url, state)
    assert actions(doc) == [("trigger", "workers_down", "emergency")]
    lines = [line for line in err.splitlines() if line.startswith("doorman: ALERT")]
    assert len(lines) == 1, err
    assert "[emergency]" in lines[0]
    assert "No workers responding but 5 tasks are pending" in lines[0]
    assert doc["notifications"][0]["delivery"] == [{"channel": "console", "ok": True}]
    assert outbox(state) == [], "delivered items leave the undelivered outbox"

    doc, err = _cli(redis_server.url, state)
    assert doc["notifications"] == []
    assert "doorman: ALERT" not in err, err

    dry = tmp_path / "dry.db"
    doc, err = _cli(redis_server.url, dry, "--dry-run")
    assert doc.get("dry_run") is True
    assert actions(doc) == [("trigger", "workers_down", "emergency")]
    would = [line for line in err.splitlines() if "would send" in line]
    assert len(would) == 1 and "workers_down" in would[0], err
    assert "doorman: ALERT" not in err.replace("would send: doorman: ALERT", "")
    assert outbox(dry) == []
    # Nothing was committed either: the next real check triggers it.
    doc, _ = _cli(redis_server.url, dry)
    assert actions(doc) == [("trigger", "workers_down", "emergency")]


def test_growth_that_stops_resolves_within_two_checks(redis_server, checker):
    """A queue grows for a few checks, then stays flat: queue_growing resolves on the
    second flat check, not after the flat samples have filled the trend window."""
    check = checker()
    client = redis_server.client()
    client.sadd("_kombu.binding.celery", "grow\x06\x16\x06\x16grow")
    states = []
    for _ in range(4):  # growing: 1, 2, 3, 4 messages
        client.lpush("grow", b"{}")
        states.append(alerts_of(check.check()).get("queue_growing", {}).get("state"))
    assert states[-1] == "firing", states
    flat = [check.check() for _ in range(2)]
    assert "queue_growing" in alerts_of(flat[0])  # one clean check is not yet a resolve
    assert "queue_growing" not in alerts_of(flat[1]), flat[1]["alerts"]
