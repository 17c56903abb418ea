"""The first deploy: notifications the check commits before the dispatcher's stream mapping
exists are still published, because the mapping starts at the oldest record of the stream
(DynamoDB keeps 24 hours of it), not at its end.

The stream mapping is opened the way Lambda opens it, at the starting position ``app.py``
declares for ``dispatch`` (what ``chalice deploy`` and ``chalice package`` pass on), against
the moto server's table stream; the records go to the real ``dispatch`` handler and on to a
real SNS topic.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from chalicelib.alerting import Notification
from chalicelib.state.base import TargetState
from chalicelib.state.dynamodb import DynamoStore
from tests.aws.conftest import Stream, Topic
from tests.notify.notes import note

TARGET = "prod-eu"


def dispatch_starting_position(app_module: Any) -> str:
    """The starting position of the stream mapping Chalice creates for ``dispatch``."""
    (source,) = [s for s in app_module.app.event_sources if s.name == "dispatch"]
    position: str = source.starting_position
    return position


# An event source mapping created now, at a position of the table's stream: it hands on
# what Lambda would hand ``dispatch`` from then on.
StreamMapping = Stream


def commit(store: DynamoStore, state: TargetState, *notes: Notification) -> TargetState:
    """What a check does: the state and its notifications in one transaction."""
    return store.commit(TARGET, state, state.version, outbox=notes)


def test_the_dispatcher_starts_at_the_oldest_record_of_the_stream(app_module):
    # LATEST would skip every record written before the mapping was enabled.
    assert dispatch_starting_position(app_module) == "TRIM_HORIZON"


@pytest.fixture
def dispatch_env(
    lambda_env: Callable[[], Any], monkeypatch: pytest.MonkeyPatch, topic: Topic
) -> Callable[[], Any]:
    monkeypatch.setenv("DOORMAN_TOPIC_ARN", topic.arn)
    return lambda_env


def test_an_alert_committed_before_the_mapping_exists_is_delivered(
    dispatch_env, moto_server, dynamodb, topic, app_module
):
    store = DynamoStore(dynamodb.name, dynamodb.client)
    # 1. The check function runs (its schedule came first) while dispatch has no mapping.
    early = note(type="workers_down", at=1_760_000_000.0)
    state = commit(store, TargetState(), early)
    # 2. The deploy creates the mapping; then the next check commits another alert.
    mapping = StreamMapping(moto_server, dynamodb, dispatch_starting_position(app_module))
    try:
        later = note(type="backlog_explosion", at=1_760_000_060.0)
        commit(store, state, later)
        event = mapping.event()
    finally:
        mapping.close()
    with dispatch_env() as client:
        assert client.lambda_.invoke("dispatch", event).payload == {"batchItemFailures": []}
    # 3. Both reach the topic's subscriber, in the order they were committed.
    delivered = [json.loads(e["Message"])["id"] for e in topic.envelopes(2)]
    assert delivered == [early.id, later.id]


def test_a_recreated_mapping_replays_the_stream_without_sending_twice(
    dispatch_env, moto_server, dynamodb, topic, app_module
):
    """TRIM_HORIZON's price: a mapping created again (functions deleted and deployed anew,
    a packaged stack whose mapping is replaced) reads up to 24 hours of the stream again.
    The dispatcher marks each outbox item it published (``delivered_at``) and skips the
    ones already marked, so nobody is paged again for an alert that is long resolved."""
    store = DynamoStore(dynamodb.name, dynamodb.client)
    position = dispatch_starting_position(app_module)
    trigger = note(at=1_760_000_000.0)
    resolve = note("resolve", at=1_760_000_060.0)
    state = commit(store, TargetState(), trigger)
    state = commit(store, state, resolve)
    first = StreamMapping(moto_server, dynamodb, position)
    try:
        with dispatch_env() as client:
            assert client.lambda_.invoke("dispatch", first.event()).payload == {
                "batchItemFailures": []
            }
    finally:
        first.close()
    assert [json.loads(e["Message"])["id"] for e in topic.envelopes(2)] == [
        trigger.id,
        resolve.id,
    ]
    outbox = [i for i in dynamodb.items() if i["sk"]["S"].startswith("OUTBOX#")]
    assert len(outbox) == 2 and all("delivered_at" in i for i in outbox)

    # The mapping is created again: the whole stream once more, and one new alert.
    again = StreamMapping(moto_server, dynamodb, position)
    try:
        new = note(type="backlog_explosion", at=1_760_000_120.0)
        commit(store, state, new)
        with dispatch_env() as client:
            assert client.lambda_.invoke("dispatch", again.event()).payload == {
                "batchItemFailures": []
            }
    finally:
        again.close()
    assert [json.loads(e["Message"])["id"] for e in topic.envelopes(1)] == [new.id]
