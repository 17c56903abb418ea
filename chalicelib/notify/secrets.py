"""Channel secrets in Lambda: the Slack webhook URL and the PagerDuty routing key, read from
SSM Parameter Store SecureStrings through Powertools (decrypted, cached for five minutes).

The parameter *names* come from settings (``DOORMAN_SLACK_URL_PARAM``,
``DOORMAN_PAGERDUTY_KEY_PARAM``); the values are never logged, and errors name only the
parameter.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from .channel import NotifyError

log = logging.getLogger("doorman.notify")

MAX_AGE_SECONDS = 300


@dataclass(frozen=True)
class ChannelSecrets:
    slack_webhook_url: str | None = None
    pagerduty_routing_key: str | None = None

    def __repr__(self) -> str:
        return (
            f"ChannelSecrets(slack={self.slack_webhook_url is not None},"
            f" pagerduty={self.pagerduty_routing_key is not None})"
        )


def get_secure_parameter(name: str, *, provider: Any = None) -> str:
    """The decrypted value of SecureString ``name``; raises NotifyError (transient).

    ``provider``: a Powertools ``SSMProvider`` (tests pass one built on their own boto3
    client); by default Powertools' shared provider, which caches across invocations.
    """
    from aws_lambda_powertools.utilities import parameters

    try:
        if provider is None:
            value = parameters.get_parameter(name, decrypt=True, max_age=MAX_AGE_SECONDS)
        else:
            value = provider.get(name, decrypt=True, max_age=MAX_AGE_SECONDS)
    except Exception as exc:
        # Powertools' message quotes the service's, which names the parameter at most.
        log.error("parameter %s unreadable: %s", name, type(exc).__name__)
        raise NotifyError(
            f"secrets: parameter {name} unreadable ({type(exc).__name__})", permanent=False
        ) from None
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if not isinstance(value, str) or not value.strip():
        raise NotifyError(f"secrets: parameter {name} is empty", permanent=True)
    return value.strip()


def load_channel_secrets(
    slack_param: str | None, pagerduty_param: str | None, *, provider: Any = None
) -> ChannelSecrets:
    """Read the configured parameters (None: that channel is not configured)."""
    return ChannelSecrets(
        slack_webhook_url=get_secure_parameter(slack_param, provider=provider)
        if slack_param
        else None,
        pagerduty_routing_key=get_secure_parameter(pagerduty_param, provider=provider)
        if pagerduty_param
        else None,
    )
