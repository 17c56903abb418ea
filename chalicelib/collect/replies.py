"""Pure reductions of Celery's remote-control replies, through allow-lists.

Each reducer keeps what a check needs of one reply the moment it arrives and drops the rest:
task args and kwargs (raw in ``active()`` replies), broker transport options and settings
values are never kept, except the few numbers, flags and key-naming options named here.
Nothing here sends or receives: the transport is worker_probe.py.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeGuard, TypeVar

from ..model import (
    KOMBU_PRIORITY_STEPS,
    KOMBU_SEP,
    ActiveTask,
    CompanionRaw,
    Dialect,
    Histogram,
    ProbeError,
    TaskCounters,
    WorkerRaw,
)
from ..sanitize import parse_time
from ..text import count


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
    # The worker companion: what its stats marker says (None: stats not answered), what its
    # ``doorman`` reply held, what went wrong with that reply, which of the lists
    # (``reserved``/``scheduled``) it gave, and the latest ETA of its scheduled tasks.
    marker: Marker | None = None
    companion: CompanionRaw | None = None
    companion_problem: str | None = None
    lists: set[str] = field(default_factory=set)
    latest_eta: float | None = None
    companion_lists_unread: bool = False  # its reserved/scheduled list was too long to read


def _int_or_none(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def reduce_stats(reply: Any, into: Reduced) -> None:
    """Keep pool size and type, per-task-name totals, prefetch, uptime, visibility timeout,
    and what the companion's marker says."""
    into.marker = companion_marker(reply)
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


def reduce_active(reply: Any, into: Reduced) -> bool:
    """Keep id, task name and start time of each running task; nothing else."""
    if not isinstance(reply, list):
        return False
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
    return True


def reduce_reserved(reply: Any, into: Reduced) -> None:
    into.reserved_ids = _request_ids(reply, nested=False)


def reduce_scheduled(reply: Any, into: Reduced) -> None:
    into.scheduled_ids = _request_ids(reply, nested=True)


def reduce_active_queues(reply: Any, into: Reduced) -> None:
    if isinstance(reply, list):
        into.queues = tuple(
            q["name"] for q in reply if isinstance(q, dict) and isinstance(q.get("name"), str)
        )


# --- the worker companion (doorman_celery) ----------------------------------------------------
# Its contract is the docstring of doorman_celery; this side reads it through its own
# allow-list and never imports the package (a check must not depend on the workers' code).

COMPANION_COMMAND = "doorman"
COMPANION_VERSION = 1  # the one reply version this side understands
COMPANION_STATS_KEY = "doorman"
# Celery's answer when a worker has no command of that name (kombu's pidbox: repr(KeyError)).
_UNKNOWN_COMMAND_REPLY = {"error": "KeyError('doorman')"}
MAX_TEXT = 1024  # longest task id, task name or queue name kept (as for binding members)
MAX_COMPANION_TASKS = 1000  # task names in one reply (the contract's limit)
MAX_COMPANION_QUEUES = 200  # queues in one reply (the contract's limit)
MAX_LISTED = 10_000  # running, reserved or scheduled tasks of one worker
MAX_BOUNDS = 256  # histogram bucket bounds
_MAX_COUNT = 2**63 - 1
_BOOT = re.compile(r"[0-9a-f]{1,64}")
_T = TypeVar("_T")
_COUNTERS = ("succeeded", "failed", "retried", "rejected", "revoked", "expired")

# What can be wrong with a companion's answer (Reduced.companion_problem).
PROBLEM_MALFORMED = "malformed"  # not of the contract's shape: nothing of it is kept
PROBLEM_NEWER = "newer"  # a reply version this side does not understand
PROBLEM_NO_COMMAND = "no_command"  # the worker does not know the command (no companion)
PROBLEM_FAILED = "failed"  # the command raised in the worker (Celery's error reply)


@dataclass(frozen=True)
class Marker:
    """What one ``stats`` reply says of the worker's companion.

    ``has``: True the marker is there, False it is not, None the reply was no stats reply
    (an error reply, or not a mapping). ``version``: the marker's reply version when the
    marker names the ``doorman`` command with a positive integer version, else None.
    """

    has: bool | None
    version: int | None = None

    @property
    def usable(self) -> bool:
        """Whether the companion can be asked ``doorman`` and its reply read."""
        return self.has is True and self.version == COMPANION_VERSION


def companion_marker(reply: Any) -> Marker:
    """The companion marker of one ``stats`` reply: ``"doorman": {"v": 1, "command": ...}``.

    Only the marker's version and command name are read; a marker of another shape means
    "there, but not usable" (asked Celery's own commands, and said so).
    """
    if not isinstance(reply, dict) or "error" in reply:
        return Marker(None)
    if COMPANION_STATS_KEY not in reply:
        return Marker(False)
    marker = reply[COMPANION_STATS_KEY]
    if isinstance(marker, dict) and marker.get("command") == COMPANION_COMMAND:
        version = marker.get("v")
        if _is_count(version) and version >= 1:
            return Marker(True, version)
    return Marker(True)


class _Malformed(Exception):
    """A companion reply not of the contract's shape (carries nothing of the reply)."""


class _Newer(Exception):
    """A companion reply of a version this side does not understand."""


@dataclass(frozen=True)
class CompanionReply:
    """One ``doorman`` reply through the allow-list. ``reserved_ids``/``scheduled_ids``
    are None when the reply did not hold the list (an older companion): not known."""

    active: tuple[ActiveTask, ...]
    raw: CompanionRaw
    reserved_ids: tuple[str, ...] | None = None
    scheduled_ids: tuple[str, ...] | None = None
    latest_eta: float | None = None
    unread_lists: bool = False  # a list was there but too long (or malformed) to read


def reduce_doorman(reply: Any, into: Reduced) -> bool:
    """Keep the running tasks (id, name, start time), the counters, the queue waits and the
    reserved/scheduled task ids of a ``doorman`` reply; nothing else. A reply that is not
    of the contract's shape leaves no data at all and names its problem instead."""
    if isinstance(reply, dict) and "error" in reply and "v" not in reply:
        into.companion_problem = (
            PROBLEM_NO_COMMAND if reply == _UNKNOWN_COMMAND_REPLY else PROBLEM_FAILED
        )
        return False
    try:
        parsed = parse_companion(reply)
    except _Newer:
        into.companion_problem = PROBLEM_NEWER
        return False
    except Exception:  # _Malformed, or a hostile object no check foresaw: keep nothing
        into.companion_problem = PROBLEM_MALFORMED
        return False
    into.companion_problem = None
    into.active = parsed.active
    into.companion = parsed.raw
    into.companion_lists_unread = parsed.unread_lists
    if parsed.reserved_ids is not None:
        into.reserved_ids = parsed.reserved_ids
        into.lists.add("reserved")
    if parsed.scheduled_ids is not None:
        into.scheduled_ids = parsed.scheduled_ids
        into.latest_eta = parsed.latest_eta
        into.lists.add("scheduled")
    return True


def parse_companion(reply: Any) -> CompanionReply:
    """One ``doorman`` reply, checked field by field; raises _Malformed or _Newer."""
    if not isinstance(reply, dict):
        raise _Malformed
    version = reply.get("v")
    if not _is_count(version) or version < 1:
        raise _Malformed
    if version != COMPANION_VERSION:
        raise _Newer
    bounds = _bounds(reply.get("buckets"))
    size = len(bounds) + 1
    overflow = reply.get("overflow", {})
    if not isinstance(overflow, dict):
        raise _Malformed
    raw = CompanionRaw(
        boot=_boot(reply.get("boot")),
        started=_seconds(reply.get("started")),
        bounds=bounds,
        tasks=_named(reply.get("tasks"), MAX_COMPANION_TASKS, lambda v: _task(v, size)),
        waits=_named(reply.get("queues"), MAX_COMPANION_QUEUES, lambda v: _hist(v, size)),
        overflow_tasks=_task(overflow["tasks"], size) if "tasks" in overflow else None,
        overflow_waits=_hist(overflow["queues"], size) if "queues" in overflow else None,
    )
    reserved = _optional_list(reply, "reserved", _ids)
    listed = _optional_list(reply, "scheduled", _scheduled)
    scheduled, eta = listed if listed is not None else (None, None)
    unread = (reserved is None and "reserved" in reply) or (listed is None and "scheduled" in reply)
    return CompanionReply(_running(reply.get("active")), raw, reserved, scheduled, eta, unread)


def _optional_list(reply: dict[str, Any], key: str, read: Callable[[Any], _T]) -> _T | None:
    """A reserved/scheduled list of the reply; None when it is absent, longer than
    MAX_LISTED or malformed: then only that list is not known, the counters still are."""
    if key not in reply:
        return None
    try:
        return read(reply[key])
    except _Malformed:
        return None


def _is_count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_COUNT


def _count(value: Any) -> int:
    if not _is_count(value):
        raise _Malformed
    return int(value)


def _seconds(value: Any) -> float:
    """A finite, non-negative number of seconds (bools and huge ints refused)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Malformed
    if isinstance(value, int) and not _is_count(value):
        raise _Malformed
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise _Malformed
    return seconds


def _text(value: Any, *, empty: bool = False) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT or (not value and not empty):
        raise _Malformed
    return value


def _boot(value: Any) -> str:
    if not isinstance(value, str) or not _BOOT.fullmatch(value):
        raise _Malformed
    return value


def _listed(value: Any) -> list[Any]:
    if not isinstance(value, list) or len(value) > MAX_LISTED:
        raise _Malformed
    return value


def _bounds(value: Any) -> tuple[float, ...]:
    """The bucket bounds: 1 to MAX_BOUNDS finite seconds, strictly increasing."""
    if not isinstance(value, list) or not 0 < len(value) <= MAX_BOUNDS:
        raise _Malformed
    bounds = tuple(_seconds(v) for v in value)
    if any(b <= a for a, b in itertools.pairwise(bounds)):
        raise _Malformed
    return bounds


def _hist(value: Any, size: int) -> Histogram:
    """A HIST of the contract, made dense over ``size`` buckets (empty when no count)."""
    if not isinstance(value, dict):
        raise _Malformed
    count = _count(value.get("count"))
    first = _count(value.get("first", 0))
    counts = value.get("counts")
    if not isinstance(counts, list) or first + len(counts) > size:
        raise _Malformed
    dense = [0] * size
    for i, c in enumerate(counts):
        dense[first + i] = _count(c)
    if sum(dense) != count:
        raise _Malformed
    return Histogram(
        count=count,
        total=_seconds(value.get("sum")),
        max=_seconds(value.get("max")),
        counts=tuple(dense) if count else (),
    )


def _task(value: Any, size: int) -> TaskCounters:
    """A TASK of the contract: the six counters (absent: 0) and the run-time HIST."""
    if not isinstance(value, dict):
        raise _Malformed
    counts = {name: _count(value.get(name, 0)) for name in _COUNTERS}
    runtime = _hist(value["runtime"], size) if "runtime" in value else None
    return TaskCounters(**counts, runtime=runtime)


def _named(value: Any, limit: int, parse: Callable[[Any], _T]) -> dict[str, _T]:
    """A mapping of at most ``limit`` names (each at most MAX_TEXT long) to parsed values."""
    if not isinstance(value, dict) or len(value) > limit:
        raise _Malformed
    return {_text(name, empty=True): parse(item) for name, item in value.items()}


def _running(value: Any) -> tuple[ActiveTask, ...]:
    """The running tasks: id, name and start time of each (``worker_pid``, ``queue`` and
    anything else are not kept, as the ``active`` reducer keeps none of them)."""
    tasks = []
    for item in _listed(value):
        if not isinstance(item, dict):
            raise _Malformed
        started = item.get("time_start")
        tasks.append(
            ActiveTask(
                task_id=_text(item.get("id")),
                task_name=_text(item.get("name")),
                started_at=None if started is None else _seconds(started),
            )
        )
    return tuple(tasks)


def _ids(value: Any) -> tuple[str, ...]:
    return tuple(_text(task_id) for task_id in _listed(value))


def _scheduled(value: Any) -> tuple[tuple[str, ...], float | None]:
    """The ids of the scheduled (ETA) tasks, and the latest ETA among them."""
    ids: list[str] = []
    etas: list[float] = []
    for item in _listed(value):
        if not isinstance(item, dict):
            raise _Malformed
        ids.append(_text(item.get("id")))
        eta = item.get("eta")
        if eta is not None:
            etas.append(_seconds(eta))
    return tuple(ids), max(etas, default=None)


def companion_verdict(data: Reduced, planned: bool | None) -> bool | None:
    """Whether the worker is to be asked ``doorman`` (True) or Celery's own commands (False)
    from now on; None when this check could not tell (and ``planned`` was not known).

    Its stats marker decides when it answered stats this check, else its answer to
    ``doorman`` when it was asked, else what was planned. A worker that does not know the
    command, or whose companion is newer than this side, is asked Celery's commands; one
    whose command failed (or whose stats were unreadable) is not known.
    """
    verdict = planned
    if data.marker is not None:
        verdict = data.marker.usable if data.marker.has is not None else None
    elif "doorman" in data.answered:
        verdict = True
    problem = data.companion_problem
    if problem in (PROBLEM_NO_COMMAND, PROBLEM_NEWER):
        return False
    if problem == PROBLEM_FAILED:
        return None
    return verdict


_COMPANION_ERRORS = {
    "companion_reply": "answered the companion's command with a reply not of its format:"
    " their running tasks and task counters are not known this check",
    "companion_version": "run a worker companion of a newer (or unknown) version: they are"
    " asked Celery's own commands, whose replies carry task arguments, until Doorman"
    " understands it",
    "companion_missing": "no longer know the companion's command: their running tasks are"
    " not known this check, and they are asked Celery's own commands from the next one",
    "companion_error": "failed to answer the companion's command: their running tasks are"
    " not known this check",
    "companion_unknown": "answered stats with an error: whether they have the companion is"
    " not known, so they were not asked for their running tasks",
    "companion_lists": f"hold more than {MAX_LISTED:,} reserved or scheduled tasks (or sent an"
    " unreadable list of them): those task ids are not known this check",
}


def _companion_trouble(data: Reduced) -> set[str]:
    """The kinds of companion trouble (keys of _COMPANION_ERRORS) one worker met."""
    kinds = {
        PROBLEM_MALFORMED: "companion_reply",
        PROBLEM_NEWER: "companion_version",
        PROBLEM_NO_COMMAND: "companion_missing",
        PROBLEM_FAILED: "companion_error",
    }
    found = set()
    if data.companion_problem in kinds:
        found.add(kinds[data.companion_problem])
    marker = data.marker
    if marker is not None and marker.has is True and not marker.usable:
        found.add("companion_version")
    if marker is not None and marker.has is None:
        found.add("companion_unknown")
    if data.companion_lists_unread:
        found.add("companion_lists")
    return found


def companion_errors(reduced: dict[str, Reduced]) -> tuple[ProbeError, ...]:
    """One error per kind of companion trouble this check met, with how many workers had
    it; never a word of any reply."""
    troubles = [_companion_trouble(data) for data in reduced.values()]
    errors = []
    for kind, text in _COMPANION_ERRORS.items():
        n = sum(1 for found in troubles if kind in found)
        if n:
            errors.append(ProbeError("workers", kind, f"{count(n, 'worker')} {text}"))
    return tuple(errors)


# A reducer keeps what it may of one reply; False: the reply said nothing usable (an error,
# another shape), so the worker is not taken to have answered that question.
Reducer = Callable[[Any, Reduced], bool | None]

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
# Workers with the companion are asked ``doorman`` instead of active, reserved and scheduled
# (whose replies carry task arguments); the detail that carries none still goes to them.
COMPANION_CORE: tuple[tuple[str, Reducer], ...] = ((COMPANION_COMMAND, reduce_doorman),)
COMPANION_DETAIL: tuple[tuple[str, Reducer], ...] = (
    ("stats", reduce_stats),
    ("active_queues", reduce_active_queues),
)
# A worker not known yet is asked its stats first: the marker says what to ask next.
MARKER_COMMANDS: tuple[tuple[str, Reducer], ...] = (("stats", reduce_stats),)


def commands_for(companion: bool | None, detail: bool) -> tuple[tuple[str, Reducer], ...]:
    """The commands one worker is asked in a round, by what is known of its companion."""
    if companion is None:
        return MARKER_COMMANDS
    if companion:
        return COMPANION_CORE + (COMPANION_DETAIL if detail else ())
    return CORE_COMMANDS + (DETAIL_COMMANDS if detail else ())


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


def duplicate_names_error(count: int) -> ProbeError:
    """Workers that share a name answer each question twice: Doorman sees them as one."""
    return ProbeError(
        "workers",
        "duplicate_name",
        f"{count} worker name(s) answered the same question twice: two workers share a name"
        " (start each with its own -n name@host); Doorman counts them as one, so its"
        " figures for them are those of one of them",
    )
