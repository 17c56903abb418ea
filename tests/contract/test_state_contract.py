"""The state store contract, run against SQLite and DynamoDB (moto over HTTP) alike."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import replace
from typing import Any

import pytest

from chalicelib.alert_types import kind_of
from chalicelib.alerting import AlertState, Notification, Policy, Silence, notification_id, step
from chalicelib.model import Observation, Severity
from chalicelib.state import StateConflict, StateError, TargetState, WorkerRecord
from chalicelib.state.base import OUTBOX_TTL_SECONDS

T = "prod-eu"
NOW = time.time()  # notifications older than the outbox TTL are purged: keep them recent


def alert(key: str, **more: Any) -> AlertState:
    values: dict[str, Any] = {
        "key": key,
        "type": key.split(":")[0],
        "severity": Severity.CRITICAL,
        "state": "firing",
        "title": f"{key} title",
        "message": f"{key} message",
        "first_seen": 1000.5,
        "last_seen": 1060.25,
        "breach_count": 3,
        "since": 1030.0,
        "notified": True,
        "last_notified": 1030.0,
        "notified_severity": Severity.WARNING,
        "subject": "q-1",
        "queue": "emails",
        "details": {"depth": 1500, "nested": {"list": [1, 2.5, "x"], "none": None}},
        "recommendation": "Add workers.",
    }
    values.update(more)
    return AlertState(**values)


def note(key: str, at: float, action: str = "trigger") -> Notification:
    return Notification(
        id=notification_id(key, action, at),
        action=action,
        key=key,
        type=key.split(":")[0],
        severity=Severity.EMERGENCY,
        target=T,
        title="All workers down",
        message="No workers responding but 5 tasks are pending",
        at=at,
        subject="",
        queue=None,
        details={"total_pending": 5},
        recommendation="Restart the workers.",
        since=at,
    )


def full_state() -> TargetState:
    return TargetState(
        last_sample={
            "timestamp": "2026-01-01T00:00:00Z",
            "metrics": {"total_pending": 5, "saturation_pct": 12.5},
            "queues": [{"name": "emails", "depth": 5, "latency_sec": None}],
        },
        roster={
            "w-1": WorkerRecord(last_seen=1000.0, concurrency=4),
            "w-2": WorkerRecord(last_seen=900.0, silent_since=950.5, forgotten=True),
        },
        observations={"emails": Observation(fingerprint="m-abc", first_seen=990.125)},
        visibility_timeout=3600.0,
        last_discovery=1000.0,
        alerts={
            "workers_down:prod-eu": alert("workers_down:prod-eu", subject=""),
            "high_latency:prod-eu:emails": alert("high_latency:prod-eu:emails", queue="emails"),
            "stuck_task:prod-eu:t-1": alert(
                "stuck_task:prod-eu:t-1",
                state="pending",
                notified=False,
                last_notified=None,
                notified_severity=None,
                since=None,
                queue=None,
            ),
        },
        history=[{"t": 1000.0, "q": {"emails": 5}, "p": 5}, {"t": 1060.0, "q": {}, "p": 0}],
    )


def test_load_of_an_empty_target(backend):
    state = backend.open().load(T)
    assert state == TargetState()
    assert state.version == 0


def test_commit_then_load_round_trips_every_field(backend):
    state = full_state()
    committed = backend.open().commit(T, state, 0)
    assert committed == replace(state, version=1)
    loaded = backend.open().load(T)  # a new store, as the next check is
    assert loaded == replace(state, version=1)
    assert backend.open().load("another-target") == TargetState()


def test_a_type_this_version_does_not_know_still_loads_and_resolves(backend):
    """Another Doorman version may have stored an alert, a notification or a silence of a type
    not in this catalogue: each is read back as it was, and the alert resolves aloud."""
    future = "queue_stalled"
    assert kind_of(future) is None
    key = f"{future}:{T}:emails"
    state = replace(full_state(), alerts={key: alert(key)})
    backend.open().commit(T, state, 0, [note(key, NOW)])
    backend.open().add_silence(Silence("s-9", NOW - 10, NOW + 100, type=future))
    store = backend.open()
    loaded = store.load(T)
    assert loaded == replace(state, version=1)
    assert loaded.alerts[key].type == future
    (item,) = store.undelivered(T)
    assert item.notification.type == future
    assert [s.type for s in store.silences(NOW)] == [future]
    alerts, notes = step(loaded.alerts, [], target=T, now=NOW + 60, policy=Policy(resolve_after=1))
    assert alerts == {}
    assert [(n.action, n.type, n.key) for n in notes] == [("resolve", future, key)]


def test_each_commit_increments_the_version_and_replaces_the_alerts(backend):
    store = backend.open()
    a, b, c = (f"high_latency:{T}:q-{n}" for n in "abc")
    s1 = store.commit(T, TargetState(alerts={a: alert(a), b: alert(b)}), 0)
    assert s1.version == 1
    loaded = store.load(T)
    s2 = store.commit(
        T,
        replace(loaded, alerts={b: alert(b, breach_count=9), c: alert(c)}, last_discovery=5.0),
        loaded.version,
    )
    assert s2.version == 2
    s3 = store.commit(T, replace(s2, history=[{"t": 1.0, "q": {}}]), s2.version)  # no load
    assert s3.version == 3
    fresh = backend.open()
    loaded = fresh.load(T)
    assert loaded.version == 3
    assert loaded.alerts == {b: alert(b, breach_count=9), c: alert(c)}
    assert loaded.last_discovery == 5.0
    # A store that did not load the state (a new process) commits against it all the same.
    s4 = fresh.commit(T, replace(loaded, alerts={c: alert(c, state="pending")}), 3)
    assert backend.open().load(T) == replace(s4, version=4)
    if backend.table is not None:
        alert_items = [i for i in backend.table.items() if i["sk"]["S"].startswith("ALERT#")]
        assert [i["alert_key"]["S"] for i in alert_items] == [c]


def test_a_stale_version_conflicts_and_writes_nothing(backend):
    store = backend.open()
    kept_alert = "workers_down:" + T
    kept = store.commit(
        T, TargetState(alerts={kept_alert: alert(kept_alert)}), 0, [note(kept_alert, NOW)]
    )
    other = "high_latency:" + T
    attempt = TargetState(alerts={other: alert(other)}, last_discovery=1.0)
    for stale in (0, 2, 7):
        with pytest.raises(StateConflict):
            backend.open().commit(T, attempt, stale, [note(other, NOW + 2 + stale)])
    # Two checks loaded version 1; the first commits, the second loses whole.
    first, second = backend.open(), backend.open()
    assert first.load(T).version == second.load(T).version == 1
    first.commit(T, kept, 1)
    with pytest.raises(StateConflict):
        second.commit(T, replace(attempt, version=1), 1, [note(other, NOW + 20)])

    loaded = backend.open().load(T)
    assert loaded.version == 2
    assert set(loaded.alerts) == {kept_alert}
    assert loaded.last_discovery is None
    queued = backend.open().undelivered(T)
    assert [i.notification.key for i in queued] == [kept_alert]


def test_outbox_lists_oldest_first_and_forgets_delivered(backend):
    store = backend.open()
    notes = [note(f"k{n}:{T}", at) for n, at in enumerate((NOW + 100.5, NOW + 50.0, NOW - 7200))]
    store.commit(T, TargetState(), 0, notes)
    queued = backend.open().undelivered(T)
    assert [i.notification for i in queued] == [notes[2], notes[1], notes[0]]
    assert [i.created_at for i in queued] == [NOW - 7200, NOW + 50.0, NOW + 100.5]
    assert all(i.target == T and i.id == i.notification.id for i in queued)
    assert [i.id for i in backend.open().undelivered(T, limit=2)] == [notes[2].id, notes[1].id]
    assert backend.open().undelivered("another-target") == []

    # As the local delivery does: list, send, then mark the items listed on the same store.
    deliverer = backend.open()
    listed = deliverer.undelivered(T)
    deliverer.mark_delivered(listed[:2], time.time())
    assert [i.id for i in backend.open().undelivered(T)] == [notes[0].id]
    # Marking again, or marking an item (as the dispatcher holds them) from a new store.
    backend.open().mark_delivered([*listed[:2], listed[2]], time.time())
    assert backend.open().undelivered(T) == []


def test_the_same_notification_is_queued_once(backend):
    store = backend.open()
    n = note("workers_down:" + T, NOW)
    s1 = store.commit(T, TargetState(), 0, [n, n])
    s2 = store.commit(T, s1, 1, [n])  # a commit retried after its reply was lost
    assert s2.version == 2 and backend.open().load(T).version == 2
    assert [i.id for i in backend.open().undelivered(T)] == [n.id]
    deliverer = backend.open()
    deliverer.mark_delivered(deliverer.undelivered(T), 2000.0)
    store.commit(T, s2, 2, [n, note("other:" + T, NOW + 1)])
    assert [i.notification.key for i in backend.open().undelivered(T)] == ["other:" + T]
    if backend.table is not None:
        outbox = [i for i in backend.table.items() if i["sk"]["S"].startswith("OUTBOX#")]
        assert sorted(i["id"]["S"] for i in outbox) == sorted(
            [n.id, note("other:" + T, NOW + 1).id]
        )
        delivered = next(i for i in outbox if i["id"]["S"] == n.id)
        assert delivered["delivered_at"]["N"] == "2000"  # kept, not reset by the second queueing


def test_channels_that_took_an_item_are_remembered_until_it_is_delivered(backend):
    store = backend.open()
    queued = note(f"workers_down:{T}", NOW)
    store.commit(T, TargetState(), 0, [queued])
    (item,) = store.undelivered(T)
    assert item.channels_done == frozenset()
    store.mark_channel(item, "slack")
    (again,) = backend.open().undelivered(T)  # a later check, another process
    assert again.channels_done == frozenset({"slack"})
    store.mark_channel(again, "console")
    (third,) = backend.open().undelivered(T)
    assert third.channels_done == frozenset({"slack", "console"})
    store.mark_delivered([third], NOW)
    assert backend.open().undelivered(T) == []


def test_a_commit_is_stamped_by_the_stores_clock(backend):
    # Both stores take the same injected clock: the commit's time is the clock's, not the
    # machine's, and the local outbox is purged by it.
    at = NOW + 10 * 86400
    store = backend.open(clock=lambda: at)
    queued = note("workers_down:" + T, NOW)
    store.commit(T, TargetState(), 0, [queued])
    if backend.table is not None:
        sample = next(i for i in backend.table.items() if i["sk"]["S"] == "SAMPLE")
        assert float(sample["updated_at"]["N"]) == at
        return
    with sqlite3.connect(backend.path) as conn:
        (updated_at,) = conn.execute("SELECT updated_at FROM targets").fetchone()
    assert updated_at == at
    assert backend.open().undelivered(T) == []  # older than the TTL at the clock's time
    backend.open().commit(T, TargetState(), 1, [note("other:" + T, at)])
    assert [i.notification.key for i in backend.open().undelivered(T)] == ["other:" + T]


def test_silences_add_list_remove(backend):
    store = backend.open()
    now = time.time()
    active = Silence("s-1", now - 10, now + 100, type="high_latency", queue="emails", comment="x")
    ended = Silence("s-2", now - 100, now - 1, target=T)
    later = Silence("s-3", now + 50, now + 500)
    for s in (later, active, ended):
        store.add_silence(s)
    assert backend.open().silences(now) == [active]
    assert backend.open().silences() == [ended, active, later]
    assert backend.open().silences(now + 60) == [active, later]
    replaced = replace(active, comment="longer", ends_at=now + 200)
    store.add_silence(replaced)
    assert backend.open().silences(now) == [replaced]
    assert backend.open().remove_silence("s-1") is True
    assert backend.open().remove_silence("s-1") is False
    assert backend.open().silences(now) == []
    assert {s.id for s in backend.open().silences()} == {"s-2", "s-3"}


def _overwrite_silence_bodies(backend: Any, body: str) -> None:
    """Replace every stored silence's body, as a hand edit or another writer could."""
    if backend.table is None:
        with sqlite3.connect(backend.path) as conn:
            conn.execute("UPDATE silences SET body = ?", (body,))
        return
    from chalicelib.state.dynamodb import SILENCES_PK

    client, table = backend.table.client, backend.table.name
    items = client.query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": SILENCES_PK}},
    )["Items"]
    assert items
    for item in items:
        client.update_item(
            TableName=table,
            Key={"pk": item["pk"], "sk": item["sk"]},
            UpdateExpression="SET body = :b",
            ExpressionAttributeValues={":b": {"S": body}},
        )


@pytest.mark.parametrize(
    "body",
    [
        '{"id": "s-1", "starts_at": "a", "ends_at": "b"}',
        '{"id": "s-1", "starts_at": 0, "ends_at": 1e12, "queue": 7}',
        '{"id": "s-1", "starts_at": 0, "ends_at": 1e12, "extra": true}',
        '["s-1", 0, 1e12]',
        "not json",
    ],
)
def test_a_stored_silence_that_is_not_one_is_skipped(backend, body):
    store = backend.open()
    now = time.time()
    store.add_silence(Silence("s-1", now - 10, now + 100))
    _overwrite_silence_bodies(backend, body)
    assert backend.open().silences(now) == []
    assert backend.open().silences() == []


def test_store_that_cannot_be_reached_raises_state_error(backend, tmp_path):
    from tests.support.moto_server import make_client

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    if backend.kind == "sqlite":
        from chalicelib.state.sqlite import SqliteStore

        store: Any = SqliteStore(str(blocker / "state.db"))
    else:
        from chalicelib.embedded import free_port
        from chalicelib.state.dynamodb import DynamoStore

        client = make_client(f"http://127.0.0.1:{free_port()}", attempts=1, timeout=1)
        store = DynamoStore("doorman-unreachable", client)
    started = time.monotonic()
    item_note = note("k:" + T, NOW)
    calls = [
        lambda: store.load(T),
        lambda: store.commit(T, full_state(), 0, [item_note]),
        lambda: store.undelivered(T),
        lambda: store.add_silence(Silence("s-1", 0, 1)),
        lambda: store.silences(),
        lambda: store.remove_silence("s-1"),
    ]
    if backend.kind == "dynamodb":
        from chalicelib.state.base import OutboxItem

        calls.append(lambda: store.mark_delivered([OutboxItem("i", T, 1.0, item_note)], 2.0))
    for call in calls:
        with pytest.raises(StateError) as caught:
            call()
        assert type(caught.value) is StateError
        if backend.kind == "dynamodb":
            assert "DynamoDB table doorman-unreachable" in str(caught.value)
            assert "EndpointConnectionError" in str(caught.value)
    assert time.monotonic() - started < 10


# --- DynamoDB only ---------------------------------------------------------------------------


@pytest.fixture
def table(dynamodb):
    return dynamodb


def test_dynamodb_items_carry_ttl_and_the_designed_keys(table):
    from chalicelib.state.dynamodb import DynamoStore

    now = 1_800_000_000.25
    store = DynamoStore(table.name, table.client, clock=lambda: now)
    key = "workers_down:" + T
    n = note(key, 1_799_999_999.5)
    store.commit(T, full_state(), 0, [n])
    store.add_silence(Silence("s-9", now, now + 3600))
    items = {(i["pk"]["S"], i["sk"]["S"]): i for i in table.items()}

    sample = items[("TARGET#" + T, "SAMPLE")]
    assert sample["version"]["N"] == "1"
    assert int(sample["expires_at"]["N"]) == int(now) + 1 + 30 * 86400
    alert_item = items[("TARGET#" + T, "ALERT#" + key)]
    assert alert_item["state"]["S"] == "firing" and alert_item["severity"]["S"] == "critical"
    assert int(alert_item["expires_at"]["N"]) == int(now) + 1 + 30 * 86400
    outbox = [i for (_, sk), i in items.items() if sk.startswith("OUTBOX#")]
    assert len(outbox) == 1
    assert outbox[0]["sk"]["S"] == f"OUTBOX#{n.at:020.6f}#{n.id}"
    assert outbox[0]["action"]["S"] == "trigger"
    assert int(outbox[0]["expires_at"]["N"]) == 1_799_999_999 + 1 + OUTBOX_TTL_SECONDS
    assert "delivered_at" not in outbox[0]
    silence = items[("SILENCES", "SILENCE#s-9")]
    assert int(silence["expires_at"]["N"]) == int(now) + 1 + 3600 + 86400
    assert all("expires_at" in i for i in items.values())
    ttl = table.client.describe_time_to_live(TableName=table.name)["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}


def test_dynamodb_unchanged_alerts_are_not_rewritten(table):
    from chalicelib.state.dynamodb import DynamoStore

    clock = [1_800_000_000.0]
    store = DynamoStore(table.name, table.client, clock=lambda: clock[0])
    a, b = "high_latency:" + T, "queue_growing:" + T
    state = store.commit(T, TargetState(alerts={a: alert(a), b: alert(b)}), 0)
    state = store.commit(T, replace(state, alerts={a: alert(a), b: alert(b, breach_count=4)}), 1)

    def versions() -> dict[str, str]:
        return {
            i["alert_key"]["S"]: i["version"]["N"]
            for i in table.items()
            if i["sk"]["S"].startswith("ALERT#")
        }

    assert versions() == {a: "1", b: "2"}
    assert DynamoStore(table.name, table.client).load(T).alerts == {
        a: alert(a),
        b: alert(b, breach_count=4),
    }
    clock[0] += 16 * 86400  # past half its TTL: rewritten so that it never expires under us
    store.commit(T, state, 2)
    assert versions() == {a: "3", b: "3"}


def test_dynamodb_large_state_is_compressed_and_too_large_is_refused(table):
    import random

    from chalicelib.state.dynamodb import DynamoStore

    store = DynamoStore(table.name, table.client)
    queues = [{"name": f"queue-{n}", "depth": n, "latency_sec": None} for n in range(5000)]
    big = TargetState(last_sample={"queues": queues})
    store.commit(T, big, 0)
    sample = next(i for i in table.items() if i["sk"]["S"] == "SAMPLE")
    assert "body_z" in sample and "body" not in sample
    assert len(sample["body_z"]["B"]) < 100_000
    assert DynamoStore(table.name, table.client).load(T) == replace(big, version=1)

    noise = random.Random(3).randbytes(600_000).hex()
    with pytest.raises(StateError, match="KB"):
        store.commit(T, TargetState(last_sample={"noise": noise}), 1)
    assert DynamoStore(table.name, table.client).load(T) == replace(big, version=1)


def test_dynamodb_more_than_one_transaction_is_refused_whole(table):
    from chalicelib.state.dynamodb import DynamoStore

    store = DynamoStore(table.name, table.client)
    alerts = {f"stuck_task:{T}:t-{n}": alert(f"stuck_task:{T}:t-{n}") for n in range(60)}
    notes = [note(key, NOW) for key in alerts]
    with pytest.raises(StateError, match="at most 100") as caught:
        store.commit(T, TargetState(alerts=alerts), 0, notes)
    assert not isinstance(caught.value, StateConflict)
    assert table.items() == []
    # 99 writes are one transaction.
    some = dict(list(alerts.items())[:49])
    store.commit(T, TargetState(alerts=some), 0, notes[:49])
    assert len(DynamoStore(table.name, table.client).load(T).alerts) == 49
    assert len(store.undelivered(T)) == 49


def test_dynamodb_alert_items_not_matching_the_state_are_read_again_then_skipped(table, caplog):
    from chalicelib.state.dynamodb import DynamoStore

    store = DynamoStore(table.name, table.client)
    a, b = "high_latency:" + T, "queue_growing:" + T
    store.commit(T, TargetState(alerts={a: alert(a), b: alert(b)}), 0)
    # As a Query may see while another commit is being applied: one alert item already of
    # a later version. After re-reading, an item that still does not match is skipped.
    table.client.update_item(
        TableName=table.name,
        Key={"pk": {"S": "TARGET#" + T}, "sk": {"S": "ALERT#" + a}},
        UpdateExpression="SET version = :v",
        ExpressionAttributeValues={":v": {"N": "2"}},
    )
    waits: list[float] = []
    loaded = DynamoStore(table.name, table.client, sleep=waits.append).load(T)
    assert loaded.version == 1 and set(loaded.alerts) == {b}
    assert waits == [0.05, 0.1]  # it read again, twice, before giving up on it
    assert "1 alert item(s) not found" in caplog.text


def test_dynamodb_unreadable_state_item_is_a_state_error(table):
    from chalicelib.state.dynamodb import DynamoStore

    table.client.put_item(
        TableName=table.name,
        Item={
            "pk": {"S": "TARGET#" + T},
            "sk": {"S": "SAMPLE"},
            "version": {"N": "3"},
            "body": {"S": "{not json"},
        },
    )
    with pytest.raises(StateError, match=f"table {table.name}.*'{T}'"):
        DynamoStore(table.name, table.client).load(T)


def test_dynamodb_server_going_away_is_a_state_error():
    from chalicelib.state.dynamodb import DynamoStore
    from tests.support.moto_server import MotoServer, create_table

    server = MotoServer().start()
    try:
        client = server.client(attempts=1, timeout=1)
        create_table(client, "doorman")
        store = DynamoStore("doorman", client)
        state = store.commit(T, full_state(), 0)
    finally:
        server.stop()
    for call in (lambda: store.load(T), lambda: store.commit(T, state, 1)):
        with pytest.raises(StateError, match=r"DynamoDB table doorman: (Query|TransactWriteItems)"):
            call()
    client.close()
