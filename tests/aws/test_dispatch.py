"""The outbox dispatcher: which stream records it publishes, in what order, and what it asks
Lambda to retry (partial batch response, or the whole batch by raising)."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from chalicelib.alerting import Notification
from chalicelib.notify import NotifyError
from chalicelib.notify.sns import SnsPublisher, is_permanent
from chalicelib.serverless import DispatchFailed, dispatch_records
from tests.aws.conftest import Topic
from tests.notify.notes import note
from tests.support.moto_server import REGION, MotoServer, aws

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


# --- what SNS refuses: retried through the stream, or dropped with an alarm -------------------


def publish_error_codes() -> dict[str, str]:
    """Every error shape of SNS ``Publish`` in botocore's service model: code -> shape name."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("sns")
    return {
        shape.metadata["error"]["code"]: shape.name
        for shape in model.operation_model("Publish").error_shapes
    }


# SNS refuses the message itself: sending it again fails the same way, and holding it would
# block every later alert of the shard. Everything else is the topic's or the account's fault.
MESSAGE_REFUSED = {"InvalidParameter", "ParameterValueInvalid", "ValidationException"}


def test_every_publish_error_of_the_sns_model_is_classified():
    codes = publish_error_codes()
    # The model still has the shapes this classification was written against.
    assert set(codes) >= MESSAGE_REFUSED
    assert {"NotFound", "AuthorizationError", "KMSAccessDenied", "InternalError"} <= set(codes)
    for code in codes:
        assert is_permanent(code, "Invalid parameter: Message too long") == (
            code in MESSAGE_REFUSED
        ), code


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("NotFound", "Topic does not exist"),
        ("AuthorizationError", "User: x is not authorized to perform: SNS:Publish"),
        ("AccessDenied", "User: x is not authorized to perform: sns:Publish"),
        ("AccessDeniedException", ""),
        ("InvalidClientTokenId", ""),
        ("ExpiredToken", ""),
        ("InvalidSecurity", ""),
        ("KMSDisabled", ""),
        ("KMSNotFound", ""),
        ("KMSInvalidState", ""),
        ("KMSAccessDenied", ""),
        ("Throttling", "Rate exceeded"),
        ("InternalError", ""),
        ("SomethingNew", ""),
        ("", ""),  # no answer at all (connection refused, timeout)
        # A malformed topic ARN is the configuration's fault, not the message's.
        ("InvalidParameter", "Invalid parameter: TopicArn"),
    ],
)
def test_topic_and_access_errors_are_retried_not_dropped(code, message):
    assert not is_permanent(code, message)


def test_a_message_sns_refuses_is_dropped_for_good():
    assert is_permanent("InvalidParameter", "Invalid parameter: Message too long")
    assert is_permanent("ParameterValueInvalid", "")


def test_a_topic_arn_that_is_not_one_is_retried_without_calling_sns():
    calls: list[dict[str, Any]] = []

    class Client:
        def publish(self, **kwargs: Any) -> None:
            calls.append(kwargs)

    with pytest.raises(NotifyError) as raised:
        SnsPublisher(Client(), "set-by-scripts/deploy").send(note())
    assert raised.value.permanent is False
    assert "topic" in raised.value.message and "set-by-scripts" not in raised.value.message
    assert calls == []


def test_a_wrong_topic_arn_is_retried_through_the_stream(dispatch_env, topic, monkeypatch, caplog):
    n = note()
    event = {"Records": [record(1, "SAMPLE"), record(2, f"OUTBOX#1#{n.id}", n)]}
    # A well-formed ARN of a topic that does not exist (another stage's, a deleted stack's).
    monkeypatch.setenv("DOORMAN_TOPIC_ARN", topic.arn.rsplit(":", 1)[0] + ":doorman-no-such-topic")
    with dispatch_env() as client:
        payload = client.lambda_.invoke("dispatch", event).payload
    assert payload == {"batchItemFailures": [{"itemIdentifier": "1002"}]}
    assert "NotFound" in caplog.text and "dropped" not in caplog.text
    assert topic.envelopes(0, timeout=0.5) == []


class DeniedUser:
    """An IAM user of the moto server whose policy allows ``sns:Publish`` on another topic
    only (a policy that does not match the deployed topic), and the server's IAM checks on
    for as long as the context lasts. moto evaluates identity policies, not topic policies."""

    def __init__(self, server: MotoServer) -> None:
        self.server = server
        self.iam = aws(server, "iam")
        self.name = "dispatch-" + uuid.uuid4().hex[:8]

    def _auth(self, count: str) -> None:
        request = urllib.request.Request(  # noqa: S310 - the loopback moto server
            self.server.endpoint_url + "/moto-api/reset-auth",
            data=count.encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
            assert response.status == 200

    def __enter__(self) -> dict[str, str]:
        self.iam.create_user(UserName=self.name)
        other = f"arn:aws:sns:{REGION}:123456789012:doorman-some-other-topic"
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "sns:Publish", "Resource": other}],
        }
        self.iam.put_user_policy(
            UserName=self.name, PolicyName="publish", PolicyDocument=json.dumps(policy)
        )
        key = self.iam.create_access_key(UserName=self.name)["AccessKey"]
        self._auth("0")  # from the next request on, every request is checked
        return {
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        }

    def __exit__(self, *exc: object) -> None:
        self._auth("inf")
        self.iam.close()


def test_a_policy_that_denies_publish_is_retried_through_the_stream(
    dispatch_env, moto_server, topic, monkeypatch, caplog
):
    n = note()
    event = {"Records": [record(1, "SAMPLE"), record(2, f"OUTBOX#1#{n.id}", n)]}
    with DeniedUser(moto_server) as credentials:
        for name, value in credentials.items():
            monkeypatch.setenv(name, value)
        # A cold start: boto3's default session keeps the credentials it resolved first.
        monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
        with dispatch_env() as client:
            payload = client.lambda_.invoke("dispatch", event).payload
    assert payload == {"batchItemFailures": [{"itemIdentifier": "1002"}]}
    assert "AccessDenied" in caplog.text and "dropped" not in caplog.text
    assert topic.envelopes(0, timeout=0.5) == []


def test_the_alarms_watch_the_metrics_dispatch_emits(dispatch_env, topic, monkeypatch, capsys):
    """The template's alarms on DispatchDropped and DispatchRetried name the namespace, the
    metric and the dimensions of the EMF document the dispatch function really prints."""
    from cfnlint.decode import cfn_yaml

    from chalicelib.dashboard import TEMPLATE

    monkeypatch.setenv("DOORMAN_TOPIC_ARN", topic.arn.rsplit(":", 1)[0] + ":doorman-missing")
    unreadable, bad = note(type="a"), note(type="b")
    event = {
        "Records": [
            record(1, f"OUTBOX#1#{unreadable.id}", "not json"),  # unreadable: dropped
            record(2, f"OUTBOX#2#{bad.id}", bad),  # no such topic: retried
        ]
    }
    capsys.readouterr()
    with dispatch_env() as client:
        client.lambda_.invoke("dispatch", event)
    (emf,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    (directive,) = emf["_aws"]["CloudWatchMetrics"]
    (dimension_set,) = directive["Dimensions"]
    emitted = {m["Name"] for m in directive["Metrics"]}
    assert (emf["DispatchDropped"], emf["DispatchRetried"]) == ([1.0], [1.0])

    resources = cfn_yaml.load(str(TEMPLATE))["Resources"]
    watched = {
        props["MetricName"]: props
        for props in (
            r["Properties"]
            for r in resources.values()
            if isinstance(r, dict) and r["Type"].endswith("Alarm")  # not an Fn::ForEach
        )
        if props.get("MetricName", "").startswith("Dispatch")
    }
    assert set(watched) == {"DispatchDropped", "DispatchRetried"} <= emitted
    for props in watched.values():
        assert props["Namespace"] == directive["Namespace"]
        dims = {d["Name"]: d["Value"] for d in props["Dimensions"]}
        assert set(dims) == set(dimension_set)
        assert all(emf[name] == value for name, value in dims.items())


def test_an_unreadable_delivery_mark_never_holds_an_alert_back(
    dispatch_env, topic, monkeypatch, caplog
):
    # The ledger's table cannot be read (here: it does not exist): published all the same.
    monkeypatch.setenv("DOORMAN_TABLE", "doorman-no-such-table")
    n = note()
    event = {"Records": [record(2, f"OUTBOX#1#{n.id}", n)]}
    with dispatch_env() as client:
        assert client.lambda_.invoke("dispatch", event).payload == {"batchItemFailures": []}
    (envelope,) = topic.envelopes(1)
    assert json.loads(envelope["Message"])["id"] == n.id
    assert "delivery state of" in caplog.text and "published but not marked" in caplog.text
