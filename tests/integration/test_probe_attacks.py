"""Hostile brokers: what a real Redis may hold, thrown at the probe as an attacker would.

Each case runs a real check against a real redis-server. The promises checked are those
of the hardening and dialect issues: no single command Doorman sends holds Redis for long
(SLOWLOG, with the same generous bound as tests/integration/test_redis_budget.py), nothing
is cut or read as zero without ``errors[]`` saying so, no false emergency, no message
body in the payload, and no exception escaping a check. Each case was a finding of an
attack on the probe, and failed before its cause was fixed.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from chalicelib.collect.redis_probe import RedisProbe, connect
from chalicelib.embedded import RedisServer
from tests.conftest import Checker, WorkerFactory

SEP = "\x06\x16"
# The promise is 20 ms; on this shared 2-core machine the suite's budget tests allow 50 ms
# (the 10,000-queue check stays under 10 ms here). Every finding below measured 40 ms to
# 1.7 s for one command, far past either bound.
LONGEST_COMMAND_MS = 50.0
MB = 1 << 20


def message(*, eta: str | None = None, published_at: float | None = None, **extra: Any) -> bytes:
    headers: dict[str, Any] = {"id": str(uuid.uuid4()), "task": "tasks.add", "lang": "py"}
    if eta is not None:
        headers["eta"] = eta
    if published_at is not None:
        headers["x_published_at"] = published_at
    doc: dict[str, Any] = {
        "body": "W1tdLCB7fSwge31d",
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {"delivery_tag": str(uuid.uuid4()), "priority": 0},
    }
    doc.update(extra)
    return json.dumps(doc).encode()


def bind(client: redis.Redis, *queues: bytes | str, sep: str = SEP, key: str = "") -> None:
    pipe = client.pipeline(transaction=False)
    for q in queues:
        raw = q.encode() if isinstance(q, str) else q
        member = raw + sep.encode() * 2 + raw
        pipe.sadd(f"{key}_kombu.binding.celery", member)
    pipe.execute()


def quietest_longest(
    admin: redis.Redis, run: Callable[[], Any], attempts: int = 3
) -> tuple[float, str]:
    """The longest command of ``run``, taken from its quietest of ``attempts`` runs.

    A command whose work is too big is slow every time; one slowed by another process on a
    busy machine is slow now and then. So a run under the limit ends the trial, and the best
    of the runs is what is judged.
    """
    best = (float("inf"), "")
    for _ in range(attempts):
        admin.slowlog_reset()
        run()
        best = min(best, longest_command(admin))
        if best[0] < LONGEST_COMMAND_MS:
            break
    return best


def longest_command(client: redis.Redis) -> tuple[float, str]:
    """(milliseconds, command) of the longest command SLOWLOG kept, or (0, "")."""
    found = [(0.0, "")]
    for entry in client.slowlog_get(100_000):
        command = entry["command"]
        name = command.split()[0].decode().upper() if command else "?"
        if name not in {"SLOWLOG", "CONFIG"}:
            found.append((entry["duration"] / 1000.0, name))
    return max(found)


@pytest.fixture
def admin(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of the test's own with SLOWLOG keeping every command over 1 ms."""
    client = redis_server.client()
    client.config_set("slowlog-log-slower-than", 1000)
    client.config_set("slowlog-max-len", 1_000_000)
    yield client
    client.close()


def errors_of(payload: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in payload["errors"] if e["kind"] == kind]


def alert_types(payload: dict[str, Any]) -> set[str]:
    return {a["type"] for a in payload["alerts"]}


def fill_result_keys(client: redis.Redis, count: int) -> None:
    """``count`` keys as a Celery result backend writes them, in commands of 100,000."""
    for start in range(0, count, 100_000):
        client.eval(
            "for i=ARGV[1],ARGV[1]+99999 do"
            " redis.call('SET','celery-task-meta-'..i,'{\"status\":\"SUCCESS\"}') end",
            0,
            start,
        )


def scan_calls_to(client: redis.Redis, key: str) -> int:
    """How many SCAN calls of SCAN_COUNT keys it takes to meet ``key``."""
    cursor, calls = 0, 0
    while True:
        cursor, keys = client.scan(cursor, match=key, count=1000)
        calls += 1
        if keys or cursor == 0:
            return calls


def far_prefix(client: redis.Redis) -> str:
    """A key prefix whose binding key SCAN meets only after 100 calls (a key's place in
    the hash table is fixed by its name): the look for other prefixes (50 calls) misses it
    every time, not by chance."""
    for n in range(200):
        prefix = f"myapp{n}:"
        key = f"{prefix}_kombu.binding.celery"
        client.sadd(key, "probe")
        far = scan_calls_to(client, key) > 100
        client.delete(key)
        if far:
            return prefix
    raise AssertionError("no prefix lies far enough in the keyspace")


def checked(admin: redis.Redis, check: Checker, **settings: Any) -> dict[str, Any]:
    admin.slowlog_reset()
    return check.check(**settings)


# --- the broker's budget ----------------------------------------------------------------


def test_oversized_head_messages_do_not_hold_redis(
    admin: redis.Redis, checker: Callable[..., Checker]
) -> None:
    big = b"x" * (2 * MB)  # over PEEK_MAX_BYTES: counted and fingerprinted, not decoded
    names = [f"big{i}" for i in range(40)]
    bind(admin, *names)
    for name in names:
        admin.lpush(name, big)
    payload = checked(admin, checker())
    assert payload["metrics"]["total_pending"] == 40
    longest = longest_command(admin)
    assert longest[0] < LONGEST_COMMAND_MS, longest


def test_oversized_unacked_entries_do_not_hold_redis(
    admin: redis.Redis, checker: Callable[..., Checker]
) -> None:
    bind(admin, "celery")
    big = b"x" * (2 * MB)
    taken = time.time() - 100_000  # long past any visibility timeout: overdue
    for i in range(40):
        admin.zadd("unacked_index", {f"tag{i}": taken})
        admin.hset("unacked", f"tag{i}", big)
    payload = checked(admin, checker())
    assert payload["metrics"]["redis_connected"] is True
    longest = longest_command(admin)
    assert longest[0] < LONGEST_COMMAND_MS, longest


def test_megabyte_queue_names_do_not_hold_redis(
    redis_server: RedisServer, admin: redis.Redis
) -> None:
    names = [f"q{i}-" + "n" * MB for i in range(10)]
    bind(admin, *names)
    for name in names:
        admin.lpush(name, message())
    # The probe alone: what a check does with the names afterwards (scrubbing) is another
    # matter, and must not make this case slow.
    client = connect(redis_server.url, 10.0)
    depths: list[int] = []

    def probe() -> None:
        result = RedisProbe(client).collect((), time.time(), 3600.0)
        depths.append(sum(q.depth for q in result.queues))

    try:
        longest = quietest_longest(admin, probe)
    finally:
        client.close()
    assert depths and set(depths) == {10}
    assert longest[0] < LONGEST_COMMAND_MS, longest


def test_many_small_json_values_in_every_priority_list_stay_within_budget(
    admin: redis.Redis, checker: Callable[..., Checker]
) -> None:
    bind(admin, "wide")
    # Just under PEEK_MAX_BYTES, so it is decoded: 330,000 tiny values in one array.
    wide = message(body=[0] * 330_000)
    assert len(wide) < MB
    admin.lpush("wide", wide)
    for level in range(1, 10):
        admin.lpush(f"wide{SEP}{level}", wide)
    payload = checked(admin, checker())
    queue = next(q for q in payload["queues"] if q["name"] == "wide")
    assert queue["depth"] == 10
    longest = longest_command(admin)
    assert longest[0] < LONGEST_COMMAND_MS, longest


def test_an_eta_with_a_huge_fraction_does_not_hold_redis(
    admin: redis.Redis, checker: Callable[..., Checker]
) -> None:
    bind(admin, "odd")
    eta = "2000-01-01T00:00:00." + "9" * 900_000
    admin.lpush("odd", message(eta=eta, published_at=time.time() - 100))
    payload = checked(admin, checker())
    queue = next(q for q in payload["queues"] if q["name"] == "odd")
    assert queue["depth"] == 1
    longest = longest_command(admin)
    assert longest[0] < LONGEST_COMMAND_MS, longest


def test_many_priority_steps_stay_within_budget(
    admin: redis.Redis, checker: Callable[..., Checker]
) -> None:
    names = [f"s{i}" for i in range(300)]
    bind(admin, *names)
    for name in names:
        admin.lpush(name, message())
    payload = checked(admin, checker(), priority_steps=list(range(256)))
    assert payload["metrics"]["total_pending"] == 300
    longest = longest_command(admin)
    assert longest[0] < LONGEST_COMMAND_MS, longest


# --- no silent zero, no false alarm ------------------------------------------------------


def test_a_prefixed_cluster_behind_a_million_result_keys_is_not_a_silent_zero(
    admin: redis.Redis, checker: Callable[..., Checker]
) -> None:
    fill_result_keys(admin, 1_000_000)
    prefix = far_prefix(admin)
    bind(admin, "celery", key=prefix)
    for _ in range(30):
        admin.lpush(f"{prefix}celery", message())
    payload = checked(admin, checker())
    depth = sum(q["depth"] for q in payload["queues"])
    # Either the 30 messages are found, or errors[] says where to look.
    assert depth == 30 or errors_of(payload, "dialect"), payload["errors"]
    assert "celery_disconnected" not in alert_types(payload) or depth == 30


def test_a_large_result_backend_is_not_blamed_on_max_queues(
    admin: redis.Redis, checker: Callable[..., Checker]
) -> None:
    fill_result_keys(admin, 1_200_000)
    bind(admin, "celery")
    admin.lpush("celery", message())
    payload = checked(admin, checker())
    celery = next(q for q in payload["queues"] if q["name"] == "celery")
    assert celery["depth"] == 1
    # Only one queue exists, well under max_queues: no message may say max_queues cut it.
    blamed = [e for e in errors_of(payload, "truncated") if "max_queues (" in e["message"]]
    assert not blamed, blamed
    # And no SCAN held Redis, whatever the keyspace.
    longest = longest_command(admin)
    assert longest[0] < LONGEST_COMMAND_MS, longest


def test_a_binding_set_of_another_type_is_named(
    admin: redis.Redis, checker: Callable[..., Checker]
) -> None:
    admin.hset("_kombu.binding.celery", "celery", "celery")
    admin.lpush("celery", message())
    payload = checked(admin, checker())
    named = [e for e in payload["errors"] if "_kombu.binding.celery" in e["message"]]
    assert named, payload["errors"]


def test_a_priority_list_of_another_type_is_named(
    admin: redis.Redis, checker: Callable[..., Checker]
) -> None:
    bind(admin, "celery")
    admin.lpush("celery", message())
    admin.hset(f"celery{SEP}3", "field", "value")
    payload = checked(admin, checker())
    assert errors_of(payload, "wrong_type"), payload["errors"]


def test_a_queue_name_holding_the_separator_is_not_a_silent_zero(
    admin: redis.Redis, checker: Callable[..., Checker]
) -> None:
    bind(admin, "orders:high", sep=":")
    for _ in range(2):
        admin.lpush("orders:high", message())
    payload = checked(admin, checker(), priority_separator=":")
    depths = {q["name"]: q["depth"] for q in payload["queues"]}
    assert depths.get("orders:high") == 2, depths


def test_queues_differing_only_in_invalid_bytes_stay_distinct(
    admin: redis.Redis, checker: Callable[..., Checker]
) -> None:
    bind(admin, b"\xff-q", b"\xfe-q")
    admin.lpush(b"\xff-q", message())
    for _ in range(5):
        admin.lpush(b"\xfe-q", message())
    payload = checked(admin, checker())
    names = [q["name"] for q in payload["queues"]]
    assert len(names) == 2
    assert len(set(names)) == 2, names


def test_a_denied_exists_is_named(
    redis_server: RedisServer, admin: redis.Redis, checker: Callable[..., Checker]
) -> None:
    bind(admin, "celery")
    admin.lpush("celery", message())
    admin.lpush("celery:3", message())  # a list the default separator does not name
    admin.execute_command("ACL", "SETUSER", "noexists", "on", ">pw", "~*", "&*", "+@all", "-exists")
    url = f"redis://noexists:pw@127.0.0.1:{redis_server.port}/0"
    payload = checked(admin, checker(redis_url=url))
    denied = [e["message"] for e in errors_of(payload, "permission")]
    assert any("EXISTS" in m for m in denied), payload["errors"]


# --- what held ---------------------------------------------------------------------------


def test_messages_that_are_not_celerys_are_counted_and_never_copied(
    admin: redis.Redis, checker: Callable[..., Checker]
) -> None:
    queues = {
        "plain": b"plain string secret-arg",
        "array": b'[1, 2, "secret-arg"]',
        "header-string": json.dumps({"headers": "secret-arg", "body": "secret-arg"}).encode(),
        "nested": b"[" * 5000 + b"]" * 5000,
        "binary": b"\xff\xfe\x00secret-arg",
        "huge": b"secret-arg" * (5 * MB // 10),
    }
    bind(admin, *queues)
    for name, raw in queues.items():
        admin.lpush(name, raw)
    admin.lpush("huge", message())  # a normal message behind the 5 MB one at the head
    payload = checked(admin, checker())
    depths = {q["name"]: q["depth"] for q in payload["queues"]}
    assert depths == {name: 2 if name == "huge" else 1 for name in queues}
    assert "secret-arg" not in json.dumps(payload)
    assert payload["metrics"]["redis_connected"] is True
    longest = longest_command(admin)
    assert longest[0] < LONGEST_COMMAND_MS, longest


@pytest.mark.parametrize(
    "eta",
    [
        "2026-99-99T99:99:99",
        "0001-01-01T00:00:00",
        "2000-01-01T00:00:00+99:99",
        "2000-01-01T00:00:00-0530",
        "not a time",
        "",
    ],
)
def test_odd_etas_leave_the_backlog_measured(
    admin: redis.Redis, checker: Callable[..., Checker], eta: str
) -> None:
    bind(admin, "odd")
    admin.lpush("odd", message(eta=eta, published_at=time.time() - 100))
    payload = checked(admin, checker())
    queue = next(q for q in payload["queues"] if q["name"] == "odd")
    assert queue["depth"] == 1
    assert queue["latency_source"] == "producer_header"
    assert queue["latency_sec"] >= 99


def test_a_far_future_eta_at_the_head_does_not_hide_the_messages_behind(
    admin: redis.Redis, checker: Callable[..., Checker]
) -> None:
    bind(admin, "fut")
    admin.lpush("fut", message(eta="9999-12-31T23:59:59+00:00", published_at=time.time()))
    for _ in range(3):
        admin.lpush("fut", message(published_at=time.time() - 100))
    payload = checked(admin, checker())
    queue = next(q for q in payload["queues"] if q["name"] == "fut")
    assert queue["depth"] == 4
    assert queue["latency_sec"] >= 99


def test_several_prefixes_without_a_setting_are_named_without_alarm(
    admin: redis.Redis, checker: Callable[..., Checker]
) -> None:
    for prefix in ("a:", "b:"):
        bind(admin, "celery", key=prefix)
        admin.lpush(f"{prefix}celery", message())
    payload = checked(admin, checker())
    assert any("'a:', 'b:'" in m["message"] for m in errors_of(payload, "dialect"))
    assert not alert_types(payload) & {"workers_down", "celery_disconnected", "redis_unreachable"}


def test_a_separator_of_two_characters_is_learned_from_the_keys(
    admin: redis.Redis, checker: Callable[..., Checker]
) -> None:
    bind(admin, "q", sep="::")
    for _ in range(5):
        admin.lpush("q", message())
    admin.lpush("q::3", message())
    payload = checked(admin, checker())
    queue = next(q for q in payload["queues"] if q["name"] == "q")
    assert queue["depth"] == 6
    assert any("'::'" in e["message"] for e in errors_of(payload, "dialect"))


def test_a_million_result_keys_never_make_one_long_scan(
    admin: redis.Redis, checker: Callable[..., Checker]
) -> None:
    fill_result_keys(admin, 1_000_000)
    bind(admin, "celery")
    admin.lpush("celery", message())
    payload = checked(admin, checker())
    assert next(q for q in payload["queues"] if q["name"] == "celery")["depth"] == 1
    longest = longest_command(admin)
    assert longest[0] < LONGEST_COMMAND_MS, longest


@pytest.mark.parametrize(
    ("rules", "command"),
    [
        (("-zcard",), "ZCARD"),
        (("-zcount",), "ZCOUNT"),
        (("-zrangebyscore",), "ZRANGEBYSCORE"),
        (("-hget",), "HGET"),
        (("-publish",), "PUBLISH"),
        (("resetkeys", "~celery*", "~_kombu*"), "a key"),
    ],
)
def test_other_denials_are_named_and_never_an_outage(
    redis_server: RedisServer,
    admin: redis.Redis,
    checker: Callable[..., Checker],
    rules: tuple[str, ...],
    command: str,
) -> None:
    bind(admin, "celery")
    admin.lpush("celery", message(published_at=time.time() - 30))
    admin.zadd("unacked_index", {"tag": time.time() - 100_000})
    admin.hset("unacked", "tag", json.dumps([json.loads(message()), "", "celery"]))
    user = f"u{uuid.uuid4().hex[:8]}"
    admin.execute_command("ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all", *rules)
    url = f"redis://{user}:pw@127.0.0.1:{redis_server.port}/0"
    payload = checked(admin, checker(redis_url=url))
    assert payload["metrics"]["redis_connected"] is True
    assert "redis_unreachable" not in alert_types(payload)
    assert any(f"denied {command}" in e["message"] for e in errors_of(payload, "permission"))
    celery = next(q for q in payload["queues"] if q["name"] == "celery")
    assert celery["depth"] == 1


def test_remote_control_denied_sadd_is_a_permission_not_an_outage(
    redis_server: RedisServer,
    admin: redis.Redis,
    workers: WorkerFactory,
    checker: Callable[..., Checker],
) -> None:
    workers.start("w1@attacks", queues=("celery",))
    admin.execute_command("ACL", "SETUSER", "nosadd", "on", ">pw", "~*", "&*", "+@all", "-sadd")
    url = f"redis://nosadd:pw@127.0.0.1:{redis_server.port}/0"
    payload = checked(admin, checker(redis_url=url))
    assert not alert_types(payload) & {"workers_down", "celery_disconnected", "redis_unreachable"}
    # Redis does not name a command it refuses inside a script (kombu binds its reply
    # queue in one): the permission is named as such, never as an outage.
    denied = [e["message"] for e in errors_of(payload, "permission")]
    assert any("inside one of kombu's scripts" in m for m in denied), payload["errors"]
