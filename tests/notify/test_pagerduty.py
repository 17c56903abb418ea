"""PagerDuty Events API v2: trigger and resolve on one dedup_key, mapping, limits, answers."""

from __future__ import annotations

import pytest

from chalicelib.model import Severity
from chalicelib.notify import NotifyError
from chalicelib.notify.direct import channels_from_settings
from chalicelib.notify.pagerduty import DEFAULT_EVENTS_URL, PagerDutyChannel, build_event
from chalicelib.settings import load_settings
from tests.notify.notes import note, oversized
from tests.notify.recorder import Reply
from tests.notify.schemas import check_pagerduty

KEY = "R0UT1NGKEY0123456789abcdefabcdef"
ACCEPTED = Reply(202, b'{"status":"success","message":"Event processed","dedup_key":"x"}')


def test_trigger_event_fields():
    event = build_event(note(queue="payments"), KEY)
    check_pagerduty(event, KEY)
    p = event["payload"]
    assert event["dedup_key"] == "workers_down:prod-eu"
    assert p["summary"] == "Workers down: No workers responding but 5 tasks are pending"
    assert p["source"] == "prod-eu"
    assert p["severity"] == "critical"
    assert p["timestamp"] == "2025-10-09T08:53:20Z"
    assert p["component"] == "payments"
    assert p["class"] == "workers_down"
    assert p["custom_details"]["details"] == {"total_pending": 5, "known_workers": 2}
    assert p["custom_details"]["recommendation"].startswith("Check the worker")


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (Severity.EMERGENCY, "critical"),
        (Severity.CRITICAL, "error"),
        (Severity.WARNING, "warning"),
        (Severity.INFO, "info"),
    ],
)
def test_severity_mapping(ours, theirs):
    assert build_event(note(severity=ours), KEY)["payload"]["severity"] == theirs


@pytest.mark.parametrize("action", ["renotify", "escalate"])
def test_renotify_and_escalate_are_triggers_on_the_same_key(action):
    event = build_event(note(action), KEY)
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == "workers_down:prod-eu"


def test_oversized_alert_fits():
    event = build_event(oversized(), KEY)
    check_pagerduty(event, KEY)
    assert event["payload"]["summary"].endswith("…")
    long_key = build_event(note(key="k" * 600), KEY)
    check_pagerduty(long_key, KEY)
    assert long_key["dedup_key"] == build_event(note("resolve", key="k" * 600), KEY)["dedup_key"]


def test_trigger_and_resolve_reach_pagerduty_with_the_same_dedup_key(recorder, fast):
    server = recorder(default=ACCEPTED)
    channel = PagerDutyChannel(KEY, server.url + "/v2/enqueue", fast)
    channel.send(note("trigger"))
    channel.send(note("resolve", at=note().at + 120))
    trigger, resolve = server.bodies()
    for doc in (trigger, resolve):
        check_pagerduty(doc, KEY)
    assert trigger["event_action"] == "trigger" and resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"] == "workers_down:prod-eu"
    assert {r.path for r in server.requests} == {"/v2/enqueue"}


def test_400_is_permanent_and_tried_once(recorder, fast):
    server = recorder(
        default=Reply(400, b'{"status":"invalid event","message":"Event object is invalid"}')
    )
    with pytest.raises(NotifyError) as info:
        PagerDutyChannel(KEY, server.url, fast).send(note())
    assert info.value.permanent and info.value.status == 400
    assert len(server.requests) == 1
    assert KEY not in str(info.value) and KEY not in repr(PagerDutyChannel(KEY, server.url))


@pytest.mark.parametrize("first", [Reply(429), Reply(500), Reply(503)])
def test_429_and_5xx_are_retried(recorder, fast, first):
    server = recorder().script(first, ACCEPTED)
    PagerDutyChannel(KEY, server.url, fast).send(note())
    assert len(server.requests) == 2
    assert server.requests[0].body == server.requests[1].body


def test_events_url_comes_from_settings():
    default = load_settings(environ={"PAGERDUTY_ROUTING_KEY": KEY})
    assert default.pagerduty_events_url == DEFAULT_EVENTS_URL
    settings = load_settings(
        environ={"PAGERDUTY_ROUTING_KEY": KEY, "PAGERDUTY_EVENTS_URL": "http://127.0.0.1:9/x"}
    )
    (channel,) = channels_from_settings(settings)
    assert channel.name == "pagerduty"
    assert KEY not in repr(settings)
