"""A Celery app on a Sentinel-managed broker, for the Sentinel tests' workers."""

from __future__ import annotations

import os

from celery import Celery

app = Celery("sentinel-app", broker=os.environ.get("DOORMAN_DEMO_BROKER", "sentinel://127.0.0.1:1"))
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    broker_transport_options={
        "master_name": os.environ.get("SENTINEL_MASTER", "mymaster"),
        "sentinel_kwargs": {"password": os.environ.get("SENTINEL_PASSWORD") or None},
    },
)


@app.task(name="tasks.sleep")
def sleep(seconds: float) -> None:
    import time

    time.sleep(seconds)
