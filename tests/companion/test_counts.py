"""Exact outcome counts from real workers of every pool against the truth the test knows.

Each test sends a known number of succeeding, failing, retrying, rejecting, ignored, revoked
and expiring tasks to a real worker and compares the ``doorman`` reply with those numbers.
"""

from __future__ import annotations

import importlib.util
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import doorman_celery
from tests.companion.conftest import Companions, outcomes, publish_header, total

pytestmark = pytest.mark.slow  # real workers


def _pool(name: str) -> Any:
    installed = importlib.util.find_spec(name) is not None
    return pytest.param(name, marks=pytest.mark.skipif(not installed, reason=f"{name} absent"))


POOLS = ["prefork", "threads", "solo", _pool("gevent"), _pool("eventlet")]
BLOCK = 1.0  # seconds each blocker holds a pool slot
OK_SLEEP = 0.05


@pytest.mark.parametrize("pool", POOLS)
def test_counts_per_task_name_equal_the_truth(companions: Companions, pool: str) -> None:
    slots = 1 if pool == "solo" else 2
    name = f"counts-{pool}@companion"
    companions.start(name, pool=pool, concurrency=slots)
    send = companions.send
    client = companions.client

    # Revoked by id before they arrive: discarded on receipt.
    revoked_ids = [f"revoke-{pool}-{i}" for i in range(2)]
    client.control.revoke(revoked_ids, destination=[name], reply=True, timeout=2)

    with publish_header(client):
        # Every slot busy, then tasks that expire while they wait behind the blockers.
        for _ in range(slots):
            send("comp.block", BLOCK)
        soon = datetime.now(UTC) + timedelta(seconds=0.3)
        for _ in range(2):
            send("comp.expire_me", expires=soon)
        send("comp.expire_me", expires=datetime.now(UTC) - timedelta(seconds=5))  # already past
        for task_id in revoked_ids:
            send("comp.revoke_me", task_id=task_id)
        for _ in range(5):
            send("comp.ok", OK_SLEEP)
        for _ in range(3):
            send("comp.fail")
        for _ in range(2):
            send("comp.retry", kwargs={"succeed_on": 1})  # one retry, then success
        send("comp.retry")  # max_retries=2: two retries, then failure
        for _ in range(2):
            send("comp.reject")
        send("comp.ignore")
        hard_limit = pool == "prefork"  # time limits need a process to kill
        if hard_limit:
            send("comp.limited", 5.0)

    truth: dict[str, dict[str, int]] = {
        "comp.block": {"succeeded": slots},
        "comp.expire_me": {"expired": 3},
        "comp.revoke_me": {"revoked": 2},
        "comp.ok": {"succeeded": 5},
        "comp.fail": {"failed": 3},
        "comp.retry": {"succeeded": 2, "retried": 4, "failed": 1},
        "comp.reject": {"rejected": 2},
    }
    if hard_limit:
        truth["comp.limited"] = {"failed": 1}
    expected = sum(sum(c.values()) for c in truth.values())

    reply = companions.wait_for(name, lambda r: total(r) >= expected and not r["active"])
    assert outcomes(reply) == truth  # comp.ignore: no outcome, so no entry

    tasks = reply["tasks"]
    block = tasks["comp.block"]["runtime"]
    assert block["count"] == slots
    assert BLOCK * slots <= block["sum"] <= (BLOCK + 0.5) * slots
    assert BLOCK <= block["max"] <= BLOCK + 0.5
    ok = tasks["comp.ok"]["runtime"]
    assert ok["count"] == 5
    assert 5 * OK_SLEEP <= ok["sum"] <= 5 * (OK_SLEEP + 0.2)
    assert OK_SLEEP <= ok["max"] <= OK_SLEEP + 0.2
    assert tasks["comp.retry"]["runtime"]["count"] == 7  # every run: 4 retried, 3 ended
    assert tasks["comp.fail"]["runtime"]["count"] == 3
    assert tasks["comp.reject"]["runtime"]["count"] == 2
    assert "runtime" not in tasks["comp.revoke_me"]
    assert "runtime" not in tasks["comp.expire_me"]
    if hard_limit:
        limited = tasks["comp.limited"]["runtime"]
        assert limited["count"] == 1
        assert 0.5 <= limited["max"] <= 3.0
    for hist in (block, ok):
        counts = doorman_celery.dense(hist)
        assert sum(counts) == hist["count"]

    # Every task that started carried the header: the blockers, 5 ok, 3 fail, 7 retry runs,
    # 2 reject, 1 ignore (and the hard-limited one).
    started = slots + 5 + 3 + 7 + 2 + 1 + (1 if hard_limit else 0)
    wait = reply["queues"]["celery"]
    assert wait["count"] == started
    assert set(reply["queues"]) == {"celery"}
    # The ones queued behind the blockers waited about BLOCK seconds.
    assert BLOCK * 0.8 <= wait["max"] <= BLOCK + 5.0
    assert 0.0 <= wait["sum"] <= started * (BLOCK + 5.0)
    assert reply["overflow"] == {}
    assert reply["pid"] == companions.started[0].proc.pid  # type: ignore[union-attr]


def test_restart_is_a_new_boot_and_waits_need_the_header(companions: Companions) -> None:
    name = "restart@companion"
    worker = companions.start(name, pool="threads", concurrency=2)
    for _ in range(3):
        companions.send("comp.ok")  # no header
    first = companions.wait_for(name, lambda r: total(r) >= 3)
    assert outcomes(first) == {"comp.ok": {"succeeded": 3}}
    assert first["queues"] == {}  # not measured without the producer header

    with publish_header(companions.client):
        for _ in range(2):
            companions.send("comp.ok")
    second = companions.wait_for(name, lambda r: total(r) >= 5)
    assert second["boot"] == first["boot"]
    assert outcomes(second) == {"comp.ok": {"succeeded": 5}}
    assert second["queues"]["celery"]["count"] == 2

    worker.stop()
    companions.start(name, pool="threads", concurrency=2)
    fresh = companions.ask(name)
    assert fresh is not None
    assert fresh["boot"] != first["boot"]
    assert fresh["pid"] != first["pid"]
    assert fresh["tasks"] == {} and fresh["queues"] == {}
    companions.send("comp.fail")
    after = companions.wait_for(name, lambda r: total(r) >= 1)
    assert outcomes(after) == {"comp.fail": {"failed": 1}}
    assert after["started"] >= first["started"]


def test_an_apps_own_request_class_is_kept_and_runs_in_the_main_process(
    companions: Companions, tmp_path: Any
) -> None:
    seen = tmp_path / "seen.txt"
    name = "own-request@companion"
    companions.start(
        name,
        pool="prefork",
        concurrency=2,
        env={"COMPANION_REQUEST": "1", "COMPANION_SEEN_FILE": str(seen)},
    )
    companions.send("comp.ok")
    companions.send("comp.fail")
    companions.send("comp.block", 2.0)
    running = companions.wait_for(name, lambda r: total(r) >= 2 and r["active"])
    assert outcomes(running) == {"comp.ok": {"succeeded": 1}, "comp.fail": {"failed": 1}}
    # The task runs in a pool child; its outcome is counted by the main process.
    (active,) = running["active"]
    assert active["name"] == "comp.block"
    assert active["worker_pid"] != running["pid"]
    # The app's own Request hooks still run, in the main process, as the companion's do.
    lines = seen.read_text().split()
    pids = {int(pid) for pid in lines[1::2]}
    assert set(lines[0::2]) == {"own-accepted", "own-failure"}
    assert lines.count("own-accepted") == 3
    assert lines.count("own-failure") == 1
    assert pids == {running["pid"]}
    assert os.getpid() not in pids
