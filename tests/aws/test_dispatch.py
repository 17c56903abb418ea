"""The outbox dispatcher: which stream records it publishes, in what order, and what it asks
Lambda to retry (partial batch response, or the whole batch by raising)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from chalicelib.alerting import Notification
from chalicelib.notify.base import NotifyError
from chalicelib.serverless import DispatchFailed, dispatch_records
from tests.aws.conftest import Topic
from tests.notify.notes import note

STREAM_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2026-01-01T00:00:00.000"


def record(seq: int, sk: str, body: Notification | str | None = None, *, name: str = "INSERT"):
    image: dict[str, Any] = {"pk": {"S": "TARGET#prod-eu"}, "sk": {"S": sk}}
    if isinstance(body, Notification):
        image["notification"] = {"S": json.dumps(body.to_json())}
    elif body is not None:
        image["notification"] = {"S": body}
    return {
        "eventID": f"e{seq}",
        "eventName": name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "eventSourceARN": STREAM_ARN,
        "dynamodb": {
            "ApproximateCreationDateTime": 1_760_000_000,
            "Keys": {"pk": image["pk"], "sk": image["sk"]},
            "NewImage": image,
            "SequenceNumber": str(1000 + seq),
            "SizeBytes": 100,
            "StreamViewType": "NEW_IMAGE",
        },
    }


class Sender:
    def __init__(self, fail: dict[str, NotifyError] | None = None) -> None:
        self.sent: list[str] = []
        self.fail = fail or {}

    def __call__(self, n: Notification) -> None:
        if n.id in self.fail:
            raise self.fail[n.id]
        self.sent.append(n.id)


def test_only_new_outbox_items_are_published_once_each_in_order():
    trigger, resolve = note(), note("resolve", at=2e9)
    records = [
        record(1, "SAMPLE"),
        record(2, "ALERT#workers_down:prod-eu"),
        record(3, f"OUTBOX#1#{trigger.id}", trigger),
        record(4, f"OUTBOX#1#{trigger.id}", trigger, name="MODIFY"),  # delivered_at set
        record(5, f"OUTBOX#1#{trigger.id}", trigger),  # the same notification again
        record(6, f"OUTBOX#2#{resolve.id}", resolve),
        record(7, "OUTBOX#3#x", "not json"),
        record(8, f"OUTBOX#1#{trigger.id}", trigger, name="REMOVE"),  # TTL expiry
    ]
    send = Sender()
    report = dispatch_records(records, send)
    assert send.sent == [trigger.id, resolve.id]
    assert report.published == [trigger.id, resolve.id]
    assert (report.ignored, report.duplicates, report.dropped) == (4, 1, 1)
    assert report.response() == {"batchItemFailures": []}


def test_a_transient_failure_stops_the_batch_there_and_a_permanent_one_is_dropped():
    a, b, c, d = (note(type=t, at=float(i)) for i, t in enumerate(["a", "b", "c", "d"]))
    send = Sender(
        {
            a.id: NotifyError("sns: publish failed (InvalidParameter)", permanent=True),
            c.id: NotifyError("sns: publish failed (Throttling)", permanent=False),
        }
    )
    records = [record(i, f"OUTBOX#{i}#{n.id}", n) for i, n in enumerate([a, b, c, d])]
    report = dispatch_records(records, send)
    # d is not sent: Lambda resumes at c's record, so d would go out twice, before c.
    assert send.sent == [b.id]
    assert report.dropped == 1
    assert report.response() == {
        "batchItemFailures": [{"itemIdentifier": "1002"}, {"itemIdentifier": "1003"}]
    }


@pytest.fixture
def dispatch_env(
    lambda_env: Callable[[], Any], monkeypatch: pytest.MonkeyPatch, moto_server, topic: Topic
):
    monkeypatch.setenv("DOORMAN_TOPIC_ARN", topic.arn)
    return lambda_env


def test_dispatch_publishes_to_the_topic_with_a_partial_batch_response(dispatch_env, topic):
    n = note()
    event = {"Records": [record(1, "SAMPLE"), record(2, f"OUTBOX#1#{n.id}", n)]}
    with dispatch_env() as client:
        assert client.lambda_.invoke("dispatch", event).payload == {"batchItemFailures": []}
    (envelope,) = topic.envelopes(1)
    assert json.loads(envelope["Message"])["id"] == n.id
    assert envelope["MessageAttributes"]["severity"]["Value"] == "emergency"


@pytest.mark.parametrize("partial", ["true", "false"])
def test_sns_out_of_reach_is_retried_by_lambda(dispatch_env, monkeypatch, partial):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL_SNS", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("DOORMAN_DISPATCH_PARTIAL_BATCH", partial)
    n = note()
    event = {"Records": [record(1, "SAMPLE"), record(2, f"OUTBOX#1#{n.id}", n)]}
    with dispatch_env() as client:
        if partial == "true":
            assert client.lambda_.invoke("dispatch", event).payload == {
                "batchItemFailures": [{"itemIdentifier": "1002"}]
            }
        else:
            with pytest.raises(DispatchFailed):
                client.lambda_.invoke("dispatch", event)
