"""The alert types: one catalogue that the settings, the rules and the alert lifecycle read.

The values are part of the payload, the alert keys and the stored state: never rename one.
A type named anywhere else is an :class:`AlertType` member, so a typo is a type error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from .model import Severity


class AlertType(StrEnum):
    REDIS_UNREACHABLE = "redis_unreachable"
    CELERY_DISCONNECTED = "celery_disconnected"
    WORKERS_DOWN = "workers_down"
    WORKER_OFFLINE = "worker_offline"
    BACKLOG_EXPLOSION = "backlog_explosion"
    HIGH_LATENCY = "high_latency"
    STUCK_TASK = "stuck_task"
    QUEUE_GROWING = "queue_growing"
    GHOST_WORKERS = "ghost_workers"
    SATURATION_HIGH = "saturation_high"
    ORPHANED_TASKS = "orphaned_tasks"
    REDIS_MEMORY = "redis_memory"
    CONFIG_RISK = "config_risk"
    REDIS_PERMISSION = "redis_permission"
    TASK_FAILURE_RATE = "task_failure_rate"
    TASKS_EXPIRED = "tasks_expired"


@dataclass(frozen=True)
class AlertKind:
    """What every alert of one type shares.

    ``severity`` and ``title`` are the rule's usual ones (a rule may raise the severity or
    name the queue or worker in the title); ``pending_checks``: breaching checks before the
    alert fires unless configured (an emergency fires at once); ``inhibits``: types kept
    quiet while this one is present.
    """

    type: AlertType
    severity: Severity
    title: str
    pending_checks: int = 2
    inhibits: frozenset[AlertType] = frozenset()


def _kinds(*kinds: AlertKind) -> dict[AlertType, AlertKind]:
    return {kind.type: kind for kind in kinds}


T = AlertType
CATALOGUE: Mapping[AlertType, AlertKind] = _kinds(
    # Blind: one check that cannot reach Redis is enough to say so.
    AlertKind(T.REDIS_UNREACHABLE, Severity.CRITICAL, "Redis unreachable", pending_checks=1),
    AlertKind(T.CELERY_DISCONNECTED, Severity.WARNING, "No Celery worker answers"),
    AlertKind(
        T.WORKERS_DOWN,
        Severity.EMERGENCY,
        "All workers down",  # an emergency: fires at once whatever pending_checks says
        # workers_down explains these: while it fires they stay quiet.
        inhibits=frozenset(
            {
                T.BACKLOG_EXPLOSION,
                T.HIGH_LATENCY,
                T.QUEUE_GROWING,
                T.GHOST_WORKERS,
                T.SATURATION_HIGH,
            }
        ),
    ),
    AlertKind(T.WORKER_OFFLINE, Severity.WARNING, "Worker offline"),
    AlertKind(T.BACKLOG_EXPLOSION, Severity.CRITICAL, "Backlog explosion"),
    AlertKind(T.HIGH_LATENCY, Severity.WARNING, "High latency"),
    AlertKind(T.STUCK_TASK, Severity.WARNING, "Task stuck"),
    AlertKind(T.QUEUE_GROWING, Severity.WARNING, "Queue growing"),
    AlertKind(T.GHOST_WORKERS, Severity.WARNING, "Ghost workers"),
    AlertKind(T.SATURATION_HIGH, Severity.WARNING, "Workers saturated"),
    AlertKind(T.ORPHANED_TASKS, Severity.WARNING, "Orphaned tasks"),
    AlertKind(T.REDIS_MEMORY, Severity.CRITICAL, "Redis memory almost full"),
    AlertKind(T.CONFIG_RISK, Severity.WARNING, "Configuration risk"),
    AlertKind(T.REDIS_PERMISSION, Severity.WARNING, "Redis denies commands Doorman needs"),
    AlertKind(T.TASK_FAILURE_RATE, Severity.WARNING, "Task failing"),
    # An expiry is an event, already counted over the failure window: one check says it.
    AlertKind(T.TASKS_EXPIRED, Severity.WARNING, "Tasks expired", pending_checks=1),
)
del T

# The type of a check that could not see: it alone is evaluated, and it mutes every other.
BLIND_TYPE = AlertType.REDIS_UNREACHABLE
ALERT_TYPE_NAMES: tuple[str, ...] = tuple(t.value for t in AlertType)


def kind_of(name: str) -> AlertKind | None:
    """The catalogue entry of the type named ``name`` (None for a name not in it)."""
    try:
        return CATALOGUE[AlertType(name)]
    except ValueError:
        return None
