"""``doorman whois HASH``: map a hash back to a live name, on the operator's machine only."""

from __future__ import annotations

from typing import Any

from .collect import ProbePlan
from .settings import Settings
from .text import safe_text


def whois(settings: Settings, deps: Any, wanted: str) -> str | None:
    """Return ``"worker <hostname>"`` or ``"task <id> (<name>)"`` for a matching hash, or None.

    The names are looked up live (workers, running and reserved tasks, oldest messages); the
    result is printed to the operator's terminal and never stored or sent anywhere. They are
    raw names from the cluster, so the line comes back escaped (``safe_text``): a name holding
    a newline or an escape sequence cannot forge output or drive the terminal.
    """
    found = _find(deps, wanted)
    return None if found is None else safe_text(found)


def _find(deps: Any, wanted: str) -> str | None:
    """The raw (unescaped) description of what ``wanted`` is the hash of, or None."""
    hasher = deps.hasher
    snapshot = deps.collector.collect(ProbePlan(discover_workers="always"))
    for worker in snapshot.workers:
        if hasher.worker(worker.hostname) == wanted:
            return f"worker {worker.hostname}"
        for task in worker.active:
            if hasher.task(task.task_id) == wanted:
                return f"task {task.task_id} ({task.task_name}) running on {worker.hostname}"
        for task_id in worker.reserved_ids:
            if hasher.task(task_id) == wanted:
                return f"task {task_id} reserved by {worker.hostname}"
    for queue in snapshot.queues:
        if hasher.queue(queue.name) == wanted:
            return f"queue {queue.name}"
        for peek in queue.oldest:
            if peek.task_id and hasher.task(peek.task_id) == wanted:
                return f"task {peek.task_id} ({peek.task_name}) waiting in {queue.name}"
    if snapshot.unacked is not None:
        for entry in snapshot.unacked.overdue:
            if entry.task_id and hasher.task(entry.task_id) == wanted:
                return f"task {entry.task_id} ({entry.task_name}) unacked from {entry.queue}"
    return None
