"""Local delivery of the outbox: what ``doorman check`` does with committed notifications.

In AWS the outbox is read from the DynamoDB stream by the dispatcher; locally the command
delivers it in-process right after the commit. An item is marked delivered only when every
channel took it, so a notification that could not be sent is tried again by the next check.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

from .alerting import Notification
from .state import StateError, StateStore
from .state.base import OutboxItem

log = logging.getLogger("doorman")

Sender = Callable[[Notification], None]


@dataclass(frozen=True)
class Delivery:
    id: str
    channel: str
    ok: bool
    error: str | None = None


def console_line(note: Notification) -> str:
    verb = {"trigger": "ALERT", "escalate": "ESCALATED", "renotify": "STILL", "resolve": "RESOLVED"}
    return (
        f"doorman: {verb.get(note.action, note.action.upper())} [{note.severity.value}]"
        f" {note.title} - {note.message} ({note.key})"
    )


def console_sender(stream: TextIO | None = None) -> Sender:
    def send(note: Notification) -> None:
        print(console_line(note), file=stream or sys.stderr, flush=True)

    return send


def deliver_outbox(
    store: StateStore,
    target: str,
    channels: Sequence[tuple[str, Sender]],
    now: Callable[[], float] = time.time,
) -> list[Delivery]:
    """Send every undelivered notification of ``target`` to every channel; never raises."""
    results: list[Delivery] = []
    try:
        items = store.undelivered(target)
    except StateError as exc:
        log.error("outbox unreadable: %s", type(exc).__name__)
        return results
    done: list[OutboxItem] = []
    for item in items:
        all_ok = True
        for name, send in channels:
            try:
                send(item.notification)
                results.append(Delivery(item.id, name, True))
            except Exception as exc:  # one broken channel never stops the others
                all_ok = False
                results.append(Delivery(item.id, name, False, f"{type(exc).__name__}"))
                log.error("delivery to %s failed: %s", name, type(exc).__name__)
        if all_ok:
            done.append(item)
    if done:
        try:
            store.mark_delivered(done, now())
        except StateError as exc:
            log.error("could not mark notifications delivered: %s", type(exc).__name__)
    return results
