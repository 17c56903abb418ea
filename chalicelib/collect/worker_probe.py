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
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..access import BrokerAccess
from ..model import KOMBU_SEP, ProbeError, WorkerRaw
from ..settings import URL_OPTIONS, parse_redis_url
from .replies import (
    COMPANION_COMMAND,
    ConfValue,
    Reduced,
    Reducer,
    RemoteControlBusy,
    commands_for,
    companion_errors,
    companion_verdict,
    describe_remote_error,
    duplicate_names_error,
    latest_eta,
    reduce_conf,
    reduce_doorman,
)

# A command, who is asked it, and what reduces each reply.
Ask = tuple[str, list[str], Callable[[str, Any], None]]
CompanionOf = Callable[[str], bool | None]


def _not_known(_name: str) -> bool | None:
    return None


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


@dataclass(frozen=True)
class ConfResult:
    """Allow-listed settings per worker hostname (plus ``latest_eta`` when it has ETA tasks)."""

    confs: dict[str, dict[str, ConfValue]]
    errors: tuple[ProbeError, ...]


@dataclass(frozen=True)
class WorkerResult:
    workers: tuple[WorkerRaw, ...]
    errors: tuple[ProbeError, ...]
    # By hostname, which of the lists ("reserved", "scheduled") the companion's reply gave
    # this check: fresh every check, they win over a past check's detail.
    lists: dict[str, frozenset[str]] = field(default_factory=dict)


def publish_command(
    mailbox: Any,
    command: str,
    destination: list[str],
    ticket: str,
    channel: Any,
    timeout: float,
) -> None:
    """Send one remote-control command whose replies carry ``ticket``.

    The one use of kombu's private ``Mailbox._publish``: its public ``_broadcast`` collects
    replies itself and would keep them raw (args and kwargs) until it returns, where this
    probe reduces each reply the moment it arrives. A kombu that changes the method's
    signature fails tests/unit/test_kombu_mailbox.py before it fails a check.
    """
    mailbox._publish(
        command,
        {},
        destination=destination,
        reply_ticket=ticket,
        channel=channel,
        timeout=timeout,
        serializer=mailbox.serializer,
    )


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
        self._twice: set[str] = set()  # names that answered one command twice
        self._app_started = 0.0
        self._keyprefix = keyprefix
        self._sep = KOMBU_SEP
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._app: Any = None
        self._conn: Any = None

    def _celery(self) -> Any:
        """The probe's Celery app, made anew when there is none (or it had to be dropped)."""
        self._drop_stale()
        if self._app is None:
            self._app = self._new_app()
            self._app_started = time.monotonic()
        return self._app

    def _drop_stale(self) -> None:
        """Close what must not be reused: an app as old as ``reconnect_after`` allows, and
        behind Sentinel the connection kept from the last exchange."""
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

    def _new_app(self) -> Any:
        """A private Celery app for remote control only: fail-fast, never retrying."""
        from celery import Celery  # imported lazily: it is the bulk of a cold start

        broker = kombu_broker(self._broker_url, self._access)
        app = Celery("doorman-probe", broker=broker.url, set_as_current=False, control=_control())
        provider = self._access.credential_provider
        if provider is not None:
            from kombu.connection import Connection

            # Celery hands kombu no credential provider of its own: every connection
            # the app makes authenticates through the one redis-py uses (IAM token).
            app.amqp.Connection = functools.partial(Connection, credential_provider=provider)
        if broker.ssl is not None:
            app.conf.broker_use_ssl = broker.ssl
        app.conf.update(
            broker_transport_options=self._transport_options(broker),
            broker_connection_retry=False,
            broker_connection_retry_on_startup=False,
            broker_connection_max_retries=0,
            broker_connection_timeout=self._connect_timeout,
            broker_pool_limit=2,
            broker_heartbeat=0,
        )
        return app

    def _transport_options(self, broker: KombuBroker) -> dict[str, Any]:
        """kombu's Redis transport options: bounded timeouts, decoy unacked keys, the
        cluster's dialect, then the broker URL's own options."""
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
        return options

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
        self,
        candidates: Iterable[str],
        *,
        discover: bool,
        budget: float,
        detail: bool = True,
        companion_of: CompanionOf = _not_known,
    ) -> WorkerResult:
        """Ask ``candidates`` (and, with ``discover``, everyone) for their state.

        ``budget`` bounds the whole exchange in seconds. Each worker is asked by what
        ``companion_of`` knows of its companion: True ``doorman``, False ``active``; with
        ``detail`` also stats and active_queues, and, without the companion, reserved and
        scheduled. All in one round; a worker not known yet (None) is asked only stats in
        the first round and, by its marker, the rest in a second. Returns one WorkerRaw per
        name seen: ``online`` when it answered, else ``not_answering``.
        """
        deadline = time.monotonic() + budget
        names = list(dict.fromkeys(candidates))
        errors: list[ProbeError] = []
        reduced: dict[str, Reduced] = {}
        known: dict[str, bool | None] = {}
        self._twice = set()
        try:
            if discover:
                found: list[str] = []
                self._broadcast(
                    "ping", None, self._step(deadline), lambda host, _reply: found.append(host)
                )
                self._twice.update(h for h, n in Counter(found).items() if n > 1)
                names.extend(h for h in dict.fromkeys(found) if h not in names)
            known = {name: companion_of(name) for name in names}
            self._ask(known, detail, reduced, deadline, errors)
        except Exception as exc:
            errors.append(describe_remote_error(exc))
        errors.extend(companion_errors(reduced))
        if self._twice:
            errors.append(duplicate_names_error(len(self._twice)))
        return WorkerResult(
            tuple(_worker_from(n, reduced.get(n), known.get(n)) for n in names),
            tuple(errors),
            {n: frozenset(r.lists) for n, r in reduced.items() if r.lists},
        )

    def _ask(
        self,
        known: dict[str, bool | None],
        detail: bool,
        reduced: dict[str, Reduced],
        deadline: float,
        errors: list[ProbeError],
    ) -> None:
        """The round (two when a worker is not known yet) of commands to ``known``'s names.

        A worker never asked ``active``, ``reserved`` or ``scheduled`` before its
        companion is known not to be there: those replies carry task arguments.
        """
        first = {name: commands_for(companion, detail) for name, companion in known.items()}
        if not self._send(first, reduced, deadline, errors):
            return
        second: dict[str, tuple[tuple[str, Reducer], ...]] = {}
        for name, companion in known.items():
            if companion is None and name in reduced:
                learned = companion_verdict(reduced[name], None)
                if learned is not None:
                    rest = commands_for(learned, detail)
                    second[name] = tuple(c for c in rest if c[0] != "stats")
        self._send(second, reduced, deadline, errors)

    def _send(
        self,
        plan: dict[str, tuple[tuple[str, Reducer], ...]],
        reduced: dict[str, Reduced],
        deadline: float,
        errors: list[ProbeError],
    ) -> bool:
        """One round: each command once, to every worker ``plan`` asks it of. False when no
        time was left for it."""
        by_command: dict[str, tuple[Reducer, list[str]]] = {}
        for name, commands in plan.items():
            for command, reducer in commands:
                by_command.setdefault(command, (reducer, []))[1].append(name)
        if not by_command:
            return True
        remaining = self._step(deadline)
        if remaining <= 0:
            errors.append(ProbeError("workers", "timeout", "no time left to ask"))
            return False
        asks: list[Ask] = [
            (command, names, self._collector(command, reducer, reduced, set(names)))
            for command, (reducer, names) in by_command.items()
        ]
        # All commands go out at once; one consumer sorts the replies by ticket.
        self._multicast(asks, remaining)
        return True

    def conf(
        self, names: Iterable[str], budget: float, companion_of: CompanionOf = _not_known
    ) -> ConfResult:
        """Ask ``names`` for their settings (``conf``) and the ETAs they hold: ``scheduled``
        of workers without the companion, ``doorman`` of those with it (a worker not known
        is not asked: ``scheduled`` replies carry task arguments).

        Each reply is reduced through ``reduce_conf`` / ``latest_eta`` / ``reduce_doorman``
        in the reply callback, so no setting outside the allow-list is ever kept. Workers
        that do not answer within ``budget`` seconds are left out.
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

        try:
            self._broadcast(
                "conf", targets, self._step(deadline), on_conf, arguments={"with_defaults": True}
            )
            answered = [n for n in targets if n in confs]
            asks = _eta_asks(answered, companion_of, confs)
            remaining = self._step(deadline)
            if asks and remaining > 0:
                self._multicast(asks, remaining)
            elif asks:
                errors.append(ProbeError("workers", "timeout", "no time left for 'scheduled'"))
        except Exception as exc:
            errors.append(describe_remote_error(exc))
        return ConfResult(confs, tuple(errors))

    def _step(self, deadline: float) -> float:
        return min(self._timeout, deadline - time.monotonic())

    @staticmethod
    def _collector(
        command: str, reducer: Reducer, reduced: dict[str, Reduced], expected: set[str]
    ) -> Callable[[str, Any], None]:
        def on_reply(hostname: str, value: Any) -> None:
            if hostname not in expected:
                return
            entry = reduced.setdefault(hostname, Reduced())
            if reducer(value, entry) is not False:
                entry.answered.append(command)

        return on_reply

    def _multicast(
        self,
        asks: list[Ask],
        timeout: float,
    ) -> None:
        """Send every command to its workers at once and collect until all answered.

        Returns as soon as each addressed worker answered its commands, or at ``timeout``.
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
                clean = self._round(conn, asks, timeout)
            finally:
                if clean:
                    self._conn = conn
                else:
                    with contextlib.suppress(Exception):
                        conn.release()

    def _round(
        self,
        conn: Any,
        asks: list[Ask],
        timeout: float,
    ) -> bool:
        """Publish every command and collect; True when every expected reply arrived."""
        import uuid

        from kombu import messaging

        app = self._celery()
        mailbox = app.control.mailbox(conn)
        channel = conn.default_channel
        routes: dict[str, Callable[[str, Any], None]] = {}
        tickets = [
            (uuid.uuid4().hex, command, names, on_reply) for command, names, on_reply in asks
        ]
        for ticket, _command, _names, on_reply in tickets:
            routes[ticket] = on_reply
        expected = sum(len(names) for _command, names, _on_reply in asks)
        replies = _Replies(routes, self._twice)

        queue = mailbox.reply_queue
        # The consumer declares the reply queue and its binding afresh, and it must do so
        # before anything is published: the previous exchange deleted them, and a reply
        # that arrives while no binding routes it is dropped by the broker.
        consumer_class: Any = messaging.Consumer  # kombu is only partly typed
        consumer = consumer_class(channel, [queue], accept=mailbox.accept, no_ack=True)
        consumer.register_callback(replies.on_message)
        deadline = time.monotonic() + timeout
        try:
            with consumer:
                for ticket, command, names, _on_reply in tickets:
                    publish_command(mailbox, command, names, ticket, channel, timeout)
                while replies.received < expected:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        conn.drain_events(timeout=left)
                    except TimeoutError:
                        break
        finally:
            channel.after_reply_message_received(queue.name)
        return replies.received >= expected


class _Replies:
    """The replies of one round, routed by ticket; each name counted once per ticket."""

    def __init__(self, routes: dict[str, Callable[[str, Any], None]], twice: set[str]) -> None:
        self.routes = routes
        self.twice = twice  # names that answered one ticket twice: two workers share them
        self.received = 0
        self._answered: set[tuple[str, str]] = set()

    def on_message(self, body: Any, message: Any) -> None:
        ticket = message.headers.get("ticket")
        on_reply = self.routes.get(ticket)
        if on_reply is None or not isinstance(body, dict):
            return
        for hostname, value in body.items():
            if not isinstance(hostname, str):
                continue
            if (ticket, hostname) in self._answered:
                # Only the first answer is taken, and the second does not count as another
                # worker's (that would end the round before one still to answer has).
                self.twice.add(hostname)
                continue
            self._answered.add((ticket, hostname))
            self.received += 1
            on_reply(hostname, value)


def _eta_asks(
    names: list[str], companion_of: CompanionOf, confs: dict[str, dict[str, ConfValue]]
) -> list[Ask]:
    """Who is asked for the ETAs it holds, and how: ``doorman`` of the workers with the
    companion, ``scheduled`` of those known to have none; the latest ETA goes to ``confs``."""

    def keep(hostname: str, eta: float | None) -> None:
        if hostname in confs and eta is not None:
            confs[hostname]["latest_eta"] = eta

    def on_doorman(hostname: str, value: Any) -> None:
        data = Reduced()
        reduce_doorman(value, data)
        keep(hostname, data.latest_eta)

    known = {name: companion_of(name) for name in names}
    plain = [n for n in names if known[n] is False]
    companions = [n for n in names if known[n] is True]
    asks: list[Ask] = []
    if plain:
        asks.append(("scheduled", plain, lambda host, value: keep(host, latest_eta(value))))
    if companions:
        asks.append((COMPANION_COMMAND, companions, on_doorman))
    return asks


def _worker_from(hostname: str, data: Reduced | None, planned: bool | None = None) -> WorkerRaw:
    """One worker as the probe saw it: ``online`` with what its replies said, or
    ``not_answering`` when none arrived."""
    if data is None:
        return WorkerRaw(hostname=hostname, status="not_answering", has_companion=planned)
    return WorkerRaw(
        hostname=hostname,
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
        has_companion=companion_verdict(data, planned),
        companion=data.companion,
    )


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
