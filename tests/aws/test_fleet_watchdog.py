"""The fleet's watchdog: in one scheduled invocation of several targets, a target whose
check never finishes in its budget logs no ``CheckSucceeded`` (its own watchdog alarm,
missing data = breaching, fires), while the others log theirs (a refused connection logs 0:
the redis_unreachable alert's business); metric_queues gives a named queue its metrics."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chalicelib.embedded import RedisServer
from chalicelib.metrics import series_defined
from tests.aws.test_targets import CW, closed_port  # noqa: F401 (a fixture)
from tests.conftest import producer


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield int(sock.getsockname()[1])


def lines_of(text: str) -> list[dict[str, Any]]:
    found = []
    for line in text.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("doorman"):
            found.append(doc)
    return found


def test_only_the_targets_checked_report_a_heartbeat(
    lambda_env: Callable[[], Any],
    monkeypatch: pytest.MonkeyPatch,
    redis_server: RedisServer,
    silent_port: int,
    closed_port: int,  # noqa: F811
    app_module: Any,
    capfd: pytest.CaptureFixture[str],
) -> None:
    app = producer(redis_server.url)
    for _ in range(4):
        app.sleep.apply_async((0.01,), queue="emails")
    app.sleep.apply_async((0.01,), queue="reports")
    targets = [
        {"name": "silent", "redis_url": f"redis://127.0.0.1:{silent_port}/0"},
        {"name": "refused", "redis_url": f"redis://127.0.0.1:{closed_port}/0"},
        {"name": "healthy", "redis_url": redis_server.url, "metric_queues": ["emails"]},
    ]
    monkeypatch.setenv("DOORMAN_TARGETS", json.dumps(targets))
    monkeypatch.setenv("DOORMAN_CHECK_BUDGET", "1")
    monkeypatch.setenv("DOORMAN_WORKER_TIMEOUT", "0.3")
    monkeypatch.setenv("DOORMAN_REDIS_TIMEOUT", "3")
    with lambda_env() as client:
        capfd.readouterr()
        out = client.lambda_.invoke("check", client.events.generate_cw_event(**CW)).payload
        lines = lines_of(capfd.readouterr().out)
        status = {t["target"]: t["status"] for t in out["targets"]}
        assert status["healthy"] == "ok" and status["silent"] == "timeout", out
        assert status["refused"] == "ok", out
        heartbeats = {d["target"]: d["CheckSucceeded"] for d in lines if d["doorman"] == "check"}
        # The silent target logs nothing: only its own watchdog sees it, 3 minutes on.
        assert "silent" not in heartbeats
        assert heartbeats["healthy"] == 1
        assert heartbeats["refused"] == 0
        series = series_defined(lines)
        assert ("Doorman", "CheckSucceeded", (("target", "healthy"),)) in series
        queue_series = {s for s in series if s[1] != "CheckSucceeded"}
        assert queue_series == {
            ("Doorman", name, (("target", "healthy"), ("queue", "emails")))
            for name in ("QueueDepth", "QueueLatencySec")
        }
        depths = {d["queue"]: d["QueueDepth"] for d in lines if d["doorman"] == "queue"}
        assert depths["emails"] == 4 and depths["reports"] == 1
        app_module._cache["slots"]["silent"].running.result(timeout=30)
