"""Direct mode: the channels ``doorman check`` sends to itself, built from settings.

Each is a :class:`~.channel.Channel` carrying its minimum severity from the settings;
``describe`` is the ``--dry-run`` line (it names the channel and summarizes the message,
never the URL or the key).
"""

from __future__ import annotations

from ..settings import Settings
from .channel import Channel
from .http import DEFAULT_POLICY, RetryPolicy
from .pagerduty import PagerDutyChannel
from .slack import SlackChannel
from .webhook import WebhookChannel


def channels_from_settings(
    settings: Settings, *, policy: RetryPolicy = DEFAULT_POLICY
) -> list[Channel]:
    """Slack, PagerDuty and the generic webhook, each only when configured."""
    found: list[Channel] = []
    if settings.slack_webhook_url:
        found.append(
            SlackChannel(settings.slack_webhook_url, policy, minimum=settings.slack_min_severity)
        )
    if settings.pagerduty_routing_key:
        found.append(
            PagerDutyChannel(
                settings.pagerduty_routing_key,
                settings.pagerduty_events_url,
                policy,
                minimum=settings.pagerduty_min_severity,
            )
        )
    if settings.generic_webhook_url:
        found.append(
            WebhookChannel(settings.generic_webhook_url, settings.generic_webhook_secret, policy)
        )
    return found
