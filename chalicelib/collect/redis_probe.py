"""Everything Doorman reads from Redis, in bounded steps.

SCAN and SSCAN find the binding sets and the queues and workers they name (INFO rides with
the first SCAN); two Lua scripts measure a bounded slice of queues per call (depths and the
oldest due message of each list) and summarize the unacked messages, each stopping once it
has copied a bounded number of bytes and saying where to resume. No single command holds
Redis for long, whatever it holds. Message bodies and the ``unacked`` hash are only ever
read inside the scripts.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import ssl
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import redis
from redis.backoff import ConstantBackoff, NoBackoff
from redis.retry import Retry

from ..access import BrokerAccess
from ..iam_auth import aged
from ..model import (
    KOMBU_SEP,
    Dialect,
    MessagePeek,
    ProbeError,
    QueueRaw,
    RedisInfo,
    UnackedEntry,
    UnackedRaw,
)
from ..sanitize import safe_name
from ..settings import RedisUrl, parse_redis_url

# Larger messages are counted and fingerprinted, not decoded: decoding half a megabyte of
# dense JSON (an array of small numbers) costs ~8 ms on an idle server, and a Celery message
# is rarely that large (its headers, what Doorman reads, are small).
PEEK_MAX_BYTES = 512 << 10
MAX_UNACKED_ROWS = 200
DEFAULT_PIDBOX_EXCHANGE = "celery.pidbox"


def _script(name: str) -> str:
    return resources.files("chalicelib.collect").joinpath("lua", name).read_text("utf-8")


QUEUES_LUA = _script("queues.lua")
UNACKED_LUA = _script("unacked.lua")
# What EVALSHA calls them: Redis names a script by the SHA-1 of its text.
QUEUES_SHA = hashlib.sha1(QUEUES_LUA.encode(), usedforsecurity=False).hexdigest()
UNACKED_SHA = hashlib.sha1(UNACKED_LUA.encode(), usedforsecurity=False).hexdigest()


def connect(url: str, timeout: float, access: BrokerAccess | None = None) -> redis.Redis:
    """A client that fails fast: bounded connect and read timeouts, no retries.

    ``access``: an IAM credential provider (each new connection authenticates with a fresh
    token, and a connection is replaced before ElastiCache's 12-hour limit), and for a
    ``sentinel://`` URL the master's name and the Sentinels' password: each new connection
    asks the Sentinels where the master is, so a check after a failover follows it.
    """
    access = access or BrokerAccess()
    options: dict[str, Any] = {
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "retry_on_timeout": False,
        "health_check_interval": 0,
        # Not CLIENT SETINFO on each connection: one round trip less, and a least-privilege
        # user (``doorman acl``) need not be granted it.
        "driver_info": None,
    }
    if access.credential_provider is not None:
        options["credential_provider"] = access.credential_provider
    if url[:11].lower() == "sentinel://":
        client = _sentinel_master(parse_redis_url(url), access, timeout, options)
    else:
        client = redis.Redis.from_url(url, **options)
    if access.reconnect_after is not None:
        pool = client.connection_pool
        pool.connection_class = aged(pool.connection_class, access.reconnect_after)
    return client


SENTINEL_RETRY_WAIT = 0.25  # seconds between the retries of a broken Sentinel connection


def _sentinel_master(
    parsed: RedisUrl, access: BrokerAccess, timeout: float, options: dict[str, Any]
) -> redis.Redis:
    """A client of the master the Sentinels name (re-asked for each new connection)."""
    from urllib.parse import unquote, urlsplit

    from redis.sentinel import Sentinel

    userinfo = urlsplit("//" + parsed.netloc)
    if userinfo.username and "credential_provider" not in options:
        options["username"] = unquote(userinfo.username)
    if userinfo.password and "credential_provider" not in options:
        options["password"] = unquote(userinfo.password)
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    if access.sentinel_password:
        sentinel_kwargs["password"] = access.sentinel_password
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(parsed.sentinels), sentinel_kwargs=sentinel_kwargs
    )
    if access.sentinel_master is None:
        raise ValueError("a sentinel:// URL needs sentinel_master_name")
    # Two retries a quarter second apart, on a broken connection only (a timeout is never
    # retried): after a failover the pooled connection still points at the old master, and
    # each retry's new connection asks the Sentinels again, while they agree on the new one.
    options["retry"] = Retry(
        ConstantBackoff(SENTINEL_RETRY_WAIT), 2, supported_errors=(redis.ConnectionError,)
    )
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        access.sentinel_master, db=parsed.db, **options
    )
    return client


def describe_error(exc: BaseException, timeout: float, *, tls: bool = False) -> ProbeError:
    """Turn a redis-py/socket error into a ProbeError that names the cause, never a secret.

    ``tls``: the URL asked for TLS. A server that does not speak it leaves the handshake
    hanging (a timeout) or closes the connection, and the cause to name is then TLS.
    """
    found = _describe_error(exc, timeout)
    if (
        tls
        and found.kind in {"timeout", "not_redis", "connection_failed"}
        and not isinstance(exc, redis.AuthenticationError)
    ):
        return ProbeError(
            "redis", "tls", f"no TLS handshake within {timeout:g} s (is the server TLS-enabled?)"
        )
    return found


def _describe_error(exc: BaseException, timeout: float) -> ProbeError:
    text = str(exc).lower()
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, redis.AuthenticationError) or any(
        word in text for word in ("wrongpass", "noauth", "invalid password", "invalid username")
    ):
        return ProbeError("redis", "auth", "Redis refused the credentials (wrong password?)")
    if isinstance(exc, redis.TimeoutError) or "timed out" in text or "timeout" in text:
        return ProbeError("redis", "timeout", f"Redis did not answer within {timeout:g} s")
    if (
        isinstance(cause, socket.gaierror)
        or "name or service not known" in text
        or ("temporary failure in name resolution" in text)
    ):
        return ProbeError("redis", "dns", "the Redis host name does not resolve")
    if isinstance(cause, ssl.SSLError) or "ssl" in text or "tls" in text:
        return ProbeError("redis", "tls", "the TLS handshake with Redis failed")
    if "connection refused" in text:
        return ProbeError("redis", "connection_refused", "Redis refused the connection")
    if isinstance(exc, redis.exceptions.InvalidResponse) or "protocol error" in text:
        return ProbeError("redis", "not_redis", "the server did not answer in the Redis protocol")
    if "closed by server" in text or "reset by peer" in text:
        return ProbeError("redis", "not_redis", "the server closed the connection (not Redis?)")
    command = denied_command(exc)
    if command is not None:
        return permission_error(command, _consequence(command))
    if "db index is out of range" in text:
        return ProbeError(
            "redis",
            "db_out_of_range",
            "Redis has no such database (DB index is out of range: check the number in the"
            " URL against the server's 'databases' setting)",
        )
    if isinstance(cause, FileNotFoundError) or (
        "no such file or directory" in text and "connecting to" in text
    ):
        return ProbeError("redis", "socket_missing", "the unix socket file does not exist")
    if isinstance(cause, PermissionError) or "permission denied" in text:
        return ProbeError("redis", "socket_permission", "permission denied on the unix socket file")
    if isinstance(exc, redis.ResponseError):
        return ProbeError(
            "redis", "command_failed", f"Redis rejected a command ({_first_word(exc)})"
        )
    if isinstance(exc, redis.ConnectionError):
        return ProbeError("redis", "connection_failed", "cannot connect to Redis")
    return ProbeError("redis", "error", f"Redis probe failed ({type(exc).__name__})")


def _first_word(exc: BaseException) -> str:
    words = str(exc).split()
    return words[0][:30] if words else type(exc).__name__


# --- Redis's budget -----------------------------------------------------------------------
# Doorman is the least trusted client of the broker it watches: no single command may hold
# Redis for long (the promise is 20 ms), whatever it holds. Keys and set members are read
# with cursors in bounded steps, queues are measured a bounded slice per script call, and a
# script stops after decoding DECODE_BUDGET bytes and says where to resume.
SCAN_COUNT = 1000  # keys looked at per SCAN call
MAX_SCAN_CALLS = 2000  # 2,000,000 keys; past them discovery stops, and says so
SSCAN_COUNT = 1000  # binding-set members per SSCAN call
MAX_MEMBERS = 200_000  # binding-set members read per check before discovery stops
# One script call measures at most this many lists (queues x priority levels: 100 queues of
# 10 levels, ~2 ms on an idle server) and names of at most NAME_BYTES_PER_CALL bytes (a
# longer name is measured alone), and stops once it has copied DECODE_BUDGET bytes.
LISTS_PER_CALL = 1000
NAME_BYTES_PER_CALL = 64 << 10
DECODE_BUDGET = 256 << 10  # bytes of messages read and key names built per script call
ETA_WINDOW = 50  # messages looked at from the old end of a list for one that is due
MAX_ROUNDS = 2000  # round trips per phase: a guard against a script that never finishes
PRIORITY_STEPS = tuple(range(1, 10))  # kombu clamps priorities to 0-9
DEFAULT_SEP = KOMBU_SEP.encode()
WELL_KNOWN_BINDINGS = ("celery", "celery.pidbox")  # read directly when SCAN is denied
MAX_OTHER_PREFIXES = 20
# Binding sets under any key prefix: one SCAN finds the prefix assumed and any other.
BINDING_MARKER = b"_kombu.binding."
# Anchored to a prefix, MATCH fails at a key's first differing character; the look under
# every prefix has to start with "*", which costs Redis a pass over each key's name.
ANY_PREFIX_PATTERN = "*_kombu.binding.*"
# Separators to try for priority lists beside a queue, and the steps looked at ("q:3").
CANDIDATE_SEPS = (DEFAULT_SEP, b":", b"|", b"/", b".", b"-", b"_")
PRIORITY_LOOK_STEPS = (b"1", b"3", b"6", b"9")
PRIORITY_LOOK_QUEUES = 20


def queue_of(member: bytes, sep: bytes) -> bytes | None:
    """The queue a binding member names (``routing_key SEP pattern SEP queue``), or None.

    A queue bound to the default exchange reads ``queue SEP SEP queue``, and that shape is
    taken first, so a queue name holding the separator ("orders:high" with ":") is read
    whole; otherwise the last field. A member without the separator is not kombu's (or not
    in this dialect): kombu itself could not read it.
    """
    if sep not in member:
        return None
    rest = len(member) - 2 * len(sep)
    if rest > 0 and rest % 2 == 0:
        half = rest // 2
        if member[half : half + 2 * len(sep)] == sep + sep and member[:half] == member[-half:]:
            return member[:half]
    return member.rsplit(sep, 1)[-1]


def guess_separator(members: list[bytes]) -> bytes | None:
    """The separator that makes binding members read as kombu writes a queue's binding to
    the default exchange (``queue SEP SEP queue``: routing key, empty pattern, queue), by
    vote over the members; None when no member has that shape."""
    votes: dict[bytes, int] = {}
    for member in members[:200]:
        if len(member) > 1024:
            continue
        for width in range(1, 9):
            rest = len(member) - 2 * width
            if rest <= 0 or rest % 2:
                continue
            half = rest // 2
            sep = member[half : half + width]
            if member[half + width : half + 2 * width] == sep and member[:half] == member[-half:]:
                votes[sep] = votes.get(sep, 0) + 1
                break
    return max(votes, key=lambda s: votes[s]) if votes else None


@dataclass(frozen=True)
class RedisResult:
    queues: tuple[QueueRaw, ...]
    worker_names: tuple[str, ...]
    pidbox_exchanges: tuple[str, ...]
    unacked: UnackedRaw | None
    info: RedisInfo | None
    found_queues: int  # queues discovered (at least; see ``truncated``), before max_queues
    truncated: bool
    errors: tuple[ProbeError, ...]
    # What the keys say of the dialect, where they disagreed with what was assumed: a
    # separator that parses the binding members, the one prefix bindings were found under.
    guessed: Dialect = field(default_factory=Dialect)
    other_prefixes: tuple[str, ...] = ()  # bindings found under several other prefixes
    looked_everywhere: bool = True  # discovery read the whole database
    foreign_priority_lists: tuple[tuple[str, str], ...] = ()  # (queue, separator seen)
    members_sep: str | None = None  # the separator binding members use, when not the one set


def denied_command(exc: BaseException) -> str | None:
    """The command an ACL (or a managed Redis) refused, upper case, or None."""
    text = str(exc)
    if not (isinstance(exc, redis.exceptions.NoPermissionError) or "NOPERM" in text):
        return None
    match = re.search(r"run the '([A-Za-z|_ -]{1,40})' command", text)
    if match:
        return match.group(1).upper().replace("|", " ")  # "script|load": SCRIPT LOAD
    return "a key" if "access a key" in text or "keys" in text else "a command"


def permission_error(command: str, consequence: str) -> ProbeError:
    return ProbeError(
        "redis", "permission", f"Redis denied {command} to this user (ACL): {consequence}"
    )


_CONSEQUENCE = {
    "INFO": "memory, clients and persistence are not reported",
    "SCAN": f"only the default binding sets ({', '.join(WELL_KNOWN_BINDINGS)}) were read",
    "SSCAN": "queues bound in Redis are not discovered; configured queues are still counted",
    "EVALSHA": "depths are counted with LLEN; latency and unacked messages are not measured",
    "EVAL": "depths are counted with LLEN; latency and unacked messages are not measured",
    "SCRIPT": "the scripts are sent in full with EVAL",
    "LLEN": "queue depths cannot be counted",
    "LINDEX": "the oldest messages cannot be inspected; latency is not measured",
    "TYPE": "a key of another type holding a queue's name is not named",
    "EXISTS": "lists named with another separator are not looked for",
    "HSTRLEN": "overdue unacked messages are not inspected",
    "ZCARD": "unacked messages are not counted",
    "ZCOUNT": "unacked messages are not counted",
    "ZRANGEBYSCORE": "overdue unacked messages are not inspected",
    "HGET": "overdue unacked messages are not inspected",
}


def _consequence(command: str) -> str:
    return _CONSEQUENCE.get(command.split(" ")[0], "part of the check is not measured")


class _Errors:
    """The errors of one collection, each permission named once."""

    def __init__(self) -> None:
        self.items: list[ProbeError] = []
        self._denied: set[str] = set()

    def denied(self, command: str) -> None:
        if command not in self._denied:
            self._denied.add(command)
            self.items.append(permission_error(command, _consequence(command)))

    def add(self, error: ProbeError) -> None:
        if error not in self.items:
            self.items.append(error)

    def from_exception(self, exc: BaseException) -> None:
        command = denied_command(exc)
        if command is not None:
            self.denied(command)
        else:
            self.add(describe_error(exc, 0))


@dataclass(frozen=True)
class BindingKeys:
    """The binding sets' keys found by one SCAN, by key prefix; ``complete``: the SCAN went
    through the whole database; ``scanned``: False when SCAN was denied."""

    by_prefix: dict[str, list[bytes]]
    complete: bool
    scanned: bool = True


@dataclass
class _Bindings:
    queues: list[bytes]
    workers: list[str]
    pidboxes: list[str]
    members_total: int  # SCARD of the queue binding sets: the most queues there can be
    complete: bool


class RedisProbe:
    """Reads queues, unacked messages and server health from one Redis."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        keyprefix: str = "",
        max_queues: int = 10_000,
        sep: bytes = DEFAULT_SEP,
        priority_steps: tuple[int, ...] = PRIORITY_STEPS,
        guess_sep: bool = False,
        guess_prefix: bool = False,
        verify_sep: bool = False,
        known_bindings: BindingKeys | None = None,
    ):
        """``guess_sep``/``guess_prefix``: the separator or key prefix is not set, so the
        keys may overrule the one assumed (see ``RedisResult.guessed``). ``verify_sep``: no
        worker has confirmed the separator; look for priority lists named with another."""
        self._client = client
        self._prefix = keyprefix
        self._max_queues = max_queues
        self._sep = sep
        # The lists of a queue: the queue itself (0), then one per priority step.
        self._levels = (0, *sorted({s for s in priority_steps if 0 < s <= 255}))
        self._steps = ",".join(str(s) for s in self._levels[1:])
        self._guess_sep = guess_sep
        self._guess_prefix = guess_prefix
        self._guessed_sep: bytes | None = None
        self._members_sep: bytes | None = None  # what the members use, when it is not ours
        self._verify_sep = verify_sep
        # The binding keys of a recent discovery (the caller's cache), or None to SCAN; a
        # SCAN's result is left in ``discovered`` for the caller to keep.
        self._known = known_bindings
        self.discovered: BindingKeys | None = known_bindings
        self._scripts = "evalsha"  # "eval" when SCRIPT is denied, "none" when scripts are

    def collect(
        self, configured: tuple[str, ...], now: float, visibility_timeout: float
    ) -> RedisResult:
        """Queues, workers' bindings, unacked summary and INFO; raises redis errors only when
        Redis cannot be talked to at all (a denied command is an error entry instead)."""
        errors = _Errors()
        if self._scripts == "none":
            self._scripts = "evalsha"  # rights may have been granted since the last check
        info = self._info_and_scan(errors)
        found_keys, bindings = self._discover(errors)
        prefix_guess: str | None = None
        others: list[str] = []
        if self._guess_prefix and not bindings.queues and not bindings.workers:
            found_keys, others = self._other_prefixes(found_keys, errors)
            if len(others) == 1:
                # Nothing here, and one other prefix has Celery's keys: read those.
                prefix_guess, others = others[0], []
                self._prefix = prefix_guess
                bindings = self._bindings(self._keys_under(found_keys, self._prefix), errors)
        names = list(dict.fromkeys([c.encode() for c in configured if c] + bindings.queues))
        found = max(len(names), bindings.members_total if not bindings.complete else 0)
        truncated = not bindings.complete or len(names) > self._max_queues
        shown = names[: self._max_queues]
        queues = self.measure(shown, now, errors)
        unacked = self._unacked(now, visibility_timeout, errors)
        if truncated:
            errors.add(_truncation(len(shown), found, self._max_queues, bindings.complete))
        foreign = self._foreign_priority_lists(shown, errors) if self._verify_sep else ()
        guessed_sep = self._guessed_sep
        return RedisResult(
            queues=queues,
            worker_names=tuple(dict.fromkeys(bindings.workers)),
            pidbox_exchanges=tuple(dict.fromkeys(bindings.pidboxes)),
            unacked=unacked,
            info=info,
            found_queues=found,
            truncated=truncated,
            errors=tuple(errors.items),
            guessed=Dialect(
                sep=guessed_sep.decode("utf-8", "replace") if guessed_sep else None,
                global_keyprefix=prefix_guess,
            ),
            other_prefixes=tuple(others),
            looked_everywhere=found_keys.complete,
            foreign_priority_lists=foreign,
            members_sep=self._members_sep.decode("utf-8", "replace") if self._members_sep else None,
        )

    def measure(
        self, names: list[bytes], now: float, errors: _Errors | None = None
    ) -> tuple[QueueRaw, ...]:
        """Depth and oldest due messages of ``names``, a bounded slice per script call."""
        errors = errors if errors is not None else _Errors()
        if self._scripts != "none":
            measured = self._measure_scripted(names, now, errors)
            if measured is not None:
                return measured
        return self._measure_plain(names, errors)

    # --- discovery ------------------------------------------------------------------------

    def _info_and_scan(self, errors: _Errors) -> RedisInfo | None:
        """INFO (None when it fails), with the first SCAN for binding keys in the same round
        trip unless the caller handed in a recent discovery's keys; a SCAN's keys go to
        ``discovered``."""
        pipe = self._client.pipeline(transaction=False)
        if self._known is None:
            pipe.scan(0, match=self._binding_pattern(), count=SCAN_COUNT)
        pipe.info()
        *first_scan, info_raw = pipe.execute(raise_on_error=False)
        info = None
        if isinstance(info_raw, BaseException):
            _raise_unless_response(info_raw)
            errors.from_exception(info_raw)
        else:
            info = _info_from(info_raw)
        if self._known is None:
            self.discovered = self._scan_bindings(first_scan[0], self._binding_pattern(), errors)
        return info

    def _discover(self, errors: _Errors) -> tuple[BindingKeys, _Bindings]:
        """The binding keys discovered (or cached) and what they name under the prefix
        assumed; a discovery that stopped short is an error."""
        found_keys = self.discovered or BindingKeys({}, complete=True)
        if not found_keys.complete:
            errors.add(
                ProbeError(
                    "queues",
                    "discovery",
                    f"binding discovery stopped after {MAX_SCAN_CALLS * SCAN_COUNT:,} keys of a"
                    " larger database (a result backend beside the broker?): queues bound in"
                    " the keys not read are missed; name them in monitored_queues",
                )
            )
        return found_keys, self._bindings(self._keys_under(found_keys, self._prefix), errors)

    def _other_prefixes(
        self, found_keys: BindingKeys, errors: _Errors
    ) -> tuple[BindingKeys, list[str]]:
        """The binding keys under every prefix, and the prefixes other than the one assumed
        that hold any (MAX_OTHER_PREFIXES at most); called when that one holds none."""
        if found_keys.scanned and set(found_keys.by_prefix) <= {self._prefix}:
            # Nothing here: one more SCAN, under every prefix (kept with the rest).
            first = self._client.scan(0, match=ANY_PREFIX_PATTERN, count=SCAN_COUNT)
            found_keys = self._scan_bindings(first, ANY_PREFIX_PATTERN, errors)
            self.discovered = found_keys
        others = sorted(p for p in found_keys.by_prefix if p != self._prefix)
        return found_keys, others[:MAX_OTHER_PREFIXES]

    def _binding_pattern(self) -> str:
        head = self._prefix + "_kombu.binding."
        # The prefix is literal text: escape the glob characters SCAN MATCH would interpret.
        return re.sub(r"([*?\[\]\\])", r"\\\1", head) + "*"

    def _scan_bindings(self, first: Any, pattern: str, errors: _Errors) -> BindingKeys:
        """The binding sets' keys that ``pattern`` matches, by key prefix, by SCAN in
        bounded steps (``first``: the reply to the first call). A denied SCAN leaves the
        default binding sets."""
        if isinstance(first, BaseException):
            _raise_unless_response(first)
            errors.from_exception(first)
            head = (self._prefix + "_kombu.binding.").encode()
            keys = [head + name.encode() for name in WELL_KNOWN_BINDINGS]
            return BindingKeys({self._prefix: keys}, complete=True, scanned=False)
        cursor, first_keys = first
        found: list[bytes | str] = list(first_keys)
        calls = 1
        while cursor != 0 and calls < MAX_SCAN_CALLS:
            cursor, more = self._client.scan(cursor, match=pattern, count=SCAN_COUNT)
            found.extend(more)
            calls += 1
        by_prefix: dict[str, list[bytes]] = {}
        for key in dict.fromkeys(found):
            raw = key if isinstance(key, bytes) else str(key).encode()
            prefix = raw[: raw.find(BINDING_MARKER)].decode("utf-8", "backslashreplace")
            by_prefix.setdefault(prefix, []).append(raw)
        return BindingKeys(by_prefix, complete=cursor == 0)

    def _keys_under(self, found: BindingKeys, prefix: str) -> list[bytes]:
        """The binding keys to read under ``prefix``: those found, and always the default
        sets (a cached discovery predates a worker that just started, and a denied SCAN
        found nothing); SSCAN of a key that does not exist costs nothing."""
        head = (prefix + "_kombu.binding.").encode()
        keys = [*found.by_prefix.get(prefix, []), *(head + n.encode() for n in WELL_KNOWN_BINDINGS)]
        return list(dict.fromkeys(keys))

    def _bindings(self, keys: list[bytes], errors: _Errors) -> _Bindings:
        """Queues and workers named by the binding sets, read with SSCAN in bounded steps.

        Reading stops once more queues are known than ``max_queues`` (or MAX_MEMBERS members
        were read): the rest would not be reported anyway, and the count the caller names in
        its truncation error comes from SCARD.
        """
        head = len((self._prefix + "_kombu.binding.").encode())
        cursors, pidboxes = _sets_to_read(keys, head)
        queue_keys = [k for k in cursors if not k[head:].endswith(b".pidbox")]
        queues: dict[bytes, None] = {}
        workers: list[str] = []
        members_read = 0
        rounds = 0
        while cursors and rounds < MAX_ROUNDS:
            rounds += 1
            members_read += self._sscan_round(
                cursors, head, queues, workers, errors, first=rounds == 1
            )
            enough = len(queues) > self._max_queues or members_read >= MAX_MEMBERS
            if enough and all(not k[head:].endswith(b".pidbox") for k in cursors):
                break
            if enough:
                cursors = {k: c for k, c in cursors.items() if k[head:].endswith(b".pidbox")}
        finished = not cursors
        total = self._members_total(queue_keys) if not finished and queue_keys else 0
        return _Bindings(list(queues), workers, pidboxes, total, finished)

    def _sscan_round(
        self,
        cursors: dict[bytes, int],
        head: int,
        queues: dict[bytes, None],
        workers: list[str],
        errors: _Errors,
        *,
        first: bool,
    ) -> int:
        """One pipelined SSCAN step of every set in ``cursors``: the members go into
        ``queues`` and ``workers``, each cursor moves on (a set done or failed leaves
        ``cursors``). Returns how many members were read."""
        pipe = self._client.pipeline(transaction=False)
        order = list(cursors)
        for key in order:
            pipe.sscan(key, cursors[key], count=SSCAN_COUNT)
        replies = pipe.execute(raise_on_error=False)
        if first:
            self._maybe_guess_sep(
                [m for r in replies if not isinstance(r, BaseException) for m in r[1]]
            )
        read = 0
        for key, reply in zip(order, replies, strict=True):
            if isinstance(reply, BaseException):
                _binding_failed(key, reply, errors)
                del cursors[key]
                continue
            cursor, members = reply
            read += len(members)
            exchange = key[head:].decode("utf-8", "replace")
            self._read_members(exchange, members, queues, workers)
            if cursor == 0:
                del cursors[key]
            else:
                cursors[key] = cursor
        return read

    def _members_total(self, keys: list[bytes]) -> int:
        """How many members the sets ``keys`` hold together (SCARD; a failure counts 0)."""
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.scard(key)
        return sum(n for n in pipe.execute(raise_on_error=False) if isinstance(n, int))

    def _maybe_guess_sep(self, members: list[bytes]) -> None:
        """When none of the binding members holds the separator assumed, find the one they
        use (the first batch of every set decides, before anything is parsed): take it when
        the separator is not set, else remember it to name the mismatch."""
        if not members or any(self._sep in m for m in members):
            return
        found = guess_separator(members)
        if found is None or found == self._sep:
            return
        if self._guess_sep:
            self._sep = found
            self._guessed_sep = found
        else:
            self._members_sep = found

    def _foreign_priority_lists(
        self, names: list[bytes], errors: _Errors
    ) -> tuple[tuple[str, str], ...]:
        """Queues beside which lists named with another separator exist ("celery:3" where
        the separator assumed is kombu's default): a bounded EXISTS of a few names."""
        candidates = [c for c in CANDIDATE_SEPS if c != self._sep]
        looked = names[:PRIORITY_LOOK_QUEUES]
        if not looked:
            return ()
        pipe = self._client.pipeline(transaction=False)
        prefix = self._prefix.encode()
        for name in looked:
            for sep in candidates:
                pipe.exists(*(prefix + name + sep + d for d in PRIORITY_LOOK_STEPS))
        replies = iter(pipe.execute(raise_on_error=False))
        found: list[tuple[str, str]] = []
        for name in looked:
            for sep in candidates:
                reply = next(replies)
                if isinstance(reply, BaseException):
                    _raise_unless_response(reply)
                    if denied_command(reply) is not None:
                        errors.from_exception(reply)
                        return ()
                if isinstance(reply, int) and reply > 0:
                    found.append((_name(name), sep.decode("utf-8", "replace")))
        return tuple(found)

    def _read_members(
        self, exchange: str, members: list[bytes], queues: dict[bytes, None], workers: list[str]
    ) -> None:
        sep = self._sep
        if exchange.endswith(".pidbox"):
            suffix = ("." + exchange).encode()
            for member in members:
                if sep not in member:
                    continue
                queue = member.rsplit(sep, 1)[-1]
                if queue.endswith(suffix) and len(queue) > len(suffix):
                    workers.append(queue[: -len(suffix)].decode("utf-8", "replace"))
            return
        for member in members:
            named = queue_of(member, sep)
            if named and not named.endswith(b".pidbox"):
                queues[named] = None

    # --- measuring ------------------------------------------------------------------------

    def _queue_args(self, now: float) -> list[Any]:
        return [self._prefix, PEEK_MAX_BYTES, DECODE_BUDGET, repr(now), ETA_WINDOW]

    def _measure_scripted(
        self, names: list[bytes], now: float, errors: _Errors
    ) -> tuple[QueueRaw, ...] | None:
        """None when scripts are denied (the caller counts depths without them)."""
        chunks = self._chunks(names)
        # The parts of each queue, by chunk and index: a call may stop between two lists.
        done: list[dict[int, list[dict[str, Any]]]] = [{} for _ in chunks]
        todo = {i: (1, 1) for i in range(len(chunks))}  # chunk -> (queue, list) to start at
        fixed = [*self._queue_args(now), self._sep, self._steps]
        rounds = 0
        while todo and rounds < MAX_ROUNDS:
            rounds += 1
            order = list(todo)
            calls = [(QUEUES_LUA, QUEUES_SHA, [*fixed, *todo[i], *chunks[i]]) for i in order]
            replies = self._run_scripts(calls, errors)
            if replies is None:
                return None
            for i, reply in zip(order, replies, strict=True):
                if isinstance(reply, BaseException):
                    raise reply
                decoded = _loads(reply)
                for command in _as_list(decoded.get("den")):
                    errors.denied(str(command))
                start = todo.pop(i)
                for entry in _as_list(decoded.get("q")):
                    index = entry.get("i")
                    if isinstance(index, int) and 1 <= index <= len(chunks[i]):
                        done[i].setdefault(index, []).append(entry)
                resume, level = decoded.get("r"), decoded.get("rl")
                if isinstance(resume, int) and isinstance(level, int) and (resume, level) > start:
                    todo[i] = (resume, level)
        return tuple(
            _queue_from(parts, chunks[i][index - 1])
            for i, chunk in enumerate(done)
            for index, parts in sorted(chunk.items())
        )

    def _chunks(self, names: list[bytes]) -> list[list[bytes]]:
        """``names`` in slices one script call measures: LISTS_PER_CALL lists at most, and
        NAME_BYTES_PER_CALL bytes of names (a longer name alone)."""
        per_call = max(1, LISTS_PER_CALL // len(self._levels))
        chunks: list[list[bytes]] = []
        current: list[bytes] = []
        size = 0
        for name in names:
            if current and (len(current) >= per_call or size + len(name) > NAME_BYTES_PER_CALL):
                chunks.append(current)
                current, size = [], 0
            current.append(name)
            size += len(name)
        if current:
            chunks.append(current)
        return chunks

    def _measure_plain(self, names: list[bytes], errors: _Errors) -> tuple[QueueRaw, ...]:
        """Depths by LLEN alone, for a user that may not run scripts: nothing is peeked."""
        levels = self._levels
        out: list[QueueRaw] = []
        for chunk in self._chunks(names):
            pipe = self._client.pipeline(transaction=False)
            for name in chunk:
                base = self._prefix.encode() + name
                for level in levels:
                    pipe.llen(base if level == 0 else base + self._sep + str(level).encode())
            replies = iter(pipe.execute(raise_on_error=False))
            for name in chunk:
                depth, by_priority, problem = 0, {}, None
                for level in levels:
                    reply = next(replies)
                    if isinstance(reply, BaseException):
                        _raise_unless_response(reply)
                        if denied_command(reply) is not None:
                            errors.from_exception(reply)
                        elif level == 0 and "WRONGTYPE" in str(reply):
                            problem = "wrong_type"
                    elif isinstance(reply, int) and reply > 0:
                        depth += reply
                        by_priority[level] = reply
                out.append(
                    QueueRaw(
                        name=_name(name),
                        depth=depth,
                        depth_by_priority=by_priority,
                        problem=problem,
                        peeked=False,
                    )
                )
        return tuple(out)

    def _unacked(self, now: float, vt: float, errors: _Errors) -> UnackedRaw | None:
        """The unacked summary, its overdue rows read in bounded script calls."""
        if self._scripts == "none":
            return None
        keys = [self._prefix + "unacked_index", self._prefix + "unacked"]
        rows: list[UnackedEntry] = []
        offset, total, overdue = 0, 0, 0
        for _ in range(MAX_ROUNDS):
            args = [repr(now), repr(vt), MAX_UNACKED_ROWS, PEEK_MAX_BYTES, offset, DECODE_BUDGET]
            replies = self._run_scripts([(UNACKED_LUA, UNACKED_SHA, [*keys, *args])], errors)
            if replies is None:
                return None
            reply = replies[0]
            if isinstance(reply, BaseException):
                _raise_unless_response(reply)
                errors.from_exception(reply)
                return None
            raw = _loads(reply)
            if raw.get("den"):
                errors.denied(str(raw["den"]))
                return None
            if raw.get("err"):
                errors.add(
                    ProbeError("queue", "wrong_type", "the unacked_index key is not a sorted set")
                )
                return None
            total, overdue = int(raw.get("n", 0)), int(raw.get("o", 0))
            rows.extend(_unacked_rows(raw))
            resume = raw.get("nx")
            if not isinstance(resume, int) or resume <= offset:
                break
            offset = resume
        return UnackedRaw(
            total=total, overdue_total=overdue, overdue=tuple(rows), visibility_timeout_sec=vt
        )

    def _run_scripts(
        self, calls: list[tuple[str, str, list[Any]]], errors: _Errors, numkeys: int = 0
    ) -> list[Any] | None:
        """One pipelined round of script calls; None when scripts cannot be run at all.

        Scripts run by SHA (loaded on NOSCRIPT); a user denied SCRIPT sends them in full
        with EVAL; a user denied both gets None and the caller measures without them.
        """
        for _ in range(3):
            pipe = self._client.pipeline(transaction=False)
            for text, sha, args in calls:
                if self._scripts == "eval":
                    pipe.eval(text, numkeys, *args)
                else:
                    pipe.evalsha(sha, numkeys, *args)
            replies = list(pipe.execute(raise_on_error=False))
            denied = next((r for r in replies if _is_denied(r)), None)
            if denied is not None:
                if self._scripts == "evalsha" and denied_command(denied) == "EVALSHA":
                    self._scripts = "eval"  # EVAL may still be allowed; try it once
                    continue
                errors.from_exception(denied)
                self._scripts = "none"
                return None
            if not any(_is_noscript(r) for r in replies):
                return replies
            try:
                self._load_scripts()
            except redis.ResponseError as exc:
                if denied_command(exc) is None:
                    raise
                errors.from_exception(exc)
                self._scripts = "eval"
        return replies

    def pidbox_subscribers(self, exchanges: tuple[str, ...]) -> int | None:
        """How many live connections listen on the workers' remote-control channel, or None.

        Read only on the slow path, to tell a dead worker (its connections are gone) from one
        that is alive but not answering. Every live worker keeps one pattern subscription to
        its pidbox exchange's fanout topic (``<prefix>/<db>.<exchange>``); PUBLISH returns how
        many subscribers received a message. The message is empty, and kombu drops an empty
        fanout message unread, so the workers never see it. Counting subscriptions with
        CLIENT LIST instead would also count worker gossip, event monitors (Flower) and other
        databases and key prefixes on the same server, and make dead workers look alive.
        """
        db = self._client.connection_pool.connection_kwargs.get("db", 0) or 0
        topics = [f"{self._prefix}/{db}.{exchange}" for exchange in exchanges]
        pipe = self._client.pipeline(transaction=False)
        for topic in topics or [f"{self._prefix}/{db}.{DEFAULT_PIDBOX_EXCHANGE}"]:
            pipe.publish(topic, b"")
        try:
            counts = pipe.execute(raise_on_error=False)
        except (redis.RedisError, OSError):
            return None
        total = 0
        for count in counts:
            if not isinstance(count, int) or isinstance(count, bool):
                return None
            total += count
        return total

    def persistence_config(self) -> dict[str, str] | None:
        """``save`` and ``appendonly`` when Redis allows CONFIG GET (managed Redis may not).

        Raises redis errors other than a refused command.
        """
        found: dict[str, str] = {}
        try:
            for key in ("save", "appendonly"):
                for name, value in self._client.config_get(key).items():
                    name = name.decode() if isinstance(name, bytes) else str(name)
                    value = value.decode() if isinstance(value, bytes) else str(value)
                    if name == key:
                        found[key] = value[:200]
        except redis.ResponseError:
            return None
        return found or None

    def _load_scripts(self) -> None:
        pipe = self._client.pipeline(transaction=False)
        pipe.script_load(QUEUES_LUA)
        pipe.script_load(UNACKED_LUA)
        pipe.execute()


def _sets_to_read(keys: list[bytes], head: int) -> tuple[dict[bytes, int], list[str]]:
    """The binding sets worth reading (not reply queues' or events'), each with its SSCAN
    cursor at the start, and the pidbox exchanges among them; ``head``: the length of the
    keys' ``<prefix>_kombu.binding.``."""
    cursors: dict[bytes, int] = {}
    pidboxes: list[str] = []
    for key in keys:
        exchange = key[head:].decode("utf-8", "replace")
        if exchange.startswith("reply.") or exchange == "celeryev":
            continue
        cursors[key] = 0
        if exchange.endswith(".pidbox"):
            pidboxes.append(exchange)
    return cursors, pidboxes


def _binding_failed(key: bytes, reply: BaseException, errors: _Errors) -> None:
    """Note why a binding set could not be read; raises for a broken Redis."""
    _raise_unless_response(reply)
    if denied_command(reply) is not None:
        errors.from_exception(reply)
    elif "WRONGTYPE" in str(reply):
        shown = safe_name(key.decode("utf-8", "backslashreplace"))
        errors.add(
            ProbeError(
                "queues",
                "wrong_type",
                f"the binding key {shown} is not a set: the queues it would"
                " name are not discovered",
            )
        )


def _loads(raw: Any) -> Any:
    """A script's JSON reply. Lua strings are bytes: a message or queue name that is not
    UTF-8 must not fail the whole check, so undecodable bytes become U+FFFD."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    return json.loads(raw)


def _is_noscript(result: Any) -> bool:
    return isinstance(result, redis.exceptions.NoScriptError)


def _as_list(value: Any) -> list[Any]:
    # cjson encodes an empty Lua table as {} rather than [].
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return list(value.values())
    return []


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _peek_from(raw: dict[str, Any]) -> MessagePeek:
    retries = raw.get("re")
    xp = raw.get("xp")
    priority = raw.get("pr")
    return MessagePeek(
        priority_list=int(raw.get("l", 0)),
        fingerprint=str(raw.get("f", "")),
        decoded=bool(raw.get("k")),
        task_id=_text(raw.get("id")),
        task_name=_text(raw.get("t")),
        eta=_text(raw.get("eta")),
        expires=_text(raw.get("exp")),
        expiration_ms=_num(raw.get("xms")),
        published_at=_num(raw.get("pub")),
        retries=int(retries) if isinstance(retries, int | float) else None,
        redelivered=bool(raw.get("rd")),
        priority=int(priority) if isinstance(priority, int | float) else None,
        content_type=_text(raw.get("ct")),
        window_exhausted=bool(raw.get("wx")),
        expired_seen=int(xp) if isinstance(xp, int | float) and 0 < xp <= ETA_WINDOW else 0,
    )


def _name(raw: bytes) -> str:
    """A queue name as text: bytes that are not UTF-8 are written as escapes (``\\xff``),
    so two names that differ only there stay two names; never an exception."""
    return raw.decode("utf-8", "backslashreplace")


def _queue_from(parts: list[dict[str, Any]], name: bytes) -> QueueRaw:
    """One queue from the parts of it that script calls returned (one, unless a call
    stopped between two of its lists)."""
    by_priority: dict[int, int] = {}
    for part in parts:
        for level, depth in (part.get("p") or {}).items():
            by_priority[int(level)] = by_priority.get(int(level), 0) + int(depth)
    return QueueRaw(
        name=_name(name),
        depth=sum(int(part.get("d", 0)) for part in parts),
        depth_by_priority=by_priority,
        oldest=tuple(_peek_from(p) for part in parts for p in _as_list(part.get("o"))),
        problem=next((_text(part.get("e")) for part in parts if part.get("e")), None),
    )


def _unacked_rows(raw: dict[str, Any]) -> tuple[UnackedEntry, ...]:
    return tuple(
        UnackedEntry(
            task_id=_text(r.get("id")),
            task_name=_text(r.get("t")),
            queue=_text(r.get("q")),
            age_sec=float(r.get("a", 0.0)),
        )
        for r in _as_list(raw.get("r"))
    )


def _is_denied(result: Any) -> bool:
    return isinstance(result, BaseException) and denied_command(result) is not None


def _raise_unless_response(result: BaseException) -> None:
    """A pipeline hands back command errors in place; anything else is a broken Redis."""
    if not isinstance(result, redis.ResponseError):
        raise result


def _truncation(shown: int, found: int, max_queues: int, complete: bool) -> ProbeError:
    if not complete:
        return ProbeError(
            "queues",
            "truncated",
            f"{shown:,} of at least {found:,} queues shown: discovery stops past max_queues"
            f" ({max_queues:,}); raise max_queues or name the queues to watch in 'queues'",
        )
    return ProbeError(
        "queues",
        "truncated",
        f"{shown:,} of {found:,} queues shown: max_queues is {max_queues:,};"
        " raise it to count them all",
    )


def _int(info: dict[str, Any], key: str) -> int | None:
    value = info.get(key)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _info_from(info: dict[str, Any]) -> RedisInfo:
    aof = info.get("aof_enabled")
    return RedisInfo(
        version=_text(info.get("redis_version")) or _text(str(info.get("redis_version", ""))),
        used_memory=_int(info, "used_memory"),
        maxmemory=_int(info, "maxmemory"),
        maxmemory_policy=_text(info.get("maxmemory_policy")),
        connected_clients=_int(info, "connected_clients"),
        maxclients=_int(info, "maxclients"),
        blocked_clients=_int(info, "blocked_clients"),
        evicted_keys=_int(info, "evicted_keys"),
        rejected_connections=_int(info, "rejected_connections"),
        rdb_last_bgsave_status=_text(info.get("rdb_last_bgsave_status")),
        rdb_changes_since_last_save=_int(info, "rdb_changes_since_last_save"),
        aof_enabled=bool(aof) if aof is not None else None,
        uptime_in_seconds=_int(info, "uptime_in_seconds"),
    )
