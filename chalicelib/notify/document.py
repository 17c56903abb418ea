"""The alert as a document: one JSON shape for webhooks and SNS, and the text helpers every
channel uses to stay inside its receiver's limits. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..alerting import Notification
from ..text import iso


def to_json_bytes(document: Mapping[str, Any]) -> bytes:
    """``document`` as compact UTF-8 JSON."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def truncate(text: str, limit: int, marker: str = "…") -> str:
    """``text`` cut to at most ``limit`` characters, ending in ``marker`` when cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(marker))] + marker


def alert_document(note: Notification) -> dict[str, Any]:
    """The alert as one JSON document (webhook body, SNS ``default`` message).

    Every field comes from the notification, whose details are already sanitized.
    """
    doc = note.to_json()
    doc["schema"] = "doorman.notification/1"
    doc["at_iso"] = iso(note.at, "seconds")
    doc["since_iso"] = None if note.since is None else iso(note.since, "seconds")
    return doc


def from_document(doc: Mapping[str, Any]) -> Notification:
    """The notification an :func:`alert_document` holds; raises ValueError/KeyError/TypeError."""
    fields = {
        k: v for k, v in doc.items() if k not in {"schema", "at_iso", "since_iso", "truncated"}
    }
    return Notification.from_json(fields)


def shrink_details(details: Mapping[str, Any], max_bytes: int) -> dict[str, Any]:
    """``details`` whose JSON fits ``max_bytes``: long values cut, then the whole dropped.

    Values that are not short strings or numbers are carried as (cut) JSON text once cutting
    is needed; ``truncated: true`` says that something was cut.
    """
    doc = dict(details)
    if len(to_json_bytes(doc)) <= max_bytes:
        return doc
    limit = 4096
    while limit >= 64:
        cut: dict[str, Any] = {"truncated": True}
        for key, value in list(details.items())[:100]:
            text = value if isinstance(value, str) else None
            if text is None and not isinstance(value, int | float | bool | None):
                text = json.dumps(value, separators=(",", ":"), default=str)
            cut[truncate(str(key), 100)] = value if text is None else truncate(text, limit)
        if len(to_json_bytes(cut)) <= max_bytes:
            return cut
        limit //= 2
    return {"truncated": True, "detail_keys": len(details)}
