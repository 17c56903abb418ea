"""A Celery app with the worker companion and one long task whose arguments are planted data.

tests/companion/test_wire_privacy.py runs its workers and listens to everything they say
on the wire: none of PLANTED may be in it. Prefetch 2 per pool slot (and late acks), so a
worker running its slots full also holds tasks it has not started.
"""

from __future__ import annotations

import os
import time

from celery import Celery

import doorman_celery

PLANTED_EMAIL = "wanda.wiretap.planted@private-mail.example"
PLANTED_CARD = "3782-822463-10005"
PLANTED_PHONE = "+44 20 7946 0958"
PLANTED_TOKEN = "tok_WIREPLANTED_9f8e7d6c5b"

PLANTED = (PLANTED_EMAIL, PLANTED_CARD, PLANTED_PHONE, PLANTED_TOKEN)

app = Celery("wire-app", broker=os.environ.get("DOORMAN_DEMO_BROKER", "redis://127.0.0.1:1/0"))
app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=2,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_default_queue="celery",
)
doorman_celery.install(app)


@app.task(name="wire.hold")
def hold(seconds: float, email: str, card: str, phone: str = "", token: str = "") -> None:
    """Sleeps ``seconds``; the planted values ride along in args (email, card) and kwargs."""
    time.sleep(seconds)
