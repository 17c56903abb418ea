"""Per-task anomalies found in one sample: stuck tasks and orphaned messages."""

from __future__ import annotations

from collections.abc import Iterable

from ..model import Anomaly, Sample
from ..sanitize import UnackedSample
from ..thresholds import Thresholds


def find_anomalies(
    sample: Sample, unacked: Iterable[UnackedSample], thresholds: Thresholds
) -> tuple[Anomaly, ...]:
    """Stuck tasks (running longer than the threshold) and orphaned unacked messages.

    An unacked message is orphaned when it is older than the visibility timeout and no live
    worker holds it: Redis will hand it out again, and whoever took it is gone.
    """
    found: list[Anomaly] = []
    limit = thresholds.max_task_runtime_seconds
    for worker in sample.workers:
        if worker.status != "online":
            continue
        for task in worker.tasks:
            if task.duration_sec is not None and task.duration_sec > limit:
                found.append(
                    Anomaly(
                        type="stuck_task",
                        task_id_hash=task.task_id_hash,
                        task_name=task.task_name,
                        duration_sec=round(task.duration_sec, 1),
                        worker_id_hash=worker.id_hash,
                    )
                )
    for entry in unacked:
        found.append(
            Anomaly(
                type="overdue_unacked" if entry.held_by_live_worker else "orphaned_task",
                task_id_hash=entry.task_id_hash,
                task_name=entry.task_name,
                duration_sec=round(entry.age_sec, 1),
                queue=entry.queue,
            )
        )
    return tuple(sorted(found, key=lambda a: (a.type, -a.duration_sec)))
