"""PagerDuty Events API v2: trigger (also renotify/escalate) and resolve, deduplicated by key.

The alert key is the ``dedup_key``, so a notification delivered twice, or a trigger and its
resolve sent by different processes, land on one incident. 202 is success; 400 (an invalid
event or routing key) is permanent; 429 and 5xx are retried.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar

from ..alerting import RESOLVE, Notification
from ..model import Severity
from ..text import iso
from .channel import MinimumSeverity
from .document import shrink_details, truncate
from .http import DEFAULT_POLICY, RetryPolicy, post_json

DEFAULT_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
SUMMARY_MAX = 1024
DEDUP_KEY_MAX = 255
FIELD_MAX = 255  # source, component, group, class
DETAILS_MAX_BYTES = 64 * 1024

SEVERITY = {
    Severity.EMERGENCY: "critical",
    Severity.CRITICAL: "error",
    Severity.WARNING: "warning",
    Severity.INFO: "info",
}


def dedup_key(note: Notification) -> str:
    """The alert key, or a digest of it when PagerDuty's 255 characters are not enough."""
    if len(note.key) <= DEDUP_KEY_MAX:
        return note.key
    digest = hashlib.sha256(note.key.encode()).hexdigest()
    return note.key[: DEDUP_KEY_MAX - 65] + "#" + digest


def build_event(note: Notification, routing_key: str) -> dict[str, Any]:
    """The Events API v2 body for ``note``."""
    if note.action == RESOLVE:
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key(note)}
    prefix = {"escalate": "[escalated] ", "renotify": "[still firing] "}.get(note.action, "")
    summary = f"{prefix}{note.title}: {note.message}" if note.message else prefix + note.title
    details: dict[str, Any] = {
        "message": truncate(note.message, 4000),
        "action": note.action,
        "doorman_severity": note.severity.value,
        "alert_key": note.key,
        "notification_id": note.id,
    }
    if note.queue:
        details["queue"] = note.queue
    if note.since is not None:
        details["firing_since"] = iso(note.since, "seconds")
    if note.recommendation:
        details["recommendation"] = truncate(note.recommendation, 2000)
    # Sanitized at the source; cut to stay far inside PagerDuty's 512 KB per event.
    details["details"] = shrink_details(note.details, DETAILS_MAX_BYTES)
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key(note),
        "client": "Doorman",
        "payload": {
            "summary": truncate(summary, SUMMARY_MAX),
            "source": truncate(note.target, FIELD_MAX),
            "severity": SEVERITY.get(note.severity, "error"),
            "timestamp": iso(note.at, "seconds"),
            "component": truncate(note.queue or note.subject or "celery", FIELD_MAX),
            "group": truncate(note.target, FIELD_MAX),
            "class": truncate(note.type, FIELD_MAX),
            "custom_details": details,
        },
    }


@dataclass(frozen=True)
class PagerDutyChannel(MinimumSeverity):
    """Sends events for one routing key (a secret: never shown); resolves whatever their
    severity."""

    routing_key: str
    url: str = DEFAULT_EVENTS_URL
    policy: RetryPolicy = DEFAULT_POLICY
    name: str = "pagerduty"
    minimum: Severity = Severity.WARNING
    always_resolve: ClassVar[bool] = True

    def __repr__(self) -> str:
        return f"PagerDutyChannel(name={self.name!r})"

    def send(self, note: Notification) -> None:
        """Deliver ``note``; raises NotifyError (``permanent`` for 400 and other 4xx but 429)."""
        post_json(
            self.name,
            self.url,
            build_event(note, self.routing_key),
            policy=self.policy,
            success=(200, 201, 202),
        )

    def describe(self, note: Notification) -> str:
        event = build_event(note, "")
        if note.action == RESOLVE:
            return f"resolve dedup_key={event['dedup_key']}"
        payload = event["payload"]
        return (
            f"trigger [{payload['severity']}] {payload['summary']} dedup_key={event['dedup_key']}"
        )
