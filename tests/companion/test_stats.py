"""The counters and histograms themselves, the memory bound, and install()'s producer side."""

from __future__ import annotations

import itertools
import json
import time

import pytest
from celery import Celery
from celery.signals import before_task_publish
from kombu.utils.imports import symbol_by_name

import doorman_celery
from chalicelib.embedded import RedisServer
from doorman_celery._stats import REJECTED, SUCCEEDED, Stats
from doorman_celery._worker import Companion
from tests.companion.conftest import PUBLISH_UID

BUCKETS = doorman_celery.BUCKETS


def test_bucket_bounds_are_the_documented_ones() -> None:
    assert len(BUCKETS) == 43
    assert BUCKETS[:7] == (0.001, 0.0015, 0.002, 0.003, 0.005, 0.007, 0.01)
    assert BUCKETS[-2:] == (7000.0, 10000.0)
    assert all(b / a <= 1.67 for a, b in itertools.pairwise(BUCKETS))


def test_a_value_lands_in_the_bucket_whose_upper_bound_holds_it() -> None:
    stats = Stats()
    for value in (0.0, 0.001, 0.0011, 1.0, 1.2, 20000.0):
        stats.outcome("t", SUCCEEDED, value)
    runtime = stats.snapshot()["tasks"]["t"]["runtime"]
    counts = doorman_celery.dense(runtime)
    assert len(counts) == len(BUCKETS) + 1
    assert counts[0] == 2  # 0 and exactly 0.001
    assert counts[1] == 1  # 0.0011 <= 0.0015
    assert counts[BUCKETS.index(1.0)] == 1
    assert counts[BUCKETS.index(1.5)] == 1
    assert counts[-1] == 1  # above the last bound
    assert runtime["count"] == 6
    assert runtime["max"] == 20000.0
    assert runtime["sum"] == pytest.approx(20002.2021)
    assert runtime["first"] == 0
    assert runtime["counts"][-1] == 1 and len(runtime["counts"]) == len(BUCKETS) + 1


def test_counters_absent_when_zero_and_waits_clamped() -> None:
    stats = Stats()
    stats.outcome("a", REJECTED, None)
    stats.wait("q", -3.0)  # producer clock ahead: counts as no wait
    stats.wait("q", float("nan"))
    snap = stats.snapshot()
    assert snap["tasks"] == {"a": {"rejected": 1}}
    assert snap["queues"]["q"] == {"count": 2, "sum": 0.0, "max": 0.0, "first": 0, "counts": [2]}


def test_beyond_the_limits_everything_goes_to_overflow_and_says_so() -> None:
    stats = Stats(max_tasks=2, max_queues=1)
    for name in ("a", "b", "c", "d", "c"):
        stats.outcome(name, SUCCEEDED, 0.5)
    stats.wait("q1", 1.0)
    stats.wait("q2", 2.0)
    stats.wait("q3", 4.0)
    snap = stats.snapshot()
    assert set(snap["tasks"]) == {"a", "b"}
    assert snap["overflow"]["tasks"]["succeeded"] == 3
    assert snap["overflow"]["tasks"]["runtime"]["count"] == 3
    assert set(snap["queues"]) == {"q1"}
    assert snap["overflow"]["queues"]["count"] == 2
    assert snap["overflow"]["queues"]["max"] == 4.0
    # Nothing counted is lost.
    assert sum(t["succeeded"] for t in snap["tasks"].values()) + 3 == 5


def test_default_limits_are_1000_names_and_200_queues() -> None:
    stats = Stats()
    for i in range(1005):
        stats.outcome(f"task-{i}", SUCCEEDED, None)
    for i in range(203):
        stats.wait(f"queue-{i}", 0.1)
    snap = stats.snapshot()
    assert len(snap["tasks"]) == doorman_celery.MAX_TASKS == 1000
    assert snap["overflow"]["tasks"] == {"succeeded": 5}
    assert len(snap["queues"]) == doorman_celery.MAX_QUEUES == 200
    assert snap["overflow"]["queues"]["count"] == 3


def test_reset_is_a_new_boot_from_zero() -> None:
    stats = Stats()
    stats.outcome("a", SUCCEEDED, 0.1)
    boot = stats.boot
    stats.reset()
    assert stats.boot != boot and len(stats.boot) == 16
    assert stats.snapshot() == {"tasks": {}, "queues": {}, "overflow": {}}


def test_delta_and_quantile_over_an_interval() -> None:
    stats = Stats()
    for _ in range(90):
        stats.wait("q", 0.01)
    old = stats.snapshot()["queues"]["q"]
    for _ in range(95):
        stats.wait("q", 0.04)  # in (0.03, 0.05]
    for _ in range(5):
        stats.wait("q", 2.5)  # in (2, 3]
    new = stats.snapshot()["queues"]["q"]
    counts = doorman_celery.delta(new, old)
    assert sum(counts) == 100
    p50 = doorman_celery.quantile(counts, 0.5)
    p95 = doorman_celery.quantile(counts, 0.95)
    p99 = doorman_celery.quantile(counts, 0.99)
    assert p50 is not None and 0.03 < p50 <= 0.05
    assert p95 is not None and 0.03 < p95 <= 0.05
    assert p99 is not None and 2.0 < p99 <= 3.0
    assert doorman_celery.quantile([0] * (len(BUCKETS) + 1), 0.95) is None


def test_install_is_idempotent_and_stamps_each_message_once(redis_server: RedisServer) -> None:
    app = Celery("stamp-test", broker=redis_server.url, set_as_current=False)
    app.conf.broker_connection_retry_on_startup = True
    try:
        doorman_celery.install(app)
        doorman_celery.install(app)
        assert list(app.steps["worker"]) == [doorman_celery.WORKER_STEP]  # added once, by name
        assert symbol_by_name(doorman_celery.WORKER_STEP) is Companion
        ours = [r for r in before_task_publish.receivers if r[0][0] == PUBLISH_UID]
        assert len(ours) == 1

        before = time.time()
        app.send_task("comp.ok", queue="stamped")
        app.send_task("comp.ok", queue="kept", headers={doorman_celery.HEADER: 12.5})
    finally:
        before_task_publish.disconnect(dispatch_uid=PUBLISH_UID)
        app.close()
    client = redis_server.client()
    stamped = json.loads(client.lindex("stamped", 0))["headers"][doorman_celery.HEADER]
    assert isinstance(stamped, float) and before <= stamped <= time.time()
    assert json.loads(client.lindex("kept", 0))["headers"][doorman_celery.HEADER] == 12.5


def test_the_package_needs_no_chalicelib() -> None:
    import ast
    from pathlib import Path

    package = Path(doorman_celery.__file__).parent
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                top = name.split(".")[0]
                assert top in {"celery", "billiard", "kombu"} or top in _stdlib(), (path, name)


def _stdlib() -> frozenset[str]:
    import sys

    return frozenset(sys.stdlib_module_names) | {"__future__"}
