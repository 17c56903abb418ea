"""Email text for SNS's email protocol, and the signed generic webhook."""

from __future__ import annotations

import json

import pytest

from chalicelib.notify import NotifyError, email
from chalicelib.notify.document import from_document
from chalicelib.notify.webhook import SIGNATURE_HEADER, WebhookChannel, sign, verify
from chalicelib.settings import ConfigError, load_settings
from tests.notify.notes import note, oversized
from tests.notify.recorder import Reply

SECRET = "whS3cret-shared"


@pytest.mark.parametrize(
    "title",
    ["Workers down", "Queue “paiements” growing\r\nBcc: x@y", "é" * 300, "\x00\x07 bell", "🚨" * 5],
)
def test_subject_is_printable_ascii_on_one_line_under_100(title):
    subject = email.subject(note(title=title))
    assert 0 < len(subject) <= 99
    assert all(32 <= ord(c) < 127 for c in subject)
    assert subject.startswith("[Doorman] EMERGENCY")


def test_resolve_subject_and_body():
    assert email.subject(note("resolve")) == "[Doorman] RESOLVED Workers down (prod-eu)"
    body = email.body(note("resolve"))
    assert body.startswith("RESOLVED: Workers down")
    assert "Recommendation" not in body


def test_body_is_readable_with_details_and_recommendation():
    body = email.body(note(queue="payments"))
    assert "No workers responding but 5 tasks are pending" in body
    assert "Severity:  emergency" in body and "Queue:     payments" in body
    assert "  total_pending: 5" in body and "  known_workers: 2" in body
    assert "Recommendation:\nCheck the worker deployment and its logs." in body


def test_oversized_body_stays_bounded():
    assert len(email.body(oversized())) < 60_000


def test_webhook_sends_the_alert_document_signed(recorder, fast):
    server = recorder(default=Reply(204, b""))
    sent = note(queue="payments")
    WebhookChannel(server.url + "/hook", SECRET, fast).send(sent)
    (request,) = server.requests
    doc = request.json()
    assert doc["schema"] == "doorman.notification/1"
    assert doc["key"] == "workers_down:prod-eu" and doc["at_iso"] == "2025-10-09T08:53:20Z"
    assert from_document(doc) == sent
    header = request.headers[SIGNATURE_HEADER]
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert verify(SECRET, request.body, header)
    assert not verify("other", request.body, header)
    assert SECRET not in request.body.decode()


def test_webhook_without_secret_is_unsigned(recorder, fast):
    server = recorder(default=Reply(200, b"{}"))
    WebhookChannel(server.url, None, fast).send(note())
    assert SIGNATURE_HEADER not in server.requests[0].headers
    assert json.loads(server.requests[0].body)["type"] == "workers_down"


def test_webhook_retries_5xx_and_gives_up_on_4xx(recorder, fast):
    flaky = recorder().script(Reply(500), Reply(200))
    WebhookChannel(flaky.url, SECRET, fast).send(note())
    assert len(flaky.requests) == 2
    assert flaky.requests[0].headers[SIGNATURE_HEADER] == sign(SECRET, flaky.requests[1].body)
    gone = recorder(default=Reply(404))
    with pytest.raises(NotifyError) as info:
        WebhookChannel(gone.url + "/x?token=s3cr3t", SECRET, fast).send(note())
    assert info.value.permanent and len(gone.requests) == 1
    assert "s3cr3t" not in str(info.value)


def test_webhook_settings_validation_never_shows_the_value():
    settings = load_settings(
        environ={
            "GENERIC_WEBHOOK_URL": "https://hooks.example/in",
            "GENERIC_WEBHOOK_SECRET": SECRET,
        }
    )
    assert settings.generic_webhook_url == "https://hooks.example/in"
    assert SECRET not in repr(settings)
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"GENERIC_WEBHOOK_URL": "hooks.example/s3cr3t"})
    assert "GENERIC_WEBHOOK_URL (generic_webhook_url)" in str(info.value)
    assert "s3cr3t" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"PAGERDUTY_EVENTS_URL": "http://"})
    assert "pagerduty_events_url" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"DOORMAN_SLACK_MIN_SEVERITY": "loud"})
    assert "slack_min_severity" in str(info.value)
