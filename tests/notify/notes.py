"""Notifications as the lifecycle makes them (details already sanitized)."""

from __future__ import annotations

from typing import Any

from chalicelib.alerting import Notification, notification_id
from chalicelib.model import Severity

AT = 1_760_000_000.0


def note(
    action: str = "trigger",
    *,
    type: str = "workers_down",
    severity: Severity = Severity.EMERGENCY,
    target: str = "prod-eu",
    key: str | None = None,
    **more: Any,
) -> Notification:
    key = key or f"{type}:{target}"
    at = more.pop("at", AT)
    fields: dict[str, Any] = {
        "title": "Workers down",
        "message": "No workers responding but 5 tasks are pending",
        "details": {"total_pending": 5, "known_workers": 2},
        "recommendation": "Check the worker deployment and its logs.",
        "since": AT - 60,
    }
    fields.update(more)
    return Notification(
        id=notification_id(key, action, at),
        action=action,
        key=key,
        type=type,
        severity=severity,
        target=target,
        at=at,
        **fields,
    )


def oversized() -> Notification:
    """Far beyond every limit: long title, message, recommendation, many long details."""
    return note(
        title="Queue backlog " + "x" * 400,
        message="m" * 20_000,
        recommendation="r" * 10_000,
        queue="q-" + "a" * 3000,
        subject="s" * 3000,
        details={f"detail_{i:02d}": "v" * 30_000 for i in range(40)}
        | {"nested": {"list": list(range(5000))}},
    )
