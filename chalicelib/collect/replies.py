"""Pure reductions of Celery's remote-control replies, through allow-lists.

Each reducer keeps what a check needs of one reply the moment it arrives and drops the rest:
task args and kwargs (raw in ``active()`` replies), broker transport options and settings
values are never kept, except the few numbers, flags and key-naming options named here.
Nothing here sends or receives: the transport is worker_probe.py.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ..model import KOMBU_PRIORITY_STEPS, KOMBU_SEP, ActiveTask, Dialect, ProbeError, WorkerRaw
from ..sanitize import parse_time


class RemoteControlBusy(Exception):
    """Another check in this process held the broker's remote-control connection too long."""


@dataclass
class Reduced:
    concurrency: int | None = None
    pool: str | None = None
    processed: dict[str, int] = field(default_factory=dict)
    prefetch_count: int | None = None
    uptime_sec: int | None = None
    visibility_timeout: float | None = None
    dialect: Dialect | None = None
    active: tuple[ActiveTask, ...] = ()
    reserved_ids: tuple[str, ...] = ()
    scheduled_ids: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    answered: list[str] = field(default_factory=list)


def _int_or_none(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def reduce_stats(reply: Any, into: Reduced) -> None:
    """Keep pool size and type, per-task-name totals, prefetch, uptime, visibility timeout."""
    if not isinstance(reply, dict):
        return
    pool = reply.get("pool")
    if isinstance(pool, dict):
        into.concurrency = _int_or_none(pool.get("max-concurrency"))
        impl = pool.get("implementation")
        if isinstance(impl, str):
            # "celery.concurrency.prefork:TaskPool" -> "prefork"
            into.pool = impl.split(":")[0].rsplit(".", 1)[-1][:32]
    total = reply.get("total")
    if isinstance(total, dict):
        into.processed = {
            str(name): int(count)
            for name, count in total.items()
            if isinstance(count, int) and not isinstance(count, bool)
        }
    into.prefetch_count = _int_or_none(reply.get("prefetch_count"))
    into.uptime_sec = _int_or_none(reply.get("uptime"))
    broker = reply.get("broker")
    if isinstance(broker, dict):
        options = broker.get("transport_options")
        if isinstance(options, dict):
            vt = options.get("visibility_timeout")
            if isinstance(vt, int | float) and not isinstance(vt, bool) and vt > 0:
                into.visibility_timeout = float(vt)
            into.dialect = reduce_dialect(options)


QUEUE_ORDER_STRATEGIES = ("round_robin", "priority", "sorted")


def reduce_dialect(options: dict[Any, Any]) -> Dialect:
    """The shape-defining transport options, through an allow-list: ``sep``,
    ``priority_steps``, ``queue_order_strategy`` and ``global_keyprefix``, each checked for
    shape, and kombu's default for one the worker does not set. Nothing else of the options
    (which may hold passwords) is read."""
    sep = options.get("sep")
    steps = options.get("priority_steps")
    order = options.get("queue_order_strategy")
    prefix = options.get("global_keyprefix")
    good_steps = (
        isinstance(steps, list | tuple)
        and 0 < len(steps) <= 256
        and all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 255 for x in steps)
    )
    return Dialect(
        sep=sep if isinstance(sep, str) and 1 <= len(sep) <= 16 else KOMBU_SEP,
        priority_steps=(
            tuple(sorted(set(steps))) if good_steps else KOMBU_PRIORITY_STEPS  # type: ignore[arg-type]
        ),
        global_keyprefix=prefix if isinstance(prefix, str) and len(prefix) <= 256 else "",
        queue_order_strategy=order if order in QUEUE_ORDER_STRATEGIES else "round_robin",
    )


def _request_ids(reply: Any, *, nested: bool) -> tuple[str, ...]:
    if not isinstance(reply, list):
        return ()
    ids: list[str] = []
    for item in reply:
        if not isinstance(item, dict):
            continue
        request = item.get("request") if nested else item
        if isinstance(request, dict) and isinstance(request.get("id"), str):
            ids.append(request["id"])
    return tuple(ids)


def reduce_active(reply: Any, into: Reduced) -> None:
    """Keep id, task name and start time of each running task; nothing else."""
    if not isinstance(reply, list):
        return
    tasks: list[ActiveTask] = []
    for item in reply:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            continue
        started = item.get("time_start")
        tasks.append(
            ActiveTask(
                task_id=item["id"],
                task_name=item["name"] if isinstance(item.get("name"), str) else "?",
                started_at=float(started) if isinstance(started, int | float) else None,
            )
        )
    into.active = tuple(tasks)


def reduce_reserved(reply: Any, into: Reduced) -> None:
    into.reserved_ids = _request_ids(reply, nested=False)


def reduce_scheduled(reply: Any, into: Reduced) -> None:
    into.scheduled_ids = _request_ids(reply, nested=True)


def reduce_active_queues(reply: Any, into: Reduced) -> None:
    if isinstance(reply, list):
        into.queues = tuple(
            q["name"] for q in reply if isinstance(q, dict) and isinstance(q.get("name"), str)
        )


Reducer = Callable[[Any, Reduced], None]

# Asked every check: one command, so a healthy check costs each worker one message. The
# answer proves the worker alive and lists its running tasks (stuck tasks, saturation).
CORE_COMMANDS: tuple[tuple[str, Reducer], ...] = (("active", reduce_active),)
# Slow-changing detail, asked when the collector wants it fresh (see Collector): pool size,
# completed-task counters and uptime (``stats``), reserved and scheduled tasks, queues.
DETAIL_COMMANDS: tuple[tuple[str, Reducer], ...] = (
    ("stats", reduce_stats),
    ("reserved", reduce_reserved),
    ("scheduled", reduce_scheduled),
    ("active_queues", reduce_active_queues),
)
COMMANDS = CORE_COMMANDS + DETAIL_COMMANDS


# --- configuration (``conf``), for the audit's deep checks ------------------------------------

ConfValue = bool | int | float | None
# What may be kept of a worker's settings: the new-style name, and the old uppercase names
# Celery still accepts. Everything else in a ``conf`` reply (URLs, passwords, API keys, any
# custom setting) is dropped in the reply callback, before the reply is kept anywhere.
CONF_BOOLS: dict[str, tuple[str, ...]] = {
    "task_acks_late": ("task_acks_late", "CELERY_ACKS_LATE"),
    "task_reject_on_worker_lost": ("task_reject_on_worker_lost", "CELERY_REJECT_ON_WORKER_LOST"),
}
CONF_NUMBERS: dict[str, tuple[str, ...]] = {
    "worker_prefetch_multiplier": ("worker_prefetch_multiplier", "CELERYD_PREFETCH_MULTIPLIER"),
    "task_time_limit": ("task_time_limit", "CELERYD_TASK_TIME_LIMIT"),
    "task_soft_time_limit": ("task_soft_time_limit", "CELERYD_TASK_SOFT_TIME_LIMIT"),
    "worker_concurrency": ("worker_concurrency", "CELERYD_CONCURRENCY"),
}
_TRANSPORT_OPTIONS = ("broker_transport_options", "BROKER_TRANSPORT_OPTIONS")


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def reduce_conf(reply: Any) -> dict[str, ConfValue]:
    """The allow-listed settings of one ``conf`` reply, as booleans and numbers only.

    A key is present when the worker reported it (``None`` meaning "not set", Celery's
    default); absent when the reply did not hold it or held a value of another type.
    """
    kept: dict[str, ConfValue] = {}
    if not isinstance(reply, dict):
        return kept
    for key, names in CONF_BOOLS.items():
        for name in names:
            if name in reply and (reply[name] is None or isinstance(reply[name], bool)):
                kept[key] = reply[name]
                break
    for key, names in CONF_NUMBERS.items():
        for name in names:
            if name in reply and (reply[name] is None or _number(reply[name]) is not None):
                kept[key] = _number(reply[name])
                break
    for name in _TRANSPORT_OPTIONS:
        options = reply.get(name)
        if isinstance(options, dict):
            vt = _number(options.get("visibility_timeout"))
            if vt is not None and vt > 0:
                kept["visibility_timeout"] = vt
            break
    return kept


def latest_eta(reply: Any) -> float | None:
    """The latest ETA (epoch seconds) among the tasks of one ``scheduled()`` reply, or None.

    Only each entry's ``eta`` field is read; the request (id, name, args) is not.
    """
    if not isinstance(reply, list):
        return None
    etas = [
        parse_time(eta)
        for eta in (item.get("eta") if isinstance(item, dict) else None for item in reply)
        if isinstance(eta, str) and len(eta) <= 64
    ]
    return max((eta for eta in etas if eta is not None), default=None)


_DENIED_COMMAND = re.compile(r"no permissions to run the '([A-Za-z0-9_|-]{1,40})' command")
_DENIED_ACCESS = re.compile(r"no permissions to access (?:an? |one of the )(key|channel)")
_UNKNOWN_COMMAND = re.compile(r"unknown command [`']([A-Za-z0-9_|-]{1,40})[`']")


def remote_permission(exc: BaseException) -> ProbeError | None:
    """The ProbeError naming what Redis refused this user (ACL) or does not offer (a
    command disabled or renamed by a managed Redis), when that is why ``exc`` was raised
    (kombu wraps redis-py's error; the whole chain is read); else None."""
    import redis

    seen: BaseException | None = exc
    for _depth in range(8):
        if seen is None:
            return None
        text = str(seen)
        lowered = text.lower()
        denied = _DENIED_COMMAND.search(lowered)
        if denied:
            command = denied.group(1).upper().replace("|", " ")  # script|load: SCRIPT LOAD
            return ProbeError(
                "workers",
                "permission",
                f"Redis denied {command} to this user (ACL): workers cannot be asked",
            )
        if "can't run this command" in lowered or "can't access" in lowered:
            # Denied inside one of kombu's Lua scripts: Redis does not name the command.
            return ProbeError(
                "workers",
                "permission",
                "Redis denied this user (ACL) a command or key inside one of kombu's scripts:"
                " workers cannot be asked",
            )
        access = _DENIED_ACCESS.search(lowered)
        if access:
            return ProbeError(
                "workers",
                "permission",
                f"Redis denied this user (ACL) a {access.group(1)} remote control uses:"
                " workers cannot be asked",
            )
        unknown = _UNKNOWN_COMMAND.search(lowered)
        if unknown and isinstance(seen, redis.ResponseError):
            command = unknown.group(1).upper()
            return ProbeError(
                "workers",
                "permission",
                f"Redis does not offer {command} (disabled or renamed): workers cannot be asked",
            )
        if isinstance(seen, redis.exceptions.NoPermissionError):
            return ProbeError(
                "workers", "permission", "Redis denied this user (ACL): workers cannot be asked"
            )
        seen = seen.__cause__ or seen.__context__
    return None


def describe_remote_error(exc: BaseException) -> ProbeError:
    """The ProbeError for a failed remote-control exchange; never repeats the broker URL."""
    name = type(exc).__name__
    denied = remote_permission(exc)
    if denied is not None:
        return denied
    if isinstance(exc, RemoteControlBusy):
        return ProbeError(
            "workers", "busy", "another check of this broker kept remote control busy"
        )
    text = str(exc).lower()
    if "timeout" in text or "timed out" in text:
        return ProbeError("workers", "timeout", "remote control timed out talking to the broker")
    if "refused" in text or "connect" in text:
        return ProbeError("workers", "broker_unreachable", f"remote control failed ({name})")
    return ProbeError("workers", "error", f"remote control failed ({name})")


def mark_silent(workers: tuple[WorkerRaw, ...], subscribers: int | None) -> tuple[WorkerRaw, ...]:
    """Decide whether silent workers are dead (``offline``) or alive but not answering.

    ``subscribers`` counts the live subscriptions to the workers' pidbox channel: one per live
    worker, dead workers' connections are closed by the kernel. When the count leaves no room
    for the silent workers they are offline; when it covers all of them they are alive but not
    answering; otherwise it cannot tell them apart and they stay not_answering. A count below
    the number of workers that did answer measures something else (a custom fanout prefix,
    say) and decides nothing.
    """
    silent = [w for w in workers if w.status != "online"]
    if not silent or subscribers is None:
        return workers
    online = sum(1 for w in workers if w.status == "online")
    if subscribers != online:  # room for silent ones that are alive, or a count to distrust
        return workers
    return tuple(replace(w, status="offline") if w.status != "online" else w for w in workers)
