"""Remote control denied by a Redis ACL: named as a permission problem, never as dead workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

from chalicelib.collect.replies import describe_remote_error as _describe
from chalicelib.collect.worker_probe import WorkerProbe
from chalicelib.embedded import RedisServer
from chalicelib.settings import load_settings
from tests.conftest import check_once, producer

SECRET_PW = "acl-Pw-9f3k"


def check(url: str, tmp_path: Path) -> dict[str, Any]:
    settings = load_settings(
        environ={},
        overrides={
            "redis_url": url,
            "state_path": str(tmp_path / "state.db"),
            "hash_secret": "test-secret",
            "worker_timeout_seconds": 1.0,
        },
    )
    return check_once(settings)


PUBLISH_DENIED = "Redis denied PUBLISH to this user (ACL): workers cannot be asked"
CHANNEL_DENIED = (
    "Redis denied this user (ACL) a channel remote control uses: workers cannot be asked"
)


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (("~*", "&*", "+@all", "-publish"), PUBLISH_DENIED),
        (("~*", "resetchannels", "+@all"), CHANNEL_DENIED),
    ],
    ids=["no-publish", "no-channels"],
)
def test_denied_publish_is_a_permission_error_and_no_worker_is_called_dead(
    redis_server: RedisServer, workers: Any, tmp_path: Path, rules: tuple[str, ...], message: str
) -> None:
    workers.start("w1@acl")
    app = producer(redis_server.url)
    for _ in range(3):
        app.sleep.apply_async((1,), queue="waiting")
    client = redis_server.client()
    client.execute_command("ACL", "SETUSER", "nopub", "on", ">" + SECRET_PW, *rules)
    url = f"redis://nopub:{SECRET_PW}@127.0.0.1:{redis_server.port}/0"
    # A check with every right first: the worker is known (as after an ACL change).
    assert check(redis_server.url, tmp_path)["metrics"]["alive_workers"] == 1

    for _round in range(2):
        payload = check(url, tmp_path)
        errors = [e for e in payload["errors"] if e["component"] == "workers"]
        assert errors == [
            {
                "component": "workers",
                "kind": "permission",
                "message": message,
            }
        ]
        types = {a["type"] for a in payload["anomalies"]} | {a["type"] for a in payload["alerts"]}
        assert not types & {"workers_down", "celery_disconnected", "worker_offline"}, types
        # Known, but not asked: neither alive nor dead (never "offline").
        statuses = [w["status"] for w in payload["workers"]]
        assert len(statuses) == 1 and statuses[0] in {"unknown", "not_answering"}, statuses
        # What could be read is still reported.
        assert payload["metrics"]["redis_connected"] is True
        assert {q["name"]: q["depth"] for q in payload["queues"]}.get("waiting") == 3
        assert SECRET_PW not in str(payload)


def test_denied_discovery_broadcast_is_named_too(redis_server: RedisServer) -> None:
    client = redis_server.client()
    client.execute_command("ACL", "SETUSER", "nopub", "on", ">pw", "~*", "&*", "+@all", "-publish")
    probe = WorkerProbe(
        f"redis://nopub:pw@127.0.0.1:{redis_server.port}/0", timeout=1.0, connect_timeout=1.0
    )
    try:
        result = probe.probe([], discover=True, budget=2.0)
        assert result.workers == ()
        assert [(e.kind, e.message) for e in result.errors] == [("permission", PUBLISH_DENIED)]
        conf = probe.conf(["w@nowhere"], budget=2.0)
        assert [(e.kind, e.message) for e in conf.errors] == [("permission", PUBLISH_DENIED)]
    finally:
        probe.close()


def test_a_command_a_managed_redis_disabled_is_named() -> None:
    # The error text a Redis with ``rename-command PUBLISH ""`` answers, wrapped as kombu does.
    from kombu.exceptions import OperationalError

    try:
        try:
            raise redis.ResponseError("unknown command 'PUBLISH', with args beginning with: ")
        except redis.ResponseError as inner:
            raise OperationalError(str(inner)) from inner
    except OperationalError as outer:
        error = _describe(outer)
    assert (error.kind, error.message) == (
        "permission",
        "Redis does not offer PUBLISH (disabled or renamed): workers cannot be asked",
    )
