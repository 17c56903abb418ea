"""Collection: one Snapshot of a Redis broker and the Celery workers behind it.

- ``collector``: the Collector (one target's connections, reused across checks) and its plan;
- ``redis_probe``: what is read from Redis, in bounded steps (with the Lua scripts in ``lua/``);
- ``worker_probe``: Celery's remote control over the broker (the kombu transport);
- ``replies``: the pure, allow-listed reductions of the workers' replies.
"""

from __future__ import annotations

from ..settings import ConfigError, Settings
from .collector import Collector, ProbePlan

__all__ = ["Collector", "ProbePlan", "collector_for"]


def collector_for(settings: Settings) -> Collector:
    """The target's collector, or a ConfigError naming the setting that cannot be used (the
    one wiring of both sides: the command line's and the Lambda functions')."""
    try:
        return Collector(settings)
    except (ValueError, TypeError) as exc:
        # The URL passed validation but the Redis client still refused it; its text may hold
        # the URL, so only the kind of error is named.
        key = "celery_broker_url" if settings.celery_broker_url else "redis_url"
        raise ConfigError(f"{key}: cannot be used ({type(exc).__name__})") from None
