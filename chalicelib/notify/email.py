"""Email through SNS's email protocol: a subject SNS accepts and a readable plain-text body.

SNS wants a subject of printable ASCII, under 100 characters, with no line breaks; the body
is what the ``email`` key of a ``MessageStructure=json`` message carries.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

from ..alerting import RESOLVE, Notification
from ..text import iso
from .document import truncate

SUBJECT_MAX = 99
LABELS = {"trigger": "ALERT", "escalate": "ESCALATED", "renotify": "STILL FIRING"}


def ascii_line(text: str) -> str:
    """``text`` folded to printable ASCII on one line (accents dropped, others replaced)."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    cleaned = "".join(c if 32 <= ord(c) < 127 else " " for c in folded)
    return " ".join(cleaned.split())


def subject(note: Notification) -> str:
    """``[Doorman] RESOLVED ...`` / ``[Doorman] CRITICAL ...``: at most 99 printable ASCII."""
    label = "RESOLVED" if note.action == RESOLVE else note.severity.value.upper()
    verb = LABELS.get(note.action, "")
    verb = "" if verb in ("", "ALERT") else verb + ": "
    text = ascii_line(f"[Doorman] {label} {verb}{note.title} ({note.target})")
    return truncate(text, SUBJECT_MAX, "...") or "[Doorman] notification"


def _value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def body(note: Notification, *, detail_max: int = 500) -> str:
    """A plain-text email: what happened, where, since when, the details, what to do."""
    resolved = note.action == RESOLVE
    lines = [
        ("RESOLVED: " if resolved else "") + note.title,
        "",
        note.message or "",
        "",
        f"Severity:  {note.severity.value}",
        f"Alert:     {note.type}",
        f"Target:    {note.target}",
    ]
    if note.queue:
        lines.append(f"Queue:     {note.queue}")
    if note.since is not None:
        lines.append(f"Since:     {iso(note.since, 'seconds')}")
    lines.append(f"At:        {iso(note.at, 'seconds')}")
    lines.append(f"Key:       {note.key}")
    if note.details:
        lines += ["", "Details:"]
        lines += [
            f"  {k}: {truncate(_value(v), detail_max)}" for k, v in sorted(note.details.items())
        ]
    if note.recommendation and not resolved:
        lines += ["", "Recommendation:", note.recommendation]
    lines += [
        "",
        "--",
        "Sent by Doorman. Task arguments and results are never read;",
        "worker and task names are hashed (map them back with `doorman whois HASH`).",
    ]
    return "\n".join(lines) + "\n"
