"""Human summaries of a check payload (``--format text``)."""

from __future__ import annotations

from typing import Any


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


_SOURCES = {
    "producer_header": "exact, producer header",
    "expires": "exact, from expires",
    "observed": "at least, first seen",
    "empty": "empty",
    "not_due": "ETA not due",
}


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


def render_text(payload: dict[str, Any]) -> str:
    """A short summary of one check: connection, workers, queues, anomalies, errors."""
    m = payload["metrics"]
    lines = [
        f"Doorman check - target {safe_text(payload['target'])} - {payload['timestamp']}"
        f" - {payload['check_duration_ms']:.0f} ms"
    ]
    redis_state = "connected" if m["redis_connected"] else "UNREACHABLE"
    version = payload.get("redis", {}).get("version")
    lines.append(f"  Redis      {redis_state}" + (f" (Redis {version})" if version else ""))
    lines.append(
        f"  Workers    {m['alive_workers']}/{m['total_workers']} alive,"
        f" saturation {m['saturation_pct']:.1f}% ({m['total_active']}/{m['total_concurrency']}"
        " slots busy)"
    )
    for w in payload["workers"]:
        if w["status"] != "online":
            lines.append(f"             {w['id_hash']} {w['status'].replace('_', ' ')}")
    lines.append(
        f"  Pending    {m['total_pending']} tasks in {m['queues']}"
        f" queue{'' if m['queues'] == 1 else 's'},"
        f" max latency {_seconds(m['max_latency_sec'])}"
    )
    for q in sorted(payload["queues"], key=lambda q: -q["depth"])[:10]:
        source = _SOURCES.get(q["latency_source"], q["latency_source"])
        extra = " (unreadable messages)" if q.get("unreadable_messages") else ""
        lines.append(
            f"             {safe_text(q['name'])}: {q['depth']} waiting,"
            f" latency {_seconds(q['latency_sec'])} ({source}){extra}"
        )
    if len(payload["queues"]) > 10:
        lines.append(f"             ... and {len(payload['queues']) - 10} more queues")
    for a in payload["anomalies"]:
        where = f" on {a['worker_id_hash']}" if a.get("worker_id_hash") else ""
        lines.append(
            f"  Anomaly    {a['type']}: {safe_text(a.get('task_name') or '?')}"
            f" {a.get('task_id_hash') or ''}"
            f" for {_seconds(a['duration_sec'])}{where}"
        )
    for alert in payload.get("alerts", []):
        lines.append(
            f"  Alert      [{alert['severity']}] {safe_text(alert['title'])} ({alert['state']})"
        )
    for e in payload["errors"]:
        lines.append(f"  Error      {e['component']}/{e['kind']}: {safe_text(e['message'])}")
    # Each line escaped whole: a field added later cannot forget it (escaped text is unchanged).
    return "\n".join(safe_text(line) for line in lines)
