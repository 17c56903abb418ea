"""Redis faults, injected for real after a first good check.

The first check (in-process) sees tasks waiting and no worker: ``workers_down`` fires and its
trigger is queued. Then Redis is broken in one way and ``doorman check`` runs as a user runs it.
It must exit 0 within its time budget, print one JSON document and no traceback, never print
the password, raise ``redis_unreachable`` naming the cause, and resolve nothing it could not see.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chalicelib.embedded import RedisServer, free_port
from chalicelib.state.sqlite import SqliteStore
from tests.conftest import parse_one_json, producer, run_cli
from tests.faults.helpers import (
    FAST_ENV,
    actions,
    alerts,
    count_once,
    error_kinds,
    local_check,
    sqlite_outbox,
)
from tests.integration.test_bad_input import FakeServer

PASSWORD = "Fault-Pw-9secret"
# One interpreter start (about a second), one Redis timeout (1 s), and slack for a busy machine.
BUDGET = 6.0

Fault = Callable[[RedisServer], contextlib.AbstractContextManager[str]]


@contextlib.contextmanager
def refused(server: RedisServer) -> Iterator[str]:
    yield f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"


@contextlib.contextmanager
def stalled(server: RedisServer) -> Iterator[str]:
    server.pause()  # SIGSTOP: the kernel still accepts, nobody answers
    try:
        yield server.url
    finally:
        server.resume()


@contextlib.contextmanager
def killed(server: RedisServer) -> Iterator[str]:
    url = server.url
    server.stop()
    yield url


@contextlib.contextmanager
def wrong_password(server: RedisServer) -> Iterator[str]:
    yield f"redis://:not-{PASSWORD}@127.0.0.1:{server.port}/0"


@contextlib.contextmanager
def tls_not_offered(server: RedisServer) -> Iterator[str]:
    yield f"rediss://:{PASSWORD}@127.0.0.1:{server.port}/0?ssl_cert_reqs=none"


@contextlib.contextmanager
def other_protocol(server: RedisServer) -> Iterator[str]:
    reply = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
    with FakeServer(reply).running() as fake:
        yield f"redis://:{PASSWORD}@127.0.0.1:{fake.port}/0"


@contextlib.contextmanager
def dns_does_not_resolve(server: RedisServer) -> Iterator[str]:
    yield f"redis://:{PASSWORD}@doorman-fault.invalid:6379/0"


# fault -> the error kinds that name its cause
CASES: dict[str, tuple[Fault, tuple[str, ...]]] = {
    "connection refused": (refused, ("connection_refused",)),
    "stalled mid-check (SIGSTOP)": (stalled, ("timeout",)),
    "killed between two checks": (killed, ("connection_refused",)),
    "wrong password": (wrong_password, ("auth",)),
    # The TLS handshake to a plain server waits for an answer that never comes; it was once
    # reported as a plain timeout.
    "TLS expected, not offered": (tls_not_offered, ("tls",)),
    "port speaks another protocol": (other_protocol, ("not_redis",)),
    "DNS name does not resolve": (dns_does_not_resolve, ("dns",)),
}


@pytest.fixture
def broker() -> Iterator[RedisServer]:
    server = RedisServer(password=PASSWORD).start()
    try:
        yield server
    finally:
        server.stop()


def first_good_check(server: RedisServer, state: Path) -> None:
    app = producer(server.url)
    for _ in range(3):
        app.quick.apply_async(queue="waiting")
    good = local_check(server.url, state)
    assert good["metrics"]["redis_connected"] is True
    assert alerts(good).get("workers_down") == "firing", good["alerts"]
    assert ("trigger", "workers_down") in actions(good)


def blind_check(url: str, state: Path):  # type: ignore[no-untyped-def]
    started = time.monotonic()
    result = run_cli(
        ["check", "--once", "--format", "json", "--redis-url", url, "--state", str(state)],
        env=FAST_ENV,
    )
    return result, time.monotonic() - started


@pytest.mark.parametrize("fault", list(CASES))
def test_redis_fault(fault: str, broker: RedisServer, tmp_path: Path, fault_log) -> None:  # type: ignore[no-untyped-def]
    inject, kinds = CASES[fault]
    state = tmp_path / "state.db"
    first_good_check(broker, state)

    with inject(broker) as url:
        result, elapsed = blind_check(url, state)

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    assert elapsed < BUDGET, elapsed
    doc = parse_one_json(result.stdout)
    assert doc["check_duration_ms"] < 2500, doc["check_duration_ms"]
    assert doc["metrics"]["redis_connected"] is False
    found = error_kinds(doc, "redis")
    assert len(found) == 1 and found[0] in kinds, doc["errors"]
    firing = alerts(doc)
    assert firing.get("redis_unreachable") == "firing", doc["alerts"]
    # Blind: what it could not see stays as it was, and nothing is resolved.
    assert firing.get("workers_down") == "firing", doc["alerts"]
    assert not [a for a, _ in actions(doc) if a == "resolve"], doc["notifications"]

    store = SqliteStore(str(state))
    try:
        saved = store.load("default")
    finally:
        store.close()
    kept = [a for a in saved.alerts.values() if a.type == "workers_down"]
    assert [a.state for a in kept] == ["firing"]
    outbox = sqlite_outbox(state)
    lost, dupes = count_once(outbox, "trigger", "workers_down")
    dupes += sum(1 for n in outbox if n["action"] == "resolve")
    fault_log.record(f"redis: {fault}", alerts_lost=lost, duplicates=dupes)
    assert (lost, dupes) == (0, 0), outbox
