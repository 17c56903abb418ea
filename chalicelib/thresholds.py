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
