"""Several targets in one scheduled invocation: each checked in its own thread within its
own budget, so a broken one never delays or hides a healthy one."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chalicelib.embedded import RedisServer
from tests.aws.conftest import aws
from tests.support.moto_server import DynamoTable, MotoServer

CW = {"source": "aws.events", "detail_type": "Scheduled Event", "detail": {}, "resources": []}
BUDGET = 1.5


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections into its backlog and never answers: the
    worst Redis, one that makes every read wait for its timeout."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield int(sock.getsockname()[1])


def test_a_broken_target_neither_delays_nor_hides_a_healthy_one(
    lambda_env: Callable[[], Any],
    monkeypatch: pytest.MonkeyPatch,
    moto_server: MotoServer,
    dynamodb: DynamoTable,
    redis_server: RedisServer,
    closed_port: int,
    silent_port: int,
    app_module: Any,
) -> None:
    # The hash secret from a SecureString this time.
    ssm = aws(moto_server, "ssm")
    param = f"/doorman/{uuid.uuid4().hex[:8]}/hash"
    ssm.put_parameter(Name=param, Value="from-ssm-secret", Type="SecureString")
    ssm.close()
    monkeypatch.delenv("DOORMAN_HASH_SECRET")
    monkeypatch.setenv("DOORMAN_HASH_SECRET_PARAM", param)
    targets = [
        {"name": "silent", "redis_url": f"redis://127.0.0.1:{silent_port}/0"},
        {"name": "refused", "redis_url": f"redis://127.0.0.1:{closed_port}/0"},
        {"name": "healthy", "redis_url": redis_server.url, "thresholds": {"max_queue_size": 5}},
    ]
    monkeypatch.setenv("DOORMAN_TARGETS", json.dumps(targets))
    monkeypatch.setenv("DOORMAN_CHECK_BUDGET", str(BUDGET))
    monkeypatch.setenv("DOORMAN_WORKER_TIMEOUT", "0.3")
    monkeypatch.setenv("DOORMAN_REDIS_TIMEOUT", "2")

    with lambda_env() as client:
        started = time.monotonic()
        first = client.lambda_.invoke("check", client.events.generate_cw_event(**CW)).payload
        took = time.monotonic() - started
        by_name = {t["target"]: t for t in first["targets"]}
        assert [t["target"] for t in first["targets"]] == ["silent", "refused", "healthy"]
        assert first["budget_seconds"] == BUDGET
        assert took < BUDGET + 1.0, took

        healthy = by_name["healthy"]
        assert healthy["status"] == "ok" and healthy["committed"] is True, healthy
        assert healthy["metrics"]["redis_connected"] is True
        assert healthy["seconds"] < 1.0, healthy  # not held up by the silent target
        assert by_name["refused"]["status"] == "ok"  # a check that ran and found...
        assert by_name["refused"]["metrics"]["redis_connected"] is False
        assert {a["type"] for a in by_name["refused"]["alerts"]} == {"redis_unreachable"}
        silent = by_name["silent"]
        assert silent["status"] == "timeout" and "budget" in silent["error"], silent

        # The silent target's check is still running: it is not started a second time,
        # and the others are checked as usual.
        second = client.lambda_.invoke("check", client.events.generate_cw_event(**CW)).payload
        again = {t["target"]: t for t in second["targets"]}
        assert again["silent"]["status"] == "busy"
        assert again["healthy"]["status"] == "ok" and again["healthy"]["seconds"] < 1.0

        # Once that check has finished (its reads timed out: Redis down, committed), the
        # target is started again.
        slot = app_module._cache["slots"]["silent"]
        late = slot.running.result(timeout=30)
        assert late.payload["metrics"]["redis_connected"] is False and late.committed
        third = client.lambda_.invoke("check", client.events.generate_cw_event(**CW)).payload
        assert {t["target"]: t for t in third["targets"]}["silent"]["status"] != "busy"
        slot.running.result(timeout=30)  # nothing left running after the test

    pks = {i["pk"]["S"] for i in dynamodb.items() if i["sk"]["S"] == "SAMPLE"}
    assert pks == {"TARGET#healthy", "TARGET#refused", "TARGET#silent"}


def test_targets_are_read_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.settings import ConfigError, load_settings, load_targets

    env = {
        "MAX_QUEUE_SIZE": "7",
        "DOORMAN_TARGETS": json.dumps(
            [
                {"name": "a", "redis_url": "redis://h1:6380/0", "monitored_queues": ["q1"]},
                {"name": "b", "celery_broker_url": "redis://h2:6380/1", "global_keyprefix": "p:"},
                {"name": "c", "thresholds": {"max_queue_size": 3, "critical_queues": ["x"]}},
            ]
        ),
    }
    a, b, c = load_targets(environ=env)
    assert (a.target, a.redis_url, a.monitored_queues) == ("a", "redis://h1:6380/0", ("q1",))
    assert (b.broker_url, b.global_keyprefix, b.thresholds.max_queue_size) == (
        "redis://h2:6380/1",
        "p:",
        7,
    )
    assert (c.thresholds.max_queue_size, c.thresholds.critical_queues) == (3, ("x",))
    assert load_settings(environ=env).target == "default"  # the command line: one target
    assert [s.target for s in load_targets(environ={"DOORMAN_TARGET": "solo"})] == ["solo"]
    for bad, words in [
        ('[{"name": "a"}, {"name": "a"}]', "listed twice"),
        ('[{"redis_url": "redis://h/0"}]', "has no 'name'"),
        ('[{"name": "a", "hash_secret": "x"}]', "unknown key 'hash_secret'"),
        ('[{"name": "a", "redis_url": "http://h:1:2@x"}]', "targets[0] (a).redis_url"),
        ("{not json", "not valid JSON"),
    ]:
        with pytest.raises(ConfigError) as info:
            load_targets(environ={"DOORMAN_TARGETS": bad})
        assert words in str(info.value), str(info.value)
        assert "1:2" not in str(info.value)
