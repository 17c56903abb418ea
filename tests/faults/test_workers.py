"""Worker faults on real Celery workers: killed mid-task, frozen, renamed, none at all."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from chalicelib.embedded import wait_for_workers
from chalicelib.sanitize import Hasher
from tests.conftest import producer, wait_until
from tests.faults.helpers import SECRET, alerts, local_check

HASHER = Hasher(SECRET)


def statuses(payload):  # type: ignore[no-untyped-def]
    return {w["id_hash"]: w["status"] for w in payload["workers"]}


def test_sigkill_while_running_a_task_leaves_an_orphan(redis_server, workers, tmp_path, fault_log):  # type: ignore[no-untyped-def]
    worker = workers.start(
        "w1@orphan", concurrency=1, queues=("work",), env={"PII_VISIBILITY_TIMEOUT": "2"}
    )
    client = redis_server.client()
    result = producer(redis_server.url).sleep.apply_async((60,), queue="work")
    wait_until(lambda: client.zcard("unacked_index") == 1, 10, "the task to be reserved")
    (_tag, taken_at), *_ = client.zrange("unacked_index", 0, 0, withscores=True)
    state = tmp_path / "state.db"
    local_check(redis_server.url, state, visibility_timeout_seconds=2)  # roster knows it
    worker.kill()  # acks_late: the message stays unacked

    started = time.monotonic()
    # The check's clock past the visibility timeout instead of waiting for it.
    at = max(time.time(), taken_at + 2.5)
    payload = local_check(redis_server.url, state, at=at, visibility_timeout_seconds=2)
    assert time.monotonic() - started < 3.0
    assert statuses(payload) == {HASHER.worker("w1@orphan"): "offline"}
    orphans = [a for a in payload["anomalies"] if a["type"] == "orphaned_task"]
    assert [o["task_id_hash"] for o in orphans] == [HASHER.task(result.id)]
    assert payload["metrics"]["orphaned_tasks"] == 1
    assert client.zcard("unacked_index") == 1  # only looked at, still redeliverable
    fault_log.record(
        "workers: SIGKILL mid-task (acks_late)",
        alerts_lost=0 if orphans else 1,
        duplicates=max(0, len(orphans) - 1),
    )


def test_sigstopped_worker_is_not_answering_within_the_budget(
    redis_server, workers, tmp_path, fault_log
):  # type: ignore[no-untyped-def]
    worker = workers.start("w1@frozen", concurrency=1)
    state = tmp_path / "state.db"
    assert statuses(local_check(redis_server.url, state)) == {HASHER.worker("w1@frozen"): "online"}
    worker.signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        payload = local_check(redis_server.url, state)
        took = time.monotonic() - started
    finally:
        worker.signal(signal.SIGCONT)
        worker.kill()
    assert statuses(payload) in (
        {HASHER.worker("w1@frozen"): "not_answering"},
        {HASHER.worker("w1@frozen"): "offline"},
    ), payload["workers"]
    assert payload["metrics"]["alive_workers"] == 0
    assert took < 3.0, took
    assert alerts(payload).get("celery_disconnected") in ("pending", "firing"), payload["alerts"]
    fault_log.record("workers: SIGSTOP")


def test_worker_restarting_under_a_new_name(redis_server, workers, tmp_path, fault_log):  # type: ignore[no-untyped-def]
    old = workers.start("w1@old", concurrency=1)
    state = tmp_path / "state.db"
    forget = {"worker_forget_after_seconds": 1.0}
    assert statuses(local_check(redis_server.url, state, **forget)) == {
        HASHER.worker("w1@old"): "online"
    }
    old.kill()
    workers.start("w1@new", concurrency=1, wait=False)
    wait_for_workers(redis_server.url, ["w1@new"], timeout=45)

    seen = local_check(redis_server.url, state, **forget)
    assert statuses(seen) == {
        HASHER.worker("w1@old"): "offline",
        HASHER.worker("w1@new"): "online",
    }
    # The old name is forgotten after worker_forget_after_seconds (the checks' clock 1.1 s on
    # instead of waiting), and the new worker stays online in every check, back to back. (It
    # once went unheard every other check: a reply wait that timed out left a BRPOP in flight
    # on a pooled connection.)
    history = [
        statuses(local_check(redis_server.url, state, at=time.time() + 1.1, **forget))
        for _ in range(5)
    ]
    assert all(h == {HASHER.worker("w1@new"): "online"} for h in history), history
    fault_log.record("workers: restart under a new name")


def test_no_workers_at_all(redis_server, tmp_path: Path, fault_log) -> None:  # type: ignore[no-untyped-def]
    state = tmp_path / "state.db"
    started = time.monotonic()
    empty = local_check(redis_server.url, state)
    assert time.monotonic() - started < 3.0
    assert empty["workers"] == [] and empty["metrics"]["alive_workers"] == 0
    assert alerts(empty).get("celery_disconnected") in ("pending", "firing"), empty["alerts"]

    producer(redis_server.url).quick.apply_async(queue="waiting")
    pending = local_check(redis_server.url, state)
    assert alerts(pending).get("workers_down") == "firing", pending["alerts"]
    triggers = [n for n in pending["notifications"] if n["type"] == "workers_down"]
    fault_log.record(
        "workers: none", alerts_lost=0 if triggers else 1, duplicates=max(0, len(triggers) - 1)
    )
