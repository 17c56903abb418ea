"""Huge names from the broker: a 500,000-character task name or queue name.

Each check runs against a real redis-server, with the message put there by Celery and kombu
themselves (``send_task``), so the binding set and the message are exactly what a real
producer writes. The check must stay fast, and the payload must show the name cut (with
its hash suffix), never the raw name.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

from tests.conftest import Checker, producer

HUGE = 500_000
BOUND_SEC = 2.0  # the bound for one check
EMAIL = "jane.doe@example.org"
# What a cut name ends with: an ellipsis, "#" and twelve hex digits of a digest.
CUT = re.compile(r"…#[0-9a-f]{12}$")


def huge_name(tail: str) -> str:
    """A name that starts like a real one, holds an address, and runs on for 500k characters.

    The long run of letters is the shape that made the old scrubber quadratic.
    """
    head = f"tasks.notify-{EMAIL}_"
    return head + "x" * (HUGE - len(head) - len(tail)) + tail


def timed_check(checker: Checker, **settings: Any) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    payload = checker.check(**settings)
    return payload, time.perf_counter() - started


def warm_checker(checker: Callable[..., Checker]) -> Checker:
    """A checker that has run once on the empty broker (imports, state file, scripts loaded).

    The bound is on what a huge name costs a check, not on a first run's start-up.
    """
    check = checker()
    _, elapsed = timed_check(check)
    print(f"first check on an empty broker: {elapsed:.3f} s")
    return check


def assert_no_raw_name(payload: dict[str, Any], *raws: str) -> None:
    text = json.dumps(payload, ensure_ascii=False)
    # The payload stays small: the name is cut, not carried.
    assert len(text) < 50_000, len(text)
    assert "x" * 300 not in text
    for raw in raws:
        assert raw not in text
    assert "jane" not in text and "example.org" not in text


def test_a_500k_task_name_in_a_waiting_message(
    redis_server: Any, checker: Callable[..., Checker]
) -> None:
    check = warm_checker(checker)
    name = huge_name("_4111-1111-1111-1111")
    app = producer(redis_server.url)
    app.app.send_task(name, queue="celery")
    assert redis_server.client().llen("celery") == 1
    payload, elapsed = timed_check(check)
    print(f"check with a {len(name)}-character task name: {elapsed:.3f} s")
    assert elapsed < BOUND_SEC, elapsed
    queues = {q["name"]: q for q in payload["queues"]}
    oldest = queues["celery"]["oldest_task"]
    assert oldest.startswith("tasks.notify-[email]_xxx"), oldest[:80]
    assert CUT.search(oldest), oldest[-40:]
    assert len(oldest) <= 200
    assert_no_raw_name(payload, name, "4111")
    # The same name gives the same cut on the next check.
    again, _ = timed_check(check)
    assert {q["name"]: q for q in again["queues"]}["celery"]["oldest_task"] == oldest


def test_a_500k_queue_name_bound_by_kombu(
    redis_server: Any, checker: Callable[..., Checker]
) -> None:
    check = warm_checker(checker)
    one, two = huge_name("_one"), huge_name("_two")
    app = producer(redis_server.url)
    for queue in (one, two):
        app.app.send_task("tasks.ping", queue=queue)
    client = redis_server.client()
    assert client.llen(one) == 1 and client.llen(two) == 1
    # kombu bound each queue under its own exchange's binding set.
    assert any(one.encode() in member for member in client.smembers(f"_kombu.binding.{one}"))
    payload, elapsed = timed_check(check)
    print(f"check with two {HUGE}-character queue names: {elapsed:.3f} s")
    assert elapsed < BOUND_SEC, elapsed
    cut = [q for q in payload["queues"] if q["name"].startswith("tasks.notify-[email]_xxx")]
    # Two distinct names stay two queues, each with its own depth, each shown cut.
    assert len(cut) == 2, [q["name"][:80] for q in payload["queues"]]
    assert len({q["name"] for q in cut}) == 2
    assert all(q["depth"] == 1 for q in cut)
    assert all(CUT.search(q["name"].split("~", 1)[0]) for q in cut), [q["name"][-40:] for q in cut]
    # At most 200 characters, plus the keyed "~q-" suffix of queue names that meet.
    assert all(len(q["name"].split("~q-")[0]) <= 200 for q in cut)
    assert payload["metrics"]["total_pending"] == 2
    assert_no_raw_name(payload, one, two)
    again, _ = timed_check(check)
    assert sorted(q["name"] for q in again["queues"]) == sorted(
        q["name"] for q in payload["queues"]
    )
