"""Fixtures of the notification tests: recording HTTP servers and fast retry policies."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from chalicelib.notify.http import RetryPolicy
from tests.notify.recorder import Recorder, Reply
from tests.support.moto_server import moto_server

__all__ = ["fast", "moto_server", "recorder"]

# Small waits so that retries are counted and timed in milliseconds.
FAST = RetryPolicy(
    max_attempts=4,
    total_seconds=3.0,
    request_timeout=0.3,
    backoff_base=0.02,
    backoff_max=0.05,
    retry_after_max=0.5,
)


@pytest.fixture
def fast() -> RetryPolicy:
    return FAST


@pytest.fixture
def recorder() -> Iterator[Callable[..., Recorder]]:
    started: list[Recorder] = []

    def make(default: Reply | None = None) -> Recorder:
        server = Recorder(default).start()
        started.append(server)
        return server

    try:
        yield make
    finally:
        for server in started:
            server.stop()
