"""Local delivery of the outbox to several channels: one dead channel never blocks the rest."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from chalicelib.alerting import Notification
from chalicelib.delivery import DeliveryLog, deliver_outbox
from chalicelib.model import Severity
from chalicelib.notify import NotifyError
from chalicelib.notify.channel import MinimumSeverity
from chalicelib.notify.pagerduty import PagerDutyChannel
from chalicelib.notify.slack import SlackChannel
from chalicelib.state import TargetState
from chalicelib.state.sqlite import SqliteStore
from tests.notify.notes import note as _note
from tests.notify.recorder import Reply

TARGET = "prod-eu"
NOW = time.time()  # the store expires outbox items a few days old


def note(action: str = "trigger", at: float = NOW):
    return _note(action, at=at)


KEY = "R0UT1NGKEY0123456789abcdefabcdef"


@dataclass(frozen=True)
class Raising(MinimumSeverity):
    """A channel whose every send raises ``error``."""

    error: Exception
    name: str = "x"
    minimum: Severity = Severity.INFO

    def send(self, note: Notification) -> None:
        raise self.error

    def describe(self, note: Notification) -> str:
        return "raises"


@pytest.fixture
def store(tmp_path: Path):
    s = SqliteStore(str(tmp_path / "state.db"))
    try:
        yield s
    finally:
        s.close()


def queue(store, *notes):
    store.commit(TARGET, TargetState(), store.load(TARGET).version, list(notes))


def test_permanently_failing_slack_does_not_stop_pagerduty_and_is_tried_once(store, recorder, fast):
    slack = recorder(default=Reply(404, b"no_service"))
    pd = recorder(default=Reply(202, b"{}"))
    queue(store, note())
    channels = [
        SlackChannel(slack.url, fast),
        PagerDutyChannel(KEY, pd.url, fast),
    ]
    results = deliver_outbox(store, TARGET, channels)
    assert [(r.channel, r.ok, r.permanent) for r in results] == [
        ("slack", False, True),
        ("pagerduty", True, False),
    ]
    assert results[0].error == "slack: HTTP 404 (permanent)"
    assert len(slack.requests) == 1 and len(pd.requests) == 1
    # Settled: the permanent failure is recorded, and the item leaves the outbox.
    assert store.undelivered(TARGET) == []
    assert deliver_outbox(store, TARGET, channels) == []
    assert len(slack.requests) == 1


def test_transient_failure_keeps_the_item_and_retries_only_that_channel(store, recorder, fast):
    slack = recorder(default=Reply(200, b"ok"))
    pd = recorder(default=Reply(202, b"{}")).script(*[Reply(503)] * fast.max_attempts)
    queue(store, note())
    channels = [
        SlackChannel(slack.url, fast),
        PagerDutyChannel(KEY, pd.url, fast),
    ]
    memo = DeliveryLog()
    first = deliver_outbox(store, TARGET, channels, log_=memo)
    assert [(r.channel, r.ok, r.permanent) for r in first] == [
        ("slack", True, False),
        ("pagerduty", False, False),
    ]
    assert len(store.undelivered(TARGET)) == 1
    second = deliver_outbox(store, TARGET, channels, log_=memo)
    assert [(r.channel, r.ok) for r in second] == [("pagerduty", True)]
    assert len(slack.requests) == 1  # not posted twice
    assert len(pd.requests) == fast.max_attempts + 1
    assert store.undelivered(TARGET) == []


def test_a_later_process_does_not_resend_to_a_channel_that_already_took_it(
    store, recorder, fast, tmp_path
):
    """``doorman check --once`` from cron: each run is a new process with an empty memory."""
    slack = recorder(default=Reply(200, b"ok"))
    pd = recorder(default=Reply(202, b"{}")).script(*[Reply(503)] * fast.max_attempts)
    queue(store, note())
    channels = [
        SlackChannel(slack.url, fast),
        PagerDutyChannel(KEY, pd.url, fast),
    ]
    deliver_outbox(store, TARGET, channels, log_=DeliveryLog())
    later = SqliteStore(store.path)  # the next run's own store and memory
    try:
        second = deliver_outbox(later, TARGET, channels, log_=DeliveryLog())
    finally:
        later.close()
    assert [(r.channel, r.ok) for r in second] == [("pagerduty", True)]
    assert len(slack.requests) == 1
    assert store.undelivered(TARGET) == []


def test_a_channel_down_is_not_tried_again_in_the_same_round(store, recorder, fast):
    pd = recorder(default=Reply(500))
    queue(store, note(), note("resolve", at=NOW + 60))
    results = deliver_outbox(store, TARGET, [PagerDutyChannel(KEY, pd.url, fast)])
    assert len(pd.requests) == fast.max_attempts  # the first item's retries only
    assert [r.ok for r in results] == [False, False]
    assert results[1].error is not None and results[1].error.startswith("not tried")
    assert len(store.undelivered(TARGET)) == 2


def test_an_item_unsent_for_too_long_is_given_up(store):
    queue(store, note())

    broken = Raising(NotifyError("x: HTTP 503", permanent=False, status=503))
    item = store.undelivered(TARGET)[0]
    results = deliver_outbox(store, TARGET, [broken], now=lambda: item.created_at + 10, max_age=5)
    assert [r.ok for r in results] == [False]
    assert store.undelivered(TARGET) == []


def test_an_unexpected_exception_is_recorded_by_kind_only(store):
    queue(store, note())

    leaky = Raising(RuntimeError("https://hooks.slack.com/services/SECRET"))
    (result,) = deliver_outbox(store, TARGET, [leaky])
    assert result.error == "RuntimeError" and not result.permanent


def test_below_a_channels_minimum_is_skipped_and_settles_that_channel(store, recorder, fast):
    slack = recorder(default=Reply(200, b"ok"))
    pd = recorder(default=Reply(202, b"{}"))
    queue(store, _note(severity=Severity.WARNING, at=NOW))
    channels = [
        SlackChannel(slack.url, fast, minimum=Severity.CRITICAL),
        PagerDutyChannel(KEY, pd.url, fast),
    ]
    results = deliver_outbox(store, TARGET, channels)
    assert [(r.channel, r.ok, r.skipped) for r in results] == [
        ("slack", True, True),
        ("pagerduty", True, False),
    ]
    assert slack.requests == [] and len(pd.requests) == 1
    assert store.undelivered(TARGET) == []
