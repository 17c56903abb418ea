"""The documented shapes and limits of what Doorman sends, checked field by field."""

from __future__ import annotations

import json
import re
from typing import Any

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def check_slack(doc: dict[str, Any]) -> None:
    """Block Kit limits: header plain_text <= 150, section text <= 3000, <= 10 fields of
    <= 2000, <= 50 blocks; a fallback text; a colour bar; the whole well under 40 KB."""
    assert isinstance(doc["text"], str) and 0 < len(doc["text"]) <= 3000
    blocks = doc["blocks"]
    attachments = doc["attachments"]
    assert len(attachments) == 1
    assert re.fullmatch(r"#[0-9A-Fa-f]{6}", attachments[0]["color"])
    inner = attachments[0]["blocks"]
    assert len(blocks) + len(inner) <= 50
    header = blocks[0]
    assert header["type"] == "header"
    assert header["text"]["type"] == "plain_text"
    assert 0 < len(header["text"]["text"]) <= 150
    for block in blocks[1:] + inner:
        assert block["type"] in {"section", "context", "divider"}
        if block["type"] == "section":
            assert "text" in block or "fields" in block
            if "text" in block:
                assert block["text"]["type"] == "mrkdwn"
                assert 0 < len(block["text"]["text"]) <= 3000
            if "fields" in block:
                assert 0 < len(block["fields"]) <= 10
                for f in block["fields"]:
                    assert f["type"] == "mrkdwn" and 0 < len(f["text"]) <= 2000
        if block["type"] == "context":
            assert 0 < len(block["elements"]) <= 10
            for e in block["elements"]:
                assert e["type"] == "mrkdwn" and 0 < len(e["text"]) <= 3000
    assert any(b["type"] == "context" for b in inner)
    assert len(json.dumps(doc).encode()) <= 16_000


def check_pagerduty(doc: dict[str, Any], routing_key: str) -> None:
    """Events API v2: trigger with a full payload, or resolve with the dedup key only."""
    assert doc["routing_key"] == routing_key
    assert 0 < len(doc["dedup_key"]) <= 255
    if doc["event_action"] == "resolve":
        assert set(doc) == {"routing_key", "event_action", "dedup_key"}
        return
    assert doc["event_action"] == "trigger"
    p = doc["payload"]
    assert {"summary", "source", "severity"} <= set(p)
    assert 0 < len(p["summary"]) <= 1024
    assert 0 < len(p["source"]) <= 255
    assert p["severity"] in {"critical", "error", "warning", "info"}
    assert ISO.match(p["timestamp"])
    for name in ("component", "group", "class"):
        assert isinstance(p[name], str) and 0 < len(p[name]) <= 255
    assert isinstance(p["custom_details"], dict)
    assert len(json.dumps(doc).encode()) < 512 * 1024
