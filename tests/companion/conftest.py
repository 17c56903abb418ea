"""Fixtures for the worker companion: workers of tests/support/companion_app.py, a client app.

The client publishes by task name through its own Celery app; the ``x_published_at`` hook
is connected only while a test asks for it, so no other test in this process sees it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.signals import before_task_publish

import doorman_celery
from chalicelib.embedded import RedisServer, Worker, wait_for_workers
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parent.parent.parent
APP = "tests.support.companion_app"
PUBLISH_UID = doorman_celery.PUBLISH_UID


class Companions:
    """Starts companion_app workers on one Redis and asks them things."""

    def __init__(self, server: RedisServer) -> None:
        self.url = server.url
        self.started: list[Worker] = []
        self.client = Celery("companion-client", broker=self.url, set_as_current=False)
        self.client.conf.update(
            broker_connection_retry_on_startup=True, task_default_queue="celery"
        )

    def start(
        self,
        name: str,
        *,
        pool: str = "prefork",
        concurrency: int = 2,
        env: dict[str, str] | None = None,
    ) -> Worker:
        worker = Worker(
            APP, self.url, name, pool=pool, concurrency=concurrency, env=env, cwd=str(ROOT)
        ).start()
        self.started.append(worker)
        try:
            wait_for_workers(self.url, [name], timeout=45)
        except Exception:
            print(worker.log_text()[-3000:])
            raise
        return worker

    def send(self, task: str, *args: Any, **options: Any) -> str:
        task_id = options.pop("task_id", None) or str(uuid.uuid4())
        kwargs = options.pop("kwargs", None)
        self.client.send_task(task, args=args, kwargs=kwargs, task_id=task_id, **options)
        return task_id

    def ask(self, name: str, timeout: float = 2.0) -> dict[str, Any] | None:
        """The ``doorman`` reply of worker ``name`` (None when it does not answer)."""
        replies = self.client.control.broadcast(
            doorman_celery.COMMAND, reply=True, destination=[name], timeout=timeout
        )
        for reply in replies or []:
            if name in reply:
                answer = reply[name]
                assert isinstance(answer, dict)
                return answer
        return None

    def wait_for(self, name: str, done: Any, timeout: float = 20.0) -> dict[str, Any]:
        """Ask until ``done(reply)`` holds; return that reply."""
        last: dict[str, Any] = {}

        def ready() -> bool:
            nonlocal last
            last = self.ask(name, timeout=1.0) or {}
            return bool(last) and bool(done(last))

        try:
            wait_until(ready, timeout, f"{name} to answer as expected")
        except AssertionError:
            print(last)
            for worker in self.started:
                print(worker.log_text()[-3000:])
            raise
        return last

    def close(self) -> None:
        for worker in self.started:
            worker.stop()
        self.client.close()


@pytest.fixture
def companions(redis_server: RedisServer) -> Iterator[Companions]:
    made = Companions(redis_server)
    try:
        yield made
    finally:
        made.close()


@contextmanager
def publish_header(app: Celery) -> Iterator[None]:
    """``doorman_celery.install(app)`` for the block: publishes carry ``x_published_at``."""
    doorman_celery.install(app)
    try:
        yield
    finally:
        before_task_publish.disconnect(dispatch_uid=PUBLISH_UID)


def outcomes(reply: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Per task name, its counters (the ones present: absent means 0)."""
    return {
        name: {k: v for k, v in entry.items() if k in doorman_celery.COUNTERS}
        for name, entry in reply["tasks"].items()
    }


def total(reply: dict[str, Any]) -> int:
    return sum(sum(counts.values()) for counts in outcomes(reply).values())
