"""Collection against a real redis-server and real Celery workers: depths, discovery, latency.

Every expected value is measured independently here (LLEN over the list and its priority
sub-lists, the wall clock at publish time), never taken from Doorman itself.
"""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from celery import Celery
from celery.signals import before_task_publish

from chalicelib.embedded import EmbeddedError, wait_for_workers
from doorman_celery import HEADER, PUBLISH_UID, install
from tests.conftest import producer
from tests.support.pii_app import PLANTED_EMAIL

SEP = b"\x06\x16"
PREFIX = "pfx:"


def true_levels(client: Any, name: str, prefix: str = "") -> dict[int, int]:
    """LLEN of the queue's list (level 0) and of each priority sub-list ``name\\x06\\x16N``."""
    key = (prefix + name).encode()
    levels = {0: int(client.llen(key))}
    for n in range(1, 10):
        levels[n] = int(client.llen(key + SEP + str(n).encode()))
    return {level: count for level, count in levels.items() if count}


def true_depth(client: Any, name: str, prefix: str = "") -> int:
    return sum(true_levels(client, name, prefix).values())


def by_name(payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {q["name"]: q for q in payload["queues"]}


def stamp(payload: dict[str, Any]) -> float:
    """The check's own clock (the payload timestamp) as epoch seconds."""
    return datetime.fromisoformat(payload["timestamp"].replace("Z", "+00:00")).timestamp()


@contextmanager
def prefixed_app(url: str, prefix: str) -> Iterator[Celery]:
    """A producer/control app that uses kombu's ``global_keyprefix`` like the workers do."""
    app = Celery("prefixed-producer", broker=url, set_as_current=False)
    app.conf.update(
        broker_transport_options={"global_keyprefix": prefix},
        broker_connection_retry_on_startup=True,
    )
    try:
        yield app
    finally:
        app.close()


def wait_prefixed(app: Celery, names: list[str], timeout: float = 45.0) -> None:
    """``wait_for_workers`` for workers under a key prefix (their pidbox is prefixed too)."""
    deadline = time.monotonic() + timeout
    missing = set(names)
    while missing and time.monotonic() < deadline:
        for reply in app.control.ping(destination=sorted(missing), timeout=0.5) or []:
            missing -= set(reply)
    if missing:
        raise EmbeddedError(f"prefixed workers did not come up: {sorted(missing)}")


def test_depths_equal_the_waiting_messages_across_priorities_and_a_key_prefix(
    redis_server, workers, checker
):
    url = redis_server.url
    # Workers boot while the test enqueues; none of them consumes the measured queues.
    workers.start("w1@depth", queues=("celery",), wait=False)
    workers.start("w2@depth", queues=("celery",), wait=False)
    prefixed_worker = workers.start(
        "w3@depth", queues=("celery",), env={"PII_KEYPREFIX": PREFIX}, wait=False
    )

    app = producer(url)
    for priority, count in ((0, 2), (5, 3), (9, 4)):
        for _ in range(count):
            app.sleep.apply_async((1,), queue="alpha", priority=priority)
    for _ in range(5):
        app.quick.apply_async(queue="beta")
    app.quick.apply_async(queue="gamma")  # the unprefixed namesake of the prefixed queue
    with prefixed_app(url, PREFIX) as papp:
        for _ in range(3):
            papp.send_task("tasks.quick", queue="gamma")
        wait_for_workers(url, ["w1@depth", "w2@depth"], timeout=45)
        try:
            wait_prefixed(papp, ["w3@depth"])
        except EmbeddedError:
            print(prefixed_worker.log_text()[-3000:])
            raise

    client = redis_server.client()
    levels = true_levels(client, "alpha")
    assert len(levels) == 3, f"priorities should land in three lists, got {levels}"
    truth = {name: true_depth(client, name) for name in ("alpha", "beta", "gamma")}
    assert truth == {"alpha": 9, "beta": 5, "gamma": 1}
    prefixed_truth = true_depth(client, "gamma", PREFIX)
    assert prefixed_truth == 3

    try:
        plain = checker().check()
        queues = by_name(plain)
        for name, depth in truth.items():
            assert queues[name]["depth"] == depth, (name, queues[name])
        assert queues["alpha"]["depth_by_priority"] == {str(k): v for k, v in levels.items()}
        assert queues["celery"]["depth"] == 0
        assert plain["metrics"]["total_pending"] == sum(truth.values())
        assert plain["metrics"]["alive_workers"] == 2
        assert [w["status"] for w in plain["workers"]] == ["online", "online"]

        prefixed = checker(global_keyprefix=PREFIX, target="prefixed").check()
        pqueues = by_name(prefixed)
        assert pqueues["gamma"]["depth"] == prefixed_truth
        assert "alpha" not in pqueues and "beta" not in pqueues
        assert prefixed["metrics"]["total_pending"] == prefixed_truth
        assert prefixed["metrics"]["alive_workers"] == 1

        # Nothing moved while we looked.
        assert {name: true_depth(client, name) for name in truth} == truth

        # Dead or alive is told apart under the prefix too (the pidbox channel is prefixed).
        prefixed_worker.kill()
        after = checker(global_keyprefix=PREFIX, target="prefixed").check()
        assert [w["status"] for w in after["workers"]] == ["offline"]
        assert by_name(after)["gamma"]["depth"] == prefixed_truth
    finally:
        for worker in workers.started:
            worker.kill()  # faster than a warm shutdown; nothing left to check


def test_queues_stay_reported_when_every_worker_is_stopped(redis_server, workers, checker):
    worker = workers.start("w1@stop", queues=("orders",))
    app = producer(redis_server.url)
    for _ in range(3):
        app.quick.apply_async(queue="backlog")
    check = checker()

    before = check.check()
    assert before["metrics"]["alive_workers"] == 1
    assert {"orders", "backlog"} <= set(by_name(before))

    worker.stop()
    after = check.check()
    queues = by_name(after)
    assert queues["orders"]["depth"] == 0
    assert queues["backlog"]["depth"] == 3 == true_depth(redis_server.client(), "backlog")
    assert after["metrics"]["alive_workers"] == 0
    assert after["metrics"]["total_pending"] == 3
    assert [w["status"] for w in after["workers"]] == ["offline"]


def test_garbage_in_a_queue_is_counted_and_does_not_break_the_check(redis_server, checker):
    client = redis_server.client()
    app = producer(redis_server.url)
    for _ in range(2):
        app.quick.apply_async(queue="healthy")

    # Not JSON at all, in the list and in a priority sub-list; found through a binding.
    client.lpush("junk", b"\x00\xffnot json at all", b"{truncated")
    client.lpush(b"junk" + SEP + b"3", b"\x80\x04garbage")
    client.sadd("_kombu.binding.junk", b"junk" + SEP + SEP + b"junk")
    # A raw pickle blob (holding personal data), found through monitored_queues.
    client.lpush("pickled", pickle.dumps({"email": PLANTED_EMAIL, "n": 1}, protocol=4))
    # JSON that looks like an envelope but holds invalid UTF-8 and numbers JSON cannot hold.
    client.lpush(
        "hostile",
        b'{"headers": {"id": "\xff\xfe-id", "task": "t\xc3", "x_published_at": 1e999,'
        b' "retries": -1e999}, "properties": {"priority": 1e999, "expiration": "1e999"}}',
    )

    payload = checker(monitored_queues=["pickled", "hostile"]).check()

    assert payload["metrics"]["redis_connected"] is True
    assert [e for e in payload["errors"] if e["component"] in ("redis", "queue")] == []
    queues = by_name(payload)
    assert queues["healthy"]["depth"] == 2
    assert "unreadable_messages" not in queues["healthy"]
    assert queues["junk"]["depth"] == 3 == true_depth(client, "junk")
    assert queues["junk"]["unreadable_messages"] is True
    assert queues["junk"]["depth_by_priority"] == {"0": 2, "3": 1}
    assert queues["pickled"]["depth"] == 1
    assert queues["pickled"]["unreadable_messages"] is True
    assert queues["hostile"]["depth"] == 1
    # No usable timestamp in it: the age is only observed, never infinite.
    assert queues["hostile"]["latency_source"] == "observed"
    assert payload["metrics"]["total_pending"] == 7
    assert PLANTED_EMAIL not in json.dumps(payload)


def test_latency_follows_the_best_available_source(redis_server, checker):
    client = redis_server.client()
    app = producer(redis_server.url)

    install(app.app)
    try:
        published_hook = time.time()
        app.quick.apply_async(queue="lat-hook")
    finally:
        before_task_publish.disconnect(dispatch_uid=PUBLISH_UID)
    published_exp = time.time()
    app.quick.apply_async(queue="lat-expires", expires=600)
    app.quick.apply_async(queue="lat-observed")
    app.quick.apply_async(queue="lat-eta", countdown=100)

    # The messages are what the cases need: only the first carries the header.
    assert HEADER in json.loads(client.lindex("lat-hook", -1))["headers"]
    for name in ("lat-expires", "lat-observed", "lat-eta"):
        assert HEADER not in json.loads(client.lindex(name, -1))["headers"], name

    # The check's clock two seconds on instead of waiting for them (the ages are clock - sent).
    check = checker()
    first = check.check(at=time.time() + 2.0)
    t1 = stamp(first)
    q1 = by_name(first)

    hook = q1["lat-hook"]
    assert hook["latency_source"] == "producer_header"
    assert abs(hook["latency_sec"] - (t1 - published_hook)) <= 1.0, hook
    assert "latency_is_lower_bound" not in hook

    exp = q1["lat-expires"]
    assert exp["latency_source"] == "expires"
    assert abs(exp["latency_sec"] - (t1 - published_exp)) <= 1.0, exp
    assert "latency_is_lower_bound" not in exp

    observed1 = q1["lat-observed"]
    assert observed1["latency_source"] == "observed"
    assert observed1["latency_is_lower_bound"] is True
    assert 0.0 <= observed1["latency_sec"] < 1.0  # first sighting: nothing known yet

    eta = q1["lat-eta"]
    assert eta["depth"] == 1
    assert eta["latency_source"] == "not_due"
    assert eta["latency_sec"] == 0

    second = check.check(at=t1 + 2.0)
    t2 = stamp(second)
    q2 = by_name(second)
    observed2 = q2["lat-observed"]
    assert observed2["latency_source"] == "observed"
    assert observed2["latency_is_lower_bound"] is True
    grown = observed2["latency_sec"] - observed1["latency_sec"]
    assert abs(grown - (t2 - t1)) <= 1.0, (observed1, observed2, t2 - t1)
    assert observed2["latency_sec"] >= 1.5
    assert abs(q2["lat-hook"]["latency_sec"] - (t2 - published_hook)) <= 1.0
    assert abs(q2["lat-expires"]["latency_sec"] - (t2 - published_exp)) <= 1.0
    assert q2["lat-eta"]["latency_source"] == "not_due"
    assert second["metrics"]["max_latency_sec"] == max(q["latency_sec"] for q in second["queues"])
