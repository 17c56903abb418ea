"""Without the companion, tasks already past their ``expires`` are still seen where Doorman
looks: at the old end of each list, through the ETA window, inside Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.integration.test_probe_attacks import bind, message


def _iso(delta: float, tz: str = "") -> str:
    when = datetime.now(UTC) + timedelta(seconds=delta)
    text = when.strftime("%Y-%m-%dT%H:%M:%S.%f")
    if tz == "+02:00":
        return (when + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.%f") + tz
    return text + "+00:00"


def _headers(**values: Any) -> dict[str, Any]:
    return {"headers": {"id": values.pop("id"), "task": "tasks.mail", "lang": "py", **values}}


def test_expired_messages_in_the_eta_window_are_counted_and_alerted(
    redis_server: Any, checker: Any
) -> None:
    client = redis_server.client()
    bind(client, "mail", "fresh")
    oldest_first = [
        message(**_headers(id="a", eta=_iso(3600), expires=_iso(-60))),  # not due, expired
        message(**_headers(id="b", eta=_iso(3600), expires=_iso(7200))),  # not due, fine
        message(**_headers(id="c", eta=_iso(3600), expires=_iso(-5, "+02:00"))),  # expired
        message(**_headers(id="d", expires=_iso(-30))),  # due and expired: the one measured
        message(**_headers(id="e", expires=_iso(-30))),  # behind it: not looked at
    ]
    for raw in oldest_first:
        client.lpush("mail", raw)  # the old end is the right: LPUSH in age order
    client.lpush("fresh", message(**_headers(id="f", expires=_iso(600))))
    payload = checker(worker_timeout_seconds=0.5).check()
    queues = {q["name"]: q for q in payload["queues"]}
    assert queues["mail"]["expired_waiting"] == 3
    assert "expired_waiting" not in queues["fresh"]
    (alert,) = [a for a in payload["alerts"] if a["type"] == "tasks_expired"]
    assert alert["state"] == "firing" and alert["queue"] == "mail"
    assert "At least 3 task(s) waiting in 'mail'" in alert["message"]
    client.close()


def test_impossible_or_padded_times_are_not_taken_for_an_expiry(
    redis_server: Any, checker: Any
) -> None:
    """Celery refuses such messages as invalid, and reads a naive time in the app's timezone:
    Doorman does not call them expired."""
    client = redis_server.client()
    bind(client, "odd")
    for i, text in enumerate(
        [
            "2020-13-45T99:99:99",
            "0000-00-00T00:00:00",
            "2020-01-01T00:00:00garbage",
            "2020-01-01T00:00:00+99:99",
            "2020-01-01T00:00:00.5x",
            "2020-01-01T00:00:00",  # naive: in the app's timezone, which Redis does not know
        ]
    ):
        client.lpush("odd", message(**_headers(id=f"o{i}", eta=_iso(3600), expires=text)))
    client.lpush("odd", message(**_headers(id="valid", expires="2020-01-01T00:00:00.5Z")))
    payload = checker(worker_timeout_seconds=0.5).check()
    (queue,) = [q for q in payload["queues"] if q["name"] == "odd"]
    assert queue["expired_waiting"] == 1  # the valid one, with its fraction and its Z
    client.close()
