"""Trends over consecutive samples: growth, throughput, and the saturation diagnosis."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from chalicelib.analyse.trends import (
    QueueTrend,
    Trends,
    compute_trends,
    diagnosis,
    history_entry,
)
from chalicelib.model import Sample, WorkerSample
from tests.unit.test_rules import queue, sample, worker


def at(ts: float, depths: dict[str, int], workers: tuple[WorkerSample, ...] = ()) -> Sample:
    return sample(tuple(queue(n, d) for n, d in depths.items()), workers, ts=ts)


def series(*points: tuple[float, dict[str, int]]) -> tuple[list[dict[str, Any]], Sample]:
    """History entries of all but the last point, and the last as the current sample."""
    samples = [at(ts, depths) for ts, depths in points]
    return [history_entry(s) for s in samples[:-1]], samples[-1]


# --- growth ----------------------------------------------------------------------------------


def test_three_rising_samples_are_growing_with_a_rate_per_minute() -> None:
    history, now = series((0, {"celery": 10}), (30, {"celery": 20}), (60, {"celery": 40}))
    trend = compute_trends(history, now).queues["celery"]
    assert trend == QueueTrend("celery", 10, 40, 3, 30.0, True)


def test_two_samples_are_not_enough_for_a_trend() -> None:
    history, now = series((0, {"celery": 10}), (60, {"celery": 500}))
    trends = compute_trends(history, now)
    assert trends.queues["celery"].growing is False
    assert trends.queues["celery"].rate_per_min == 490.0
    assert trends.growing == [] and trends.growth_per_min == 0


def test_a_dip_inside_the_window_is_not_growing() -> None:
    history, now = series(
        (0, {"celery": 10}), (60, {"celery": 30}), (120, {"celery": 20}), (180, {"celery": 50})
    )
    assert compute_trends(history, now).queues["celery"].growing is False


def test_flat_is_not_growing_but_a_plateau_in_a_rise_is() -> None:
    flat_h, flat = series((0, {"q": 5}), (60, {"q": 5}), (120, {"q": 5}))
    assert compute_trends(flat_h, flat).queues["q"].growing is False
    rise_h, rise = series((0, {"q": 5}), (60, {"q": 5}), (120, {"q": 8}))
    trend = compute_trends(rise_h, rise).queues["q"]
    assert trend.growing is True and trend.rate_per_min == 1.5


def test_growth_that_stopped_is_not_growing_at_the_first_flat_sample() -> None:
    history, now = series((0, {"q": 5}), (60, {"q": 8}), (120, {"q": 12}), (180, {"q": 12}))
    trend = compute_trends(history, now).queues["q"]
    assert trend.growing is False
    assert trend.rate_per_min == 2.33  # the rate over the window is still reported


def test_only_the_last_five_samples_count() -> None:
    # An old dip falls out of the window.
    points = [(0.0, {"q": 50}), (60.0, {"q": 0})] + [(60.0 * i, {"q": 10 * i}) for i in range(2, 7)]
    history, now = series(*points)
    trends = compute_trends(history, now)
    assert trends.samples == 5
    trend = trends.queues["q"]
    assert (trend.first, trend.last, trend.samples, trend.growing) == (20, 60, 5, True)
    assert trend.rate_per_min == 10.0


def test_growth_per_min_sums_the_growing_queues_only() -> None:
    history, now = series(
        (0, {"a": 0, "b": 10, "c": 9}),
        (60, {"a": 6, "b": 10, "c": 3}),
        (120, {"a": 12, "b": 16, "c": 0}),
    )
    trends = compute_trends(history, now)
    assert [t.name for t in trends.growing] == ["a", "b"]
    assert trends.growth_per_min == 6.0 + 3.0


def test_a_queue_new_in_this_sample_has_one_point() -> None:
    history, _ = series((0, {"a": 1}), (60, {"a": 1}))
    trends = compute_trends(history, at(120, {"a": 1, "new": 40}))
    assert trends.queues["new"] == QueueTrend("new", 40, 40, 1, 0.0, False)


def test_history_entry_keeps_only_counts() -> None:
    s = at(5.0, {"a": 3, "b": 4}, (worker("w-1", active=2, processed_total=7),))
    entry = history_entry(s)
    assert entry["t"] == 5.0 and entry["q"] == {"a": 3, "b": 4}
    assert (entry["p"], entry["a"], entry["c"]) == (7, 2, 4)


# --- throughput ------------------------------------------------------------------------------


def _t(ts: float, *workers: WorkerSample) -> Sample:
    return at(ts, {"celery": 0}, workers)


def entries(*samples: Sample) -> list[dict[str, Any]]:
    """History entries as the runner keeps them: each written knowing the ones before."""
    history: list[dict[str, Any]] = []
    for s in samples:
        history.append(history_entry(s, history))
    return history


def throughput(*samples: Sample) -> float | None:
    return compute_trends(entries(*samples[:-1]), samples[-1]).throughput_per_min


def reused(w: WorkerSample, age: float) -> WorkerSample:
    """The worker as a check that reused its detail (counters) from ``age`` seconds ago."""
    return replace(w, detail_age_sec=age)


def test_throughput_is_completed_tasks_per_minute_over_the_last_interval() -> None:
    before = _t(0, worker("w-1", processed_total=10), worker("w-2", processed_total=5))
    after = _t(30, worker("w-1", processed_total=25), worker("w-2", processed_total=10))
    assert throughput(before, after) == 40.0


def test_no_throughput_from_a_single_sample_or_no_elapsed_time() -> None:
    assert throughput(_t(0, worker("w-1", processed_total=3))) is None
    same = _t(0, worker("w-1", processed_total=3))
    assert throughput(same, _t(0, worker("w-1", processed_total=9))) is None


def test_a_restarted_worker_counts_only_what_it_did_since() -> None:
    before = _t(0, worker("w-1", processed_total=100, uptime_sec=500))
    fewer = _t(60, worker("w-1", processed_total=4, uptime_sec=20))
    assert throughput(before, fewer) == 4.0
    # More than before, yet restarted: its uptime went down.
    more = _t(60, worker("w-1", processed_total=130, uptime_sec=50))
    assert throughput(before, more) == 130.0


def test_a_worker_back_after_a_missed_check_counts_from_its_last_report() -> None:
    # w-2 did not answer the middle check (busy); its lifetime total is 5000, of which it
    # did 10 in the two minutes since its last report: 5 a minute, not 5000.
    first = _t(0, worker("w-1", processed_total=10), worker("w-2", processed_total=4990))
    middle = _t(60, worker("w-1", processed_total=20), worker("w-2", "not_answering"))
    last = _t(120, worker("w-1", processed_total=30), worker("w-2", processed_total=5000))
    assert throughput(first, middle, last) == 10.0 + 5.0


def test_reused_counters_are_not_read_as_a_minute_without_work() -> None:
    """Counters come with the worker detail, refreshed every few minutes: checks that reuse
    them neither report zero throughput nor a burst when fresh counters arrive."""
    w = worker("w-1", processed_total=100)
    checks = [
        _t(0, w),
        _t(60, replace(w, processed_total=160)),  # fresh: 60 done in the first minute
        _t(120, reused(replace(w, processed_total=160), 60)),
        _t(180, reused(replace(w, processed_total=160), 120)),
        _t(240, replace(w, processed_total=340)),  # fresh: 180 done in three minutes
        _t(300, reused(replace(w, processed_total=340), 60)),
    ]
    rates = [throughput(*checks[: i + 1]) for i in range(len(checks))]
    assert rates == [None, 60.0, 60.0, 60.0, 60.0, 60.0]
    # The reused report is kept as it was made, not stamped with the later check's time.
    assert entries(*checks)[-1]["w"]["w-1"][:3] == [340, 100, 240]


def test_the_first_report_of_a_worker_may_be_reused_already() -> None:
    # A state lost between checks: the collector still holds counters 30 s old.
    first = _t(100, reused(worker("w-1", processed_total=50), 30))
    assert entries(first)[0]["w"]["w-1"] == [50, 100, 70.0]
    assert throughput(first, _t(130, worker("w-1", processed_total=80))) == 30.0


def test_history_written_before_reports_had_a_time_still_gives_a_baseline() -> None:
    old = {"t": 0.0, "q": {"celery": 0}, "p": 0, "a": 0, "c": 4, "w": {"w-1": [10, 100]}}
    now = _t(60, worker("w-1", processed_total=25))
    assert compute_trends([old], now).throughput_per_min == 15.0


def test_a_worker_that_just_joined_has_no_baseline() -> None:
    before = _t(0, worker("w-1", processed_total=10))
    after = _t(60, worker("w-1", processed_total=16), worker("w-new", processed_total=90_000))
    assert throughput(before, after) == 6.0


def test_offline_workers_are_not_counted() -> None:
    before = _t(0, worker("w-1", processed_total=10), worker("w-2", processed_total=10))
    after = _t(60, worker("w-1", processed_total=10), worker("w-2", "offline"))
    assert throughput(before, after) == 0.0


def test_history_from_before_per_worker_counts_gives_no_throughput() -> None:
    old = {"t": 0.0, "q": {"celery": 0}, "p": 0, "a": 0, "c": 4, "done": {"tasks.x": 3}}
    now = _t(60, worker("w-1", processed_total=9))
    assert compute_trends([old], now).throughput_per_min is None


# --- diagnosis -------------------------------------------------------------------------------


def _trends(growing: bool) -> Trends:
    return Trends(queues={"q": QueueTrend("q", 1, 9, 3, 8.0, growing)}, samples=3)


@pytest.mark.parametrize(
    ("saturation", "growing", "pending", "expected"),
    [
        (95.0, True, 10, "need_more_workers"),
        (90.1, True, 10, "need_more_workers"),
        (90.0, True, 10, "growing"),
        (29.9, True, 10, "ghost_workers"),
        (0.0, True, 10, "ghost_workers"),
        (30.0, True, 10, "growing"),
        (60.0, True, 10, "growing"),
        (95.0, False, 10, "at_capacity"),
        (90.0, False, 10, "normal"),
        (10.0, False, 0, "healthy"),
        (10.0, False, 3, "normal"),
        (30.0, False, 0, "normal"),
    ],
)
def test_diagnosis_table(saturation: float, growing: bool, pending: int, expected: str) -> None:
    assert diagnosis(saturation, _trends(growing), pending, alive_workers=2) == expected


def test_no_ghost_workers_when_no_worker_answers() -> None:
    # Saturation is 0 because nobody answers: that is workers_down, not ghosts.
    assert diagnosis(0.0, _trends(True), 10, alive_workers=0) == "growing"
    assert diagnosis(0.0, _trends(True), 10, alive_workers=1) == "ghost_workers"


def test_diagnosis_of_a_real_sequence() -> None:
    busy = (worker("w-1", concurrency=2, active=2),)
    samples = [at(60.0 * i, {"celery": 10 * (i + 1)}, busy) for i in range(3)]
    history = [history_entry(s) for s in samples[:-1]]
    now: Sample = samples[-1]
    trends = compute_trends(history, now)
    assert (
        diagnosis(now.saturation_pct, trends, now.total_pending, now.alive_workers)
        == "need_more_workers"
    )
