"""With the companion on every worker, no byte of a task's arguments leaves a worker process.

Two companion workers (prefork and threads, tests/support/wire_app.py) each run two tasks,
hold two more prefetched and one more for its ETA, every one carrying planted personal data
in its args and kwargs. Redis ``MONITOR`` records every command while Doorman checks them
the ways it can: the first check of an empty state, a check with the worker detail, a
plain check, ``doorman check --once`` and ``doorman audit --deep``. Every remote-control
message on the wire is decoded (kombu's JSON envelope, its base64 body, and any base64 or
JSON inside that), and none of the planted values may be in any reply, in any decoded
argument of any command, or in any raw MONITOR line; ``active``, ``reserved`` and
``scheduled`` (the replies that carry arguments) are never asked of these workers.

A control in the same file: a worker without the companion (tests/support/pii_app.py) running
a task with the same planted values does leak them into its ``active`` reply, and the same
decoder finds them there.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

import doorman_celery
from chalicelib.embedded import RedisServer, Worker, wait_for_workers
from chalicelib.runner import run_check
from chalicelib.wiring import close_deps, local_deps
from tests.conftest import (
    Checker,
    WorkerFactory,
    parse_one_json,
    producer,
    run_cli,
    wait_until,
)
from tests.integration.test_privacy import parse_monitor_line
from tests.support import wire_app

pytestmark = pytest.mark.slow  # real workers

ROOT = Path(__file__).resolve().parent.parent.parent
APP = "tests.support.wire_app"
WORKERS = {"prefork": "prefork@wire-privacy", "threads": "threads@wire-privacy"}
HOLD = 300.0  # the running tasks outlive the test: the workers are killed at the end
ARGUMENT_CARRIERS = {"active", "reserved", "scheduled"}
FRAGMENTS = ("wanda.wiretap", "private-mail", "822463", "7946 0958", "WIREPLANTED")


def needles() -> list[str]:
    """The planted values and parts of them (a partial leak is a leak), lowercased."""
    return sorted({v.lower() for v in (*wire_app.PLANTED, *FRAGMENTS)})


def found(texts: list[str]) -> set[str]:
    """The needles present in any of ``texts``, case-insensitively."""
    lowered = [t.lower() for t in texts]
    return {n for n in needles() if any(n in t for t in lowered)}


# --- the wire ---------------------------------------------------------------------------------


class Wiretap:
    """MONITOR on a connection of its own, in a thread: every command Redis runs, raw."""

    def __init__(self, client: redis.Redis) -> None:
        self.lines: list[bytes] = []
        self._client = client
        self._marker = f"wiretap-end-{uuid.uuid4().hex}"
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with self._client.monitor() as monitor:
                self._ready.set()
                while True:
                    raw = monitor.connection.read_response()
                    if not isinstance(raw, bytes) or b"] " not in raw:
                        continue
                    if self._marker.encode() in raw:
                        return
                    self.lines.append(raw)
        except BaseException as exc:  # reported by recording(), not lost in the thread
            self._failure = exc
            self._ready.set()

    @contextmanager
    def recording(self) -> Iterator[Wiretap]:
        self._thread.start()
        assert self._ready.wait(5)
        time.sleep(0.1)
        try:
            yield self
        finally:
            self._client.echo(self._marker)
            self._thread.join(10)
        assert not self._thread.is_alive(), "MONITOR did not stop"
        assert self._failure is None, f"MONITOR failed: {self._failure!r}"


_BASE64 = re.compile(r"[A-Za-z0-9+/=_-]{8,}")


def _from_base64(text: str) -> str | None:
    """``text`` decoded, when it is base64 (standard or URL-safe) of UTF-8 text."""
    compact = text.strip()
    if len(compact) % 4 or not _BASE64.fullmatch(compact):
        return None
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            return decode(compact.encode()).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
    return None


def unwrap(value: Any, depth: int = 0) -> Iterator[str]:
    """Every text form of ``value``: itself, and, inside it, every JSON document and base64
    string decoded, to any depth (a reply is JSON in base64 in a JSON envelope)."""
    if depth > 10:
        return
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        yield value
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict | list):
            yield from unwrap(parsed, depth + 1)
        decoded = _from_base64(value)
        if decoded is not None:
            yield from unwrap(decoded, depth + 1)
    elif isinstance(value, dict):
        yield json.dumps(value)
        for key, item in value.items():
            yield from unwrap(key, depth + 1)
            yield from unwrap(item, depth + 1)
    elif isinstance(value, list):
        yield json.dumps(value)
        for item in value:
            yield from unwrap(item, depth + 1)


def message_body(raw: str) -> Any:
    """The payload of one kombu message as the Redis transport writes it: a JSON envelope
    whose ``body`` is base64 (``properties.body_encoding``) of the serialized payload."""
    envelope = json.loads(raw)
    assert envelope["content-type"] == "application/json", envelope["content-type"]
    body = envelope["body"]
    if envelope.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body).decode("utf-8")
    return json.loads(body)


@dataclass(frozen=True)
class Command:
    method: str
    destination: tuple[str, ...] | None  # None: every worker
    ticket: str | None


@dataclass(frozen=True)
class Reply:
    hostname: str
    method: str | None  # what it answers, by its ticket (None: the command was not seen)
    value: Any
    texts: tuple[str, ...]  # every text form of the whole message, decoded


@dataclass
class Wire:
    raw: list[bytes]
    commands: list[Command] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    decoded: list[str] = field(default_factory=list)  # every argument of every command

    def asked(self, worker: str) -> set[str]:
        return {c.method for c in self.commands if c.destination is None or worker in c.destination}

    def answers(self, worker: str, method: str) -> list[Any]:
        return [r.value for r in self.replies if r.hostname == worker and r.method == method]


def read_wire(lines: list[bytes]) -> Wire:
    """Decode MONITOR's record: the remote-control commands (published to the pidbox
    exchange), every reply (pushed to a reply queue), and every argument of every command."""
    wire = Wire(raw=lines)
    pending: list[tuple[str, str]] = []  # (ticket, raw reply message)
    for raw in lines:
        _client, argv = parse_monitor_line(raw)
        if not argv:
            continue
        for argument in argv[1:]:
            wire.decoded.extend(unwrap(argument))
        name, key = argv[0].upper(), argv[1] if len(argv) > 1 else ""
        if name == "PUBLISH" and key.endswith("celery.pidbox"):
            body = message_body(argv[2])
            destination = body.get("destination")
            wire.commands.append(
                Command(
                    body["method"],
                    None if destination is None else tuple(destination),
                    body.get("ticket"),
                )
            )
        elif name in {"LPUSH", "RPUSH"} and "reply" in key and "pidbox" in key:
            for message in argv[2:]:
                pending.append((json.loads(message)["headers"]["ticket"], message))
    methods = {c.ticket: c.method for c in wire.commands if c.ticket}
    for ticket, message in pending:
        texts = tuple(unwrap(message))
        body = message_body(message)
        assert isinstance(body, dict), body
        for hostname, value in body.items():
            wire.replies.append(Reply(hostname, methods.get(ticket), value, texts))
    return wire


def leaks(wire: Wire) -> dict[str, set[str]]:
    """Where a planted value was seen: in a decoded reply, a decoded argument, a raw line."""
    where = {
        "replies": found([t for r in wire.replies for t in r.texts]),
        "decoded arguments": found(wire.decoded),
        "raw lines": found([line.decode("utf-8", "replace") for line in wire.raw]),
    }
    return {k: v for k, v in where.items() if v}


# --- the companion workers --------------------------------------------------------------------


@dataclass
class Held:
    """What one worker holds: its running, prefetched and ETA task ids."""

    running: set[str]
    reserved: set[str]
    scheduled: set[str]


def _send(client: Celery, queue: str, **options: Any) -> str:
    task_id = str(uuid.uuid4())
    client.send_task(
        "wire.hold",
        args=(HOLD, wire_app.PLANTED_EMAIL, wire_app.PLANTED_CARD),
        kwargs={"phone": wire_app.PLANTED_PHONE, "token": wire_app.PLANTED_TOKEN},
        queue=queue,
        task_id=task_id,
        **options,
    )
    return task_id


def _ask(client: Celery, name: str) -> dict[str, Any]:
    replies = client.control.broadcast(
        doorman_celery.COMMAND, reply=True, destination=[name], timeout=1.0
    )
    for reply in replies or []:
        if isinstance(reply.get(name), dict):
            answer: dict[str, Any] = reply[name]
            return answer
    return {}


def _holding(client: Celery, name: str, held: Held) -> Callable[[], bool]:
    def ready() -> bool:
        reply = _ask(client, name)
        return bool(reply) and (
            {a["id"] for a in reply["active"]} == held.running
            and set(reply["reserved"]) == held.reserved
            and {s["id"] for s in reply["scheduled"]} == held.scheduled
        )

    return ready


def load(server: RedisServer, client: Celery) -> dict[str, Held]:
    """Per worker: one task held for its ETA, two running, two prefetched; nothing waits in
    a queue (nothing is fetched, and so written to Redis by a worker, while the test listens)."""
    redis_client = server.client()
    held: dict[str, Held] = {}
    for pool, name in WORKERS.items():
        queue = f"wire-{pool}"
        later = _send(client, queue, countdown=3600)
        wait_until(_holding(client, name, Held(set(), set(), {later})), 20, f"{name}'s ETA task")
        sent = [_send(client, queue) for _ in range(4)]
        held[name] = Held(set(), set(), {later})
        wait_until(lambda q=queue: redis_client.llen(q) == 0, 20, f"{name} to take its tasks")

        def settled(name: str = name, sent: list[str] = sent) -> bool:
            reply = _ask(client, name)
            if not reply:
                return False
            running = {a["id"] for a in reply["active"]}
            held[name].running, held[name].reserved = running, set(reply["reserved"])
            return len(running) == 2 and running | set(reply["reserved"]) == set(sent)

        wait_until(settled, 20, f"{name} to run two tasks and hold two")
    redis_client.close()
    return held


@pytest.fixture
def companions(redis_server: RedisServer) -> Iterator[tuple[Celery, dict[str, Held]]]:
    started: list[Worker] = []
    client = Celery("wire-client", broker=redis_server.url, set_as_current=False)
    client.conf.broker_connection_retry_on_startup = True
    try:
        for pool, name in WORKERS.items():
            worker = Worker(
                APP, redis_server.url, name, pool=pool, concurrency=2,
                queues=(f"wire-{pool}",), cwd=str(ROOT),
            )  # fmt: skip
            started.append(worker.start())
        try:
            wait_for_workers(redis_server.url, list(WORKERS.values()), timeout=45)
        except Exception:
            for worker in started:
                print(worker.log_text()[-3000:])
            raise
        yield client, load(redis_server, client)
    finally:
        client.close()
        for worker in started:
            worker.kill()  # its tasks sleep for minutes: do not wait for them
            worker.stop()


def _listen(server: RedisServer, action: Callable[[], Any]) -> tuple[Any, Wire]:
    client = server.client()
    tap = Wiretap(client)
    try:
        with tap.recording():
            result = action()
    finally:
        client.close()
    return result, read_wire(tap.lines)


def _assert_saw(phase: str, payload: dict[str, Any]) -> None:
    """The check saw both companion workers running their tasks (else finding nothing on
    the wire proves nothing)."""
    online = [w for w in payload["workers"] if w["status"] == "online"]
    assert len(online) == len(WORKERS), (phase, payload["workers"])
    for worker in online:
        assert worker["companion"] is True, (phase, worker)
        assert (worker["active"], worker["reserved"], worker["scheduled"]) == (2, 2, 1), (
            phase,
            worker,
        )
    assert payload["metrics"]["alive_workers"] == len(WORKERS), phase


def test_no_argument_byte_of_a_companion_worker_reaches_the_wire(
    redis_server: RedisServer,
    companions: tuple[Celery, dict[str, Held]],
    checker: Callable[..., Checker],
    tmp_path: Path,
) -> None:
    _client, held = companions
    check = checker()
    phases: dict[str, Wire] = {}
    payloads: dict[str, dict[str, Any]] = {}

    payloads["first check"], phases["first check"] = _listen(redis_server, check.check)
    settings = check.settings()
    deps = local_deps(settings)  # one collector for two checks, as the check loop keeps it
    try:
        for phase in ("detail check", "plain check"):
            result, phases[phase] = _listen(redis_server, lambda: run_check(settings, deps))
            payloads[phase] = result.payload
    finally:
        close_deps(deps)
    cli_args = ["check", "--once", "--redis-url", redis_server.url]
    cli_args += ["--state", str(tmp_path / "cli" / "doorman.db")]
    cli, phases["doorman check --once"] = _listen(redis_server, lambda: run_cli(cli_args))
    assert cli.returncode == 0, cli.stderr
    payloads["doorman check --once"] = parse_one_json(cli.stdout)
    audit_args = ["audit", "--deep", "--redis-url", redis_server.url]
    audit_args += ["--state", str(tmp_path / "audit" / "doorman.db")]
    audit, phases["doorman audit --deep"] = _listen(redis_server, lambda: run_cli(audit_args))
    assert audit.returncode in (0, 1, 2), audit.stdout + audit.stderr

    for phase, payload in payloads.items():
        _assert_saw(phase, payload)
    # Each check asked what it should, every command addressed to both workers: the marker
    # first when nothing is known, the detail with the roster known, then doorman alone;
    # the audit its conf questions (and the ETAs held, from doorman) after its check.
    expected = {
        "first check": ["stats", "doorman", "active_queues"],
        "detail check": ["doorman", "stats", "active_queues"],
        "plain check": ["doorman"],
        "doorman check --once": ["stats", "doorman", "active_queues"],
        "doorman audit --deep": ["stats", "doorman", "active_queues", "conf", "doorman"],
    }
    both = tuple(sorted(WORKERS.values()))
    for phase, wire in phases.items():
        assert sorted(c.method for c in wire.commands) == sorted(expected[phase]), phase
        assert all(tuple(sorted(c.destination or ())) == both for c in wire.commands), phase
        assert wire.commands[0].method == expected[phase][0], phase
    # The audit read the workers' settings and, from doorman, the ETA they hold (~60 min).
    assert re.search(r"prefetch multiplier +2", audit.stdout), audit.stdout
    assert re.search(r"longest ETA wait (59(\.\d)?|60) min", audit.stdout), audit.stdout

    for phase, wire in phases.items():
        # (a) Replies were on the wire and decoded, among them each worker's doorman reply
        # listing the very tasks it runs, holds and schedules.
        assert len(wire.replies) > 0, phase
        assert all(r.method is not None for r in wire.replies), phase
        for name, tasks in held.items():
            answers = wire.answers(name, doorman_celery.COMMAND)
            assert answers, (phase, name, wire.commands)
            for answer in answers:
                assert {a["id"] for a in answer["active"]} == tasks.running, (phase, answer)
                assert {a["name"] for a in answer["active"]} == {"wire.hold"}
                assert set(answer["reserved"]) == tasks.reserved, (phase, answer)
                assert {s["id"] for s in answer["scheduled"]} == tasks.scheduled
            # (c) Nothing that carries arguments was asked of it, or answered by it.
            assert not ARGUMENT_CARRIERS & wire.asked(name), (phase, name, wire.commands)
            for method in ARGUMENT_CARRIERS:
                assert wire.answers(name, method) == [], (phase, name, method)
        # (b) No planted value anywhere: decoded replies, decoded arguments, raw lines.
        assert leaks(wire) == {}, phase
    # The decoder really opened the replies: the running task ids are only inside the base64.
    some = next(iter(held.values()))
    one_id = next(iter(some.running))
    wire = phases["plain check"]
    assert any(one_id in t for r in wire.replies for t in r.texts)
    assert not any(one_id.encode() in line for line in wire.raw)


def test_control_a_worker_without_the_companion_leaks_them_into_active(
    redis_server: RedisServer, workers: WorkerFactory, checker: Callable[..., Checker]
) -> None:
    """The same planted values in a plain worker's running task: Doorman asks it ``active``
    and the reply on the wire carries them, where the same decoder finds every one."""
    from tests.support import pii_app

    name = "plain@wire-privacy"
    worker = workers.start(name, pool="prefork", concurrency=2)
    client = redis_server.client()
    try:
        app = producer(redis_server.url)
        secret = f"{wire_app.PLANTED_CARD} {wire_app.PLANTED_PHONE} {wire_app.PLANTED_TOKEN}"
        app.sleep.apply_async((HOLD, wire_app.PLANTED_EMAIL), {"secret": secret}, queue="celery")
        wait_until(
            lambda: client.llen("celery") == 0 and client.hlen("unacked") == 1,
            20,
            "the worker to take the task",
        )
        payload, wire = _listen(redis_server, checker().check)
    finally:
        client.close()
        worker.kill()  # its task sleeps for minutes: do not wait for it
        pii_app.app.close()
    (seen,) = payload["workers"]
    assert seen["companion"] is False and seen["active"] == 1, seen
    assert "active" in wire.asked(name)
    (active,) = wire.answers(name, "active")
    assert [t["name"] for t in active] == ["tasks.sleep"]
    replies = [r for r in wire.replies if r.method == "active"]
    assert found([t for r in replies for t in r.texts]) == set(needles())
    assert "replies" in leaks(wire)
