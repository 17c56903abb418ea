"""Small helpers shared by the fault tests (nothing here injects a fault)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chalicelib.runner import Deps, run_check
from chalicelib.sanitize import Hasher
from chalicelib.settings import load_settings
from tests.conftest import check_once

SECRET = "fault-secret"
# Short timeouts: every fault must be bounded by them.
FAST = {"redis_timeout_seconds": 1.0, "worker_timeout_seconds": 0.5}
FAST_ENV = {
    "DOORMAN_REDIS_TIMEOUT": "1",
    "DOORMAN_WORKER_TIMEOUT": "0.5",
    "DOORMAN_HASH_SECRET": SECRET,
}


def settings(url: str, state: Path | None = None, **more: Any) -> Any:
    values: dict[str, Any] = {"redis_url": url, "hash_secret": SECRET, **FAST}
    if state is not None:
        values["state_path"] = str(state)
    values.update(more)
    return load_settings(environ={}, overrides=values)


def local_check(url: str, state: Path, *, at: float | None = None, **more: Any) -> dict[str, Any]:
    """One in-process check with the local (SQLite) store, as ``doorman check`` runs it;
    ``at``: the time its clock reads (see :func:`tests.conftest.check_once`)."""
    return check_once(settings(url, state, **more), at=at)


def check_with_store(url: str, store: Any, **more: Any) -> Any:
    """One in-process check with an injected state store (the Lambda's DynamoDB one)."""
    from chalicelib.collect import Collector

    s = settings(url, **more)
    collector = Collector(s)
    try:
        return run_check(s, Deps(collector=collector, store=store, hasher=Hasher(SECRET)))
    finally:
        collector.close()


def alerts(payload: dict[str, Any]) -> dict[str, str]:
    return {a["type"]: a["state"] for a in payload["alerts"]}


def actions(payload: dict[str, Any]) -> list[tuple[str, str]]:
    return [(n["action"], n["type"]) for n in payload["notifications"]]


def error_kinds(payload: dict[str, Any], component: str) -> list[str]:
    return [e["kind"] for e in payload["errors"] if e["component"] == component]


def sqlite_outbox(path: Path) -> list[dict[str, Any]]:
    """Every notification ever queued in a local state file, delivered or not, in order."""
    import json
    import sqlite3

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT body FROM outbox ORDER BY created_at").fetchall()
    finally:
        conn.close()
    return [json.loads(body) for (body,) in rows]


def count_once(notes: list[dict[str, Any]], action: str, type_: str) -> tuple[int, int]:
    """(lost, duplicates) of a notification that must be in ``notes`` exactly once."""
    found = [n for n in notes if (n["action"], n["type"]) == (action, type_)]
    ids = {n["id"] for n in found}
    return (0 if found else 1), len(found) - len(ids) + max(0, len(ids) - 1)
