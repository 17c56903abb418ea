"""Notification channels: Slack, PagerDuty, email (via SNS), generic webhooks, SNS fan-out."""

from __future__ import annotations

from .base import NotifyError, RetryPolicy

__all__ = ["NotifyError", "RetryPolicy"]
