"""The SNS subscribers in Lambda: each reads only its own secret, and an unconfigured
channel sends nothing."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.notify import sns
from tests.aws.conftest import SLACK_PATH
from tests.notify.notes import note


def sns_event(client: Any, n: Any) -> dict[str, Any]:
    request = sns.publish_request(n, "arn:aws:sns:us-east-1:123456789012:t")
    default = json.loads(request["Message"])["default"]
    attrs = {
        k: {"Type": v["DataType"], "Value": v["StringValue"]}
        for k, v in request["MessageAttributes"].items()
    }
    return client.events.generate_sns_event(
        message=default, subject=request["Subject"], message_attributes=attrs
    )


def test_each_notifier_reads_only_its_own_parameter(lambda_env, monkeypatch, secrets, slack):
    # The Slack function may not read the PagerDuty key (its IAM policy does not allow it):
    # here that parameter does not even exist.
    monkeypatch.setenv("DOORMAN_SLACK_URL_PARAM", secrets["DOORMAN_SLACK_URL_PARAM"])
    monkeypatch.setenv("DOORMAN_PAGERDUTY_KEY_PARAM", "/doorman/missing/pagerduty")
    n = note()
    with lambda_env() as client:
        out = client.lambda_.invoke("notify_slack", sns_event(client, n)).payload
    assert out == {"outcomes": [{"id": n.id, "status": "sent"}]}
    assert [r.path for r in slack.requests] == [SLACK_PATH]


def test_an_unconfigured_channel_sends_nothing(lambda_env, pagerduty):
    with lambda_env() as client:
        out = client.lambda_.invoke("notify_pagerduty", sns_event(client, note())).payload
    assert out == {"outcomes": []}
    assert pagerduty.requests == []
