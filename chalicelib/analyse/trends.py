"""Trends from consecutive samples: queue growth, throughput, and the saturation diagnosis."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..alert_types import AlertType
from ..model import Sample, WorkerSample

HISTORY_LENGTH = 5  # the samples the trend window looks at, no more
MIN_SAMPLES_FOR_TREND = 3
WINDOW = HISTORY_LENGTH


def history_entry(sample: Sample, history: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The compact, sanitized record of one sample that later checks compare against.

    ``w`` keeps, per answering worker, its last report of completed tasks: ``[total, uptime,
    reported_at]``, followed by the report before it (``base_total, base_uptime,
    base_reported_at``) once there is one. Reports come with the worker detail, which is
    reused between refreshes (``detail_age_sec``): a reused report is carried forward as it
    was, so throughput is always measured between two real reports of the same worker, and a
    worker that skipped a check (or just joined) never counts its whole lifetime.
    ``history`` is the entries before this one, oldest first.
    """
    return {
        "t": sample.timestamp,
        "q": {q.name: q.depth for q in sample.queues},
        "p": sample.total_pending,
        "a": sample.total_active,
        "c": sample.total_concurrency,
        "w": {
            w.id_hash: _report(w.id_hash, w, sample.timestamp, history)
            for w in sample.workers
            if w.status == "online"
        },
    }


def _report(
    worker_id: str, worker: WorkerSample, timestamp: float, history: Sequence[dict[str, Any]]
) -> list[Any]:
    previous = _last_report(worker_id, history)
    if worker.detail_age_sec is not None:  # the counters were reused from an earlier check
        if previous is not None:
            return previous
        at = round(timestamp - worker.detail_age_sec, 3)
        return [worker.processed_total, worker.uptime_sec, at]
    current = [worker.processed_total, worker.uptime_sec, timestamp]
    if previous is not None and previous[2] < timestamp:
        current += previous[:3]
    return current


def _last_report(worker_id: str, history: Sequence[dict[str, Any]]) -> list[Any] | None:
    """This worker's report in the newest entry that has one, as ``[total, uptime, at, ...]``.

    Entries written before reports carried their own time (``[total, uptime]``) count as
    reported at the entry's time. Anything malformed counts as no report.
    """
    for entry in reversed(history):
        workers = entry.get("w")
        report = workers.get(worker_id) if isinstance(workers, dict) else None
        if not isinstance(report, list) or len(report) < 2:
            continue
        try:
            at = float(report[2]) if len(report) > 2 else float(entry["t"])
            int(report[0])
        except (TypeError, ValueError, KeyError):
            return None
        return [report[0], report[1], at, *report[3:6]]
    return None


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


def _throughput(entry: dict[str, Any]) -> float | None:
    """Tasks completed per minute by all workers, each between its last two reports.

    None until some worker has reported twice. A worker that just joined (or came back
    after a gap longer than the kept history) has no earlier report and counts nothing.
    """
    workers = entry.get("w")
    if not isinstance(workers, dict):
        return None
    per_minute = 0.0
    measured = False
    for report in workers.values():
        if not isinstance(report, list) or len(report) < 6:
            continue
        try:
            elapsed = float(report[2]) - float(report[5])
        except (TypeError, ValueError):
            continue
        if elapsed <= 0:
            continue
        measured = True
        per_minute += _done_since(report[3:5], report[0:2]) * 60.0 / elapsed
    return round(per_minute, 2) if measured else None


def compute_trends(
    history: Sequence[dict[str, Any]], sample: Sample, current: dict[str, Any] | None = None
) -> Trends:
    """Trends over the last samples kept in the state and this one.

    ``current`` is this sample's ``history_entry`` when the caller already built it (to keep
    it). A queue is growing when at least three samples are known, its depth never fell over
    the window, it ended higher than it started, and it still grew in the last interval: a
    queue that grew once and then stayed flat stops growing at the first flat sample, so an
    alert about growth resolves as soon as the growth stops, not when the window forgets it.
    """
    if current is None:
        current = history_entry(sample, history)
    entries = [*history, current][-WINDOW:]
    queues: dict[str, QueueTrend] = {}
    for q in sample.queues:
        series = [(float(e["t"]), int(e["q"][q.name])) for e in entries if q.name in e.get("q", {})]
        if not series:
            continue
        (t0, first), (t1, last) = series[0], series[-1]
        rate = (last - first) * 60.0 / (t1 - t0) if t1 > t0 else 0.0
        non_decreasing = all(b[1] >= a[1] for a, b in itertools.pairwise(series))
        still = len(series) > 1 and last > series[-2][1]
        growing = len(series) >= MIN_SAMPLES_FOR_TREND and non_decreasing and still
        queues[q.name] = QueueTrend(
            name=q.name,
            first=first,
            last=last,
            samples=len(series),
            rate_per_min=round(rate, 2),
            growing=growing,
        )
    return Trends(queues=queues, throughput_per_min=_throughput(current), samples=len(entries))


# Saturation bounds shared by the diagnosis and the growth rule (ghost vs saturated workers).
GHOST_SATURATION = 30.0
HIGH_SATURATION = 90.0


def diagnosis(saturation_pct: float, trends: Trends, total_pending: int, alive_workers: int) -> str:
    """Saturation x trend, as in the agent's table.

    need_more_workers (>90 % and growing), ghost_workers (<30 % and growing while some
    worker answers), growing, at_capacity (>90 %, stable), normal, healthy (<30 %, stable,
    nothing waiting). With no worker answering, low saturation says nothing about ghosts:
    the workers are down, which is its own alert.
    """
    growing = bool(trends.growing)
    if growing and saturation_pct > HIGH_SATURATION:
        return "need_more_workers"
    if growing and saturation_pct < GHOST_SATURATION and alive_workers > 0:
        return AlertType.GHOST_WORKERS.value  # the diagnosis the alert is named after
    if growing:
        return "growing"
    if saturation_pct > HIGH_SATURATION:
        return "at_capacity"
    if saturation_pct < GHOST_SATURATION and total_pending == 0:
        return "healthy"
    return "normal"
