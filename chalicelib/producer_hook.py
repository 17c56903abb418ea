"""Optional producer hook: stamp the publish time on every task message.

Celery messages carry no publish time, so without help Doorman can only bound a queue's
latency from below. Add this to the module that creates your Celery app::

    from chalicelib.producer_hook import install
    install()

or copy this file into your project: it needs nothing but Celery. Every task published by
that process then carries an ``x_published_at`` header (epoch seconds), and Doorman reports
the exact age of the oldest waiting message with ``latency_source: producer_header``.
The header holds a number only; nothing about the task's arguments is added or read.
"""

from __future__ import annotations

import time
from typing import Any

HEADER = "x_published_at"


def stamp_publish_time(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """``before_task_publish`` receiver: add the publish time unless a retry already has it."""
    if headers is not None and HEADER not in headers:
        headers[HEADER] = time.time()


def install() -> None:
    """Connect the receiver to Celery's ``before_task_publish`` signal (idempotent)."""
    from celery.signals import before_task_publish

    before_task_publish.connect(stamp_publish_time, weak=False, dispatch_uid="doorman-publish-time")
