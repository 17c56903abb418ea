"""Slack incoming webhook: one Block Kit message per notification, inside Slack's limits.

A header (severity marker and title), the message, a colour bar by severity holding fields
for the alert's details and a context line (target, time), and a fallback ``text``. A
resolve gets its own green "Resolved" message. Slack answers ``200 ok``; 429 is retried after
``Retry-After``; 400/403/404/410 (a bad payload, a revoked or deleted webhook) are permanent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..alerting import RESOLVE, Notification
from ..model import Severity
from ..text import iso
from .channel import MinimumSeverity
from .document import to_json_bytes, truncate
from .http import DEFAULT_POLICY, RetryPolicy, post_json

HEADER_MAX = 150
SECTION_MAX = 3000
FIELD_MAX = 2000
FIELDS_MAX = 10
FALLBACK_MAX = 3000
# Slack documents no exact byte limit for a webhook message; keep far below the ~40k chars
# it accepts in text so that no field can push the whole over.
MESSAGE_BYTES_MAX = 16_000
FIELD_VALUE_MAX = 400  # shorter than Slack's 2000: ten full fields would make an unreadable card

MARKERS = {
    Severity.INFO: "ℹ️",
    Severity.WARNING: "⚠️",
    Severity.CRITICAL: "🔴",
    Severity.EMERGENCY: "🚨",
}
COLOURS = {
    Severity.INFO: "#439FE0",
    Severity.WARNING: "#ECB22E",
    Severity.CRITICAL: "#E01E5A",
    Severity.EMERGENCY: "#8B0000",
}
RESOLVED_MARKER = "✅"
RESOLVED_COLOUR = "#2EB67D"
VERBS = {"trigger": "", "escalate": "Escalated: ", "renotify": "Still firing: ", "resolve": ""}


def escape(text: str) -> str:
    """Slack mrkdwn escaping: no mention (``<!channel>``) or link can be smuggled in a name."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(", ", ": "), ensure_ascii=False, default=str)


def _field(name: str, value: Any) -> dict[str, str]:
    body = truncate(escape(_value(value)), FIELD_VALUE_MAX)
    return {"type": "mrkdwn", "text": truncate(f"*{escape(name)}*\n{body}", FIELD_MAX)}


def _fields(note: Notification) -> list[dict[str, str]]:
    """The card's fields: severity, type, queue, subject, since, then the details (at most
    ``FIELDS_MAX`` in all, the last saying how many details were left out)."""
    fields = [_field("Severity", note.severity.value.upper()), _field("Alert", note.type)]
    if note.queue:
        fields.append(_field("Queue", note.queue))
    if note.subject and note.subject != note.queue:
        fields.append(_field("Subject", note.subject))
    if note.since is not None:
        fields.append(_field("Firing since", iso(note.since, "seconds")))
    detail_items = sorted(note.details.items())
    room = FIELDS_MAX - len(fields)
    if len(detail_items) > room:
        shown, hidden = detail_items[: room - 1], len(detail_items) - (room - 1)
        fields += [_field(k, v) for k, v in shown]
        fields.append(_field("More", f"{hidden} more details not shown"))
    else:
        fields += [_field(k, v) for k, v in detail_items]
    return fields[:FIELDS_MAX]


def _card(note: Notification, resolved: bool) -> list[dict[str, Any]]:
    """The blocks inside the colour bar: fields, recommendation, context line."""
    inner: list[dict[str, Any]] = [{"type": "section", "fields": _fields(note)}]
    if note.recommendation and not resolved:
        text = truncate("*Recommendation*\n" + escape(note.recommendation), 1000)
        inner.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
    context = (
        f"Target *{escape(note.target)}* · {iso(note.at, 'seconds')} · key `{escape(note.key)}`"
    )
    inner.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": truncate(context, 1000)}]}
    )
    return inner


def build_message(note: Notification) -> dict[str, Any]:
    """The webhook body for ``note``; always within Slack's block and size limits."""
    resolved = note.action == RESOLVE
    marker = RESOLVED_MARKER if resolved else MARKERS.get(note.severity, "")
    colour = RESOLVED_COLOUR if resolved else COLOURS.get(note.severity, "#808080")
    prefix = "Resolved: " if resolved else VERBS.get(note.action, "")
    header = truncate(f"{marker} {prefix}{note.title}".strip(), HEADER_MAX)
    message = (
        f"This alert has cleared. {note.message}" if resolved and note.message else note.message
    )
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}}
    ]
    if message:
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": truncate(escape(message), SECTION_MAX)},
            }
        )
    fallback = truncate(
        f"{prefix}[{note.severity.value}] {note.title} - {note.message} ({note.target})",
        FALLBACK_MAX,
    )
    doc: dict[str, Any] = {
        "text": escape(fallback),
        "blocks": blocks,
        "attachments": [{"color": colour, "blocks": _card(note, resolved)}],
    }
    return _shrink(doc)


def _shrink(doc: dict[str, Any]) -> dict[str, Any]:
    """Cut field values until the whole message fits ``MESSAGE_BYTES_MAX``."""
    limit = FIELD_VALUE_MAX
    while len(to_json_bytes(doc)) > MESSAGE_BYTES_MAX and limit > 20:
        limit //= 2
        for block in doc["attachments"][0]["blocks"]:
            for f in block.get("fields", []):
                f["text"] = truncate(f["text"], limit)
    if len(to_json_bytes(doc)) > MESSAGE_BYTES_MAX:
        for block in doc["blocks"]:
            if block["type"] == "section":
                block["text"]["text"] = truncate(block["text"]["text"], 1000)
        doc["text"] = truncate(doc["text"], 1000)
    return doc


@dataclass(frozen=True)
class SlackChannel(MinimumSeverity):
    """Posts notifications to one incoming webhook (``url`` is a secret: never shown)."""

    url: str
    policy: RetryPolicy = DEFAULT_POLICY
    name: str = "slack"
    minimum: Severity = Severity.INFO

    def __repr__(self) -> str:
        return f"SlackChannel(name={self.name!r})"

    def send(self, note: Notification) -> None:
        """Deliver ``note``; raises NotifyError (``permanent`` for 4xx other than 429)."""
        post_json(self.name, self.url, build_message(note), policy=self.policy, success=(200,))

    def describe(self, note: Notification) -> str:
        return build_message(note)["text"]  # type: ignore[no-any-return]
