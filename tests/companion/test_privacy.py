"""What leaves a worker: no task argument in the ``doorman`` reply; the ``stats`` marker."""

from __future__ import annotations

import json
import time

import pytest

import doorman_celery
from tests.companion.conftest import Companions, outcomes
from tests.conftest import wait_until

pytestmark = pytest.mark.slow  # real workers

EMAIL = "mary.major.planted@private-mail.example"
CARD = "5500-0000-0000-0004"
SECRET = "kwarg-SECRET-planted-77"
PLANTED = (EMAIL, CARD, SECRET, "mary.major", "private-mail", "0000-0004", "SECRET")
ACTIVE_KEYS = {"id", "name", "time_start", "worker_pid", "queue"}


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_the_reply_carries_no_argument_bytes(companions: Companions, pool: str) -> None:
    name = f"privacy-{pool}@companion"
    companions.start(name, pool=pool, concurrency=2)
    send = companions.send
    later = send("comp.ok", EMAIL, countdown=60)  # held for its ETA: scheduled
    running = [send("comp.block", 1.5, EMAIL, kwargs={"card": CARD}) for _ in range(2)]
    send("comp.fail", 0.0, EMAIL, CARD)  # raises with the planted values in its message
    send("comp.ok", kwargs={"email": EMAIL, "card": SECRET})

    # Celery's own answer carries them: the planted values are really there to leak (once
    # the pool has started the blockers: asked too soon, active is still empty).
    def leaks() -> bool:
        return EMAIL in json.dumps(companions.client.control.inspect(destination=[name]).active())

    wait_until(leaks, 20, "Celery's active reply to carry the planted address")

    reply = companions.wait_for(name, lambda r: len(r["active"]) == 2 and r["scheduled"])
    assert [s["id"] for s in reply["scheduled"]] == [later]
    assert abs(reply["scheduled"][0]["eta"] - (time.time() + 60)) < 10
    assert reply["reserved"] == []
    assert sorted(a["id"] for a in reply["active"]) == sorted(running)
    for entry in reply["active"]:
        assert set(entry) == ACTIVE_KEYS
        assert entry["name"] == "comp.block"
        assert entry["queue"] == "celery"
        assert isinstance(entry["time_start"], float)
        if pool == "prefork":
            assert entry["worker_pid"] != reply["pid"]
        else:
            assert entry["worker_pid"] == reply["pid"]
    # The failure and the success are counted; nothing of their arguments or message is kept.
    done = companions.wait_for(name, lambda r: {"comp.fail", "comp.ok"} <= set(r["tasks"]))
    assert outcomes(done)["comp.fail"] == {"failed": 1}
    assert outcomes(done)["comp.ok"] == {"succeeded": 1}
    for answer in (reply, done):
        wire = json.dumps(answer)
        for value in PLANTED:
            assert value not in wire, value
        assert set(answer) == {
            "v", "boot", "pid", "started", "active", "reserved", "scheduled", "tasks", "queues",
            "overflow", "buckets",
        }  # fmt: skip


def test_stats_marks_workers_with_the_companion_only(companions: Companions) -> None:
    companions.start("with@companion", pool="solo", concurrency=1)
    companions.start("without@companion", pool="solo", concurrency=1, env={"COMPANION": "0"})
    stats = companions.client.control.inspect(
        destination=["with@companion", "without@companion"], timeout=2
    ).stats()
    assert stats["with@companion"][doorman_celery.STATS_KEY] == {
        "v": doorman_celery.VERSION,
        "command": doorman_celery.COMMAND,
    }
    assert doorman_celery.STATS_KEY not in stats["without@companion"]
    # The command exists only in the worker of the app that installed the companion.
    assert (companions.ask("with@companion") or {}).get("v") == doorman_celery.VERSION
    # A worker without it answers Celery's error for an unknown command.
    assert companions.ask("without@companion", timeout=1.0) == {"error": "KeyError('doorman')"}
    # The worker without it still answers the usual commands.
    replies = companions.client.control.ping(destination=["without@companion"], timeout=1)
    assert replies and "without@companion" in replies[0]
