"""Formatting for people: the one escaping function and the durations, sizes, counts and
timestamps every human-facing output shares. Pure: no I/O, nothing of the project imported."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal


def safe_text(value: Any) -> str:
    """``value`` as text that cannot drive a terminal or forge a line; returns the text.

    The one escaping function of every human-facing output (text check, audit, alert and
    ``--dry-run`` lines, ``whois``, ``silence``, log lines, argument errors). A queue, task or
    worker name may hold a newline, a carriage return, a bell, an ANSI escape sequence or a
    bidirectional override; printed raw it could forge lines of a report, recolour or clear
    the screen, or show text reversed. Every character that is not printable (in Python's
    sense: C0 and C1 controls, DEL, format characters such as U+200E/U+200F, U+061C, the bidi
    embeddings, overrides and isolates U+202A-U+202E and U+2066-U+2069, the line and paragraph
    separators U+2028/U+2029, unassigned and private-use code points, spaces other than ' ')
    is written as its Python escape (``\\x1b``, ``\\n``, ``\\u202e``). A backslash is
    printable and kept, so escaping escaped text changes nothing: layers may each call it.
    """
    text = str(value)
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )


def safe_lines(text: str) -> str:
    """``text`` with each of its lines escaped, the line breaks kept; returns the text."""
    return "\n".join(safe_text(line) for line in text.split("\n"))


def fmt_seconds(value: float) -> str:
    """Seconds as a short human duration: 0.5 s, 45 s, 12.5 min, 3 h, 2.5 d."""

    def short(number: float, unit: str) -> str:
        return f"{number:.1f}".removesuffix(".0") + " " + unit

    if value < 10:
        return short(value, "s")
    if value < 120:
        return f"{value:.0f} s"
    if value < 3600:
        return short(value / 60, "min")
    if value < 3 * 86400:
        return short(value / 3600, "h")
    return short(value / 86400, "d")


def fmt_bytes(value: int) -> str:
    size = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def seconds_fixed(value: float | None) -> str:
    """Seconds with one decimal in s, min or h (the text check's columns); "-" for None."""
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def count(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1: "1 worker", "3 workers"."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def iso(ts: float, timespec: Literal["seconds", "milliseconds"] = "milliseconds") -> str:
    """The one timestamp format: UTC ISO 8601 ending in ``Z``. Milliseconds in the check's
    document and the CLI; alerts (Slack, PagerDuty, email, webhook) show whole seconds."""
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec=timespec).replace("+00:00", "Z")
