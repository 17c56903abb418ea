"""Slack: the Block Kit message, its limits, a resolved message, and how answers are handled."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from chalicelib.model import Severity
from chalicelib.notify import NotifyError
from chalicelib.notify.slack import RESOLVED_COLOUR, SlackChannel, build_message
from tests.notify.notes import note, oversized
from tests.notify.recorder import Reply
from tests.notify.schemas import check_slack


def test_trigger_message_has_header_fields_context_colour_and_fallback():
    doc = build_message(note(queue="payments"))
    check_slack(doc)
    header = doc["blocks"][0]["text"]["text"]
    assert header.startswith("🚨") and "Workers down" in header
    assert doc["blocks"][1]["text"]["text"] == "No workers responding but 5 tasks are pending"
    fields = doc["attachments"][0]["blocks"][0]["fields"]
    texts = [f["text"] for f in fields]
    assert "*Severity*\nEMERGENCY" in texts and "*Queue*\npayments" in texts
    assert "*total_pending*\n5" in texts and "*known_workers*\n2" in texts
    context = doc["attachments"][0]["blocks"][-1]["elements"][0]["text"]
    assert "prod-eu" in context and "2025-10-09T08:53:20Z" in context
    assert doc["attachments"][0]["color"] == "#8B0000"
    assert "Workers down" in doc["text"] and "emergency" in doc["text"]


@pytest.mark.parametrize(
    ("severity", "marker", "colour"),
    [
        (Severity.INFO, "ℹ️", "#439FE0"),
        (Severity.WARNING, "⚠️", "#ECB22E"),
        (Severity.CRITICAL, "🔴", "#E01E5A"),
        (Severity.EMERGENCY, "🚨", "#8B0000"),
    ],
)
def test_severity_marker_and_colour(severity, marker, colour):
    doc = build_message(note(severity=severity))
    assert doc["blocks"][0]["text"]["text"].startswith(marker)
    assert doc["attachments"][0]["color"] == colour


def test_resolved_message_is_distinct():
    doc = build_message(note("resolve"))
    check_slack(doc)
    header = doc["blocks"][0]["text"]["text"]
    assert header.startswith("✅ Resolved: Workers down")
    assert doc["attachments"][0]["color"] == RESOLVED_COLOUR
    assert doc["text"].startswith("Resolved: ")
    assert "Recommendation" not in json.dumps(doc)


def test_oversized_alert_is_truncated_into_slack_limits():
    big = oversized()
    doc = build_message(big)
    check_slack(doc)
    assert doc["blocks"][0]["text"]["text"].endswith("…")
    fields = doc["attachments"][0]["blocks"][0]["fields"]
    assert len(fields) == 10
    assert "more details not shown" in fields[-1]["text"]


def test_names_cannot_mention_channels_or_smuggle_links():
    doc = build_message(note(title="a", message="<!channel> <http://x|y> & co", queue="<!here>"))
    text = json.dumps(doc)
    assert "<!channel>" not in text and "<!here>" not in text and "<http" not in text
    assert "&lt;!channel&gt;" in text


def test_200_ok_is_success(recorder, fast):
    server = recorder(default=Reply(200, b"ok"))
    SlackChannel(server.url + "/services/T/B/x", fast).send(note())
    assert len(server.requests) == 1
    assert server.requests[0].path == "/services/T/B/x"
    assert server.requests[0].headers["Content-Type"] == "application/json"
    check_slack(server.bodies()[0])


def test_429_honours_retry_after(recorder, fast):
    server = recorder().script(
        Reply(429, b"rate_limited", {"Retry-After": "0.25"}), Reply(200, b"ok")
    )
    waits: list[float] = []
    SlackChannel(server.url, replace(fast, sleep=waits.append)).send(note())
    assert len(server.requests) == 2
    assert waits == [0.25]
    assert server.requests[0].body == server.requests[1].body


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, b"invalid_payload"),
        (403, b"action_prohibited"),
        (404, b"no_service"),
        (410, b"channel_is_archived"),
    ],
)
def test_4xx_is_permanent_and_tried_once(recorder, fast, status, body):
    server = recorder(default=Reply(status, body))
    url = server.url + "/services/T/B/secret-token-123"
    with pytest.raises(NotifyError) as info:
        SlackChannel(url, fast).send(note())
    assert info.value.permanent and info.value.status == status
    assert len(server.requests) == 1
    assert "secret-token-123" not in str(info.value)
    assert "secret-token-123" not in repr(SlackChannel(url, fast))


def test_5xx_then_ok(recorder, fast):
    server = recorder().script(Reply(500, b"server_error"), Reply(200, b"ok"))
    waits: list[float] = []
    SlackChannel(server.url, replace(fast, sleep=waits.append)).send(note())
    assert len(server.requests) == 2
    assert len(waits) == 1 and waits[0] <= fast.backoff_max  # one backoff, no Retry-After
