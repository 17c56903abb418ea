"""Notification channels: Slack, PagerDuty, email (via SNS), generic webhooks, SNS fan-out.

``channel``: the :class:`Channel` interface, its severity check and the error type;
``http``: posting with retries; ``document``: the alert document and text limits; one module
per channel; ``direct``: the channels ``doorman check`` builds from settings; ``secrets``:
channel secrets from SSM in Lambda.
"""

from __future__ import annotations

from .channel import Channel, NotifyError
from .http import RetryPolicy

__all__ = ["Channel", "NotifyError", "RetryPolicy"]
