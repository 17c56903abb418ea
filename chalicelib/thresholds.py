"""The limits the rules compare a sample with (pure: read by ``analyse/``, filled in by
``settings``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    max_queue_size: int = 1000
    max_wait_time_seconds: float = 60.0
    max_task_runtime_seconds: float = 1800.0
    critical_queues: tuple[str, ...] = ()
    # A task name's failure rate over the failure window (warning above this, critical above
    # 50 %), once at least min_task_volume of its runs ended in that window.
    max_failure_rate_pct: float = 10.0
    min_task_volume: int = 10
