"""What every channel shares: the :class:`Channel` interface, its minimum-severity check, the
one error type of the ``notify`` package, and the bounded set of what was already delivered.

A channel is Slack, PagerDuty, a generic webhook, the SNS topic or the console. The caller
(local delivery, an SNS subscriber, ``--dry-run``) asks ``wants`` before ``send``, so that a
notification below the channel's minimum is skipped the same way everywhere.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

from ..alerting import RESOLVE, Notification
from ..model import Severity


@runtime_checkable
class Channel(Protocol):
    """One destination of notifications."""

    @property
    def name(self) -> str:
        """The channel's name in logs, delivery records and ``--dry-run`` output."""
        ...

    @property
    def minimum(self) -> Severity:
        """The lowest severity this channel is sent."""
        ...

    def wants(self, note: Notification) -> bool:
        """Whether ``note`` goes to this channel (its severity, and for some its action)."""
        ...

    def send(self, note: Notification) -> None:
        """Deliver ``note``; raises NotifyError when it could not be delivered."""
        ...

    def describe(self, note: Notification) -> str:
        """One line saying what would be sent, never the URL, key or secret."""
        ...


class MinimumSeverity:
    """The one severity check, mixed into every channel that has a ``minimum`` field.

    ``always_resolve``: resolves go out whatever their severity (PagerDuty: a resolve of an
    unknown dedup_key is a no-op, and an alert that went down a level before clearing must
    still close its incident).
    """

    minimum: Severity
    always_resolve: ClassVar[bool] = False

    def wants(self, note: Notification) -> bool:
        """False when ``note`` is below this channel's minimum severity (and not a resolve it
        always takes)."""
        return note.severity >= self.minimum or (self.always_resolve and note.action == RESOLVE)


class NotifyError(Exception):
    """A notification could not be delivered.

    ``permanent``: sending it again would fail the same way (a revoked webhook, a bad routing
    key); it is recorded and not retried. ``status`` is the last HTTP status, if any.
    """

    def __init__(self, message: str, *, permanent: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.status = status


@dataclass
class SeenIds:
    """A bounded, thread-safe set of what this process already delivered (notification
    ids, or (outbox item, channel) pairs); the oldest entries go first."""

    capacity: int = 2048
    _ids: OrderedDict[Hashable, None] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __contains__(self, item: object) -> bool:
        with self._lock:
            return item in self._ids

    def add(self, item: Hashable) -> None:
        with self._lock:
            self._ids[item] = None
            self._ids.move_to_end(item)
            while len(self._ids) > self.capacity:
                self._ids.popitem(last=False)
