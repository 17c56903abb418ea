"""Doorman as the least trusted client of its broker: the user ``doorman acl`` prints can do
everything Doorman does (check, audit --deep, a notification round) with real workers, and
nothing that could harm the broker."""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from chalicelib.embedded import RedisServer
from chalicelib.settings import load_settings
from tests.conftest import check_once, run_cli
from tests.notify.recorder import Recorder

PASSWORD = "lp-Pw-5k2q"
SLEEP = "tasks.sleep"


def create_user(server: RedisServer, *, prefix: str = "", user: str = "doorman") -> str:
    """Create the user from what ``doorman acl`` prints; return its URL."""
    env = {"DOORMAN_GLOBAL_KEYPREFIX": prefix} if prefix else {}
    printed = run_cli(["acl", "--redis-url", server.url, "--user", user], env=env)
    assert printed.returncode == 0, printed.stderr
    lines = [line for line in printed.stdout.splitlines() if line.startswith("ACL SETUSER")]
    assert len(lines) == 1, printed.stdout
    args = shlex.split(lines[0].replace(">PASSWORD", ">" + PASSWORD))
    assert args[:5] == ["ACL", "SETUSER", user, "reset", "on"]
    server.client().execute_command(*args)
    return f"redis://{user}:{PASSWORD}@127.0.0.1:{server.port}/0"


def settings(url: str, state: Path, prefix: str, **more: Any) -> Any:
    values: dict[str, Any] = {
        "redis_url": url,
        "state_path": str(state),
        "hash_secret": "test-secret",
        "worker_timeout_seconds": 2.0,
        "visibility_timeout_seconds": 1,
        **more,
    }
    if prefix:
        values["global_keyprefix"] = prefix
    return load_settings(environ={}, overrides=values)


def summary(payload: dict[str, Any]) -> dict[str, Any]:
    """What a check found about the cluster (not when, nor how long it took)."""
    return {
        "queues": sorted(
            (q["name"], q["depth"], q.get("latency_source")) for q in payload["queues"]
        ),
        "workers": sorted((w["id_hash"], w["status"]) for w in payload["workers"]),
        "alive": payload["metrics"]["alive_workers"],
        "unacked": payload["metrics"].get("unacked_total"),
        "redis": payload["metrics"]["redis_connected"],
        "errors": payload["errors"],
        "anomalies": sorted(a["type"] for a in payload["anomalies"]),
        "alerts": sorted(a["type"] for a in payload["alerts"]),
    }


def denied_objects(server: RedisServer, user: str = "doorman") -> set[str]:
    return {
        str(entry["object"]) for entry in server.client().acl_log(200) if entry["username"] == user
    }


def sections(stdout: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in stdout.splitlines():
        if line and not line.startswith(" ") and not line.startswith("═"):
            current = found.setdefault(line.split(" (")[0].strip(), [])
        elif current is not None and line.strip():
            current.append(re.sub(r"\s+", " ", line.strip()))
    return found


@pytest.mark.parametrize("prefix", ["", "pfx:"], ids=["no-prefix", "key-prefix"])
def test_least_user_sees_what_the_default_user_sees(
    redis_server: RedisServer, workers: Any, tmp_path: Path, prefix: str
) -> None:
    env = {"PII_KEYPREFIX": prefix} if prefix else {}
    options = {"global_keyprefix": prefix} if prefix else None
    workers.start("w1@lp", queues=("celery",), env=env, transport_options=options)
    # A producer of its own: the shared planted-data app keeps its key prefix.
    app = Celery("lp-producer", broker=redis_server.url, set_as_current=False)
    app.conf.broker_transport_options = {"global_keyprefix": prefix}
    try:
        for _ in range(3):
            app.send_task(SLEEP, (1,), queue="waiting")
        app.send_task(SLEEP, (1,), queue="waiting", priority=6)
        app.send_task(SLEEP, (1,), queue="waiting", countdown=3600)
        app.send_task(SLEEP, (30,), queue="celery")  # running: unacked, active
    finally:
        app.close()
    least = create_user(redis_server, prefix=prefix)
    client = redis_server.client()
    client.acl_log_reset()

    found = {}
    for name, url in (("default", redis_server.url), ("least", least)):
        for _ in range(2):  # alerts fire on their second breach
            payload = check_once(
                settings(url, tmp_path / f"{name}.db", prefix, **{"thresholds.max_queue_size": 2}),
                # The check's clock 1.5 s on: the running task's unacked entry is past the 1 s
                # visibility timeout without waiting for it.
                at=time.time() + 1.5,
            )
        found[name] = summary(payload)
    assert found["least"] == found["default"]
    assert found["least"]["errors"] == []
    assert found["least"]["alive"] == 1
    assert {q[0]: q[1] for q in found["least"]["queues"]}["waiting"] == 5
    assert "backlog_explosion" in found["least"]["alerts"]

    # A notification round as each user: the same alert reaches the webhook.
    delivered: dict[str, list[str]] = {}
    for name, url in (("default", redis_server.url), ("least", least)):
        recorder = Recorder().start()
        try:
            cli_env = {
                "DOORMAN_HASH_SECRET": "test-secret",
                "MAX_QUEUE_SIZE": "2",
                "DOORMAN_ALERT_PENDING_CHECKS": "backlog_explosion=1",
                "GENERIC_WEBHOOK_URL": recorder.url,
                **({"DOORMAN_GLOBAL_KEYPREFIX": prefix} if prefix else {}),
            }
            state = str(tmp_path / f"round-{name}.db")
            done = run_cli(["check", "--once", "--redis-url", url, "--state", state], env=cli_env)
            assert done.returncode == 0, done.stderr
            delivered[name] = sorted(
                str(body.get("alert", body).get("type", body.get("type")))
                for body in recorder.bodies()
            )
        finally:
            recorder.stop()
    assert delivered["least"] == delivered["default"]
    assert any("backlog_explosion" in t for t in delivered["least"]), delivered
    # Checks and notifications as this user: nothing was ever refused to it.
    assert denied_objects(redis_server) == set()

    # audit --deep --samples 2: the same report, but for Doorman's own rights and
    # persistence (CONFIG GET is not granted: it would read the server's password).
    reports = {}
    for name, url in (("default", redis_server.url), ("least", least)):
        cli_env = {"DOORMAN_HASH_SECRET": "test-secret"}
        if prefix:
            cli_env["DOORMAN_GLOBAL_KEYPREFIX"] = prefix
        state = str(tmp_path / f"audit-{name}.db")
        args = ["audit", "--deep", "--samples", "2", "--interval", "0.5"]
        done = run_cli([*args, "--redis-url", url, "--state", state], env=cli_env)
        assert done.returncode in (1, 2), done.stdout + done.stderr
        reports[name] = (done.returncode, sections(done.stdout))
    (code_default, default), (code_least, least_report) = reports["default"], reports["least"]
    assert code_least == code_default
    for title in ("Workers", "Configuration Analysis"):
        keep = [
            line
            for line in least_report[title]
            if "Redis persistence" not in line and "Doorman's Redis rights" not in line
        ]
        assert keep == [
            line
            for line in default[title]
            if "Redis persistence" not in line and "Doorman's Redis rights" not in line
        ], title
    queue_names = lambda rows: sorted(r.split()[1] for r in rows)  # noqa: E731
    assert queue_names(least_report["Queues"]) == queue_names(default["Queues"])
    rights_default = [r for r in default["Configuration Analysis"] if "Redis rights" in r]
    rights_least = [r for r in least_report["Configuration Analysis"] if "Redis rights" in r]
    assert rights_default and rights_default[0].startswith("!")
    assert "FLUSHALL" in rights_default[0] and "CONFIG SET" in rights_default[0]
    assert rights_least == ["✓ Doorman's Redis rights no more than Doorman needs"]
    assert not any("permission" in line for line in least_report.get("Infrastructure", []))

    # The audit was refused CONFIG GET (left out on purpose) and the commands its rights
    # check queued and discarded; nothing else.
    probes = {"flushall", "flushdb", "config|set", "lpop", "set", "keys", prefix + "celery"}
    assert denied_objects(redis_server) <= {"config|get"} | probes


def test_least_user_cannot_harm_the_broker(redis_server: RedisServer, tmp_path: Path) -> None:
    url = create_user(redis_server)
    admin = redis_server.client()
    admin.lpush("celery", b"message-1", b"message-2")
    admin.set("other-key", "kept")
    admin.sadd("_kombu.binding.reply.celery.pidbox", "someone")
    admin.lpush("0a1b.reply.celery.pidbox", "another client's reply")
    user = redis.Redis.from_url(url)
    harmful: list[tuple[Any, ...]] = [
        ("DEL", "celery"),
        ("LPOP", "celery"),
        ("RPOP", "celery"),
        ("LTRIM", "celery", 0, 0),
        ("FLUSHALL",),
        ("FLUSHDB",),
        ("SET", "any-key", "x"),
        ("SET", "other-key", "x"),
        ("CONFIG", "SET", "maxmemory", "1mb"),
        ("CONFIG", "GET", "requirepass"),
        ("KEYS", "*"),
        ("DEL", "0a1b.reply.celery.pidbox"),  # another client's reply queue
        ("EVAL", "return redis.call('DEL', 'celery')", 0),
        ("SHUTDOWN",),
    ]
    for command in harmful:
        with pytest.raises(redis.exceptions.NoPermissionError):
            user.execute_command(*command)
    # Nor inside a script Doorman may run.
    sha = user.script_load("return redis.call('LPOP', ARGV[1])")
    with pytest.raises(redis.ResponseError, match=r"(?i)permission|can't run"):
        user.evalsha(sha, 0, "celery")
    assert admin.llen("celery") == 2
    assert admin.get("other-key") == b"kept"
    assert admin.llen("0a1b.reply.celery.pidbox") == 1
    assert admin.dbsize() >= 4
    # What it may do: read, and write its own reply keys only.
    assert user.llen("celery") == 2
    user.delete("doorman-0123.reply.celery.pidbox")
    user.close()


def test_audit_rights_check_changes_nothing(redis_server: RedisServer) -> None:
    """The rights check queues the harmful commands inside MULTI and discards them."""
    from chalicelib.acl import excess_rights

    admin = redis_server.client()
    admin.lpush("celery", b"m")
    admin.config_set("maxmemory-policy", "allkeys-lru")
    found = excess_rights(admin, "")
    assert found is not None
    assert {"FLUSHALL", "FLUSHDB", "CONFIG SET", "DEL on a queue", "LPOP on a queue"} <= set(found)
    assert admin.llen("celery") == 1
    assert admin.config_get("maxmemory-policy")["maxmemory-policy"] == "allkeys-lru"
    assert admin.get("doorman:rights-check") is None
    url = create_user(redis_server)
    least = redis.Redis.from_url(url)
    assert excess_rights(least, "") == ()
    least.close()
