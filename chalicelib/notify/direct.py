"""Direct mode: the channels ``doorman check`` sends to itself, built from settings.

Each channel is a name, a sender and a one-line description for ``--dry-run`` (which names the
channel and summarizes the message, never the URL or the key).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..alerting import RESOLVE, Notification
from ..model import Severity
from ..settings import Settings
from .base import DEFAULT_POLICY, RetryPolicy, Skipped
from .pagerduty import PagerDutyChannel
from .slack import SlackChannel
from .webhook import WebhookChannel


@dataclass(frozen=True)
class Channel:
    name: str
    sender: Callable[[Notification], None]
    describe: Callable[[Notification], str]
    minimum: Severity = Severity.INFO
    always_resolve: bool = False

    def wants(self, note: Notification) -> bool:
        """False when ``note`` is below this channel's minimum severity."""
        return note.severity >= self.minimum or (self.always_resolve and note.action == RESOLVE)

    def send(self, note: Notification) -> None:
        """Deliver ``note``; raises Skipped when unwanted, NotifyError when it fails."""
        if not self.wants(note):
            raise Skipped(f"below {self.minimum.value}")
        self.sender(note)


def channels_from_settings(
    settings: Settings, *, policy: RetryPolicy = DEFAULT_POLICY
) -> list[Channel]:
    """Slack, PagerDuty and the generic webhook, each only when configured."""
    found: list[Channel] = []
    if settings.slack_webhook_url:
        slack = SlackChannel(settings.slack_webhook_url, policy)
        found.append(
            Channel("slack", slack.send, slack.describe, Severity(settings.slack_min_severity))
        )
    if settings.pagerduty_routing_key:
        pd = PagerDutyChannel(settings.pagerduty_routing_key, settings.pagerduty_events_url, policy)
        found.append(
            Channel(
                "pagerduty",
                pd.send,
                pd.describe,
                Severity(settings.pagerduty_min_severity),
                always_resolve=True,
            )
        )
    if settings.generic_webhook_url:
        hook = WebhookChannel(settings.generic_webhook_url, settings.generic_webhook_secret, policy)
        found.append(Channel("webhook", hook.send, hook.describe))
    return found
