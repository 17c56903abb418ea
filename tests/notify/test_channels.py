"""One channel interface: every channel says its name, whether it wants a notification (its
minimum severity, checked in one place), sends it and describes it; settings hand the
channels their minimum severities already parsed."""

from __future__ import annotations

from chalicelib.delivery import ConsoleChannel
from chalicelib.model import Severity
from chalicelib.notify import Channel
from chalicelib.notify.direct import channels_from_settings
from chalicelib.notify.document import alert_document
from chalicelib.notify.pagerduty import PagerDutyChannel
from chalicelib.notify.slack import SlackChannel
from chalicelib.notify.sns import SnsPublisher
from chalicelib.notify.webhook import WebhookChannel
from chalicelib.settings import load_settings
from chalicelib.text import iso
from tests.notify.notes import note

URL = "http://127.0.0.1:9/hook"
KEY = "R0UT1NGKEY0123456789abcdefabcdef"


def test_severity_settings_are_parsed_once_into_severities():
    settings = load_settings(
        environ={"DOORMAN_SLACK_MIN_SEVERITY": " Critical ", "SLACK_WEBHOOK_URL": URL}
    )
    assert type(settings.slack_min_severity) is Severity
    assert settings.slack_min_severity is Severity.CRITICAL
    assert type(settings.pagerduty_min_severity) is Severity
    assert settings.pagerduty_min_severity is Severity.WARNING


def test_every_channel_is_a_channel():
    channels = [
        SlackChannel(URL),
        PagerDutyChannel(KEY, URL),
        WebhookChannel(URL),
        SnsPublisher(object(), "arn:aws:sns:us-east-1:123456789012:t"),
        ConsoleChannel(),
    ]
    for channel in channels:
        assert isinstance(channel, Channel)
        assert channel.describe(note())
    assert [c.name for c in channels] == ["slack", "pagerduty", "webhook", "sns", "console"]


def test_the_minimum_severity_lives_on_the_channel():
    settings = load_settings(
        environ={
            "SLACK_WEBHOOK_URL": URL,
            "DOORMAN_SLACK_MIN_SEVERITY": "critical",
            "PAGERDUTY_ROUTING_KEY": KEY,
            "DOORMAN_PAGERDUTY_MIN_SEVERITY": "emergency",
            "GENERIC_WEBHOOK_URL": URL,
        }
    )
    slack, pagerduty, webhook = channels_from_settings(settings)
    assert (slack.minimum, pagerduty.minimum, webhook.minimum) == (
        Severity.CRITICAL,
        Severity.EMERGENCY,
        Severity.INFO,
    )
    warning = note(severity=Severity.WARNING)
    resolve = note("resolve", severity=Severity.WARNING)
    assert [c.wants(warning) for c in (slack, pagerduty, webhook)] == [False, False, True]
    assert slack.wants(note(severity=Severity.CRITICAL))
    # A resolve always reaches PagerDuty: it closes an incident opened at a higher level.
    assert [c.wants(resolve) for c in (slack, pagerduty, webhook)] == [False, True, True]


def test_one_iso_for_every_timestamp():
    n = note(at=1_760_000_000.25, since=1_760_000_000.0 - 60)
    doc = alert_document(n)
    assert doc["at_iso"] == iso(n.at, "seconds") == "2025-10-09T08:53:20Z"
    assert iso(n.at) == "2025-10-09T08:53:20.250Z"
    assert doc["since_iso"] == "2025-10-09T08:52:20Z"
    assert alert_document(note(since=None))["since_iso"] is None
