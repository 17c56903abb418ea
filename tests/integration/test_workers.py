"""Workers as Doorman sees them: healthy, stuck, killed, busy, and the messages they leave.

Real Celery worker processes on a real redis-server; expected values are measured here
(hashes recomputed from the live names and ids, ages from the wall clock and Redis).
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from chalicelib.embedded import wait_for_workers
from chalicelib.sanitize import Hasher
from tests.conftest import producer, wait_until

HASHER = Hasher("test-secret")  # the checker fixture's hash_secret


def stamp(payload: dict[str, Any]) -> float:
    return datetime.fromisoformat(payload["timestamp"].replace("Z", "+00:00")).timestamp()


def statuses(payload: dict[str, Any]) -> dict[str, str]:
    return {w["id_hash"]: w["status"] for w in payload["workers"]}


def of_type(payload: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [a for a in payload["anomalies"] if a["type"] == kind]


def test_healthy_check_with_two_known_workers_does_not_wait_for_a_timeout(
    redis_server, workers, checker
):
    started = [workers.start("w1@fast", wait=False), workers.start("w2@fast", wait=False)]
    wait_for_workers(redis_server.url, ["w1@fast", "w2@fast"], timeout=45)
    # A check that waited for its remote-control timeout would take at least 2 s.
    check = checker(worker_timeout_seconds=2.0)
    try:
        first = check.check()
        assert first["metrics"]["alive_workers"] == 2
        second = check.check()  # the roster exists now

        assert statuses(second) == {
            HASHER.worker("w1@fast"): "online",
            HASHER.worker("w2@fast"): "online",
        }
        assert [w["concurrency"] for w in second["workers"]] == [2, 2]
        assert second["check_duration_ms"] < 800, second["check_duration_ms"]
        assert second["anomalies"] == []
    finally:
        for worker in started:
            worker.kill()  # faster than a warm shutdown


def test_task_running_past_the_limit_is_a_stuck_task(redis_server, workers, checker):
    worker = workers.start("w1@stuck", concurrency=1, queues=("work",))
    app = producer(redis_server.url)
    check = checker(**{"thresholds.max_task_runtime_seconds": 2})
    try:
        sent = time.time()
        result = app.sleep.apply_async((30,), queue="work")

        def running() -> bool:
            payload = check.check()
            return bool(payload["workers"]) and payload["workers"][0].get("active") == 1

        wait_until(running, 10, "the task to start")
        # The check's clock placed under the limit, then past it: no waiting, and the first
        # assertion holds however long the task took to start.
        early = check.check(at=sent + 1.0)
        assert of_type(early, "stuck_task") == [], "a task under the limit is not stuck"

        payload = check.check(at=max(time.time(), sent + 3.5))
        elapsed = stamp(payload) - sent
        stuck = of_type(payload, "stuck_task")
        assert len(stuck) == 1, payload["anomalies"]
        anomaly = stuck[0]
        assert anomaly["task_id_hash"].startswith("t-")
        assert anomaly["task_id_hash"] == HASHER.task(result.id)
        assert anomaly["worker_id_hash"] == HASHER.worker("w1@stuck")
        assert elapsed - 1.0 <= anomaly["duration_sec"] <= elapsed + 0.2, (anomaly, elapsed)
        assert payload["metrics"]["stuck_tasks"] == 1
        assert result.id not in json.dumps(payload)
    finally:
        worker.kill()


def test_unacked_message_of_a_killed_worker_is_an_orphan(redis_server, workers, checker):
    # One worker only: a live worker's kombu would restore the orphan into the queue.
    worker = workers.start(
        "w1@orphan", concurrency=1, queues=("work",), env={"PII_VISIBILITY_TIMEOUT": "3"}
    )
    client = redis_server.client()
    app = producer(redis_server.url)
    result = app.sleep.apply_async((60,), queue="work")
    wait_until(lambda: client.zcard("unacked_index") == 1, 10, "the task to be reserved")
    (_tag, taken_at), *_ = client.zrange("unacked_index", 0, 0, withscores=True)
    worker.kill()

    check = checker(visibility_timeout_seconds=3)
    fresh = check.check(at=taken_at + 1.0)
    assert statuses(fresh) == {HASHER.worker("w1@orphan"): "offline"}
    assert of_type(fresh, "orphaned_task") == [], "younger than the visibility timeout"

    payload = check.check(at=max(time.time(), taken_at + 3.5))
    orphans = of_type(payload, "orphaned_task")
    assert len(orphans) == 1, payload["anomalies"]
    orphan = orphans[0]
    assert orphan["task_id_hash"] == HASHER.task(result.id)
    assert orphan["task_name"] == "tasks.sleep"
    assert orphan["queue"] == "work"
    age = stamp(payload) - taken_at
    assert abs(orphan["duration_sec"] - age) <= 1.0, (orphan, age)
    assert payload["metrics"]["orphaned_tasks"] == 1
    assert payload["metrics"]["unacked_total"] == 1
    # Still there: Doorman only looked.
    assert client.zcard("unacked_index") == 1


def test_sigkilled_worker_is_offline_on_the_next_check(redis_server, workers, checker):
    survivor = workers.start("w1@kill", wait=False)
    doomed = workers.start("w2@kill", wait=False)
    wait_for_workers(redis_server.url, ["w1@kill", "w2@kill"], timeout=45)
    # Other pattern subscribers on the same Redis (worker gossip, event monitors such as
    # Flower) must not make a dead worker look alive.
    monitor = redis_server.client().pubsub()
    monitor.psubscribe("/0.celeryev/*")
    try:
        check = checker()
        before = check.check()
        assert set(statuses(before).values()) == {"online"}

        doomed.kill()
        after = check.check()
        assert statuses(after) == {
            HASHER.worker("w1@kill"): "online",
            HASHER.worker("w2@kill"): "offline",
        }
        assert after["metrics"]["alive_workers"] == 1
        assert after["check_duration_ms"] < 3500
    finally:
        monitor.close()
        survivor.kill()


def test_busy_solo_worker_is_not_answering_and_the_check_stays_in_budget(
    redis_server, workers, checker
):
    worker = workers.start("solo@busy", pool="solo", concurrency=1, queues=("work",))
    client = redis_server.client()
    app = producer(redis_server.url)
    check = checker(worker_timeout_seconds=1.0)
    try:
        assert statuses(check.check()) == {HASHER.worker("solo@busy"): "online"}

        app.sleep.apply_async((30,), queue="work")
        wait_until(lambda: client.zcard("unacked_index") == 1, 10, "the task to be taken")
        time.sleep(0.3)  # the solo pool is now inside the task and reads nothing

        started = time.perf_counter()
        payload = check.check()
        took = time.perf_counter() - started
        assert statuses(payload) == {HASHER.worker("solo@busy"): "not_answering"}
        assert payload["metrics"]["alive_workers"] == 0
        assert took < 3.5, took
        assert payload["check_duration_ms"] < 3500
    finally:
        worker.kill()


def test_two_collectors_of_one_broker_in_threads_never_deadlock(redis_server, workers):
    """kombu's process-wide pools are shared per broker URL; checks must take turns."""
    import threading

    from chalicelib.collect import Collector, ProbePlan
    from chalicelib.settings import load_settings

    workers.start("w1@threads")
    workers.start("w2@threads")
    settings = load_settings(environ={}, overrides={"redis_url": redis_server.url})
    collectors = [Collector(settings), Collector(settings)]
    seen: list[int] = []
    errors: list[BaseException] = []

    def run(collector: Collector) -> None:
        try:
            for _ in range(5):
                snapshot = collector.collect(ProbePlan())
                seen.append(sum(1 for w in snapshot.workers if w.status == "online"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in collectors]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads), "a collector hung"
        assert not errors, errors
        assert seen == [2] * 10
    finally:
        for c in collectors:
            c.close()


def test_slow_changing_detail_is_reused_between_checks_and_refreshed_on_change(
    redis_server, workers
):
    """Healthy checks ask only active; stats/reserved/scheduled/queues are refreshed on
    the detail interval, when the workers change, and when overdue unacked messages exist."""
    from chalicelib.collect import Collector, ProbePlan
    from chalicelib.settings import load_settings

    workers.start("w1@detail", queues=("celery", "detail-q"))
    settings = load_settings(environ={}, overrides={"redis_url": redis_server.url})
    collector = Collector(settings)
    try:
        first = collector.collect(ProbePlan())
        (w,) = [w for w in first.workers if w.status == "online"]
        assert w.detail_age_sec is None
        assert set(w.answered) == {"stats", "active", "reserved", "scheduled", "active_queues"}
        assert set(w.queues) == {"celery", "detail-q"}

        second = collector.collect(ProbePlan())
        (w2,) = [w for w in second.workers if w.status == "online"]
        assert set(w2.answered) == {"active"}
        assert w2.detail_age_sec is not None and w2.detail_age_sec >= 0
        # reused, and said to be
        assert (w2.queues, w2.concurrency, w2.pool) == (w.queues, w.concurrency, w.pool)
        assert (w2.processed, w2.uptime_sec) == (w.processed, w.uptime_sec)
        assert w.concurrency is not None and w.pool is not None

        workers.start("w2@detail")
        third = collector.collect(ProbePlan())
        assert all("active_queues" in x.answered for x in third.workers if x.status == "online"), (
            "a new worker must refresh the detail"
        )
    finally:
        collector.close()

    fresh = load_settings(
        environ={},
        overrides={"redis_url": redis_server.url, "worker_detail_interval_seconds": 0},
    )
    collector = Collector(fresh)
    try:
        collector.collect(ProbePlan())
        again = collector.collect(ProbePlan())
        assert all(
            {"stats", "reserved"} <= set(x.answered) for x in again.workers if x.status == "online"
        )
    finally:
        collector.close()


def test_a_dead_worker_left_in_the_roster_does_not_make_every_check_a_full_one(
    redis_server, workers
):
    """A worker killed without cleanup keeps its binding (and its place in the roster) until
    it is forgotten; the live workers must still be asked only ``active`` meanwhile."""
    from chalicelib.collect import Collector, ProbePlan
    from chalicelib.settings import load_settings

    workers.start("dead@roster").kill()
    workers.start("live@roster")
    settings = load_settings(
        environ={}, overrides={"redis_url": redis_server.url, "worker_timeout_seconds": 0.5}
    )
    collector = Collector(settings)
    try:
        first = collector.collect(ProbePlan())
        assert {w.hostname: w.status for w in first.workers} == {
            "dead@roster": "offline",
            "live@roster": "online",
        }
        for _ in range(2):
            again = collector.collect(ProbePlan())
            (live,) = [w for w in again.workers if w.status == "online"]
            assert live.answered == ("active",)
            assert live.concurrency is not None and live.detail_age_sec is not None
    finally:
        collector.close()


def test_one_collector_keeps_hearing_live_workers_after_a_round_that_timed_out(
    redis_server, workers
):
    """A reply wait that timed out (a dead worker in the roster) must not leave the next
    check of the same collector deaf: it once heard nobody every other check."""
    from chalicelib.collect import Collector, ProbePlan
    from chalicelib.settings import load_settings

    dead = workers.start("dead@loop")
    workers.start("live@loop")
    settings = load_settings(
        environ={}, overrides={"redis_url": redis_server.url, "worker_timeout_seconds": 0.5}
    )
    collector = Collector(settings)
    try:
        collector.collect(ProbePlan())
        dead.kill()
        statuses = []
        for _ in range(4):
            snapshot = collector.collect(ProbePlan())
            statuses.append({w.hostname: w.status for w in snapshot.workers})
        assert all(s["live@loop"] == "online" for s in statuses), statuses
        assert all(s["dead@loop"] == "offline" for s in statuses), statuses
    finally:
        collector.close()
