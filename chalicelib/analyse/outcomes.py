"""Task outcomes from the worker companions: what happened since the previous check, and over
the failure window.

A companion's counters are cumulative since its worker started (its ``boot``). The check
keeps each answering worker's last counters as its baseline and reports the difference. A
worker seen for the first time counts from its baseline on, unless it started after the
previous check (then everything it counted is new); a different boot is a restart: its
counters began again from zero, so they are taken whole when it started after the previous
check, else as a new baseline (never a negative rate). A worker that stops answering keeps
its baseline until it is forgotten, to be differenced when it answers again; its old
counters are never reported as live ones meanwhile.
"""

from __future__ import annotations

import json
import math
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
# What the baselines may take of the stored state, as JSON before compression (the whole
# state is one DynamoDB item, at most 350 KB compressed, whatever the rest holds). Over it the
# histograms go first (run times and waits are then not measured), then workers.
MAX_STORED_BYTES = 200_000
# The window is kept as this many slots of equal length, whatever its length.
WINDOW_SLOTS = 10
# The names under which what a companion could not keep apart (beyond its own limits) is shown.
OVERFLOW_TASKS = "(other tasks, over the companion's limit)"
OVERFLOW_QUEUES = "(other queues, over the companion's limit)"


@dataclass(frozen=True)
class Baseline:
    """A worker's counters as a check read them (``at``), under the names of ``naming``.

    ``histograms``: False when they were not kept (state too large): the next difference
    then has counts only.
    """

    boot: str
    started: float
    tasks: dict[str, TaskCounters]
    waits: dict[str, Histogram]
    at: float = 0.0
    naming: str = ""
    histograms: bool = True


@dataclass(frozen=True)
class WindowEntry:
    """One check's outcomes by task name (counters only), kept for the failure window, under
    the names of ``naming`` (entries of another naming are dropped: names would mix)."""

    at: float
    tasks: dict[str, TaskCounters]
    naming: str = ""


@dataclass(frozen=True)
class Outcomes:
    """A step's result: the sample's figures and what the state keeps for the next check."""

    sample: OutcomeSample
    baselines: dict[str, Baseline]
    window: list[WindowEntry]
    not_kept: tuple[str, ...] = ()  # workers whose counters did not fit MAX_STORED_BYTES
    histograms_dropped: bool = False  # the histograms did not fit: counts only next check


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


Interval = tuple[dict[str, TaskCounters], dict[str, Histogram]]


def worker_interval(
    raw: CompanionRaw, base: Baseline | None, since: float | None, now: float
) -> tuple[Interval, float] | None:
    """One worker's outcomes since it was last read, and the seconds they span; None when
    they cannot be told apart from what it counted before.

    Same boot: the difference. Another boot, or never read: everything it counted, if it
    started after it was last read (or, never read, after the previous check) and not in
    the future of this check's clock; else nothing, only a new baseline.
    """
    tasks, waits = _with_overflow(raw)
    if base is not None and base.boot == raw.boot and base.at <= now:
        if not base.histograms:
            counts = {
                n: replace(counters_sub(c, base.tasks.get(n)), runtime=None)
                for n, c in tasks.items()
            }
            return (counts, {}), now - base.at
        diff = {n: counters_sub(c, base.tasks.get(n)) for n, c in tasks.items()}
        waited = {q: h for q, w in waits.items() if (h := hist_sub(w, base.waits.get(q)))}
        return (diff, waited), now - base.at
    last = base.at if base is not None else since
    if last is not None and last <= raw.started <= now:
        return (tasks, waits), now - raw.started
    return None


def step_outcomes(
    workers: Sequence[WorkerSample],
    baselines: Mapping[str, Baseline],
    window: Sequence[WindowEntry],
    *,
    now: float,
    since: float | None,
    window_seconds: float,
    naming: str = "",
    keep_silent_for: float = 0.0,
) -> Outcomes:
    """The interval's and the window's outcomes, and the next baselines and window.

    A worker whose counters span more than the window (it was silent, or checks stopped)
    shows them in the interval, not in the window: they are not recent. A silent worker's
    baseline is kept ``keep_silent_for`` seconds, so its counters are differenced when it
    answers again; a change of ``naming`` (task names scrubbed or not) starts new baselines.
    """
    online = [w for w in workers if w.status == "online"]
    total = _Totals()
    fresh: dict[str, Baseline] = {}
    for w in online:
        raw = w.outcomes
        if raw is None:
            continue
        fresh[w.id_hash] = Baseline(raw.boot, raw.started, *_with_overflow(raw), now, naming)
        base = baselines.get(w.id_hash)
        part = worker_interval(raw, base if base and base.naming == naming else None, since, now)
        if part is None:
            total.not_counted.append(w.id_hash)
        else:
            total.add(raw.bounds, part[0], recent=part[1] <= window_seconds)
    # Online but unread (its reply failed or timed out) keeps its baseline like a silent one.
    answering = {w.id_hash for w in online if w.outcomes is not None}
    for wid, base in baselines.items():
        if wid not in answering and 0 <= now - base.at < keep_silent_for:
            fresh[wid] = base  # silent for now: differenced when it answers again
    kept, not_kept, dropped = _bounded(fresh)
    same = [e for e in window if e.naming == naming]
    slots = _slotted([*same, WindowEntry(now, total.recent)], now, window_seconds, naming)
    sample = OutcomeSample(
        counted=total.counted,
        tasks=tuple(TaskOutcome(n, c) for n, c in sorted(total.tasks.items()) if not is_empty(c)),
        waits=dict(sorted(total.waits.items())),
        window=window_totals(slots),
        window_seconds=window_seconds,
        bounds=total.bounds,
        not_counted=tuple(sorted(total.not_counted)),
    )
    return Outcomes(sample, kept, slots, not_kept, dropped)


class _Totals:
    """The interval's sums over workers, and the part of it recent enough for the window."""

    def __init__(self) -> None:
        self.tasks: dict[str, TaskCounters] = {}
        self.waits: dict[str, Histogram] = {}
        self.recent: dict[str, TaskCounters] = {}
        self.bounds: tuple[float, ...] = ()
        self.counted = 0
        self.not_counted: list[str] = []

    def add(self, bounds: tuple[float, ...], part: Interval, *, recent: bool) -> None:
        self.counted += 1
        self.bounds = self.bounds or bounds
        comparable = bounds == self.bounds  # other buckets: counts only
        for name, c in part[0].items():
            c = c if comparable else replace(c, runtime=None)
            self.tasks[name] = counters_add(self.tasks[name], c) if name in self.tasks else c
            if recent and not is_empty(c):
                counts = replace(c, runtime=None)
                old = self.recent.get(name)
                self.recent[name] = counters_add(old, counts, runtime=False) if old else counts
        for queue, h in part[1].items():
            if comparable:
                self.waits[queue] = hist_add(self.waits.get(queue), h) or h


def _slotted(
    entries: Iterable[WindowEntry], now: float, seconds: float, naming: str
) -> list[WindowEntry]:
    """The entries within the window (none from this clock's future), merged into at most
    WINDOW_SLOTS slots, so a long window does not keep one entry per check."""
    width = seconds / WINDOW_SLOTS
    merged: dict[int, dict[str, TaskCounters]] = {}
    starts: dict[int, float] = {}
    for e in entries:
        age = now - e.at
        if not 0 <= age < seconds or not e.tasks:
            continue
        slot = int(age // width)
        tasks = merged.setdefault(slot, {})
        starts[slot] = min(starts.get(slot, e.at), e.at)
        for name, c in e.tasks.items():
            tasks[name] = counters_add(tasks[name], c, runtime=False) if name in tasks else c
    return [WindowEntry(starts[k], merged[k], naming) for k in sorted(merged, reverse=True)]


def _bounded(
    baselines: dict[str, Baseline],
) -> tuple[dict[str, Baseline], tuple[str, ...], bool]:
    """The baselines within MAX_STORED_BYTES: histograms dropped first, then workers (in
    hash order); the workers left out are read as new next check, so not measured."""
    if sum(_stored_size(b) for b in baselines.values()) <= MAX_STORED_BYTES:
        return baselines, (), False
    kept: dict[str, Baseline] = {}
    left: list[str] = []
    used = 0
    for wid in sorted(baselines):
        lean = _without_histograms(baselines[wid])
        size = _stored_size(lean)
        if used + size > MAX_STORED_BYTES:
            left.append(wid)
            continue
        kept[wid] = lean
        used += size
    return kept, tuple(left), True


def _stored_size(b: Baseline) -> int:
    return len(json.dumps(baseline_to_json(b), separators=(",", ":")))


def _without_histograms(b: Baseline) -> Baseline:
    tasks = {n: replace(c, runtime=None) for n, c in b.tasks.items()}
    return replace(b, tasks=tasks, waits={}, histograms=False)


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


# A stored state is read back through these checks: shaped wrongly, it raises ValueError
# (and the state loads without outcomes) instead of costing memory or a crash.
MAX_BUCKETS = 257
_INT_MAX = 2**63 - 1


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _INT_MAX:
        raise ValueError("a stored count is not one")
    return value


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("a stored time is not a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("a stored time is not finite")
    return number


def hist_from_json(doc: Any) -> Histogram | None:
    if not isinstance(doc, list) or len(doc) < 5:
        raise ValueError("a stored histogram is not one")
    count, total, top, buckets, first, *sparse = doc
    if not 0 <= _count(buckets) <= MAX_BUCKETS or _count(first) + len(sparse) > buckets:
        raise ValueError("a stored histogram has too many buckets")
    counts = [0] * buckets
    for i, c in enumerate(sparse):
        counts[first + i] = _count(c)
    return Histogram(_count(count), _seconds(total), _seconds(top), tuple(counts))


def counters_to_json(c: TaskCounters) -> list[Any]:
    doc: list[Any] = [getattr(c, n) for n in COUNTERS]
    runtime = hist_to_json(c.runtime)
    return [*doc, runtime] if runtime is not None else doc


def counters_from_json(doc: Any) -> TaskCounters:
    if not isinstance(doc, list) or not len(COUNTERS) <= len(doc) <= len(COUNTERS) + 1:
        raise ValueError("stored counters are not")
    values = {n: _count(v) for n, v in zip(COUNTERS, doc, strict=False)}
    runtime = hist_from_json(doc[len(COUNTERS)]) if len(doc) > len(COUNTERS) else None
    return TaskCounters(**values, runtime=runtime)


def baseline_to_json(b: Baseline) -> dict[str, Any]:
    return {
        "boot": b.boot,
        "started": b.started,
        "at": b.at,
        "naming": b.naming,
        "histograms": b.histograms,
        "tasks": {n: counters_to_json(c) for n, c in b.tasks.items()},
        "waits": {q: hist_to_json(h) for q, h in b.waits.items()},
    }


def baseline_from_json(doc: Mapping[str, Any]) -> Baseline:
    if not isinstance(doc, Mapping) or not isinstance(doc.get("histograms", True), bool):
        raise ValueError("a stored baseline is not one")
    return Baseline(
        boot=str(doc["boot"])[:64],
        started=_seconds(doc["started"]),
        tasks={str(n): counters_from_json(c) for n, c in doc["tasks"].items()},
        waits={str(q): h for q, d in doc["waits"].items() if (h := hist_from_json(d))},
        at=_seconds(doc.get("at", 0.0)),
        naming=str(doc.get("naming", ""))[:16],
        histograms=doc.get("histograms", True),
    )


def window_to_json(entry: WindowEntry) -> dict[str, Any]:
    tasks = {n: counters_to_json(c) for n, c in entry.tasks.items()}
    return {"at": entry.at, "naming": entry.naming, "tasks": tasks}


def window_from_json(doc: Mapping[str, Any]) -> WindowEntry:
    return WindowEntry(
        _seconds(doc["at"]),
        {str(n): counters_from_json(c) for n, c in doc["tasks"].items()},
        str(doc.get("naming", ""))[:16],
    )
