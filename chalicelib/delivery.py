"""Local delivery of the outbox: what ``doorman check`` does with committed notifications.

In AWS the outbox is read from the DynamoDB stream by the dispatcher; locally the command
delivers it in-process right after the commit, to the console and every configured channel.

Per channel: a success, or a permanent failure (a revoked webhook, a rejected routing key:
recorded, never retried), settles the channel for that item. An item is marked delivered once
every channel is settled; a transient failure (timeout, 429, 5xx after the retries) leaves it
in the outbox for the next check. A :class:`DeliveryLog` remembers which channels already took
an item, so that a retry goes only to the channels that failed (within one process: across
``--once`` runs a channel that succeeded may get the item again; PagerDuty deduplicates it by
key). A channel that fails transiently is not tried again for the rest of the round, and an
item still unsettled after ``max_age`` seconds is given up, so nothing blocks the outbox forever.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

from .alerting import Notification
from .model import Severity
from .notify.channel import Channel, MinimumSeverity, NotifyError, SeenIds
from .state import Outbox, StateError
from .state.base import OutboxItem
from .text import safe_text

log = logging.getLogger("doorman")

MAX_AGE_SECONDS = 24 * 3600.0


@dataclass(frozen=True)
class Delivery:
    id: str
    channel: str
    ok: bool
    error: str | None = None
    permanent: bool = False
    skipped: bool = False


@dataclass
class DeliveryLog(SeenIds):
    """(item id, channel) pairs already settled in this process; bounded."""

    capacity: int = 10_000


def console_line(note: Notification) -> str:
    verb = {"trigger": "ALERT", "escalate": "ESCALATED", "renotify": "STILL", "resolve": "RESOLVED"}
    # Printed to a terminal: the title and message name queues and tasks, escaped here.
    return safe_text(
        f"doorman: {verb.get(note.action, note.action.upper())} [{note.severity.value}]"
        f" {note.title} - {note.message} ({note.key})"
    )


@dataclass(frozen=True)
class ConsoleChannel(MinimumSeverity):
    """Prints each notification as one escaped line (to stderr unless ``stream``)."""

    stream: TextIO | None = None
    name: str = "console"
    minimum: Severity = Severity.INFO

    def send(self, note: Notification) -> None:
        """Print ``note``'s line; never raises NotifyError."""
        print(console_line(note), file=self.stream or sys.stderr, flush=True)

    def describe(self, note: Notification) -> str:
        """The line :meth:`send` prints."""
        return console_line(note)


def _error_text(exc: Exception) -> tuple[str, bool]:
    """A message safe to record (NotifyError's never holds a URL or key) and permanence."""
    if isinstance(exc, NotifyError):
        return exc.message, exc.permanent
    # Anything else may carry whatever its author put in it: only its kind is kept.
    return type(exc).__name__, False


def _send_one(channel: Channel, item: OutboxItem, down: dict[str, str]) -> Delivery:
    """What became of ``item`` on ``channel``: skipped (below its minimum), sent, or failed
    (a transient failure puts the channel in ``down`` for the rest of the round)."""
    name = channel.name
    if name in down:
        return Delivery(item.id, name, False, f"not tried: {down[name]}")
    if not channel.wants(item.notification):
        return Delivery(item.id, name, True, skipped=True)
    try:
        channel.send(item.notification)
    except Exception as exc:  # one broken channel never stops the others
        text, permanent = _error_text(exc)
        if permanent:
            log.error("delivery to %s failed permanently: %s", name, text)
        else:
            log.error("delivery to %s failed, retried next check: %s", name, text)
            down[name] = text
        return Delivery(item.id, name, False, text, permanent)
    return Delivery(item.id, name, True)


def _mark_channels(store: Outbox, item: OutboxItem, took: Sequence[str]) -> None:
    """Record the channels that already have ``item`` while it is still owed to another, so
    that a later check (another process, too) does not send it to them again."""
    for name in took:
        try:
            store.mark_channel(item, name)
        except StateError as exc:
            log.error("could not record delivery to %s: %s", name, type(exc).__name__)


def deliver_outbox(
    store: Outbox,
    target: str,
    channels: Sequence[Channel],
    now: Callable[[], float] = time.time,
    *,
    log_: DeliveryLog | None = None,
    max_age: float = MAX_AGE_SECONDS,
) -> list[Delivery]:
    """Send every undelivered notification of ``target`` to every channel that wants it
    (one below a channel's minimum severity settles that channel, recorded as skipped);
    returns what happened per item and channel, never raises."""
    results: list[Delivery] = []
    try:
        items = store.undelivered(target)
    except StateError as exc:
        log.error("outbox unreadable: %s", type(exc).__name__)
        return results
    memo = log_ if log_ is not None else DeliveryLog()
    down: dict[str, str] = {}  # channels that failed transiently in this round
    done: list[OutboxItem] = []
    for item in items:
        settled = True
        took: list[str] = []  # channels settled for this item in this round
        for channel in channels:
            if (item.id, channel.name) in memo or channel.name in item.channels_done:
                continue
            result = _send_one(channel, item, down)
            results.append(result)
            if result.ok or result.permanent:
                memo.add((item.id, channel.name))
                took.append(channel.name)
            else:
                settled = False
        if not settled and now() - item.created_at > max_age:
            log.error("giving up a notification unsent for %.0f s", now() - item.created_at)
            settled = True
        if settled:
            done.append(item)
        else:
            _mark_channels(store, item, took)
    if done:
        try:
            store.mark_delivered(done, now())
        except StateError as exc:
            log.error("could not mark notifications delivered: %s", type(exc).__name__)
    return results
