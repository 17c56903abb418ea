"""A Celery app whose names, ids, arguments and settings are full of planted personal data.

Every value in PLANTED must never appear in anything Doorman prints, logs or writes.
"""

from __future__ import annotations

import os
import time

from celery import Celery

PLANTED_EMAIL = "jane.roe.planted@acme-private.com"
PLANTED_CARD = "4111-1111-1111-1111"
PLANTED_SSN = "078-05-1120"
PLANTED_PHONE = "+1 415 555 0199"
PLANTED_SECRET_SETTING = "sk_live_PLANTEDSETTING0042"
PLANTED_TRANSPORT_PASSWORD = "PLANTEDTRANSPORTPW77"
PLANTED_KWARG = "kwarg-PLANTED-secret-value"
PLANTED_TASK_ID = "order-" + PLANTED_EMAIL + "-998877"
PLANTED_TASK_NAME = "tasks.process_user_98765"
PLANTED_QUEUE = "emails-" + PLANTED_EMAIL
PLANTED_WORKER_HOST = "db-7-jane.internal"

PLANTED = (
    PLANTED_EMAIL,
    PLANTED_CARD,
    PLANTED_SSN,
    PLANTED_PHONE,
    PLANTED_SECRET_SETTING,
    PLANTED_TRANSPORT_PASSWORD,
    PLANTED_KWARG,
    PLANTED_TASK_ID,
    "98765",
    PLANTED_WORKER_HOST,
)

DOCS_PRIORITY = {"priority_steps": list(range(10)), "sep": ":", "queue_order_strategy": "priority"}

app = Celery("pii-app", broker=os.environ.get("DOORMAN_DEMO_BROKER", "redis://127.0.0.1:1/0"))
app.conf.update(
    task_acks_late=os.environ.get("PII_ACKS_LATE", "1") == "1",
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    broker_transport_options={
        "visibility_timeout": float(os.environ.get("PII_VISIBILITY_TIMEOUT", "3600")),
        "planted_password": PLANTED_TRANSPORT_PASSWORD,
        "global_keyprefix": os.environ.get("PII_KEYPREFIX", ""),
    },
    secret_api_key=PLANTED_SECRET_SETTING,
)
if not os.environ.get("PII_KEYPREFIX"):
    del app.conf.broker_transport_options["global_keyprefix"]
if os.environ.get("PII_DOCS_PRIORITY") == "1":
    # The Redis priority setup Celery's documentation recommends.
    app.conf.broker_transport_options.update(DOCS_PRIORITY)

if os.environ.get("PII_PRODUCER_HOOK") == "1":
    import doorman_celery

    doorman_celery.install(app)


@app.task(name=PLANTED_TASK_NAME)
def process_user(email: str, card: str, note: str = "", secret: str = "") -> str:
    return f"{email}:{card}"


@app.task(name="tasks.sleep")
def sleep(seconds: float, email: str = "", secret: str = "") -> None:
    time.sleep(seconds)


@app.task(name="tasks.quick")
def quick(email: str = "") -> None:
    return None
