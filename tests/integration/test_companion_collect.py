"""The collector with real workers, one with the worker companion and one without.

Redis ``MONITOR`` records every remote-control command the collector publishes (kombu's
pidbox: a JSON envelope around a base64 JSON body naming the method and its destination)
and every reply the workers push back, so each test reads off the wire which worker was
asked what, in how many rounds, and what came back.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from chalicelib.collect import Collector, ProbePlan
from chalicelib.embedded import RedisServer, Worker, wait_for_workers
from chalicelib.model import Snapshot, WorkerRaw
from chalicelib.settings import load_settings
from tests.conftest import wait_until
from tests.integration.test_privacy import CommandLog

pytestmark = pytest.mark.slow  # real workers

ROOT = Path(__file__).resolve().parent.parent.parent
APP = "tests.support.companion_app"
WITH = "with@companion-collect"
PLAIN = "plain@companion-collect"
EMAIL = "ruth.planted@private-mail.example"
CARD = "6011-0000-0000-0004"
ARGUMENT_CARRIERS = {"active", "reserved", "scheduled"}


@dataclass
class Cluster:
    url: str
    running: dict[str, str]  # worker name -> id of the task it runs

    def collector(self) -> Collector:
        settings = load_settings(
            environ={}, overrides={"redis_url": self.url, "worker_timeout_seconds": 1.0}
        )
        return Collector(settings)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A companion worker and a plain one, each running a task with planted arguments."""
    server = RedisServer().start()
    started: list[Worker] = []
    client = Celery("companion-collect-client", broker=server.url, set_as_current=False)
    try:
        for name, queue, env in ((WITH, "with-q", {}), (PLAIN, "plain-q", {"COMPANION": "0"})):
            worker = Worker(
                APP,
                server.url,
                name,
                pool="prefork",
                concurrency=2,
                queues=(queue,),
                env=env,
                cwd=str(ROOT),
            )
            started.append(worker.start())
        wait_for_workers(server.url, [WITH, PLAIN], timeout=45)
        running = {}
        for name, queue in ((WITH, "with-q"), (PLAIN, "plain-q")):
            task_id = str(uuid.uuid4())
            client.send_task(
                "comp.block", args=(120.0, EMAIL), kwargs={"card": CARD}, queue=queue,
                task_id=task_id,
            )  # fmt: skip
            running[name] = task_id
        redis_client = server.client()
        wait_until(
            lambda: redis_client.llen("with-q") + redis_client.llen("plain-q") == 0,
            20,
            "both workers to take their task",
        )
        yield Cluster(server.url, running)
    finally:
        client.close()
        for worker in started:
            worker.stop()
        server.stop()


def _body(payload: str) -> Any:
    envelope = json.loads(payload)
    return json.loads(base64.b64decode(envelope["body"]))


@dataclass
class Wire:
    rounds: list[list[tuple[str, tuple[str, ...]]]]  # per round: (method, destination)
    replies: dict[str, list[str]]  # per worker: the JSON of each reply it pushed

    def asked(self, worker: str) -> set[str]:
        return {m for r in self.rounds for m, dest in r if worker in dest}


def read_wire(commands: list[tuple[str, list[str]]]) -> Wire:
    """The collector's rounds (each publishes its commands, collects, then deletes its reply
    queue: a publish after that delete opens the next round) and the workers' replies, from
    MONITOR's record."""
    rounds: list[list[tuple[str, tuple[str, ...]]]] = []
    replies: dict[str, list[str]] = {}
    ended = True
    for _client, argv in commands:
        name = argv[0].upper() if argv else ""
        if name == "DEL" and argv[1].endswith(".reply.celery.pidbox"):
            ended = True
        elif name == "PUBLISH" and argv[1].endswith("celery.pidbox"):
            if ended:
                rounds.append([])
                ended = False
            body = _body(argv[2])
            rounds[-1].append((body["method"], tuple(sorted(body["destination"] or ()))))
        elif name == "LPUSH" and argv[1].endswith(".reply.celery.pidbox"):
            for host, reply in _body(argv[2]).items():
                replies.setdefault(host, []).append(json.dumps(reply))
    return Wire(rounds, replies)


def collect(
    collector: Collector, cluster: Cluster, plan: ProbePlan
) -> tuple[Snapshot, Wire, dict[str, WorkerRaw]]:
    log = CommandLog(_client(cluster.url))
    with log.recording():
        snapshot = collector.collect(plan)
    workers = {w.hostname: w for w in snapshot.workers}
    return snapshot, read_wire(log.commands), workers


def _client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url)


def plan_knowing(known: dict[str, bool]) -> ProbePlan:
    lookup: Callable[[str], bool | None] = known.get
    return ProbePlan(companion_of=lookup)


def assert_companion_data(worker: WorkerRaw, cluster: Cluster) -> None:
    assert worker.status == "online"
    assert worker.has_companion is True
    assert worker.companion is not None and len(worker.companion.boot) == 16
    assert len(worker.companion.bounds) == 43
    assert [(t.task_id, t.task_name) for t in worker.active] == [
        (cluster.running[WITH], "comp.block")
    ]
    assert worker.active[0].started_at is not None
    assert "doorman" in worker.answered and not ARGUMENT_CARRIERS & set(worker.answered)


def assert_plain_data(worker: WorkerRaw, cluster: Cluster) -> None:
    assert worker.status == "online"
    assert worker.has_companion is False and worker.companion is None
    assert [t.task_id for t in worker.active] == [cluster.running[PLAIN]]
    assert "active" in worker.answered and "doorman" not in worker.answered


def test_a_first_collect_learns_the_marker_then_asks_each_worker_its_own_commands(
    cluster: Cluster,
) -> None:
    collector = cluster.collector()
    try:
        snapshot, wire, workers = collect(collector, cluster, ProbePlan())
    finally:
        collector.close()
    assert snapshot.errors == ()
    # Round 1: stats only, to both (nothing was known); round 2: each its own commands.
    assert len(wire.rounds) == 2, wire.rounds
    assert wire.rounds[0] == [("stats", tuple(sorted((WITH, PLAIN))))]
    assert wire.asked(WITH) == {"stats", "doorman", "active_queues"}
    assert wire.asked(PLAIN) == {"stats", "active", "reserved", "scheduled", "active_queues"}
    assert_companion_data(workers[WITH], cluster)
    assert_plain_data(workers[PLAIN], cluster)
    assert workers[WITH].queues == ("with-q",) and workers[WITH].concurrency == 2

    # On the wire: the plain worker's active reply carries the arguments; nothing the
    # companion worker sent does.
    assert any(EMAIL in reply and CARD in reply for reply in wire.replies[PLAIN])
    assert wire.replies[WITH]
    for reply in wire.replies[WITH]:
        assert EMAIL not in reply and CARD not in reply


def test_a_plan_that_knows_the_companions_asks_in_one_round(cluster: Cluster) -> None:
    collector = cluster.collector()
    plan = plan_knowing({WITH: True, PLAIN: False})
    try:
        first, wire, workers = collect(collector, cluster, plan)
        assert first.errors == ()
        assert len(wire.rounds) == 1, wire.rounds  # the detail of a first check, one round
        assert wire.asked(WITH) == {"doorman", "stats", "active_queues"}
        assert wire.asked(PLAIN) == {"active", "stats", "reserved", "scheduled", "active_queues"}
        assert_companion_data(workers[WITH], cluster)
        assert_plain_data(workers[PLAIN], cluster)

        second, wire, workers = collect(collector, cluster, plan)
        assert second.errors == ()
        assert [sorted(r) for r in wire.rounds] == [[("active", (PLAIN,)), ("doorman", (WITH,))]]
        assert_companion_data(workers[WITH], cluster)
        assert_plain_data(workers[PLAIN], cluster)
        # The detail of the first check, said to be, with this check's running tasks.
        assert workers[WITH].detail_age_sec is not None
        assert workers[WITH].queues == ("with-q",) and workers[WITH].concurrency == 2
        before = {w.hostname: w.companion for w in first.workers}[WITH]
        now = workers[WITH].companion
        assert before is not None and now is not None and now.boot == before.boot
    finally:
        collector.close()


def test_a_worker_without_the_command_is_told_plain_and_never_asked_active_meanwhile(
    cluster: Cluster,
) -> None:
    """The roster says the plain worker has the companion (it had, before a deploy)."""
    collector = cluster.collector()
    try:
        plan = plan_knowing({WITH: True, PLAIN: True})
        collector.collect(plan)  # the first check's detail: stats say the marker is gone
        snapshot, wire, workers = collect(collector, cluster, plan)
        assert wire.asked(PLAIN) == {"doorman"} and len(wire.rounds) == 1
        plain = workers[PLAIN]
        assert plain.status == "online" and plain.has_companion is False
        assert plain.companion is None and plain.active == ()
        assert [(e.component, e.kind) for e in snapshot.errors] == [
            ("workers", "companion_missing")
        ]
        assert_companion_data(workers[WITH], cluster)

        # The next check's plan says what this one learned: the plain worker is asked active.
        _, wire, workers = collect(collector, cluster, plan_knowing({WITH: True, PLAIN: False}))
        assert wire.asked(PLAIN) == {"active"} and wire.asked(WITH) == {"doorman"}
        assert_plain_data(workers[PLAIN], cluster)
    finally:
        collector.close()
