"""Fixtures: real redis-server processes, real Celery workers, and a checker.

Every server binds to 127.0.0.1 on a free port and is stopped by the fixture that
started it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.embedded import RedisServer, Worker, wait_for_workers
from chalicelib.runner import run_check
from chalicelib.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
PII_APP = "tests.support.pii_app"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


class WorkerFactory:
    def __init__(self, broker: str) -> None:
        self.broker = broker
        self.started: list[Worker] = []

    def start(
        self,
        name: str,
        *,
        pool: str = "prefork",
        concurrency: int = 2,
        queues: tuple[str, ...] = ("celery",),
        env: dict[str, str] | None = None,
        wait: bool = True,
        transport_options: dict[str, Any] | None = None,
    ) -> Worker:
        worker = Worker(
            PII_APP,
            self.broker,
            name,
            pool=pool,
            concurrency=concurrency,
            queues=queues,
            env=env,
            cwd=str(ROOT),
        ).start()
        self.started.append(worker)
        if wait:
            try:
                wait_for_workers(
                    self.broker, [name], timeout=45, transport_options=transport_options
                )
            except Exception:
                print(worker.log_text()[-3000:])
                raise
        return worker

    def stop_all(self) -> None:
        for worker in self.started:
            worker.stop()


@pytest.fixture
def workers(redis_server: RedisServer) -> Iterator[WorkerFactory]:
    factory = WorkerFactory(redis_server.url)
    try:
        yield factory
    finally:
        factory.stop_all()


class Checker:
    """Runs checks in-process against one Redis, keeping state in ``state_path``."""

    def __init__(self, url: str, state_path: Path, **overrides: Any) -> None:
        self.url = url
        self.state_path = state_path
        self.overrides = overrides

    def settings(self, **more: Any) -> Any:
        values: dict[str, Any] = {
            "redis_url": self.url,
            "state_path": str(self.state_path),
            "hash_secret": "test-secret",
            "worker_timeout_seconds": 1.0,
        }
        values.update(self.overrides)
        values.update(more)
        return load_settings(environ={}, overrides=values)

    def check(self, *, at: float | None = None, **more: Any) -> dict[str, Any]:
        return check_once(self.settings(**more), at=at)


def check_once(settings: Any, *, at: float | None = None) -> dict[str, Any]:
    """One in-process check with the local (SQLite) store, as ``doorman check`` runs it.

    ``at``: the check's clock reads that time (the collector and the rules take it from
    there), so a test can place a check before or after a limit without waiting for it.
    """
    from chalicelib.wiring import close_deps, local_deps

    deps = local_deps(settings)
    if at is not None:
        deps.clock = lambda: at
    try:
        return run_check(settings, deps).payload
    finally:
        close_deps(deps)


@pytest.fixture
def checker(redis_server: RedisServer, tmp_path: Path) -> Callable[..., Checker]:
    def make(**overrides: Any) -> Checker:
        return Checker(redis_server.url, tmp_path / "state.db", **overrides)

    return make


def producer(broker: str) -> Any:
    """The planted-data Celery app, pointed at ``broker``, for enqueueing from a test."""
    from chalicelib.embedded import point_app_at
    from tests.support import pii_app

    point_app_at(pii_app.app, broker)
    return pii_app


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any of Doorman's settings, plus ``extra``.

    Never let a developer's real broker, webhook or paging key (or thresholds) reach a
    command a test runs.
    """
    from chalicelib.settings import CONFIG_ENV, env_names

    ours = {*env_names().values(), CONFIG_ENV}
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ours
        and not k.startswith(
            ("REDIS_", "CELERY_", "DOORMAN_", "SLACK_", "PAGERDUTY_", "GENERIC_WEBHOOK_")
        )
    }
    env.update(extra)
    return env


def run_cli(
    args: list[str], *, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the ``doorman`` command as a user would, in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "chalicelib.cli", *args],
        capture_output=True,
        text=True,
        env=clean_env(**(env or {})),
        cwd=str(ROOT),
        timeout=timeout,
        check=False,
    )


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` every 50 ms; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def parse_one_json(stdout: str) -> dict[str, Any]:
    """stdout must be exactly one JSON document."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON line, got {len(lines)}: {stdout[:500]}"
    doc = json.loads(lines[0])
    assert isinstance(doc, dict)
    return doc
