"""Task outcomes from the worker companions: what happened since the previous check, and over
the failure window.

A companion's counters are cumulative since its worker started (its ``boot``). The check
keeps each answering worker's last counters as its baseline and reports the difference. A
worker seen for the first time counts from its baseline on, unless it started after the
previous check (then everything it counted is new); a different boot is a restart: its
counters began again from zero, so they are taken whole when it started after the previous
check, else as a new baseline (never a negative rate). A worker that stops answering loses
its baseline: its old counters never count again as live ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..model import (
    CompanionRaw,
    Histogram,
    OutcomeSample,
    TaskCounters,
    TaskOutcome,
    WorkerSample,
)

COUNTERS = ("succeeded", "failed", "retried", "rejected", "revoked", "expired")
# Task names and queues kept as baselines, all workers together: each costs about 80 bytes of
# the stored state (one DynamoDB item, at most 350 KB compressed).
MAX_STORED_ENTRIES = 20_000
# The names under which what a companion could not keep apart (beyond its own limits) is shown.
OVERFLOW_TASKS = "(other tasks)"
OVERFLOW_QUEUES = "(other queues)"


@dataclass(frozen=True)
class Baseline:
    """A worker's counters as the previous check read them."""

    boot: str
    started: float
    tasks: dict[str, TaskCounters]
    waits: dict[str, Histogram]


@dataclass(frozen=True)
class WindowEntry:
    """One check's outcomes by task name (counters only), kept for the failure window."""

    at: float
    tasks: dict[str, TaskCounters]


@dataclass(frozen=True)
class Outcomes:
    """A step's result: the sample's figures and what the state keeps for the next check."""

    sample: OutcomeSample
    baselines: dict[str, Baseline]
    window: list[WindowEntry]
    not_kept: tuple[str, ...] = ()  # workers whose counters were over MAX_STORED_ENTRIES


# --- arithmetic --------------------------------------------------------------------------------


def hist_add(a: Histogram | None, b: Histogram | None) -> Histogram | None:
    if a is None or not a.count:
        return b if b is not None and b.count else None
    if b is None or not b.count:
        return a
    if a.counts and b.counts and len(a.counts) != len(b.counts):
        return a  # other bucket bounds: not comparable (the count stays the first one's)
    counts = tuple(x + y for x, y in zip(a.counts, b.counts, strict=True)) or a.counts or b.counts
    return Histogram(a.count + b.count, a.total + b.total, max(a.max, b.max), counts)


def hist_sub(new: Histogram | None, old: Histogram | None) -> Histogram | None:
    """What ``new`` observed after ``old`` (same boot); None when nothing."""
    if new is None or not new.count:
        return None
    if old is None or not old.count:
        return new
    count = new.count - old.count
    if count <= 0:
        return None
    if new.counts and old.counts and len(new.counts) == len(old.counts):
        counts = tuple(max(0, x - y) for x, y in zip(new.counts, old.counts, strict=True))
    else:
        counts = ()
    # The interval's largest is unknown; the run's largest is an upper bound of it.
    return Histogram(count, max(0.0, new.total - old.total), new.max, counts)


def counters_add(a: TaskCounters, b: TaskCounters, *, runtime: bool = True) -> TaskCounters:
    summed: dict[str, Any] = {n: getattr(a, n) + getattr(b, n) for n in COUNTERS}
    summed["runtime"] = hist_add(a.runtime, b.runtime) if runtime else None
    return TaskCounters(**summed)


def counters_sub(new: TaskCounters, old: TaskCounters | None) -> TaskCounters:
    if old is None:
        return new
    diff: dict[str, Any] = {n: max(0, getattr(new, n) - getattr(old, n)) for n in COUNTERS}
    diff["runtime"] = hist_sub(new.runtime, old.runtime)
    return TaskCounters(**diff)


def is_empty(c: TaskCounters) -> bool:
    return not any(getattr(c, n) for n in COUNTERS)


def finished(c: TaskCounters) -> int:
    """Runs that ended for good: succeeded or failed (a retry runs again)."""
    return c.succeeded + c.failed


def failure_rate(c: TaskCounters) -> float | None:
    """Failed over finished runs (0-1); None when none finished."""
    done = finished(c)
    return c.failed / done if done else None


def quantile(hist: Histogram | None, bounds: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0-1) of ``hist`` in seconds, linear inside its bucket; None when
    empty or when its buckets do not match ``bounds``."""
    if hist is None or not hist.count or len(hist.counts) != len(bounds) + 1:
        return None
    total = sum(hist.counts)
    if total <= 0:
        return None
    rank, seen = q * total, 0
    for i, count in enumerate(hist.counts):
        if count and seen + count >= rank:
            if i >= len(bounds):
                return float(bounds[-1])
            low = bounds[i - 1] if i else 0.0
            return low + (bounds[i] - low) * min(1.0, max(0.0, (rank - seen) / count))
        seen += count
    return float(bounds[-1])


# --- the step ----------------------------------------------------------------------------------


def _with_overflow(raw: CompanionRaw) -> tuple[dict[str, TaskCounters], dict[str, Histogram]]:
    tasks, waits = dict(raw.tasks), dict(raw.waits)
    if raw.overflow_tasks is not None:
        tasks[OVERFLOW_TASKS] = raw.overflow_tasks
    if raw.overflow_waits is not None:
        waits[OVERFLOW_QUEUES] = raw.overflow_waits
    return tasks, waits


def worker_interval(
    raw: CompanionRaw, base: Baseline | None, since: float | None
) -> tuple[dict[str, TaskCounters], dict[str, Histogram]] | None:
    """One worker's outcomes since ``since`` (the previous check), or None when they cannot
    be told apart from what it counted before (first seen, started before that check)."""
    tasks, waits = _with_overflow(raw)
    if base is not None and base.boot == raw.boot:
        return (
            {n: counters_sub(c, base.tasks.get(n)) for n, c in tasks.items()},
            {q: h for q, w in waits.items() if (h := hist_sub(w, base.waits.get(q)))},
        )
    if since is not None and raw.started >= since:
        return tasks, waits  # started (or restarted) since: everything it counted is new
    return None


def step_outcomes(
    workers: Sequence[WorkerSample],
    baselines: Mapping[str, Baseline],
    window: Sequence[WindowEntry],
    *,
    now: float,
    since: float | None,
    window_seconds: float,
) -> Outcomes:
    """The interval's and the window's outcomes, and the next baselines and window."""
    online = [w for w in workers if w.status == "online"]
    tasks: dict[str, TaskCounters] = {}
    waits: dict[str, Histogram] = {}
    new_baselines: dict[str, Baseline] = {}
    bounds: tuple[float, ...] = ()
    counted = 0
    for w in online:
        raw = w.outcomes
        if raw is None:
            continue
        bounds = bounds or raw.bounds
        new_baselines[w.id_hash] = Baseline(raw.boot, raw.started, *_with_overflow(raw))
        part = worker_interval(raw, baselines.get(w.id_hash), since)
        if part is None:
            continue
        counted += 1
        comparable = raw.bounds == bounds
        for name, c in part[0].items():
            c = c if comparable else replace(c, runtime=None)
            tasks[name] = counters_add(tasks[name], c) if name in tasks else c
        for queue, h in part[1].items():
            if comparable:
                waits[queue] = hist_add(waits.get(queue), h) or h
    new_baselines, not_kept = _bounded(new_baselines)
    measured = bool(new_baselines) or bool(not_kept)
    kept = [e for e in window if now - e.at < window_seconds]
    done = {n: replace(c, runtime=None) for n, c in tasks.items() if not is_empty(c)}
    if measured:
        kept.append(WindowEntry(now, done))
    sample = OutcomeSample(
        measured=measured,
        counted=counted,
        tasks=tuple(TaskOutcome(n, c) for n, c in sorted(tasks.items()) if not is_empty(c)),
        waits=dict(sorted(waits.items())),
        window=window_totals(kept) if measured else {},
        window_seconds=window_seconds,
        bounds=bounds,
        without=tuple(sorted(w.id_hash for w in online if not w.companion)),
    )
    return Outcomes(sample, new_baselines, kept, not_kept)


def _bounded(baselines: dict[str, Baseline]) -> tuple[dict[str, Baseline], tuple[str, ...]]:
    """The baselines that fit MAX_STORED_ENTRIES (workers in hash order), and the workers
    left out: those are read again as new next check, so their outcomes are not measured."""
    kept: dict[str, Baseline] = {}
    left: list[str] = []
    used = 0
    for wid in sorted(baselines):
        size = len(baselines[wid].tasks) + len(baselines[wid].waits)
        if used + size > MAX_STORED_ENTRIES:
            left.append(wid)
            continue
        kept[wid] = baselines[wid]
        used += size
    return kept, tuple(left)


def window_totals(window: Iterable[WindowEntry]) -> dict[str, TaskCounters]:
    totals: dict[str, TaskCounters] = {}
    for entry in window:
        for name, c in entry.tasks.items():
            totals[name] = counters_add(totals[name], c, runtime=False) if name in totals else c
    return dict(sorted(totals.items()))


# --- stored form -------------------------------------------------------------------------------
# Compact lists: a state holds one baseline per worker, each up to 1,000 task names.


def hist_to_json(h: Histogram | None) -> list[Any] | None:
    """``[count, total, max, buckets, first, counts...]``, the zero buckets at both ends cut."""
    if h is None:
        return None
    counts = list(h.counts)
    first = next((i for i, c in enumerate(counts) if c), len(counts))
    last = max((i for i, c in enumerate(counts) if c), default=-1)
    head = [h.count, round(h.total, 6), round(h.max, 6), len(counts), first]
    return head + counts[first : last + 1]


def hist_from_json(doc: Any) -> Histogram | None:
    if not isinstance(doc, list) or len(doc) < 5:
        return None
    count, total, top, buckets, first, *sparse = doc
    counts = [0] * int(buckets)
    for i, c in enumerate(sparse):
        if 0 <= int(first) + i < len(counts):
            counts[int(first) + i] = int(c)
    return Histogram(int(count), float(total), float(top), tuple(counts))


def counters_to_json(c: TaskCounters) -> list[Any]:
    doc: list[Any] = [getattr(c, n) for n in COUNTERS]
    runtime = hist_to_json(c.runtime)
    return [*doc, runtime] if runtime is not None else doc


def counters_from_json(doc: Any) -> TaskCounters:
    values = {n: int(v) for n, v in zip(COUNTERS, doc, strict=False)}
    runtime = hist_from_json(doc[len(COUNTERS)]) if len(doc) > len(COUNTERS) else None
    return TaskCounters(**values, runtime=runtime)


def baseline_to_json(b: Baseline) -> dict[str, Any]:
    return {
        "boot": b.boot,
        "started": b.started,
        "tasks": {n: counters_to_json(c) for n, c in b.tasks.items()},
        "waits": {q: hist_to_json(h) for q, h in b.waits.items()},
    }


def baseline_from_json(doc: Mapping[str, Any]) -> Baseline:
    return Baseline(
        boot=str(doc["boot"]),
        started=float(doc["started"]),
        tasks={str(n): counters_from_json(c) for n, c in doc["tasks"].items()},
        waits={str(q): h for q, d in doc["waits"].items() if (h := hist_from_json(d))},
    )


def window_to_json(entry: WindowEntry) -> dict[str, Any]:
    return {"at": entry.at, "tasks": {n: counters_to_json(c) for n, c in entry.tasks.items()}}


def window_from_json(doc: Mapping[str, Any]) -> WindowEntry:
    return WindowEntry(
        float(doc["at"]), {str(n): counters_from_json(c) for n, c in doc["tasks"].items()}
    )
