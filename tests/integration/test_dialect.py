"""Doorman speaks the cluster's own dialect: kombu's separator, priority steps and key
prefix are learned from the workers (or, with no worker, guessed from the keys and named),
so a queue holding 30 messages never reads 0.

Real workers run with the options Celery's documentation shows for Redis priorities
(``sep=":"``, steps 0-9, the priority strategy), with a ``global_keyprefix``, and with both;
Doorman is given no setting about any of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from celery import Celery

from chalicelib.embedded import RedisServer
from tests.conftest import Checker, WorkerFactory
from tests.support.pii_app import DOCS_PRIORITY

HELD = "held"  # a queue no worker consumes: its messages stay to be counted
PER_PRIORITY = 3


def publisher(url: str, options: dict[str, Any]) -> Celery:
    app = Celery("dialect-producer", broker=url, set_as_current=False)
    app.conf.broker_transport_options = dict(options)
    return app


def fill(url: str, options: dict[str, Any]) -> None:
    """PER_PRIORITY messages of each priority 0-9 into HELD, as the cluster's producers
    would send them."""
    app = publisher(url, options)
    try:
        for priority in range(10):
            for _ in range(PER_PRIORITY):
                app.send_task("tasks.held", queue=HELD, priority=priority)
    finally:
        app.close()


def truth(client: redis.Redis, prefix: str, sep: str) -> dict[str, int]:
    """What the lists really hold, read by the test itself: {"0": n, "3": n, ...}."""
    found = {}
    for level in range(10):
        key = f"{prefix}{HELD}" if level == 0 else f"{prefix}{HELD}{sep}{level}"
        depth = int(client.llen(key))
        if depth:
            found[str(level)] = depth
    return found


def dialect_errors(payload: dict[str, Any]) -> list[str]:
    return [e["message"] for e in payload["errors"] if e["kind"] == "dialect"]


def alert_types(payload: dict[str, Any]) -> set[str]:
    return {a["type"] for a in payload["alerts"]}


CASES = {
    "docs-priority": ({"PII_DOCS_PRIORITY": "1"}, DOCS_PRIORITY, ""),
    "keyprefix": ({"PII_KEYPREFIX": "myapp:"}, {"global_keyprefix": "myapp:"}, "myapp:"),
    "both": (
        {"PII_DOCS_PRIORITY": "1", "PII_KEYPREFIX": "acme."},
        {**DOCS_PRIORITY, "global_keyprefix": "acme."},
        "acme.",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_exact_depth_per_queue_and_priority_without_any_setting(
    case: str,
    redis_server: RedisServer,
    workers: WorkerFactory,
    checker: Callable[..., Checker],
) -> None:
    env, options, prefix = CASES[case]
    workers.start(f"dialect-{case}@doorman", queues=("celery",), env=env, transport_options=options)
    fill(redis_server.url, options)
    sep = str(options.get("sep", "\x06\x16"))
    expected = truth(redis_server.client(), prefix, sep)
    assert sum(expected.values()) == 10 * PER_PRIORITY  # the test's own reading is right

    check = checker()
    check.check()  # the first check may still be learning
    payload = check.check()
    queue = next(q for q in payload["queues"] if q["name"] == HELD)
    assert queue["depth"] == 10 * PER_PRIORITY, payload["queues"]
    assert queue.get("depth_by_priority", {"0": queue["depth"]}) == expected
    assert payload["metrics"]["alive_workers"] == 1
    assert not dialect_errors(payload), payload["errors"]
    assert not alert_types(payload) & {"workers_down", "celery_disconnected"}
    # Nothing but the queues the cluster has: no "held::held" or prefixed names.
    assert {q["name"] for q in payload["queues"]} <= {"celery", HELD}


def test_the_docs_setup_reads_right_on_the_first_check_too(
    redis_server: RedisServer, workers: WorkerFactory, checker: Callable[..., Checker]
) -> None:
    workers.start(
        "dialect-first@doorman",
        queues=("celery",),
        env={"PII_DOCS_PRIORITY": "1"},
        transport_options=DOCS_PRIORITY,
    )
    fill(redis_server.url, DOCS_PRIORITY)
    payload = checker().check()
    queue = next(q for q in payload["queues"] if q["name"] == HELD)
    assert queue["depth"] == 10 * PER_PRIORITY
    assert payload["metrics"]["alive_workers"] == 1


def test_a_prefix_with_no_live_worker_is_named(
    redis_server: RedisServer, checker: Callable[..., Checker]
) -> None:
    fill(redis_server.url, {"global_keyprefix": "ghost:"})
    check = checker()
    for payload in (check.check(), check.check()):
        errors = dialect_errors(payload)
        assert errors and "'ghost:'" in errors[0], payload["errors"]
        assert "no live worker" in errors[0]
        assert not alert_types(payload) & {"workers_down", "celery_disconnected"}
        queue = next(q for q in payload["queues"] if q["name"] == HELD)
        assert queue["depth"] == 10 * PER_PRIORITY


def test_an_explicit_setting_wins_and_a_mismatch_is_named(
    redis_server: RedisServer, workers: WorkerFactory, checker: Callable[..., Checker]
) -> None:
    workers.start(
        "dialect-explicit@doorman",
        queues=("celery",),
        env={"PII_DOCS_PRIORITY": "1"},
        transport_options=DOCS_PRIORITY,
    )
    fill(redis_server.url, DOCS_PRIORITY)
    payload = checker(priority_separator="|").check()
    errors = dialect_errors(payload)
    assert any("priority_separator ('|') but ':'" in m for m in errors), payload["errors"]
    # The members were not read as queue names ("held::held"), and what Doorman could not
    # see raises no emergency.
    assert all(":" not in q["name"] for q in payload["queues"])
    assert not alert_types(payload) & {"workers_down", "celery_disconnected"}


def test_only_the_known_steps_are_counted(
    redis_server: RedisServer, workers: WorkerFactory, checker: Callable[..., Checker]
) -> None:
    """Default kombu (steps 0, 3, 6, 9): after the workers said so, LLEN goes to those lists
    only, and a stray list of another step is not read as part of the queue."""
    workers.start("dialect-steps@doorman", queues=("celery",))
    fill(redis_server.url, {})
    client = redis_server.client()
    client.lpush(f"{HELD}\x06\x165", b"{}")  # not a kombu step: never written by kombu
    check = checker()
    check.check()
    payload = check.check()
    queue = next(q for q in payload["queues"] if q["name"] == HELD)
    assert queue["depth"] == 10 * PER_PRIORITY
    assert set(queue.get("depth_by_priority", {"0": 0})) <= {"0", "3", "6", "9"}
