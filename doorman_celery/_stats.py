"""The worker's counters: plain Python, no Celery (the reply format is in the package docstring).

One :class:`Stats` per worker process, written by the main process only (the Request hooks
and the ``task_revoked`` receiver run there whatever the pool) and read by the remote-control
command, which also runs there. One lock guards the writes: the threads pool calls the hooks
from its threads; with the other pools the lock is never contended.
"""

from __future__ import annotations

import secrets
import threading
import time
from bisect import bisect_left
from typing import Any

#: The reply format's version, the command that answers it, the producer header and the key
#: of the worker's ``stats`` reply that says the companion is there.
VERSION = 1
COMMAND = "doorman"
HEADER = "x_published_at"
STATS_KEY = "doorman"

#: Upper bounds (seconds, inclusive) of the run-time and queue-wait histogram buckets.
#: Six a decade (1, 1.5, 2, 3, 5, 7 x 10^k) from 1 ms to 10,000 s: neighbouring bounds are at
#: most 1.67 apart, so a quantile read from the buckets is within that factor of the truth.
BUCKETS: tuple[float, ...] = (
    *(round(m * 10.0**e, 6) for e in range(-3, 4) for m in (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)),
    10000.0,
)
NBUCKETS = len(BUCKETS) + 1  # the last one holds everything above BUCKETS[-1]

#: The task counters, in the order a task entry stores them.
COUNTERS = ("succeeded", "failed", "retried", "rejected", "revoked", "expired")
SUCCEEDED, FAILED, RETRIED, REJECTED, REVOKED, EXPIRED = range(6)

MAX_TASKS = 1000
MAX_QUEUES = 200

# A task entry: the six counters, then run time count, sum, max, then the bucket counts.
_RT = len(COUNTERS)
_TASK_LEN = _RT + 3 + NBUCKETS
_HIST_LEN = 3 + NBUCKETS


class Stats:
    """Cumulative per-task outcome counters and per-queue wait histograms since ``started``."""

    def __init__(self, max_tasks: int = MAX_TASKS, max_queues: int = MAX_QUEUES) -> None:
        self.max_tasks = max_tasks
        self.max_queues = max_queues
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Start from zero under a new boot id (a worker start)."""
        with self.lock:
            self.boot = secrets.token_hex(8)
            self.started = time.time()
            self.tasks: dict[str, list[float]] = {}
            self.queues: dict[str, list[float]] = {}
            self.task_overflow: list[float] | None = None
            self.queue_overflow: list[float] | None = None

    def outcome(self, name: str, counter: int, runtime: float | None) -> None:
        """Count one outcome of task ``name``; ``runtime`` (seconds) when the run was timed."""
        with self.lock:
            entry = self.tasks.get(name)
            if entry is None:
                entry = self._task_entry(name)
            entry[counter] += 1
            if runtime is not None and runtime == runtime:  # not NaN
                if runtime < 0.0:
                    runtime = 0.0
                entry[_RT] += 1
                entry[_RT + 1] += runtime
                if runtime > entry[_RT + 2]:
                    entry[_RT + 2] = runtime
                entry[_RT + 3 + bisect_left(BUCKETS, runtime)] += 1

    def wait(self, queue: str, seconds: float) -> None:
        """Add one queue wait (seconds; negative clock skew counts as 0)."""
        if not seconds > 0.0:  # also NaN
            seconds = 0.0
        with self.lock:
            entry = self.queues.get(queue)
            if entry is None:
                entry = self._queue_entry(queue)
            entry[0] += 1
            entry[1] += seconds
            if seconds > entry[2]:
                entry[2] = seconds
            entry[3 + bisect_left(BUCKETS, seconds)] += 1

    def _task_entry(self, name: str) -> list[float]:
        if len(self.tasks) < self.max_tasks:
            entry = self.tasks[name] = [0] * _TASK_LEN
            return entry
        if self.task_overflow is None:
            self.task_overflow = [0] * _TASK_LEN
        return self.task_overflow

    def _queue_entry(self, queue: str) -> list[float]:
        if len(self.queues) < self.max_queues:
            entry = self.queues[queue] = [0] * _HIST_LEN
            return entry
        if self.queue_overflow is None:
            self.queue_overflow = [0] * _HIST_LEN
        return self.queue_overflow

    def snapshot(self) -> dict[str, Any]:
        """``tasks``, ``queues`` and ``overflow`` of the reply (copied under the lock)."""
        with self.lock:
            tasks = {name: list(entry) for name, entry in self.tasks.items()}
            queues = {name: list(entry) for name, entry in self.queues.items()}
            task_overflow = list(self.task_overflow) if self.task_overflow else None
            queue_overflow = list(self.queue_overflow) if self.queue_overflow else None
        overflow: dict[str, Any] = {}
        if task_overflow is not None:
            overflow["tasks"] = _task_reply(task_overflow)
        if queue_overflow is not None:
            overflow["queues"] = _hist_reply(queue_overflow)
        return {
            "tasks": {name: _task_reply(entry) for name, entry in tasks.items()},
            "queues": {name: _hist_reply(entry) for name, entry in queues.items()},
            "overflow": overflow,
        }


def _task_reply(entry: list[float]) -> dict[str, Any]:
    reply: dict[str, Any] = {COUNTERS[i]: int(entry[i]) for i in range(len(COUNTERS)) if entry[i]}
    if entry[_RT]:
        reply["runtime"] = _hist_reply(entry[_RT:])
    return reply


def _hist_reply(entry: list[float]) -> dict[str, Any]:
    """``count``, ``sum``, ``max``, then the bucket counts without leading and trailing zeros."""
    counts = [int(c) for c in entry[3 : 3 + NBUCKETS]]
    first = next((i for i, c in enumerate(counts) if c), 0)
    last = max((i for i, c in enumerate(counts) if c), default=-1)
    return {
        "count": int(entry[0]),
        "sum": round(float(entry[1]), 6),
        "max": round(float(entry[2]), 6),
        "first": first,
        "counts": counts[first : last + 1],
    }


def dense(hist: dict[str, Any]) -> list[int]:
    """A reply histogram's bucket counts as one list of ``len(BUCKETS) + 1`` integers."""
    counts = [0] * NBUCKETS
    first = int(hist.get("first", 0))
    for i, c in enumerate(hist.get("counts", ())):
        if 0 <= first + i < NBUCKETS:
            counts[first + i] = int(c)
    return counts


def delta(new: dict[str, Any], old: dict[str, Any] | None) -> list[int]:
    """Dense bucket counts observed between two reads of the same histogram (same boot)."""
    now = dense(new)
    if old is None:
        return now
    before = dense(old)
    return [max(0, a - b) for a, b in zip(now, before, strict=True)]


def quantile(counts: list[int], q: float) -> float | None:
    """Estimate the ``q`` quantile (0-1) from dense bucket counts, in seconds; None when empty.

    Linear inside the bucket the quantile falls in (the first bucket starts at 0); a quantile
    in the last, open bucket answers its lower bound, ``BUCKETS[-1]``.
    """
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, c in enumerate(counts):
        if c and seen + c >= rank:
            if i >= len(BUCKETS):
                return BUCKETS[-1]
            low = BUCKETS[i - 1] if i else 0.0
            high = BUCKETS[i]
            frac = (rank - seen) / c
            return low + (high - low) * min(1.0, max(0.0, frac))
        seen += c
    return BUCKETS[-1]
