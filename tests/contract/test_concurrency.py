"""Two checks of one target at the same time: one commit wins, one notification is queued.

Workers are down and tasks wait, so each check decides to send a ``workers_down`` trigger.
Both load the same version before either commits (they meet at a barrier inside commit).
The loser's conditional write fails whole: it reports a conflict and queues nothing.
"""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import threading
from typing import Any

import pytest

from chalicelib.state import TargetState
from chalicelib.state.dynamodb import DynamoStore
from chalicelib.state.sqlite import SqliteStore
from tests.conftest import producer
from tests.contract.racing import TARGET, dynamodb_racer, sqlite_racer

pytestmark = pytest.mark.slow  # races real check processes and workers: the full suite only


def pending_tasks(redis_url: str, count: int = 3) -> None:
    app = producer(redis_url)
    for _ in range(count):
        app.quick.apply_async(queue="waiting")


def assert_one_winner(payloads: list[dict[str, Any]]) -> None:
    assert len(payloads) == 2

    def conflicted(p: dict[str, Any]) -> bool:
        return any(e.get("kind") == "conflict" for e in p["errors"])

    losers = [p for p in payloads if conflicted(p)]
    winners = [p for p in payloads if not conflicted(p)]
    assert len(winners) == 1 and len(losers) == 1, [p["errors"] for p in payloads]
    (winner,), (loser,) = winners, losers
    assert winner["errors"] == [], winner["errors"]
    assert [e["kind"] for e in loser["errors"]] == ["conflict"], loser["errors"]
    assert [(n["type"], n["action"]) for n in winner["notifications"]] == [
        ("workers_down", "trigger")
    ]
    assert loser["notifications"] == []
    conflict = next(e for e in loser["errors"] if e["kind"] == "conflict")
    assert conflict["component"] == "state"
    # Both saw the same trouble: the loser lost the race, not the diagnosis.
    assert any(a["type"] == "workers_down" for a in loser["alerts"])


@pytest.mark.parametrize("prior_version", [0, 1])
def test_sqlite_two_processes_one_commit_one_notification(redis_server, tmp_path, prior_version):
    pending_tasks(redis_server.url)
    state_path = str(tmp_path / "state.db")
    if prior_version:
        store = SqliteStore(state_path)
        store.commit(TARGET, TargetState(), 0)
        store.close()

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=sqlite_racer, args=(redis_server.url, state_path, barrier, results))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    try:
        outcomes = [results.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
    assert [kind for kind, _ in outcomes] == ["ok", "ok"], outcomes
    assert_one_winner([payload for _, payload in outcomes])

    conn = sqlite3.connect(state_path)
    try:
        rows = conn.execute("SELECT body FROM outbox").fetchall()
        version = conn.execute("SELECT version FROM targets").fetchone()[0]
    finally:
        conn.close()
    actions = [json.loads(body)["action"] for (body,) in rows]
    assert actions.count("trigger") == 1 and len(actions) == 1
    assert version == prior_version + 1
    loaded = SqliteStore(state_path)
    try:
        assert loaded.load(TARGET).alerts[f"workers_down:{TARGET}"].notified is True
    finally:
        loaded.close()


@pytest.mark.parametrize("prior_version", [0, 1])
def test_dynamodb_two_threads_one_commit_one_notification(redis_server, dynamodb, prior_version):
    pending_tasks(redis_server.url)
    if prior_version:
        DynamoStore(dynamodb.name, dynamodb.client).commit(TARGET, TargetState(), 0)

    barrier = threading.Barrier(2)
    # DynamoDB serializes transactions on an item; moto applies concurrent TransactWriteItems
    # without isolation (seen losing a winner's writes and failing with "dictionary changed
    # size during iteration"), so the two commits reach it one after the other. Both checks
    # have still loaded the same version before either commits.
    serialize = threading.Lock()
    collect_lock = threading.Lock()  # see racing.OneAtATimeCollector
    results: list[tuple[str, Any]] = []
    threads = [
        threading.Thread(
            target=dynamodb_racer,
            args=(
                redis_server.url,
                dynamodb.name,
                dynamodb.client,
                barrier,
                serialize,
                collect_lock,
                results,
            ),
        )
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert [kind for kind, _ in results] == ["ok", "ok"], results
    assert_one_winner([payload for _, payload in results])

    outbox = [i for i in dynamodb.items() if i["sk"]["S"].startswith("OUTBOX#")]
    assert [i["action"]["S"] for i in outbox] == ["trigger"]
    loaded = DynamoStore(dynamodb.name, dynamodb.client).load(TARGET)
    assert loaded.version == prior_version + 1
    assert loaded.alerts[f"workers_down:{TARGET}"].notified is True
