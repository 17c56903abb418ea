"""Queue contents Doorman cannot (and must not) decode: reported, bounded, no crash."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import producer
from tests.faults.helpers import local_check


def non_json(client: Any, url: str) -> None:
    client.lpush("q", b"\x80\x04\x95not json\x00\xff")
    client.lpush("q", b"plain text")


def pickled(client: Any, url: str) -> None:
    app = producer(url)
    for _ in range(2):
        app.process_user.apply_async(("x@y.com", "4111"), queue="q", serializer="pickle")


def twenty_mb(client: Any, url: str) -> None:
    client.lpush("q", b"{" + b"x" * (20 * 1024 * 1024))


def wrong_type(client: Any, url: str) -> None:
    client.hset("q", "field", "a hash where a queue should be")


def empty_binding_set(client: Any, url: str) -> None:
    # Redis deletes an empty set; what is left when every binding goes is an absent key or
    # members with empty fields.
    client.sadd("_kombu.binding.celery", "", "\x06\x16\x06\x16")
    client.lpush("q", b"plain text")


# fault -> (inject, expected depth of "q", expected problem flag)
CASES: dict[str, tuple[Callable[[Any, str], None], int, str]] = {
    "non-JSON bytes": (non_json, 2, "unreadable"),
    "pickle-serialized messages": (pickled, 2, "pickle"),
    "a 20 MB message": (twenty_mb, 1, "unreadable"),
    "key of the wrong Redis type": (wrong_type, 0, "wrong_type"),
    "empty binding set": (empty_binding_set, 1, "unreadable"),
}


@pytest.mark.parametrize("fault", list(CASES))
def test_queue_fault(fault: str, redis_server, tmp_path, fault_log) -> None:  # type: ignore[no-untyped-def]
    inject, depth, problem = CASES[fault]
    client = redis_server.client()
    inject(client, redis_server.url)
    before = (client.type("q"), client.dump("q"))
    started = time.monotonic()
    payload = local_check(redis_server.url, tmp_path / "state.db", monitored_queues="q")
    assert time.monotonic() - started < 3.0
    assert payload["metrics"]["redis_connected"] is True
    assert [e for e in payload["errors"] if e["component"] == "redis"] == [], payload["errors"]
    queues = {q["name"]: q for q in payload["queues"]}
    assert "" not in queues
    q = queues["q"]
    assert q["depth"] == depth, q
    if problem == "unreadable":
        assert q.get("unreadable_messages") is True, q
    elif problem == "pickle":
        assert q.get("serializers") == ["pickle"] and not q.get("unreadable_messages"), q
    else:
        assert problem in q.get("problem", ""), q
    # Only looked at: the queue is exactly as it was.
    assert (client.type("q"), client.dump("q")) == before
    fault_log.record(f"queues: {fault}")
