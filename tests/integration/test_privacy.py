"""No planted personal value may reach anything Doorman prints, logs or keeps.

The planted-data app (tests/support/pii_app.py) puts personal data in task arguments, keyword
arguments (and so in argsrepr/kwargsrepr), task ids, task names, queue names, worker host names,
custom settings and broker transport options. These tests put its tasks in every state a
check can see (waiting, running, reserved, unacked, overdue unacked), run the real command and
scan every byte it wrote. A second set records the Redis commands the checker sends and
fails on any client-side read of a message body or of the unacked hash.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import redis

from chalicelib.sanitize import Hasher
from tests.conftest import parse_one_json, producer, run_cli, wait_until
from tests.support import pii_app

WORKER_NAME = "jane@" + pii_app.PLANTED_WORKER_HOST
ARGS = (pii_app.PLANTED_EMAIL, pii_app.PLANTED_CARD)
KWARGS = {
    "note": pii_app.PLANTED_SSN + " " + pii_app.PLANTED_PHONE,
    "secret": pii_app.PLANTED_KWARG,
}
SLEEP_KWARGS = {"email": pii_app.PLANTED_EMAIL, "secret": pii_app.PLANTED_KWARG}
ORPHAN_ID = pii_app.PLANTED_TASK_ID + "-orphan"


def needles() -> list[str]:
    """Every planted value, its parts, and the forms Celery writes it in (argsrepr...)."""
    values = {
        *pii_app.PLANTED,
        pii_app.PLANTED_QUEUE,
        pii_app.PLANTED_TASK_NAME,
        WORKER_NAME,
        ORPHAN_ID,
        # Fragments: a partial leak is a leak.
        "jane.roe",
        "acme-private",
        "db-7-jane",
        "1111-1111",
        "078-05",
        "415 555",
        "PLANTEDSETTING",
        "PLANTEDTRANSPORT",
        "kwarg-PLANTED",
        "998877",
        # How Celery carries them in headers and bodies.
        repr(ARGS),
        repr(KWARGS),
        repr(SLEEP_KWARGS),
        json.dumps(list(ARGS)),
        json.dumps(KWARGS),
    }
    out: set[str] = set()
    for value in values:
        out |= {value, value.lower(), value.upper()}
        out.add(base64.b64encode(value.encode()).decode().rstrip("="))
    return sorted(out, key=len)


def scan(blobs: dict[str, bytes]) -> list[tuple[str, str]]:
    """(where, needle) for every planted value found, case-insensitively."""
    found = []
    for where, blob in blobs.items():
        lowered = blob.lower()
        for needle in needles():
            if needle.encode().lower() in lowered:
                found.append((where, needle))
    return found


def plant_unacked(client: redis.Redis, app: Any, task_id: str, age: float) -> None:
    """An unacked entry (as kombu writes it) holding a real planted message, ``age`` s old."""
    scratch = "scratch-for-unacked"
    app.process_user.apply_async(ARGS, KWARGS, queue=scratch, task_id=task_id)
    raw = client.rpop(scratch)
    assert raw is not None
    message = json.loads(raw)
    tag = "tag-" + task_id
    client.hset("unacked", tag, json.dumps([message, "", pii_app.PLANTED_QUEUE]))
    client.zadd("unacked_index", {tag: time.time() - age})


def test_no_planted_value_reaches_output_logs_or_state(redis_server, workers, tmp_path):
    client = redis_server.client()
    worker = workers.start(
        WORKER_NAME,
        queues=(pii_app.PLANTED_QUEUE, "celery"),
        concurrency=2,
        # Acked on start: the two running tasks leave the unacked hash, the two prefetched
        # after them stay there as reserved.
        env={"PII_ACKS_LATE": "0"},
    )
    app = producer(redis_server.url)
    # Scheduled (an ETA task is held unacked by the worker, outside its prefetch limit).
    app.process_user.apply_async(ARGS, KWARGS, queue="celery", countdown=3600)
    wait_until(lambda: client.hlen("unacked") == 1, 20, "the worker to take the ETA task")
    app.sleep.apply_async(
        (20,), SLEEP_KWARGS, queue=pii_app.PLANTED_QUEUE, task_id=pii_app.PLANTED_TASK_ID
    )
    app.sleep.apply_async((20,), SLEEP_KWARGS, queue=pii_app.PLANTED_QUEUE)
    for n in range(5):
        app.process_user.apply_async(
            ARGS, KWARGS, queue=pii_app.PLANTED_QUEUE, task_id=f"{pii_app.PLANTED_TASK_ID}-{n}"
        )
    wait_until(
        lambda: client.llen(pii_app.PLANTED_QUEUE) == 3 and client.hlen("unacked") == 3,
        20,
        "2 running, 2 reserved, 1 scheduled and 3 waiting tasks",
    )
    # Overdue for the checker (its visibility timeout is 60 s), not for the worker (3600 s).
    plant_unacked(client, app, ORPHAN_ID, age=600)

    state_dir = tmp_path / "state"
    env = {"MAX_TASK_RUNTIME": "0", "DOORMAN_VISIBILITY_TIMEOUT": "60"}
    base = ["check", "--once", "-v", "--redis-url", redis_server.url]
    base += ["--state", str(state_dir / "doorman.db")]
    blobs: dict[str, bytes] = {}
    try:
        as_json = run_cli([*base, "--format", "json"], env=env)
        as_text = run_cli([*base, "--format", "text"], env=env)
        # The scan can fail: with name scrubbing off, the planted queue name is printed.
        unscrubbed = run_cli(
            ["check", "--once", "--redis-url", redis_server.url, "--state", str(tmp_path / "x.db")],
            env={**env, "DOORMAN_SANITIZE_TASK_SIGNATURES": "false"},
        )
    finally:
        worker.kill()  # its tasks sleep for 20 s: do not wait for them
    assert (("stdout", pii_app.PLANTED_QUEUE)) in scan({"stdout": unscrubbed.stdout.encode()})
    for name, result in (("json", as_json), ("text", as_text)):
        assert result.returncode == 0, result.stderr
        blobs[f"{name} stdout"] = result.stdout.encode()
        blobs[f"{name} stderr"] = result.stderr.encode()
    files = [p for p in state_dir.rglob("*") if p.is_file()]
    assert any(p.name == "doorman.db" for p in files)
    assert any(p.name == "doorman.db.secret" for p in files)
    for path in files:
        blobs[str(path.relative_to(tmp_path))] = path.read_bytes()

    assert scan(blobs) == []

    # The check did see every planted thing (else the scan proves nothing).
    doc = parse_one_json(as_json.stdout)
    hasher = Hasher((state_dir / "doorman.db.secret").read_text().strip())
    assert doc["metrics"]["redis_connected"] is True
    assert doc["metrics"]["alive_workers"] == 1
    (seen,) = doc["workers"]
    assert seen["id_hash"] == hasher.worker(WORKER_NAME)
    assert seen["active"] == 2 and seen["reserved"] == 2 and seen["scheduled"] == 1
    assert "emails-[email]" in seen["queues"]
    queues = {q["name"]: q for q in doc["queues"]}
    assert queues["emails-[email]"]["depth"] == 3
    assert queues["emails-[email]"].get("oldest_task") == "tasks.process_user_[id]"
    stuck = [a for a in doc["anomalies"] if a["type"] == "stuck_task"]
    assert hasher.task(pii_app.PLANTED_TASK_ID) in {a["task_id_hash"] for a in stuck}
    orphan = [a for a in doc["anomalies"] if a["task_id_hash"] == hasher.task(ORPHAN_ID)]
    assert orphan and orphan[0]["task_name"] == "tasks.process_user_[id]"
    assert orphan[0]["queue"] == "emails-[email]"
    assert doc["metrics"]["unacked_total"] >= 3
    assert "check done" in as_json.stderr  # -v logging was on
    assert "emails-[email]" in as_text.stdout


# --- what the checker asks Redis ------------------------------------------------------------

_ARG = re.compile(rb'"((?:[^"\\]|\\.)*)"')
_ESCAPES = {
    b"n": b"\n",
    b"r": b"\r",
    b"t": b"\t",
    b"a": b"\a",
    b"b": b"\b",
    b'"': b'"',
    b"\\": b"\\",
}


def _unescape(arg: bytes) -> str:
    out = bytearray()
    i = 0
    while i < len(arg):
        if arg[i : i + 1] == b"\\" and i + 1 < len(arg):
            nxt = arg[i + 1 : i + 2]
            if nxt == b"x":
                out += bytes([int(arg[i + 2 : i + 4], 16)])
                i += 4
                continue
            out += _ESCAPES.get(nxt, nxt)
            i += 2
            continue
        out += arg[i : i + 1]
        i += 1
    return out.decode("utf-8", "replace")


def parse_monitor_line(line: bytes) -> tuple[str, list[str]]:
    """``1700000000.1 [0 127.0.0.1:5555] "LLEN" "celery"`` -> ("127.0.0.1:5555", [...])."""
    head, _, rest = line.partition(b"] ")
    client = head.split(b"[", 1)[1].split(b" ", 1)[1].decode()
    return client, [_unescape(a) for a in _ARG.findall(rest)]


class CommandLog:
    """MONITOR on a connection of its own, in a thread; ``commands`` as (client, argv)."""

    def __init__(self, client: redis.Redis) -> None:
        self.commands: list[tuple[str, list[str]]] = []
        self._client = client
        self._marker = f"doorman-test-{time.time_ns()}"
        self._ready = threading.Event()
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with self._client.monitor() as monitor:
                self._ready.set()
                while True:
                    raw = monitor.connection.read_response()
                    if not isinstance(raw, bytes) or b"] " not in raw:
                        continue
                    client, argv = parse_monitor_line(raw)
                    if argv[:2] == ["ECHO", self._marker]:
                        return
                    self.commands.append((client, argv))
        except BaseException as exc:  # reported by recording(), not lost in the thread
            self.failure = exc
            self._ready.set()

    @contextmanager
    def recording(self) -> Iterator[CommandLog]:
        self._thread.start()
        assert self._ready.wait(5)
        time.sleep(0.1)
        try:
            yield self
        finally:
            self._client.echo(self._marker)
            self._thread.join(10)
        assert not self._thread.is_alive(), "MONITOR did not stop"
        assert self.failure is None, f"MONITOR failed: {self.failure!r}"


# The only commands the checker may send, client-side, naming a queue or the unacked keys:
# lengths, and the scripts that read inside Redis. Everything else (LINDEX, LRANGE, BRPOP,
# HGET, HGETALL, HSCAN, ZRANGE, DUMP, OBJECT, MEMORY USAGE, writes...) is a violation.
ALLOWED_ON_MESSAGE_KEYS = {"LLEN", "EVALSHA", "EVAL", "EVALSHA_RO", "EVAL_RO", "TYPE", "EXISTS"}


def _is_own_key(key: str) -> bool:
    # The checker's Celery remote control: its reply queue and kombu's decoy unacked keys.
    return key.endswith(".reply.celery.pidbox") or key.startswith("doorman.probe.")


def violations(
    commands: list[tuple[str, list[str]]], queue_keys: set[str], checker: Callable[[str], bool]
) -> list[str]:
    """Every client-side command of the checker that names a message-holding key and is not
    one of the few allowed (lengths, scripts)."""
    guarded = queue_keys | {"unacked", "unacked_index"}
    bad = []
    for client, argv in commands:
        if client == "lua" or not argv or not checker(client):
            continue
        name = argv[0].upper()
        touched = [a for a in argv[1:] if a in guarded and not _is_own_key(a)]
        if touched and name not in ALLOWED_ON_MESSAGE_KEYS:
            bad.append(" ".join(argv)[:200])
    return bad


def queue_keys_of(names: list[str]) -> set[str]:
    keys = set(names)
    for name in names:
        keys |= {f"{name}\x06\x16{n}" for n in range(1, 10)}
    return keys


def test_violations_detects_client_side_reads():
    """The detector itself: it must flag what the real checker must never send."""
    keys = queue_keys_of(["emails"])
    everyone = lambda _client: True  # noqa: E731
    cmds = [
        ("1.2.3.4:1", ["LINDEX", "emails", "-1"]),
        ("1.2.3.4:1", ["LRANGE", "emails\x06\x163", "0", "-1"]),
        ("1.2.3.4:1", ["HGETALL", "unacked"]),
        ("1.2.3.4:1", ["HGET", "unacked", "tag"]),
        ("1.2.3.4:1", ["ZRANGE", "unacked_index", "0", "-1"]),
        ("1.2.3.4:1", ["BRPOP", "emails", "1"]),
        ("1.2.3.4:1", ["MEMORY", "USAGE", "emails"]),
        ("1.2.3.4:1", ["HSCAN", "unacked", "0"]),
        ("1.2.3.4:1", ["RPUSH", "emails", "x"]),
        ("1.2.3.4:1", ["DUMP", "unacked"]),
    ]
    assert len(violations(cmds, keys, everyone)) == len(cmds)
    allowed = [
        ("lua", ["LINDEX", "emails", "-1"]),
        ("lua", ["HGET", "unacked", "tag"]),
        ("1.2.3.4:1", ["LLEN", "emails"]),
        ("1.2.3.4:1", ["EVALSHA", "abc", "2", "unacked_index", "unacked"]),
        ("1.2.3.4:1", ["BRPOP", "abc.reply.celery.pidbox", "1"]),
        ("1.2.3.4:1", ["HGET", "doorman.probe.unacked", "x"]),
    ]
    assert violations(allowed, keys, everyone) == []
    assert violations(cmds, keys, lambda _client: False) == []


@contextmanager
def recorded_local_ports() -> Iterator[set[int]]:
    """Local ports of every TCP connection this process opens meanwhile (the checker's)."""
    ports: set[int] = set()
    original = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        original(self, address)
        with suppress(OSError, IndexError, TypeError, ValueError):
            ports.add(int(self.getsockname()[1]))

    socket.socket.connect = connect  # type: ignore[method-assign]
    try:
        yield ports
    finally:
        socket.socket.connect = original  # type: ignore[method-assign]


def fill_broker(url: str, client: redis.Redis) -> list[str]:
    """Waiting messages (plain and priority), an overdue and a fresh unacked entry."""
    app = producer(url)
    for _ in range(3):
        app.process_user.apply_async(ARGS, KWARGS, queue=pii_app.PLANTED_QUEUE)
    app.process_user.apply_async(ARGS, KWARGS, queue=pii_app.PLANTED_QUEUE, priority=5)
    app.process_user.apply_async(ARGS, KWARGS, queue="celery")
    plant_unacked(client, app, ORPHAN_ID, age=7200)
    plant_unacked(client, app, ORPHAN_ID + "-fresh", age=5)
    return [pii_app.PLANTED_QUEUE, "celery", "scratch-for-unacked"]


def test_checker_never_reads_messages_from_the_client_side(redis_server, checker):
    """No worker runs: every command MONITOR sees (but our markers) is the checker's."""
    client = redis_server.client()
    names = fill_broker(redis_server.url, client)
    log = CommandLog(redis_server.client())
    with log.recording():
        payload = checker(visibility_timeout_seconds=3600).check()
    assert payload["metrics"]["redis_connected"] is True
    assert payload["metrics"]["total_pending"] == 5
    assert payload["metrics"]["unacked_total"] == 2
    assert [a["type"] for a in payload["anomalies"]] == ["orphaned_task"]

    issued = {argv[0].upper() for client_addr, argv in log.commands if client_addr != "lua"}
    assert "EVALSHA" in issued and "PUBLISH" in issued  # the probes ran
    # Inside the scripts, Redis itself did the reading.
    inside = {argv[0].upper() for client_addr, argv in log.commands if client_addr == "lua"}
    assert {"LINDEX", "HGET"} <= inside
    assert violations(log.commands, queue_keys_of(names), lambda _c: True) == []
    # Nothing the checker asks for by name reaches into unacked, and nothing writes there.
    assert client.hlen("unacked") == 2 and client.zcard("unacked_index") == 2
    assert sum(client.llen(k) for k in queue_keys_of([pii_app.PLANTED_QUEUE])) == 4


def test_checker_with_a_live_worker_never_reads_messages(redis_server, workers, checker):
    """With a worker alive, the checker's commands are told apart by their client ports."""
    client = redis_server.client()
    worker = workers.start(WORKER_NAME, queues=("celery",), concurrency=1)
    names = fill_broker(redis_server.url, client)
    wait_until(lambda: client.llen("celery") == 0, 10, "the worker to take its task")
    log = CommandLog(redis_server.client())
    with log.recording(), recorded_local_ports() as ports:
        payload = checker(visibility_timeout_seconds=3600).check()
    worker.kill()
    assert payload["metrics"]["alive_workers"] == 1
    assert ports, "the checker opened no connection?"

    def is_checker(client_addr: str) -> bool:
        port = client_addr.rsplit(":", 1)[-1]
        return port.isdigit() and int(port) in ports

    mine = [(c, a) for c, a in log.commands if c != "lua" and is_checker(c)]
    others = [(c, a) for c, a in log.commands if c != "lua" and not is_checker(c)]
    assert {"EVALSHA", "PUBLISH"} <= {a[0].upper() for _c, a in mine}
    assert others, "the worker's own commands should show up too"
    assert violations(log.commands, queue_keys_of(names), is_checker) == []
