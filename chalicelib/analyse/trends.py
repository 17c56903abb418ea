"""Trends from consecutive samples: queue growth, throughput, and the saturation diagnosis."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..model import Sample

HISTORY_LENGTH = 5  # the samples the trend window looks at, no more
MIN_SAMPLES_FOR_TREND = 3
WINDOW = HISTORY_LENGTH


def history_entry(sample: Sample) -> dict[str, Any]:
    """The compact, sanitized record of one sample that later checks compare against.

    ``w`` keeps, per answering worker, its processed count and uptime: throughput is the sum
    of what each worker did between two samples, so a worker that skipped a check (or just
    joined) does not count its whole lifetime again.
    """
    return {
        "t": sample.timestamp,
        "q": {q.name: q.depth for q in sample.queues},
        "p": sample.total_pending,
        "a": sample.total_active,
        "c": sample.total_concurrency,
        "w": {
            w.id_hash: [w.processed_total, w.uptime_sec]
            for w in sample.workers
            if w.status == "online"
        },
    }


@dataclass(frozen=True)
class QueueTrend:
    name: str
    first: int
    last: int
    samples: int
    rate_per_min: float  # net change of depth per minute over the window
    growing: bool


@dataclass(frozen=True)
class Trends:
    queues: dict[str, QueueTrend] = field(default_factory=dict)
    throughput_per_min: float | None = None  # tasks completed per minute (all workers)
    samples: int = 1

    @property
    def growing(self) -> list[QueueTrend]:
        return [t for t in self.queues.values() if t.growing]

    @property
    def growth_per_min(self) -> float:
        return sum(t.rate_per_min for t in self.growing)


def _done_since(before: Any, now: Any) -> int:
    """Tasks one worker completed between two entries (``[processed_total, uptime]``)."""
    try:
        prev_total, prev_up = int(before[0]), before[1]
        total, up = int(now[0]), now[1]
    except (TypeError, ValueError, IndexError, KeyError):
        return 0
    restarted = total < prev_total or (
        isinstance(up, int | float) and isinstance(prev_up, int | float) and up < prev_up
    )
    # A restarted worker counts from zero again: all it reports was done since the restart.
    return max(total, 0) if restarted else total - prev_total


def _throughput(entries: Sequence[dict[str, Any]]) -> float | None:
    if len(entries) < 2:
        return None
    previous, current = entries[-2], entries[-1]
    elapsed = float(current["t"]) - float(previous["t"])
    before, now = previous.get("w"), current.get("w")
    if elapsed <= 0 or not isinstance(before, dict) or not isinstance(now, dict):
        return None
    # Only workers seen by both checks count: one that just joined (or came back after a
    # check it did not answer) has no baseline in this interval.
    completed = sum(_done_since(before[h], now[h]) for h in now if h in before)
    return round(completed * 60.0 / elapsed, 2)


def compute_trends(history: Sequence[dict[str, Any]], sample: Sample) -> Trends:
    """Trends over the last samples kept in the state and this one.

    A queue is growing when at least three samples are known, its depth never fell over the
    window and it ended higher than it started.
    """
    entries = [*history, history_entry(sample)][-WINDOW:]
    queues: dict[str, QueueTrend] = {}
    for q in sample.queues:
        series = [(float(e["t"]), int(e["q"][q.name])) for e in entries if q.name in e.get("q", {})]
        if not series:
            continue
        (t0, first), (t1, last) = series[0], series[-1]
        rate = (last - first) * 60.0 / (t1 - t0) if t1 > t0 else 0.0
        non_decreasing = all(b[1] >= a[1] for a, b in itertools.pairwise(series))
        growing = len(series) >= MIN_SAMPLES_FOR_TREND and non_decreasing and last > first
        queues[q.name] = QueueTrend(
            name=q.name,
            first=first,
            last=last,
            samples=len(series),
            rate_per_min=round(rate, 2),
            growing=growing,
        )
    return Trends(queues=queues, throughput_per_min=_throughput(entries), samples=len(entries))


def diagnosis(saturation_pct: float, trends: Trends, total_pending: int) -> str:
    """Saturation x trend, as in the agent's table.

    need_more_workers (>90 % and growing), ghost_workers (<30 % and growing), growing,
    at_capacity (>90 %, stable), normal, healthy (<30 %, stable, nothing waiting).
    """
    growing = bool(trends.growing)
    if growing and saturation_pct > 90:
        return "need_more_workers"
    if growing and saturation_pct < 30:
        return "ghost_workers"
    if growing:
        return "growing"
    if saturation_pct > 90:
        return "at_capacity"
    if saturation_pct < 30 and total_pending == 0:
        return "healthy"
    return "normal"
