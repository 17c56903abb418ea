"""Celery remote control over the broker: who is alive, how busy, running what.

Every command goes to an explicit ``destination`` list, so kombu stops collecting as soon as
every addressed worker has answered instead of waiting out the timeout. Replies are reduced
through the allow-lists below inside the reply callback, the moment each one arrives: task
args and kwargs (raw in ``active()`` replies), broker transport options and settings values
are never kept, except the few numbers and flags named in ``CONF_BOOLS``/``CONF_NUMBERS``.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from ..access import BrokerAccess
from ..model import KOMBU_PRIORITY_STEPS, KOMBU_SEP, ActiveTask, Dialect, ProbeError, WorkerRaw
from ..sanitize import parse_time
from ..settings import URL_OPTIONS, parse_redis_url

# Decoy names for kombu's unacked bookkeeping on the probe's own connection. Collecting
# replies makes kombu's Redis transport run its "restore visible messages" sweep; pointing
# it at keys nobody uses keeps the probe from reading (or re-queueing) the real ones.
_DECOY_PREFIX = "doorman.probe."
# The start of the name of Doorman's remote-control reply queue (kombu's mailbox ``oid``,
# random by default): a Redis ACL can then let Doorman write its own reply keys only.
REPLY_OID_PREFIX = "doorman-"


@dataclass(frozen=True)
class KombuBroker:
    """What kombu needs to reach the Redis a URL names, in kombu's own terms.

    kombu hands every query option of a broker URL to ``Connection()`` as a keyword, which
    fails (TypeError) for all but a few; so the URL given to kombu has none, and each option
    of :data:`~chalicelib.settings.URL_OPTIONS` goes where kombu's Redis transport reads it.
    """

    url: str = field(repr=False)  # no query options; may hold a password
    transport_options: dict[str, Any] = field(repr=False)  # may hold the Sentinels' password
    ssl: dict[str, Any] | None = field(default=None, repr=False)


def kombu_broker(broker_url: str, access: BrokerAccess | None = None) -> KombuBroker:
    """``broker_url`` (already validated by the settings) translated for kombu.

    The database is the URL's path (kombu reads no ``db`` option); a unix socket is kombu's
    ``redis+socket://`` form, its database the ``virtual_host`` option; TLS options become
    kombu's ``ssl`` mapping, with redis-py's default of verifying the certificate (kombu's own
    default for ``rediss://`` is not to verify it). Raises ValueError for a URL the settings
    would refuse. A ``sentinel://`` URL stays as given (kombu's Sentinel transport reads
    every Sentinel from it), with the master's name and the Sentinels' password of
    ``access`` as transport options.
    """
    parsed = parse_redis_url(broker_url)
    if parsed.scheme == "sentinel":
        access = access or BrokerAccess()
        sentinel: dict[str, Any] = {}
        if access.sentinel_password:
            sentinel["password"] = access.sentinel_password
        return KombuBroker(
            broker_url.strip(),
            {"master_name": access.sentinel_master, "sentinel_kwargs": sentinel},
        )
    transport: dict[str, Any] = {}
    ssl: dict[str, Any] = {}
    for name, value in parsed.options.items():
        where = URL_OPTIONS[name].kombu
        if where == "transport":
            transport[name] = value
        elif where == "ssl":
            ssl[name] = value
    if parsed.scheme == "unix":
        # The unix socket connection of redis-py takes no connect timeout or keepalive.
        transport.pop("socket_connect_timeout", None)
        transport.pop("socket_keepalive", None)
        url = f"redis+socket://{parsed.netloc}{parsed.socket_path}?virtual_host={parsed.db}"
        return KombuBroker(url, transport)
    url = f"{parsed.scheme}://{parsed.netloc}/{parsed.db}"
    if parsed.scheme == "rediss":
        return KombuBroker(url, transport, {"ssl_cert_reqs": "required", **ssl})
    return KombuBroker(url, transport)


@functools.cache
def _control() -> type[Any]:
    """Celery's remote-control class with a mailbox whose reply queue is named
    ``doorman-<random>.reply.<exchange>`` (kombu's default, ``oid``, is a hash that a Redis
    ACL cannot tell from another client's)."""
    from celery.app.control import Control
    from kombu import pidbox

    class _Mailbox(pidbox.Mailbox):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
            self._doorman_oid = REPLY_OID_PREFIX + uuid.uuid4().hex

        @property
        def oid(self) -> str:
            return str(self._doorman_oid)

    class _Control(Control):  # type: ignore[misc]
        Mailbox = _Mailbox

    return _Control


@dataclass
class _Reduced:
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


def reduce_stats(reply: Any, into: _Reduced) -> None:
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


def reduce_active(reply: Any, into: _Reduced) -> None:
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


def reduce_reserved(reply: Any, into: _Reduced) -> None:
    into.reserved_ids = _request_ids(reply, nested=False)


def reduce_scheduled(reply: Any, into: _Reduced) -> None:
    into.scheduled_ids = _request_ids(reply, nested=True)


def reduce_active_queues(reply: Any, into: _Reduced) -> None:
    if isinstance(reply, list):
        into.queues = tuple(
            q["name"] for q in reply if isinstance(q, dict) and isinstance(q.get("name"), str)
        )


_Reducer = Callable[[Any, _Reduced], None]

# Asked every check: one command, so a healthy check costs each worker one message. The
# answer proves the worker alive and lists its running tasks (stuck tasks, saturation).
CORE_COMMANDS: tuple[tuple[str, _Reducer], ...] = (("active", reduce_active),)
# Slow-changing detail, asked when the collector wants it fresh (see Collector): pool size,
# completed-task counters and uptime (``stats``), reserved and scheduled tasks, queues.
DETAIL_COMMANDS: tuple[tuple[str, _Reducer], ...] = (
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


@dataclass(frozen=True)
class ConfResult:
    """Allow-listed settings per worker hostname (plus ``latest_eta`` when it has ETA tasks)."""

    confs: dict[str, dict[str, ConfValue]]
    errors: tuple[ProbeError, ...]


@dataclass(frozen=True)
class WorkerResult:
    workers: tuple[WorkerRaw, ...]
    errors: tuple[ProbeError, ...]


class WorkerProbe:
    """Sends remote-control commands through a private, fail-fast Celery app."""

    def __init__(
        self,
        broker_url: str,
        *,
        keyprefix: str = "",
        timeout: float = 1.0,
        connect_timeout: float,
        access: BrokerAccess | None = None,
    ) -> None:
        self._broker_url = broker_url
        self._access = access or BrokerAccess()
        self._app_started = 0.0
        self._keyprefix = keyprefix
        self._sep = KOMBU_SEP
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._app: Any = None
        self._conn: Any = None

    def _celery(self) -> Any:
        age = self._access.reconnect_after
        if (
            self._app is not None
            and age is not None
            and time.monotonic() - self._app_started >= age
        ):
            self.close()  # a new connection (and token) before the server closes it
        if self._conn is not None and self._broker_url[:11].lower() == "sentinel://":
            # Behind Sentinel the master may have moved since the last exchange: each one
            # opens a connection of its own, to the master the Sentinels name now.
            with contextlib.suppress(Exception):
                self._conn.release()
            self._conn = None
        if self._app is None:
            from celery import Celery  # imported lazily: it is the bulk of a cold start

            broker = kombu_broker(self._broker_url, self._access)
            app = Celery(
                "doorman-probe", broker=broker.url, set_as_current=False, control=_control()
            )
            provider = self._access.credential_provider
            if provider is not None:
                from kombu.connection import Connection

                # Celery hands kombu no credential provider of its own: every connection
                # the app makes authenticates through the one redis-py uses (IAM token).
                app.amqp.Connection = functools.partial(Connection, credential_provider=provider)
            options: dict[str, Any] = {
                "socket_timeout": self._connect_timeout,
                "socket_connect_timeout": self._connect_timeout,
                "retry_on_timeout": False,
                "unacked_key": _DECOY_PREFIX + "unacked",
                "unacked_index_key": _DECOY_PREFIX + "unacked_index",
                "unacked_mutex_key": _DECOY_PREFIX + "unacked_mutex",
                "visibility_timeout": 10 * 365 * 86400,
                # Sets kombu's BRPOP timeout: closing a connection whose reply wait timed out
                # reads the pending BRPOP first, so this bounds that close.
                "polling_interval": 0.1,
            }
            if self._keyprefix:
                options["global_keyprefix"] = self._keyprefix
            if self._sep != KOMBU_SEP:
                options["sep"] = self._sep
            # The URL's own options win, as they do for redis-py (Redis.from_url).
            options.update(broker.transport_options)
            if "sentinel_kwargs" in options:
                # Asking a Sentinel is bounded like any other connection of the probe.
                options["sentinel_kwargs"] = {
                    "socket_timeout": self._connect_timeout,
                    "socket_connect_timeout": self._connect_timeout,
                    **options["sentinel_kwargs"],
                }
            if broker.ssl is not None:
                app.conf.broker_use_ssl = broker.ssl
            app.conf.update(
                broker_transport_options=options,
                broker_connection_retry=False,
                broker_connection_retry_on_startup=False,
                broker_connection_max_retries=0,
                broker_connection_timeout=self._connect_timeout,
                broker_pool_limit=2,
                broker_heartbeat=0,
            )
            self._app = app
            self._app_started = time.monotonic()
        return self._app

    def configure(self, *, keyprefix: str, sep: str) -> None:
        """Speak the cluster's dialect: the workers look up the reply binding Doorman writes
        with their own separator and under their own key prefix, so a mismatch loses every
        reply. A change starts a new app and connection."""
        if (keyprefix, sep) != (self._keyprefix, self._sep):
            self.close()
            self._keyprefix, self._sep = keyprefix, sep

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.release()
            self._conn = None
        if self._app is not None:
            with contextlib.suppress(Exception):  # closing a pool must never fail a check
                self._app.close()
            self._app = None

    def _broadcast(
        self,
        command: str,
        destination: list[str] | None,
        timeout: float,
        on_reply: Callable[[str, Any], None],
        arguments: dict[str, Any] | None = None,
    ) -> None:
        def callback(body: Any) -> None:
            if isinstance(body, dict):
                for hostname, value in body.items():
                    if isinstance(hostname, str):
                        on_reply(hostname, value)

        app = self._celery()
        # A connection of its own for the same reason as in _multicast: a broadcast that
        # waited out its timeout leaves a BRPOP in flight on the connection it used.
        with _exclusive(self._broker_url, timeout), app.connection_for_write() as conn:
            app.control.broadcast(
                command,
                arguments=arguments,
                destination=destination,
                reply=True,
                timeout=timeout,
                callback=callback,
                limit=len(destination) if destination else None,
                connection=conn,
            )

    def probe(
        self, candidates: Iterable[str], *, discover: bool, budget: float, detail: bool = True
    ) -> WorkerResult:
        """Ask ``candidates`` (and, with ``discover``, everyone) for their state.

        ``budget`` bounds the whole exchange in seconds. ``active`` is always asked;
        ``detail`` adds stats, reserved, scheduled and active_queues. Returns one WorkerRaw per
        name seen: ``online`` when it answered, else ``not_answering``.
        """
        commands = COMMANDS if detail else CORE_COMMANDS
        deadline = time.monotonic() + budget
        names = list(dict.fromkeys(candidates))
        errors: list[ProbeError] = []
        reduced: dict[str, _Reduced] = {}
        try:
            if discover:
                found: list[str] = []
                self._broadcast(
                    "ping", None, self._step(deadline), lambda host, _reply: found.append(host)
                )
                names.extend(h for h in found if h not in names)
            if names:
                remaining = self._step(deadline)
                if remaining > 0:
                    # All commands go out at once; one consumer sorts the replies by ticket.
                    self._multicast(
                        [(c, self._collector(c, r, reduced, set(names))) for c, r in commands],
                        names,
                        remaining,
                    )
                else:
                    errors.append(ProbeError("workers", "timeout", "no time left to ask"))
        except Exception as exc:
            errors.append(_describe(exc))
        workers = []
        for name in names:
            data = reduced.get(name)
            if data is None:
                workers.append(WorkerRaw(hostname=name, status="not_answering"))
                continue
            workers.append(
                WorkerRaw(
                    hostname=name,
                    status="online",
                    concurrency=data.concurrency,
                    pool=data.pool,
                    active=data.active,
                    reserved=len(data.reserved_ids),
                    scheduled=len(data.scheduled_ids),
                    reserved_ids=data.reserved_ids + data.scheduled_ids,
                    processed=data.processed,
                    queues=data.queues,
                    prefetch_count=data.prefetch_count,
                    uptime_sec=data.uptime_sec,
                    visibility_timeout_sec=data.visibility_timeout,
                    dialect=data.dialect,
                    answered=tuple(data.answered),
                )
            )
        return WorkerResult(tuple(workers), tuple(errors))

    def conf(self, names: Iterable[str], budget: float) -> ConfResult:
        """Ask ``names`` for their settings (``conf``) and the ETAs they hold (``scheduled``).

        Each reply is reduced through ``reduce_conf`` / ``latest_eta`` in the reply callback,
        so no setting outside the allow-list is ever kept. Workers that do not answer within
        ``budget`` seconds are left out.
        """
        deadline = time.monotonic() + budget
        targets = list(dict.fromkeys(names))
        confs: dict[str, dict[str, ConfValue]] = {}
        errors: list[ProbeError] = []
        if not targets:
            return ConfResult(confs, ())
        expected = set(targets)

        def on_conf(hostname: str, value: Any) -> None:
            if hostname in expected and hostname not in confs:
                confs[hostname] = reduce_conf(value)

        def on_scheduled(hostname: str, value: Any) -> None:
            if hostname in confs:
                eta = latest_eta(value)
                if eta is not None:
                    confs[hostname]["latest_eta"] = eta

        try:
            self._broadcast(
                "conf", targets, self._step(deadline), on_conf, arguments={"with_defaults": True}
            )
            answered = [n for n in targets if n in confs]
            remaining = self._step(deadline)
            if answered and remaining > 0:
                self._broadcast("scheduled", answered, remaining, on_scheduled)
            elif answered:
                errors.append(ProbeError("workers", "timeout", "no time left for 'scheduled'"))
        except Exception as exc:
            errors.append(_describe(exc))
        return ConfResult(confs, tuple(errors))

    def _step(self, deadline: float) -> float:
        return min(self._timeout, deadline - time.monotonic())

    @staticmethod
    def _collector(
        command: str, reducer: _Reducer, reduced: dict[str, _Reduced], expected: set[str]
    ) -> Callable[[str, Any], None]:
        def on_reply(hostname: str, value: Any) -> None:
            if hostname not in expected:
                return
            entry = reduced.setdefault(hostname, _Reduced())
            reducer(value, entry)
            entry.answered.append(command)

        return on_reply

    def _multicast(
        self,
        commands: list[tuple[str, Callable[[str, Any], None]]],
        destination: list[str],
        timeout: float,
    ) -> None:
        """Send every command to ``destination`` at once and collect until all answered.

        Returns as soon as each addressed worker answered each command, or at ``timeout``.
        kombu's own collector handles one ticket at a time (replies to other tickets are set
        aside unreduced), so the replies are consumed here and routed by their ticket.
        """
        app = self._celery()
        # A connection of the probe's own (not kombu's shared pool), kept only after a clean
        # round: a round whose wait timed out leaves a BRPOP in flight on it, and the next
        # exchange on that connection would wait on the stale read and hear nobody.
        with _exclusive(self._broker_url, timeout):
            conn = self._conn if self._conn is not None else app.connection_for_write()
            self._conn = None
            clean = False
            try:
                clean = self._round(conn, commands, destination, timeout)
            finally:
                if clean:
                    self._conn = conn
                else:
                    with contextlib.suppress(Exception):
                        conn.release()

    def _round(
        self,
        conn: Any,
        commands: list[tuple[str, Callable[[str, Any], None]]],
        destination: list[str],
        timeout: float,
    ) -> bool:
        """Publish every command and collect; True when every expected reply arrived."""
        import uuid

        from kombu import messaging

        app = self._celery()
        mailbox = app.control.mailbox(conn)
        channel = conn.default_channel
        routes: dict[str, Callable[[str, Any], None]] = {}
        tickets = [(uuid.uuid4().hex, command, on_reply) for command, on_reply in commands]
        for ticket, _command, on_reply in tickets:
            routes[ticket] = on_reply
        expected = len(destination) * len(commands)
        received = 0

        def on_message(body: Any, message: Any) -> None:
            nonlocal received
            on_reply = routes.get(message.headers.get("ticket"))
            if on_reply is None or not isinstance(body, dict):
                return
            received += 1
            for hostname, value in body.items():
                if isinstance(hostname, str):
                    on_reply(hostname, value)

        queue = mailbox.reply_queue
        # The consumer declares the reply queue and its binding afresh, and it must do so
        # before anything is published: the previous exchange deleted them, and a reply
        # that arrives while no binding routes it is dropped by the broker.
        consumer_class: Any = messaging.Consumer  # kombu is only partly typed
        consumer = consumer_class(channel, [queue], accept=mailbox.accept, no_ack=True)
        consumer.register_callback(on_message)
        deadline = time.monotonic() + timeout
        try:
            with consumer:
                for ticket, command, _on_reply in tickets:
                    mailbox._publish(
                        command,
                        {},
                        destination=destination,
                        reply_ticket=ticket,
                        channel=channel,
                        timeout=timeout,
                        serializer=mailbox.serializer,
                    )
                while received < expected:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        conn.drain_events(timeout=left)
                    except TimeoutError:
                        break
        finally:
            channel.after_reply_message_received(queue.name)
        return received >= expected


class RemoteControlBusy(Exception):
    """Another check in this process held the broker's remote-control connection too long."""


_GUARD = threading.Lock()
_BROKER_LOCKS: dict[str, threading.Lock] = {}


@contextlib.contextmanager
def _exclusive(broker_url: str, timeout: float) -> Iterator[None]:
    """One remote-control exchange per broker at a time within a process.

    kombu keeps its connection and producer pools per broker URL for the whole process, with
    a small limit and no timeout: two checks of one broker in two threads can each hold one
    pool slot and wait for the other forever. Taking turns (bounded by the timeout) cannot.
    """
    with _GUARD:
        lock = _BROKER_LOCKS.setdefault(broker_url, threading.Lock())
    if not lock.acquire(timeout=max(timeout, 0.01)):
        raise RemoteControlBusy
    try:
        yield
    finally:
        lock.release()


_DENIED_COMMAND = re.compile(r"no permissions to run the '([A-Za-z0-9_|-]{1,40})' command")
_DENIED_ACCESS = re.compile(r"no permissions to access (?:an? |one of the )(key|channel)")
_UNKNOWN_COMMAND = re.compile(r"unknown command [`']([A-Za-z0-9_|-]{1,40})[`']")


def _permission(exc: BaseException) -> ProbeError | None:
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


def _describe(exc: BaseException) -> ProbeError:
    """The ProbeError for a failed remote-control exchange; never repeats the broker URL."""
    name = type(exc).__name__
    denied = _permission(exc)
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
