"""State store faults: the check still runs and emits its metrics, says what failed, and what
it could not commit is committed by the next check: the trigger is queued exactly once."""

from __future__ import annotations

import hashlib
import io
import json
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

from chalicelib.metrics import emit_metrics
from chalicelib.state.dynamodb import DynamoStore
from tests.conftest import producer
from tests.contract.test_dynamodb_errors import FakeDynamo
from tests.faults.helpers import (
    alerts,
    check_with_store,
    count_once,
    error_kinds,
    local_check,
    sqlite_outbox,
)
from tests.support.moto_server import MotoServer, create_table, make_client

TARGET = "default"


def workers_down(url: str) -> None:
    app = producer(url)
    for _ in range(3):
        app.quick.apply_async(queue="waiting")


def assert_complete_with_metrics(payload: dict[str, Any]) -> None:
    """The check itself ran: Redis seen, the alert raised, the metrics written."""
    assert payload["metrics"]["redis_connected"] is True
    assert payload["metrics"]["total_pending"] == 3
    assert alerts(payload).get("workers_down") == "firing", payload["alerts"]
    out = io.StringIO()
    docs = emit_metrics(payload, target=TARGET, stream=out)
    assert docs and out.getvalue().count("\n") == len(docs)


def outbox_notes(table: Any, client: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = client.scan(**kwargs)
        items += page.get("Items", [])
        if not page.get("LastEvaluatedKey"):
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return [
        json.loads(i["notification"]["S"])
        for i in items
        if i["sk"]["S"].startswith("OUTBOX#") and "notification" in i
    ]


class OwnMoto:
    """A moto server of this test, that can be stopped and started again on the same port
    (moto keeps its tables in this process, as DynamoDB keeps them while out of reach)."""

    def __init__(self) -> None:
        self.server = MotoServer().start()
        self.port = self.server.port
        self._restarted: ThreadedMotoServer | None = None

    def stop(self) -> None:
        if self._restarted is not None:
            self._restarted.stop()
            self._restarted = None
        self.server.stop()

    def start_again(self) -> None:
        self._restarted = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._restarted.start()


@pytest.fixture
def own_moto() -> Iterator[OwnMoto]:
    moto = OwnMoto()
    try:
        yield moto
    finally:
        moto.stop()


def new_table(endpoint: str) -> tuple[str, Any]:
    client = make_client(endpoint, attempts=1, timeout=1)
    name = "doorman-" + uuid.uuid4().hex[:8]
    create_table(client, name)
    return name, client


def record_once(fault_log, name: str, notes: list[dict[str, Any]]) -> None:  # type: ignore[no-untyped-def]
    lost, dupes = count_once(notes, "trigger", "workers_down")
    fault_log.record(name, alerts_lost=lost, duplicates=dupes)
    assert (lost, dupes) == (0, 0), notes


@pytest.mark.parametrize("when", ["before load", "before commit"])
def test_dynamodb_unreachable(when: str, own_moto, redis_server, fault_log) -> None:  # type: ignore[no-untyped-def]
    workers_down(redis_server.url)
    table, client = new_table(own_moto.server.endpoint_url)

    class StoppedBeforeCommit(DynamoStore):
        def commit(self, *args: Any, **kwargs: Any) -> Any:
            own_moto.stop()  # the store goes away between the load and the commit
            return super().commit(*args, **kwargs)

    if when == "before load":
        own_moto.stop()
        store: DynamoStore = DynamoStore(table, client)
        expected = "unreadable"
    else:
        store = StoppedBeforeCommit(table, client)
        expected = "commit_failed"
    blind = check_with_store(redis_server.url, store)
    assert not blind.committed
    assert error_kinds(blind.payload, "state") == [expected], blind.payload["errors"]
    assert_complete_with_metrics(blind.payload)

    own_moto.start_again()
    back = check_with_store(redis_server.url, DynamoStore(table, client))
    assert back.committed and error_kinds(back.payload, "state") == []
    again = check_with_store(redis_server.url, DynamoStore(table, client))
    assert again.committed
    record_once(fault_log, f"state: DynamoDB unreachable {when}", outbox_notes(table, client))


def test_dynamodb_throttling(dynamodb, redis_server, fault_log) -> None:  # type: ignore[no-untyped-def]
    workers_down(redis_server.url)
    fake = FakeDynamo()
    fake.thread.start()
    try:
        fake.answer(400, "ThrottlingException", "Rate of requests exceeds the allowed throughput.")
        throttled = make_client(fake.url, attempts=1, timeout=1)
        blind = check_with_store(redis_server.url, DynamoStore(dynamodb.name, throttled))
        throttled.close()
    finally:
        fake.server.shutdown()
        fake.server.server_close()
    assert not blind.committed
    assert error_kinds(blind.payload, "state") == ["unreadable"], blind.payload["errors"]
    assert "ThrottlingException" in blind.payload["errors"][-1]["message"]
    assert_complete_with_metrics(blind.payload)

    back = check_with_store(redis_server.url, DynamoStore(dynamodb.name, dynamodb.client))
    assert back.committed
    record_once(
        fault_log, "state: DynamoDB throttling", outbox_notes(dynamodb.name, dynamodb.client)
    )


def test_conditional_write_conflict(dynamodb, redis_server, fault_log) -> None:  # type: ignore[no-untyped-def]
    workers_down(redis_server.url)
    url = redis_server.url
    won: list[Any] = []

    class OvertakenBeforeCommit(DynamoStore):
        def commit(self, *args: Any, **kwargs: Any) -> Any:
            # Another check of the same target loads, runs and commits in between.
            won.append(check_with_store(url, DynamoStore(dynamodb.name, dynamodb.client)))
            return super().commit(*args, **kwargs)

    lost_race = check_with_store(url, OvertakenBeforeCommit(dynamodb.name, dynamodb.client))
    assert won and won[0].committed
    assert not lost_race.committed
    assert error_kinds(lost_race.payload, "state") == ["conflict"]
    assert lost_race.payload["notifications"] == []  # the winner owns them
    assert_complete_with_metrics(lost_race.payload)
    later = check_with_store(url, DynamoStore(dynamodb.name, dynamodb.client))
    assert later.committed
    record_once(
        fault_log, "state: conditional-write conflict", outbox_notes(dynamodb.name, dynamodb.client)
    )


def test_corrupt_sqlite_file_is_kept(redis_server, tmp_path: Path, fault_log) -> None:  # type: ignore[no-untyped-def]
    workers_down(redis_server.url)
    state = tmp_path / "doorman.db"
    state.write_bytes(b"SQLite format 3\x00" + random.Random(3).randbytes(8192))
    digest = hashlib.sha256(state.read_bytes()).hexdigest()

    blind = local_check(redis_server.url, state)
    assert error_kinds(blind, "state") == ["unreadable"], blind["errors"]
    assert_complete_with_metrics(blind)
    assert hashlib.sha256(state.read_bytes()).hexdigest() == digest  # kept, not overwritten

    # The operator moves it aside; the next check commits the trigger, once.
    state.rename(tmp_path / "doorman.db.corrupt")
    back = local_check(redis_server.url, state)
    assert error_kinds(back, "state") == []
    local_check(redis_server.url, state)
    assert hashlib.sha256((tmp_path / "doorman.db.corrupt").read_bytes()).hexdigest() == digest
    record_once(fault_log, "state: corrupt SQLite file", sqlite_outbox(state))
