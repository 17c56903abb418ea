"""Collection: one Snapshot of a Redis broker and the Celery workers behind it.

- ``collector``: the Collector (one target's connections, reused across checks) and its plan;
- ``redis_probe``: what is read from Redis, in bounded steps (with the Lua scripts in ``lua/``);
- ``worker_probe``: Celery's remote control over the broker (the kombu transport);
- ``replies``: the pure, allow-listed reductions of the workers' replies.
"""

from __future__ import annotations

from .collector import Collector, ProbePlan

__all__ = ["Collector", "ProbePlan"]
