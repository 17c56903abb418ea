"""A Celery app for the worker companion's tests: tasks with known outcomes.

``COMPANION=0`` in the environment leaves the companion out (the baseline worker).
``COMPANION_REQUEST=1`` gives the tasks a Request class of the app's own, which the
companion must keep.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery, Task
from celery.exceptions import Ignore, Reject
from celery.worker.request import Request

import doorman_celery

app = Celery("companion-app", broker=os.environ.get("DOORMAN_DEMO_BROKER", "redis://127.0.0.1:1/0"))
app.conf.update(
    # The benchmark (bench/companion.py) runs Celery's defaults instead: early acks, prefetch 4.
    task_acks_late=os.environ.get("COMPANION_ACKS_LATE", "1") == "1",
    worker_prefetch_multiplier=int(os.environ.get("COMPANION_PREFETCH", "1")),
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_default_queue="celery",
)

#: Where the app's own Request class writes down what it saw (its tests read it).
SEEN_FILE = os.environ.get("COMPANION_SEEN_FILE", "")


class OwnRequest(Request):  # type: ignore[misc]
    """The app's own Request class: appends the outcome kind and pid to SEEN_FILE."""

    def on_failure(
        self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False
    ) -> Any:
        _seen(f"own-failure {os.getpid()}")
        return super().on_failure(
            exc_info, send_failed_event=send_failed_event, return_ok=return_ok
        )

    def on_accepted(self, pid: int, time_accepted: float) -> None:
        _seen(f"own-accepted {os.getpid()}")
        super().on_accepted(pid, time_accepted)


def _seen(line: str) -> None:
    if SEEN_FILE:
        with open(SEEN_FILE, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


if os.environ.get("COMPANION_REQUEST") == "1":
    app.Task.Request = OwnRequest

if os.environ.get("COMPANION", "1") == "1":
    doorman_celery.install(app)
    doorman_celery.install(app)  # twice on purpose: counts must not double


@app.task(name="comp.ok")
def ok(seconds: float = 0.0, email: str = "", card: str = "") -> str:
    if seconds:
        time.sleep(seconds)
    return "done"


@app.task(name="comp.fail")
def fail(seconds: float = 0.0, email: str = "", card: str = "") -> None:
    if seconds:
        time.sleep(seconds)
    raise ValueError(f"planted failure for {email} {card}")


@app.task(name="comp.retry", bind=True, max_retries=2, default_retry_delay=0)
def retry(self: Task, succeed_on: int = 99, email: str = "") -> str:
    """Retries until attempt number ``succeed_on`` (0-based); past max_retries it fails."""
    if self.request.retries >= succeed_on:
        return "done"
    raise self.retry(countdown=0)


@app.task(name="comp.reject")
def reject(requeue: bool = False, email: str = "") -> None:
    raise Reject("no", requeue=requeue)


@app.task(name="comp.ignore")
def ignore(email: str = "") -> None:
    raise Ignore()


@app.task(name="comp.block")
def block(seconds: float, email: str = "", card: str = "") -> None:
    time.sleep(seconds)


@app.task(name="comp.pid")
def pid() -> int:
    return os.getpid()


@app.task(name="comp.noop", ignore_result=True)
def noop() -> None:
    return None


@app.task(name="comp.revoke_me")
def revoke_me(email: str = "") -> None:
    raise AssertionError("a revoked task ran")


@app.task(name="comp.expire_me")
def expire_me(email: str = "") -> None:
    raise AssertionError("an expired task ran")


@app.task(name="comp.limited", time_limit=0.5)
def limited(seconds: float) -> None:
    time.sleep(seconds)


# A task whose very name holds personal data: the check shows it scrubbed, nowhere raw.
PII_TASK_NAME = "comp.notify.jane.doe@example.com.4111111111111111"


@app.task(name=PII_TASK_NAME)
def notify_named(fail_it: bool = False) -> None:
    if fail_it:
        raise RuntimeError("planted")
