"""A Redis that is down, locked, not Redis, or silent, and messages Doorman cannot decode.

Every case runs the real command: it must exit 0 (the check ran), print one JSON document
saying what went wrong, finish within its timeouts, and never print the password.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from chalicelib.embedded import RedisServer, free_port
from tests.conftest import parse_one_json, producer, run_cli

PASSWORD = "Wr0ng-Pw-5ecret"
REDIS_TIMEOUT = 2.0
CHECK = ["check", "--once", "--format"]


class FakeServer:
    """A TCP listener on a free loopback port that is not Redis.

    ``reply``: bytes sent to every connection before closing it; None: accept and say nothing
    until stopped (a stalled server); b"": close at once.
    """

    def __init__(self, reply: bytes | None) -> None:
        self.reply = reply
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self.port = int(self._sock.getsockname()[1])
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.accepted = 0

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            if self.reply is None:
                self._held.append(conn)
                continue
            with contextlib.suppress(OSError):
                conn.settimeout(0.5)
                with contextlib.suppress(TimeoutError, OSError):
                    conn.recv(4096)
                conn.sendall(self.reply)
            conn.close()

    @contextlib.contextmanager
    def running(self) -> Iterator[FakeServer]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(5)
            for conn in self._held:
                conn.close()
            self._sock.close()


def check(url: str, tmp_path, *extra: str, env: dict[str, str] | None = None):
    started = time.monotonic()
    result = run_cli(
        [*CHECK, "json", "--redis-url", url, "--state", str(tmp_path / "s.db"), *extra],
        env={
            "DOORMAN_REDIS_TIMEOUT": str(REDIS_TIMEOUT),
            "DOORMAN_WORKER_TIMEOUT": "0.2",
            **(env or {}),
        },
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return parse_one_json(result.stdout), result, elapsed


def assert_unreachable(doc: dict, kind: str) -> None:
    assert doc["metrics"]["redis_connected"] is False
    assert doc["queues"] == []
    kinds = [(e["component"], e["kind"]) for e in doc["errors"]]
    assert ("redis", kind) in kinds, doc["errors"]
    assert all(e["message"] for e in doc["errors"])


# A check that cannot reach Redis costs one interpreter start (~1 s) and one timeout at most.
BUDGET = REDIS_TIMEOUT + 4.0


def test_connection_refused(tmp_path):
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    doc, result, elapsed = check(url, tmp_path)
    assert_unreachable(doc, "connection_refused")
    assert PASSWORD not in result.stdout + result.stderr
    assert elapsed < BUDGET


def test_wrong_password(tmp_path):
    server = RedisServer(password="the-right-one-77").start()
    try:
        doc, result, elapsed = check(f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0", tmp_path)
        doc_none, _, _ = check(f"redis://127.0.0.1:{server.port}/0", tmp_path)
    finally:
        server.stop()
    assert_unreachable(doc, "auth")
    assert_unreachable(doc_none, "auth")  # no password at all: NOAUTH
    assert PASSWORD not in result.stdout + result.stderr
    assert "the-right-one-77" not in result.stdout + result.stderr
    assert elapsed < BUDGET


@pytest.mark.parametrize(
    "reply",
    [b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", b"\x00\x17\xffgarbage\r\n\x01"],
    ids=["http", "garbage"],
)
def test_a_port_that_is_not_redis(tmp_path, reply):
    with FakeServer(reply).running() as fake:
        doc, result, elapsed = check(f"redis://:{PASSWORD}@127.0.0.1:{fake.port}/0", tmp_path)
    assert fake.accepted >= 1
    assert_unreachable(doc, "not_redis")
    assert PASSWORD not in result.stdout + result.stderr
    assert elapsed < BUDGET


def test_a_server_that_closes_at_once(tmp_path):
    with FakeServer(b"").running() as fake:
        doc, result, elapsed = check(f"redis://:{PASSWORD}@127.0.0.1:{fake.port}/0", tmp_path)
    assert_unreachable(doc, "not_redis")
    assert PASSWORD not in result.stdout + result.stderr
    assert elapsed < BUDGET


def test_a_stalled_server_is_bounded_by_the_timeout(tmp_path):
    with FakeServer(None).running() as fake:
        doc, result, elapsed = check(f"redis://:{PASSWORD}@127.0.0.1:{fake.port}/0", tmp_path)
    assert fake.accepted >= 1
    assert_unreachable(doc, "timeout")
    assert PASSWORD not in result.stdout + result.stderr
    assert REDIS_TIMEOUT <= elapsed < BUDGET
    assert doc["check_duration_ms"] < (REDIS_TIMEOUT + 1.0) * 1000


def test_a_paused_redis_is_bounded_by_the_timeout(redis_server, tmp_path):
    redis_server.pause()  # accepts (the kernel does) but never answers
    try:
        doc, _result, elapsed = check(redis_server.url, tmp_path)
    finally:
        redis_server.resume()
    assert_unreachable(doc, "timeout")
    assert elapsed < BUDGET


# --- messages Doorman cannot (and must not) decode -----------------------------------------


def test_pickle_and_foreign_messages_are_counted_not_decoded(redis_server, tmp_path):
    client = redis_server.client()
    app = producer(redis_server.url)
    for _ in range(2):
        app.process_user.apply_async(
            ("x@y.com", "4111"), queue="pickled", serializer="pickle", task_id=None
        )
    client.lpush("foreign", b"\x80\x04\x95not a kombu message\x00\xff")
    client.lpush("foreign", b'{"hello": "world", "headers": 5}')
    client.lpush("foreign", b"plain text")  # the oldest: RPUSHed last by BRPOP's reckoning
    client.lpush("oversized", b"x" * ((1 << 20) + 10))
    client.set("not-a-list", "a string where a queue should be")
    doc, result, _ = check(
        redis_server.url,
        tmp_path,
        env={"DOORMAN_MONITORED_QUEUES": "foreign,oversized,not-a-list"},
    )
    assert doc["metrics"]["redis_connected"] is True
    queues = {q["name"]: q for q in doc["queues"]}
    assert queues["pickled"]["depth"] == 2
    assert queues["pickled"].get("serializers") == ["pickle"]
    assert not queues["pickled"].get("unreadable_messages")
    assert queues["foreign"]["depth"] == 3
    assert queues["foreign"]["unreadable_messages"] is True
    assert queues["oversized"]["depth"] == 1
    assert queues["oversized"]["unreadable_messages"] is True
    assert queues["not-a-list"]["depth"] == 0
    assert "wrong_type" in queues["not-a-list"].get("problem", "")
    assert doc["metrics"]["total_pending"] == 6
    # The messages stayed where they were.
    assert client.llen("pickled") == 2 and client.llen("foreign") == 3
    assert "world" not in result.stdout and "plain text" not in result.stdout


def test_control_characters_in_names_cannot_forge_text_output(redis_server, tmp_path):
    client = redis_server.client()
    evil = "evil\n  Redis      connected (all good)\x1b[2J\r"
    client.sadd("_kombu.binding.celery", f"{evil}\x06\x16\x06\x16{evil}")
    client.lpush(evil, b"plain text")
    result = run_cli(
        [*CHECK, "text", "--redis-url", redis_server.url, "--state", str(tmp_path / "s.db")],
        env={"DOORMAN_WORKER_TIMEOUT": "0.2"},
    )
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\r" not in result.stdout
    lines = result.stdout.splitlines()
    assert sum(1 for line in lines if line.lstrip().startswith("Redis")) == 1
    assert any("evil\\n" in line and "1 waiting" in line for line in lines)
    doc, _, _ = check(redis_server.url, tmp_path, env={"DOORMAN_WORKER_TIMEOUT": "0.2"})
    assert evil in {q["name"] for q in doc["queues"]}  # JSON carries it, escaped
