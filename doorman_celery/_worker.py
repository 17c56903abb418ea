"""The worker side: Request hooks, the revoked receiver, the bootstep and the command.

Everything here runs in the worker's main process. With the prefork pool a task runs in a
pool child, but the child only sends its outcome back: the main process's Request receives
it through the callbacks it gave ``pool.apply_async`` (``on_accepted``, ``on_success``,
``on_failure``), and revocation and expiry are decided and announced (``task_revoked``) by
the main process too. The solo, threads, gevent and eventlet pools call the same callbacks
in the main process (threads pool: from its threads, hence the lock in :class:`Stats`).
Nothing here reads a task's arguments, result or exception text.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from time import monotonic
from typing import TYPE_CHECKING, Any

from celery import bootsteps
from celery.exceptions import Ignore, Reject, Retry, Terminated
from celery.signals import task_revoked
from celery.utils.imports import symbol_by_name
from celery.worker import state as worker_state
from celery.worker.control import Panel, inspect_command
from celery.worker.request import Request

from ._stats import (
    BUCKETS,
    COMMAND,
    EXPIRED,
    FAILED,
    HEADER,
    REJECTED,
    RETRIED,
    REVOKED,
    STATS_KEY,
    SUCCEEDED,
    VERSION,
    Stats,
)

logger = logging.getLogger("doorman_celery")

#: This process's counters (a worker process runs one worker).
STATS = Stats()

# Queue names by (exchange, routing key) of a delivery; bounded.
_QUEUE_CACHE_MAX = 1000

if TYPE_CHECKING:

    class _RequestBase:
        """What the hooks use of Celery's ``celery.worker.request.Request``."""

        name: str
        id: str
        time_start: float | None
        worker_pid: int | None
        eta: Any
        request_dict: dict[str, Any]
        delivery_info: dict[str, Any]
        _already_cancelled: bool
        _already_revoked: bool

        def on_accepted(self, pid: int, time_accepted: float) -> None: ...

        def on_success(self, failed__retval__runtime: Any, **kwargs: Any) -> Any: ...

        def on_failure(
            self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False
        ) -> Any: ...

else:
    _RequestBase = object


class CompanionRequest(_RequestBase):
    """Mixed in front of a task's Request class (Celery's, or the one the user set).

    Counts each request's outcome once (``_dm_done``), however many of the callbacks it
    wraps report it.
    """

    __slots__ = ()
    _dm_t0: float | None = None
    _dm_done = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Celery's strategy subclasses the task's Request class (create_request_cls) with an
        # ``on_success`` of its own that does not call the base class's: wrap that one.
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("on_success")
        if own is not None and not getattr(own, "_dm_wrapped", False):
            cls.on_success = _wrap_on_success(own)  # type: ignore[method-assign]

    def on_accepted(self, pid: int, time_accepted: float) -> None:
        super().on_accepted(pid, time_accepted)
        self._dm_t0 = time_accepted
        try:
            published = self.request_dict.get(HEADER)
            if published.__class__ is float or published.__class__ is int:
                eta = self.eta
                if eta is not None:
                    # A countdown/ETA is a wait the producer asked for, not queueing.
                    published = max(published, eta.timestamp())
                start = self.time_start
                if start is not None:
                    STATS.wait(queue_of(self.delivery_info), start - published)
        except Exception:  # never let accounting break task handling
            logger.debug("doorman_celery: queue wait not counted (%s)", _kind())

    def on_success(self, failed__retval__runtime: Any, **kwargs: Any) -> Any:
        _count_success(self, failed__retval__runtime)
        return super().on_success(failed__retval__runtime, **kwargs)

    def on_failure(
        self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False
    ) -> Any:
        if not self._dm_done:
            try:
                _count_failure(self, exc_info)
            except Exception:
                logger.debug("doorman_celery: outcome not counted (%s)", _kind())
        return super().on_failure(
            exc_info, send_failed_event=send_failed_event, return_ok=return_ok
        )


def _kind() -> str:
    """The type of the exception being handled: the companion logs its own failures by kind
    only (a traceback could chain to a task's exception, whose text may hold its data)."""
    return type(sys.exc_info()[1]).__name__


def _wrap_on_success(own: Callable[..., Any]) -> Callable[..., Any]:
    def on_success(self: Any, failed__retval__runtime: Any, **kwargs: Any) -> Any:
        _count_success(self, failed__retval__runtime)
        return own(self, failed__retval__runtime, **kwargs)

    on_success._dm_wrapped = True  # type: ignore[attr-defined]
    on_success.__doc__ = own.__doc__
    return on_success


def _count_success(req: Any, failed__retval__runtime: Any) -> None:
    if req._dm_done:
        return
    try:
        failed, _, runtime = failed__retval__runtime
    except Exception:
        return
    if failed:
        return  # on_failure counts it
    req._dm_done = True
    if runtime is None or runtime.__class__ is not float:
        t0 = req._dm_t0
        runtime = monotonic() - t0 if t0 is not None else None
    try:
        STATS.outcome(req.name, SUCCEEDED, runtime)
    except Exception:
        logger.debug("doorman_celery: outcome not counted (%s)", _kind())


def _count_failure(req: Any, exc_info: Any) -> None:
    exc = getattr(exc_info, "exception", None)
    if exc.__class__.__name__ == "ExceptionWithTraceback":  # billiard's wrapper, as Celery
        exc = getattr(exc, "exc", exc)
    if isinstance(exc, Terminated):
        return  # revoked with terminate: task_revoked counts it (or a cancel: requeued)
    if isinstance(exc, Ignore):
        return  # the task asked to be forgotten (raise Ignore): no outcome
    if isinstance(exc, SystemExit | KeyboardInterrupt) and (
        req._already_cancelled or req._already_revoked
    ):
        return
    if isinstance(exc, Retry):
        counter = RETRIED
    elif isinstance(exc, Reject):
        counter = REJECTED
    else:
        counter = FAILED
    req._dm_done = True
    t0 = req._dm_t0
    STATS.outcome(req.name, counter, monotonic() - t0 if t0 is not None else None)


def _on_revoked(sender: Any = None, request: Any = None, expired: bool = False, **_: Any) -> None:
    """``task_revoked`` receiver (sent by the main process's Request)."""
    try:
        name = getattr(request, "shadow", None) or getattr(sender, "name", None) or ""
        STATS.outcome(str(name), EXPIRED if expired else REVOKED, None)
    except Exception:
        logger.debug("doorman_celery: revoke not counted (%s)", _kind())


# -- queues -----------------------------------------------------------------------------

_queue_app: Any = None
_queue_cache: dict[tuple[Any, Any], str] = {}


def queue_of(delivery_info: dict[str, Any] | None) -> str:
    """The worker queue a delivery came from: the declared queue bound with its exchange and
    routing key (the routing key itself when none is)."""
    if not delivery_info:
        return ""
    key = (delivery_info.get("exchange"), delivery_info.get("routing_key"))
    name = _queue_cache.get(key)
    if name is None:
        name = _lookup_queue(*key)
        if len(_queue_cache) < _QUEUE_CACHE_MAX:
            _queue_cache[key] = name
    return name


def _lookup_queue(exchange: Any, routing_key: Any) -> str:
    app = _queue_app
    try:
        declared = app.amqp.queues if app is not None else {}
        consumed = set(getattr(declared, "consume_from", None) or ())
        found = [
            q.name
            for q in declared.values()
            if q.routing_key == routing_key
            and (not exchange or (q.exchange is not None and q.exchange.name == exchange))
        ]
        found.sort(key=lambda n: n not in consumed)
        if found:
            return str(found[0])
    except Exception:
        logger.debug("doorman_celery: queue lookup failed (%s)", _kind())
    return "" if routing_key is None else str(routing_key)


# -- the remote-control command -----------------------------------------------------------


def _copy(requests: Any) -> list[Any]:
    """A copy of one of Celery's request sets, which the pool changes meanwhile; raises
    rather than answer "none" when it keeps changing (Celery then replies with an error)."""
    for _ in range(5):
        try:
            return list(requests)
        except RuntimeError:  # changed size during iteration (threads pool)
            continue
    raise RuntimeError("the worker's request set kept changing while it was read")


def _active() -> list[dict[str, Any]]:
    """The running tasks, from request attributes only (never ``Request.info()``)."""
    return [
        {
            "id": req.id,
            "name": req.name,
            "time_start": req.time_start,
            "worker_pid": req.worker_pid,
            "queue": queue_of(req.delivery_info),
        }
        for req in _copy(worker_state.active_requests)
    ]


def _reserved() -> list[str] | None:
    """Ids of the tasks received and waiting for the pool (Celery's ``reserved``); None
    when they could not be read (the reply then leaves the list out: not known)."""
    try:
        active = set(_copy(worker_state.active_requests))
        return [req.id for req in _copy(worker_state.reserved_requests) if req not in active]
    except RuntimeError:
        return None


def _scheduled(consumer: Any) -> list[dict[str, Any]] | None:
    """Id and ETA (epoch seconds) of the tasks held for their ETA (Celery's ``scheduled``);
    None when the timer could not be read (the reply then leaves the list out)."""
    found: list[dict[str, Any]] = []
    try:
        waiting = list(consumer.timer.schedule.queue)
    except Exception:
        return None
    for item in waiting:
        try:
            request = item.entry.args[0]
        except (AttributeError, IndexError, TypeError):
            continue
        if isinstance(request, Request):
            eta = request.eta
            found.append({"id": request.id, "eta": eta.timestamp() if eta else None})
    return found


def reply(consumer: Any = None) -> dict[str, Any]:
    """The ``doorman`` command's answer (format: the package docstring)."""
    stats = STATS
    counters = stats.snapshot()
    answer: dict[str, Any] = {
        "v": VERSION,
        "boot": stats.boot,
        "pid": os.getpid(),
        "started": round(stats.started, 3),
        "active": _active(),
        "tasks": counters["tasks"],
        "queues": counters["queues"],
        "overflow": counters["overflow"],
        "buckets": list(BUCKETS),
    }
    for key, listed in (("reserved", _reserved()), ("scheduled", _scheduled(consumer))):
        if listed is not None:
            answer[key] = listed
    return answer


def doorman(state: Any, **kwargs: Any) -> dict[str, Any]:
    """Doorman worker companion: task outcomes, queue waits and running tasks (no arguments)."""
    return reply(getattr(state, "consumer", None))


def _register_command() -> bool:
    """Add ``doorman`` to Celery's remote-control commands; never replace another one."""
    existing = Panel.data.get(COMMAND)
    if existing is doorman:
        return True
    if existing is not None:
        logger.warning(
            "doorman_celery: a remote-control command named %r exists already; "
            "the companion's command is not installed",
            COMMAND,
        )
        return False
    inspect_command(name=COMMAND)(doorman)
    return True


# -- composing the Request classes -------------------------------------------------------

_composed: dict[type, type] = {}


def companion_request(base: type) -> type:
    """``base`` with :class:`CompanionRequest` in front (one class per base)."""
    if issubclass(base, CompanionRequest):
        return base
    cls = _composed.get(base)
    if cls is None:
        cls = _composed[base] = type(base.__name__, (CompanionRequest, base), {})
        cls.__module__ = __name__
        cls.__qualname__ = f"CompanionRequest[{base.__module__}.{base.__qualname__}]"
    return cls


def compose_tasks(app: Any) -> None:
    """Give every registered task of ``app`` its Request class with the companion in front."""
    for task in list(app.tasks.values()):
        try:
            base = symbol_by_name(task.Request)
            composed = companion_request(base)
            if composed is not base:
                task.Request = composed
        except Exception:
            logger.warning(
                "doorman_celery: task %s keeps its Request class; not counted (%s)",
                getattr(task, "name", "?"),
                _kind(),
            )


class Companion(bootsteps.StartStopStep):  # type: ignore[misc]
    """Worker bootstep: counters from zero, Request classes, the command, the stats marker."""

    label = "doorman companion"

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        global _queue_app
        super().__init__(worker, **kwargs)
        STATS.reset()
        _queue_app = worker.app
        _queue_cache.clear()
        # Without its command nothing could read the counters: then nothing is counted.
        self.registered = _register_command()
        if self.registered:
            compose_tasks(worker.app)
            task_revoked.connect(_on_revoked, weak=False, dispatch_uid="doorman-companion-revoked")

    def start(self, worker: Any) -> None:
        # Tasks registered since __init__; the consumer (started last) builds its
        # strategies from the Request classes set here.
        if self.registered:
            compose_tasks(worker.app)

    def info(self, worker: Any) -> dict[str, Any]:
        if not self.registered:
            return {}
        return {STATS_KEY: {"v": VERSION, "command": COMMAND}}
