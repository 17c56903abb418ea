"""The small Celery app that ``doorman simulate`` runs on real worker processes."""

from __future__ import annotations

import os
import time

from celery import Celery

import doorman_celery

app = Celery(
    "doorman-demo", broker=os.environ.get("DOORMAN_DEMO_BROKER", "redis://127.0.0.1:6399/0")
)
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_default_queue="celery",
)
doorman_celery.install(app)


@app.task(name="demo.send_welcome_email")  # type: ignore[untyped-decorator]
def send_welcome_email(address: str, body: str) -> None:
    time.sleep(0.05)


@app.task(name="demo.build_report")  # type: ignore[untyped-decorator]
def build_report(seconds: float) -> None:
    time.sleep(seconds)


# A charge above this many cents is declined (the demo's stand-in for a payment provider).
CARD_LIMIT_CENTS = 5000


class CardDeclined(Exception):
    """The demo's payment failure. Its message names no argument: errors end up in logs."""


@app.task(name="demo.charge_card")  # type: ignore[untyped-decorator]
def charge_card(address: str, amount_cents: int) -> None:
    time.sleep(0.01)
    if amount_cents > CARD_LIMIT_CENTS:
        raise CardDeclined("card declined")
