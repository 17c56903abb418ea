"""Domain data: what a probe saw (``Snapshot``) and what may leave the process (``Sample``).

A Snapshot still holds raw hostnames, task ids and names, but never task arguments,
keyword arguments, results or message bodies: the probes cannot return them. Only the
sanitizer turns a Snapshot into a Sample, and everything downstream sees only Samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # alert_types imports Severity from here
    from .alert_types import AlertType


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"
    EMERGENCY = "emergency"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    # Ordered by rank, not by the text of the value ("critical" < "warning" as strings).
    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank >= other.rank


_RANKS = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2, Severity.EMERGENCY: 3}


# --- raw, as collected ---------------------------------------------------------------------

KOMBU_SEP = "\x06\x16"  # kombu's default separator of binding members and priority lists
KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)  # kombu's default priority_steps


@dataclass(frozen=True)
class Dialect:
    """How a cluster's kombu names its Redis keys: the shape-defining transport options.

    None is "not known" (kombu's default applies). Learned from the workers' ``stats``
    replies, guessed from the keys when no worker answers, or set explicitly; nothing else
    of the transport options (which can hold passwords) is kept.
    """

    sep: str | None = None
    priority_steps: tuple[int, ...] | None = None
    global_keyprefix: str | None = None
    queue_order_strategy: str | None = None

    def over(self, other: Dialect | None) -> Dialect:
        """This dialect, with what it does not know taken from ``other``."""
        if other is None:
            return self
        return Dialect(
            sep=self.sep if self.sep is not None else other.sep,
            priority_steps=(
                self.priority_steps if self.priority_steps is not None else other.priority_steps
            ),
            global_keyprefix=(
                self.global_keyprefix
                if self.global_keyprefix is not None
                else other.global_keyprefix
            ),
            queue_order_strategy=(
                self.queue_order_strategy
                if self.queue_order_strategy is not None
                else other.queue_order_strategy
            ),
        )

    def to_json(self) -> dict[str, object]:
        return {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in vars(self).items()
            if v is not None
        }

    @classmethod
    def from_json(cls, body: object) -> Dialect | None:
        """A stored dialect, or None for anything not of its shape (never raises)."""
        if not isinstance(body, dict):
            return None
        sep, prefix, order = (
            body.get("sep"),
            body.get("global_keyprefix"),
            body.get("queue_order_strategy"),
        )
        steps = body.get("priority_steps")
        return cls(
            sep=sep if isinstance(sep, str) and 0 < len(sep) <= 16 else None,
            priority_steps=(
                tuple(steps)
                if isinstance(steps, list)
                and all(
                    isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 255 for x in steps
                )
                and steps
                else None
            ),
            global_keyprefix=prefix if isinstance(prefix, str) and len(prefix) <= 256 else None,
            queue_order_strategy=order if isinstance(order, str) and len(order) <= 32 else None,
        )


@dataclass(frozen=True)
class ProbeError:
    """A part of the check that failed; ``message`` is already free of secrets."""

    component: str  # "redis", "workers", "queue", "state"
    kind: str  # e.g. "connection_refused", "timeout", "auth", "not_redis", "wrong_type"
    message: str


@dataclass(frozen=True)
class MessagePeek:
    """Allow-listed header fields of the oldest message of one (priority) list."""

    priority_list: int  # 0 for the plain list, n for "<queue>\x06\x16<n>"
    fingerprint: str  # task id when the message is Celery's, else a digest of its bytes
    decoded: bool  # False: not JSON, not a kombu envelope, or too large to inspect
    task_id: str | None = None
    task_name: str | None = None
    eta: str | None = None
    expires: str | None = None
    expiration_ms: float | None = None
    published_at: float | None = None
    retries: int | None = None
    redelivered: bool = False
    priority: int | None = None
    content_type: str | None = None
    # ETA tasks not due yet are passed over at the old end of the list to reach this message;
    # ``window_exhausted``: none within the window was due, what waits behind is not seen.
    window_exhausted: bool = False
    # Messages looked at on the way (this one included) whose ``expires`` has passed.
    expired_seen: int = 0


@dataclass(frozen=True)
class QueueRaw:
    name: str
    depth: int
    depth_by_priority: dict[int, int] = field(default_factory=dict)
    oldest: tuple[MessagePeek, ...] = ()
    problem: str | None = None  # e.g. a key of another Redis type holding the queue's name
    peeked: bool = True  # False: counted without inspecting messages (scripts denied)


@dataclass(frozen=True)
class UnackedEntry:
    task_id: str | None
    task_name: str | None
    queue: str | None
    age_sec: float


@dataclass(frozen=True)
class UnackedRaw:
    total: int
    overdue_total: int
    overdue: tuple[UnackedEntry, ...]
    visibility_timeout_sec: float


@dataclass(frozen=True)
class RedisInfo:
    version: str | None
    used_memory: int | None
    maxmemory: int | None
    maxmemory_policy: str | None
    connected_clients: int | None
    maxclients: int | None
    blocked_clients: int | None
    evicted_keys: int | None
    rejected_connections: int | None
    rdb_last_bgsave_status: str | None
    rdb_changes_since_last_save: int | None
    aof_enabled: bool | None
    uptime_in_seconds: int | None


@dataclass(frozen=True)
class ActiveTask:
    task_id: str
    task_name: str
    started_at: float | None  # epoch seconds, as the worker reported it


@dataclass(frozen=True)
class Histogram:
    """A cumulative histogram of seconds, over the companion's bucket bounds.

    ``counts`` is dense: ``len(bounds) + 1`` buckets (the last holds everything above the last
    bound), or empty when nothing was observed.
    """

    count: int = 0
    total: float = 0.0
    max: float = 0.0
    counts: tuple[int, ...] = ()


@dataclass(frozen=True)
class TaskCounters:
    """One task name's outcomes in one worker, cumulative since the worker started."""

    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    rejected: int = 0
    revoked: int = 0
    expired: int = 0
    runtime: Histogram | None = None


@dataclass(frozen=True)
class CompanionRaw:
    """What a worker's companion (``doorman_celery``) answered, reduced by the allow-list.

    Names are still raw (task and queue names as the worker knows them). ``boot`` changes at
    every worker start: counters of another boot are not comparable (a restart is a reset).
    """

    boot: str
    started: float  # epoch seconds the counters started from
    bounds: tuple[float, ...]  # the histograms' bucket bounds, seconds
    tasks: dict[str, TaskCounters] = field(default_factory=dict)
    waits: dict[str, Histogram] = field(default_factory=dict)  # queue wait, by queue
    overflow_tasks: TaskCounters | None = None  # names beyond the companion's limit, together
    overflow_waits: Histogram | None = None


@dataclass(frozen=True)
class WorkerRaw:
    hostname: str
    status: str  # "online" | "not_answering" | "offline"
    concurrency: int | None = None
    pool: str | None = None
    active: tuple[ActiveTask, ...] = ()
    reserved: int = 0
    scheduled: int = 0
    reserved_ids: tuple[str, ...] = ()
    processed: dict[str, int] = field(default_factory=dict)
    queues: tuple[str, ...] = ()
    prefetch_count: int | None = None
    uptime_sec: int | None = None
    visibility_timeout_sec: float | None = None
    answered: tuple[str, ...] = ()  # which remote-control commands it answered
    detail_age_sec: float | None = None  # stats/reserved/scheduled/queues from a past check
    dialect: Dialect | None = None  # the shape-defining broker options its stats reported
    # Whether its stats name the companion (None: not known from this check's replies), and
    # what the companion answered when it was asked instead of active/reserved/scheduled.
    has_companion: bool | None = None
    companion: CompanionRaw | None = None


@dataclass(frozen=True)
class Snapshot:
    target: str
    taken_at: float
    redis_ok: bool
    queues: tuple[QueueRaw, ...] = ()
    workers: tuple[WorkerRaw, ...] = ()
    unacked: UnackedRaw | None = None
    info: RedisInfo | None = None
    errors: tuple[ProbeError, ...] = ()
    discovery_truncated: bool = False
    workers_probed: bool = False
    duration_ms: float = 0.0
    phase_ms: dict[str, float] = field(default_factory=dict)
    queues_found: int = 0  # discovered before max_queues cut (at least, when truncated)
    dialect: Dialect | None = None  # what the next check should assume (learned or guessed)


# --- sanitized -----------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueSample:
    name: str
    depth: int
    latency_sec: float | None
    latency_source: str  # "producer_header" | "expires" | "observed" | "none"
    latency_is_lower_bound: bool
    depth_by_priority: dict[int, int]
    oldest_task: str | None
    unreadable_messages: bool
    serializers: tuple[str, ...]
    redelivered: bool
    problem: str | None
    # The ETA window ran out before a due message: latency behind it is not measured.
    latency_window_exhausted: bool = False
    # Waiting messages at the old end of its lists (the ETA window) already past their
    # ``expires``: a worker will discard them unrun. A lower bound: the rest is not read.
    expired_waiting: int = 0


@dataclass(frozen=True)
class ActiveTaskSample:
    task_id_hash: str
    task_name: str
    worker_id_hash: str
    duration_sec: float | None


@dataclass(frozen=True)
class WorkerSample:
    id_hash: str
    status: str
    concurrency: int | None
    active: int
    reserved: int
    scheduled: int
    pool: str | None
    queues: tuple[str, ...]
    processed_total: int
    processed: dict[str, int]
    prefetch_count: int | None
    uptime_sec: int | None
    tasks: tuple[ActiveTaskSample, ...]
    detail_age_sec: float | None = None
    companion: bool | None = None  # whether it runs the companion (None: not known yet)
    # The companion's cumulative counters, names sanitized (merged when two scrub alike).
    outcomes: CompanionRaw | None = None


@dataclass(frozen=True)
class Anomaly:
    type: str  # "stuck_task" | "orphaned_task" | "overdue_unacked"
    task_id_hash: str | None
    task_name: str | None
    duration_sec: float
    worker_id_hash: str | None = None
    queue: str | None = None


@dataclass(frozen=True)
class Observation:
    """The oldest message of one priority list as first seen by a check (hashed)."""

    fingerprint: str
    first_seen: float


@dataclass(frozen=True)
class TaskOutcome:
    """One task name's outcomes over an interval, every worker's together; ``runtime`` is
    the histogram of the runs that ended in it."""

    name: str
    counters: TaskCounters


@dataclass(frozen=True)
class OutcomeSample:
    """What the companions measured since the previous check, and over the failure window.

    ``counted``: the workers whose interval could be told; with none, every figure is
    unknown, not 0 (which workers lack the companion is read off the workers themselves).
    """

    counted: int = 0
    tasks: tuple[TaskOutcome, ...] = ()
    waits: dict[str, Histogram] = field(default_factory=dict)  # by (sanitized) queue name
    window: dict[str, TaskCounters] = field(default_factory=dict)  # no runtime
    window_seconds: float = 0.0
    bounds: tuple[float, ...] = ()
    # Answering companion workers whose counters could not be differenced this check (a
    # first reading, a restart long ago): the figures leave them out.
    not_counted: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sample:
    target: str
    timestamp: float
    duration_ms: float
    redis_ok: bool
    queues: tuple[QueueSample, ...]
    workers: tuple[WorkerSample, ...]
    anomalies: tuple[Anomaly, ...]
    errors: tuple[ProbeError, ...]
    redis: dict[str, object]
    unacked_total: int
    visibility_timeout_sec: float | None
    workers_probed: bool
    discovery_truncated: bool
    observations: dict[str, Observation]
    phase_ms: dict[str, float] = field(default_factory=dict)
    queues_found: int = 0
    outcomes: OutcomeSample | None = None  # the companions' figures (None: not computed)

    @property
    def queues_not_shown(self) -> int:
        """Queues discovered but cut by max_queues (or discovery's own bound)."""
        return max(0, self.queues_found - len(self.queues))

    @property
    def total_pending(self) -> int:
        return sum(q.depth for q in self.queues)

    @property
    def total_active(self) -> int:
        return sum(w.active for w in self.workers if w.status == "online")

    @property
    def alive_workers(self) -> int:
        return sum(1 for w in self.workers if w.status == "online")

    @property
    def total_concurrency(self) -> int:
        return sum(w.concurrency or 0 for w in self.workers if w.status == "online")

    @property
    def saturation_pct(self) -> float:
        slots = self.total_concurrency
        return round(100.0 * self.total_active / slots, 1) if slots else 0.0

    @property
    def max_latency_sec(self) -> float:
        latencies = [q.latency_sec for q in self.queues if q.latency_sec is not None]
        return round(max(latencies), 3) if latencies else 0.0


@dataclass(frozen=True)
class Finding:
    """What one rule concluded about one sample; ``subject`` tells apart several of a type."""

    type: AlertType
    severity: Severity
    title: str
    message: str
    subject: str = ""  # "" target-wide, else a queue name or a worker/task hash
    queue: str | None = None
    details: dict[str, object] = field(default_factory=dict)
    recommendation: str | None = None

    def key(self, target: str) -> str:
        """Stable: the same problem of the same target gets the same key across checks."""
        return ":".join(part for part in (self.type, target, self.subject) if part)
