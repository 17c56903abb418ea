"""Human summaries of a check payload (``--format text``)."""

from __future__ import annotations

from typing import Any

from .text import safe_text
from .text import seconds_fixed as _seconds

_SOURCES = {
    "producer_header": "exact, producer header",
    "expires": "exact, from expires",
    "observed": "at least, first seen",
    "empty": "empty",
    "not_due": "ETA not due",
}


def _task_lines(payload: dict[str, Any]) -> list[str]:
    """Task outcomes since the previous check, and what is not measured without the
    companion."""
    m, companion = payload["metrics"], payload.get("companion") or {}
    lines: list[str] = []
    if m.get("tasks_succeeded") is not None:
        rate = m.get("failure_rate_pct")
        lines.append(
            f"  Tasks      {m['tasks_succeeded']} succeeded, {m['tasks_failed']} failed,"
            f" {m['tasks_expired']} expired since the last check"
            + (f" (failure rate {rate:.1f}%)" if rate is not None else "")
        )
        ranked = sorted(payload.get("tasks", []), key=lambda t: (-t["failed"], t["name"]))
        for t in ranked[:10]:
            counts = ", ".join(
                f"{t[k]} {k}" for k in ("succeeded", "failed", "retried", "expired") if t[k]
            )
            lines.append(f"             {safe_text(t['name'])}: {counts or 'nothing ended'}")
        if companion.get("not_counted"):
            lines.append(
                f"             ({len(companion['not_counted'])} worker(s) read for the first"
                " time are not in these figures)"
            )
    elif companion.get("withheld"):
        lines.append(f"  Tasks      not reported: {companion['withheld']}")
    elif companion.get("first_reading"):
        lines.append("  Tasks      counters read for the first time: figures from the next check")
    without = companion.get("without") or []
    if without:
        lines.append(
            f"  Companion  {len(without)} worker(s) without it ({', '.join(without[:5])}"
            + (", ..." if len(without) > 5 else "")
            + "): their task failures, expiries and waits are not measured"
        )
    return lines


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
    lines.extend(_task_lines(payload))
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
