"""SNS fan-out on a moto server over HTTP: publish, receive on an SQS subscription, and let
the subscriber functions turn the message into Slack and PagerDuty requests."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.model import Severity
from chalicelib.notify import NotifyError, pagerduty
from chalicelib.notify.pagerduty import PagerDutyChannel
from chalicelib.notify.slack import SlackChannel
from chalicelib.notify.sns import (
    SNS_MAX_BYTES,
    SeenIds,
    SnsPublisher,
    handle_sns_for_pagerduty,
    handle_sns_for_slack,
    publish_request,
)
from chalicelib.runner import run_check
from chalicelib.settings import load_settings
from chalicelib.wiring import local_deps
from tests.conftest import producer
from tests.integration.test_privacy import ARGS, KWARGS, scan
from tests.notify.notes import note, oversized
from tests.notify.recorder import Reply
from tests.notify.schemas import check_pagerduty, check_slack
from tests.support import pii_app
from tests.support.moto_server import REGION, aws
from tests.support.moto_server import topic as topic  # a fixture, used by name

KEY = "R0UT1NGKEY0123456789abcdefabcdef"
# For records that never reach a channel: nothing listens on port 9.
UNUSED = PagerDutyChannel(KEY, "http://127.0.0.1:9/unused")


def lambda_event(envelope: dict[str, Any]) -> list[dict[str, Any]]:
    """The Records Lambda gets from SNS for the message in ``envelope``."""
    return [
        {
            "EventSource": "aws:sns",
            "EventVersion": "1.0",
            "Sns": {
                "Type": "Notification",
                "MessageId": envelope["MessageId"],
                "TopicArn": envelope["TopicArn"],
                "Subject": envelope.get("Subject"),
                "Message": envelope["Message"],
                "Timestamp": envelope["Timestamp"],
                "MessageAttributes": envelope.get("MessageAttributes", {}),
            },
        }
    ]


def planted_notifications(redis_url: str, tmp_path: Any) -> list[Any]:
    """The notifications of a real check of a cluster with workers down and planted data."""
    app = producer(redis_url)
    for _ in range(3):
        app.process_user.apply_async(ARGS, KWARGS, queue=pii_app.PLANTED_QUEUE)
    settings = load_settings(
        environ={},
        overrides={
            "redis_url": redis_url,
            "state_path": str(tmp_path / "state.db"),
            "hash_secret": "test-secret",
            "worker_timeout_seconds": 0.5,
            "monitored_queues": [pii_app.PLANTED_QUEUE],
        },
    )
    deps = local_deps(settings)
    try:
        result = run_check(settings, deps)
    finally:
        deps.collector.close()
        deps.store.close()
    assert [n.type for n in result.notifications] == ["workers_down"]
    return list(result.notifications)


def test_published_notification_reaches_sqs_with_attributes_and_subscribers_send_it(
    topic, recorder, fast, redis_server, tmp_path
):
    (sent,) = planted_notifications(redis_server.url, tmp_path)
    SnsPublisher(topic.sns, topic.arn).send(sent)

    (envelope,) = topic.envelopes(1)
    assert envelope["Type"] == "Notification"
    attrs = envelope["MessageAttributes"]
    assert {k: (v["Type"], v["Value"]) for k, v in attrs.items()} == {
        "severity": ("String", "emergency"),
        "alert_type": ("String", "workers_down"),
        "target": ("String", "default"),
        "action": ("String", "trigger"),
    }
    assert envelope["Subject"].startswith("[Doorman] EMERGENCY")
    doc = json.loads(envelope["Message"])  # the ``default`` message: the alert document
    assert doc["id"] == sent.id and doc["key"] == "workers_down:default"

    slack = recorder(default=Reply(200, b"ok"))
    pd = recorder(default=Reply(202, b"{}"))
    records = lambda_event(envelope)
    seen = SeenIds()
    to_slack = SlackChannel(slack.url, fast, minimum=Severity.WARNING)
    to_pd = PagerDutyChannel(KEY, pd.url, fast, minimum=Severity.CRITICAL)
    assert [o.status for o in handle_sns_for_slack(records, to_slack, seen=seen)] == ["sent"]
    assert [o.status for o in handle_sns_for_pagerduty(records, to_pd)] == ["sent"]
    check_slack(slack.bodies()[0])
    check_pagerduty(pd.bodies()[0], KEY)
    assert pd.bodies()[0]["dedup_key"] == "workers_down:default"

    # Delivered twice (SNS is at-least-once): Slack posts once, PagerDuty dedups by key.
    assert [o.status for o in handle_sns_for_slack(records, to_slack, seen=seen)] == ["duplicate"]
    handle_sns_for_pagerduty(records, to_pd)
    assert len(slack.requests) == 1
    assert [b["dedup_key"] for b in pd.bodies()] == ["workers_down:default"] * 2

    blobs = {"envelope": json.dumps(envelope).encode()}
    blobs |= {f"slack{i}": r.body for i, r in enumerate(slack.requests)}
    blobs |= {f"pd{i}": r.body for i, r in enumerate(pd.requests)}
    assert scan(blobs) == []


def test_minimum_severity_is_checked_in_code_and_resolves_always_reach_pagerduty(
    topic, recorder, fast
):
    publisher = SnsPublisher(topic.sns, topic.arn)
    warning = note(type="queue_growing", severity=Severity.WARNING)
    publisher.send(warning)
    publisher.send(note("resolve", type="queue_growing", severity=Severity.WARNING, at=2e9))
    envelopes = sorted(topic.envelopes(2), key=lambda e: json.loads(e["Message"])["at"])
    records = [r for e in envelopes for r in lambda_event(e)]

    slack = recorder(default=Reply(200, b"ok"))
    pd = recorder(default=Reply(202, b"{}"))
    slack_out = handle_sns_for_slack(
        records, SlackChannel(slack.url, fast, minimum=Severity.CRITICAL), seen=SeenIds()
    )
    pd_out = handle_sns_for_pagerduty(
        records, PagerDutyChannel(KEY, pd.url, fast, minimum=Severity.CRITICAL)
    )
    assert [o.status for o in slack_out] == ["skipped", "skipped"]
    assert [o.status for o in pd_out] == ["skipped", "sent"]
    assert slack.requests == []
    assert [b["event_action"] for b in pd.bodies()] == ["resolve"]


def test_slack_resolved_message_through_sns(topic, recorder, fast):
    SnsPublisher(topic.sns, topic.arn).send(note("resolve"))
    slack = recorder(default=Reply(200, b"ok"))
    handle_sns_for_slack(
        lambda_event(topic.envelopes(1)[0]), SlackChannel(slack.url, fast), seen=SeenIds()
    )
    (message,) = slack.bodies()
    check_slack(message)
    assert message["blocks"][0]["text"]["text"].startswith("✅ Resolved")


def test_oversized_notification_is_cut_under_the_sns_limit_and_published(topic):
    request = publish_request(oversized(), topic.arn)
    assert len(request["Message"].encode()) < SNS_MAX_BYTES
    assert len(request["Subject"]) <= 99
    SnsPublisher(topic.sns, topic.arn).send(oversized())
    (envelope,) = topic.envelopes(1)
    doc = json.loads(envelope["Message"])
    assert doc["details"]["truncated"] is True


def test_transient_failure_is_raised_for_a_retry_and_permanent_is_dropped(recorder, fast, topic):
    SnsPublisher(topic.sns, topic.arn).send(note())
    records = lambda_event(topic.envelopes(1)[0])
    gone = recorder(default=Reply(404, b"no_service"))
    assert [
        o.status
        for o in handle_sns_for_slack(records, SlackChannel(gone.url, fast), seen=SeenIds())
    ] == ["failed"]
    assert len(gone.requests) == 1
    flaky = recorder(default=Reply(200, b"ok")).script(*[Reply(500)] * fast.max_attempts)
    seen = SeenIds()
    with pytest.raises(NotifyError):
        handle_sns_for_slack(records, SlackChannel(flaky.url, fast), seen=seen)
    # Lambda retries the invocation; this time it goes through.
    assert [
        o.status for o in handle_sns_for_slack(records, SlackChannel(flaky.url, fast), seen=seen)
    ] == ["sent"]


def test_a_malformed_record_is_skipped():
    out = handle_sns_for_pagerduty([{"Sns": {"Message": "not json"}}, {"nope": 1}], UNUSED)
    assert [o.status for o in out] == ["invalid", "invalid"]


def test_a_bad_field_value_is_never_quoted_in_the_log(caplog):
    secret = "redis://u:hunter2@db.internal:6379"
    body = {**note().to_json(), "severity": secret}
    with caplog.at_level("DEBUG"):
        out = handle_sns_for_pagerduty([{"Sns": {"Message": json.dumps(body)}}], UNUSED)
    assert [o.status for o in out] == ["invalid"]
    assert "hunter2" not in (out[0].error or "")
    assert caplog.records and "hunter2" not in caplog.text


def test_a_missing_topic_is_a_transient_publish_error(moto_server):
    # A wrong topic ARN is the deploy's fault, the same for every alert: retried, not dropped.
    sns = aws(moto_server, "sns")
    try:
        with pytest.raises(NotifyError) as info:
            SnsPublisher(sns, f"arn:aws:sns:{REGION}:123456789012:missing").send(note())
        assert not info.value.permanent
    finally:
        sns.close()


def alarm_record(
    state: str, reason: str = "Threshold Crossed: 3 datapoints were below 1.0"
) -> dict:
    """An SNS record as CloudWatch sends an alarm's state change to the topic."""
    message = {
        "AlarmName": "doorman-dev-no-check",
        "AlarmDescription": "No check succeeded",
        "NewStateValue": state,
        "NewStateReason": reason,
        "StateChangeTime": "2026-11-22T03:00:00.000+0000",
        "OldStateValue": "OK",
        "Trigger": {"MetricName": "CheckSucceeded", "Namespace": "Doorman"},
    }
    return {"Sns": {"Message": json.dumps(message)}}


def test_the_stacks_own_alarms_reach_slack_and_pagerduty(recorder, fast):
    """The watchdog (no check running) and the error alarms publish to the alert topic: the
    subscribers send ALARM as a trigger and OK as its resolve, keyed by the alarm."""
    records = [
        alarm_record("ALARM", reason="seen by ops@example.com"),
        alarm_record("INSUFFICIENT_DATA"),
        alarm_record("OK"),
    ]
    slack = recorder(default=Reply(200, b"ok"))
    pd = recorder(default=Reply(202, b"{}"))
    slack_out = handle_sns_for_slack(records, SlackChannel(slack.url, fast), seen=SeenIds())
    pd_out = handle_sns_for_pagerduty(records, PagerDutyChannel(KEY, pd.url, fast))
    assert [o.status for o in slack_out] == ["sent", "skipped", "sent"]
    assert [o.status for o in pd_out] == ["sent", "skipped", "sent"]
    for message in slack.bodies():
        check_slack(message)
    assert "doorman-dev-no-check" in json.dumps(slack.bodies()[0])
    events = pd.bodies()
    for event in events:
        check_pagerduty(event, KEY)
    assert [e["event_action"] for e in events] == ["trigger", "resolve"]
    assert events[0]["dedup_key"] == events[1]["dedup_key"]
    assert events[0]["payload"]["severity"] == pagerduty.SEVERITY[Severity.CRITICAL]
    assert "ops@example.com" not in json.dumps(slack.bodies()) + json.dumps(events)
