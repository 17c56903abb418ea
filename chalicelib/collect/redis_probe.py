"""Everything Doorman reads from Redis in one pipelined round trip.

Two Lua scripts do the work server-side (queue discovery, depths and peeks in one; the
unacked summary in the other) and INFO rides in the same pipeline. Message bodies and the
``unacked`` hash are only ever read inside those scripts.
"""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..model import MessagePeek, ProbeError, QueueRaw, RedisInfo, UnackedEntry, UnackedRaw

PEEK_MAX_BYTES = 1 << 20  # larger messages are counted and fingerprinted, not decoded
MAX_SCAN_ITERATIONS = 200  # x COUNT 1000 keys scanned for binding sets
MAX_UNACKED_ROWS = 200
DEFAULT_PIDBOX_EXCHANGE = "celery.pidbox"


def _script(name: str) -> str:
    return resources.files("chalicelib.collect").joinpath("lua", name).read_text("utf-8")


QUEUES_LUA = _script("queues.lua")
UNACKED_LUA = _script("unacked.lua")
# What EVALSHA calls them: Redis names a script by the SHA-1 of its text.
QUEUES_SHA = hashlib.sha1(QUEUES_LUA.encode(), usedforsecurity=False).hexdigest()
UNACKED_SHA = hashlib.sha1(UNACKED_LUA.encode(), usedforsecurity=False).hexdigest()


def connect(url: str, timeout: float) -> redis.Redis:
    """A client that fails fast: bounded connect and read timeouts, no retries."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        health_check_interval=0,
    )


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


@dataclass(frozen=True)
class RedisResult:
    queues: tuple[QueueRaw, ...]
    worker_names: tuple[str, ...]
    pidbox_exchanges: tuple[str, ...]
    unacked: UnackedRaw | None
    info: RedisInfo
    truncated: bool
    errors: tuple[ProbeError, ...]


class RedisProbe:
    """Reads queues, unacked messages and server health from one Redis."""

    def __init__(self, client: redis.Redis, *, keyprefix: str = "", max_queues: int = 5000):
        self._client = client
        self._prefix = keyprefix
        self._max_queues = max_queues

    def collect(
        self, configured: tuple[str, ...], now: float, visibility_timeout: float
    ) -> RedisResult:
        """One round trip; raises redis errors.

        When Redis does not hold the scripts yet (first use, a restart, SCRIPT FLUSH) they are
        loaded and the round trip repeated.
        """
        results = self._run(configured, now, visibility_timeout)
        if any(_is_noscript(r) for r in results[:2]):
            self._load_scripts()
            results = self._run(configured, now, visibility_timeout)
        queues_raw, unacked_raw, info_raw = results
        errors: list[ProbeError] = []
        if isinstance(queues_raw, Exception):
            raise queues_raw
        decoded = _loads(queues_raw)
        queues = tuple(_queue_from(entry) for entry in _as_list(decoded.get("q")))
        names = tuple(str(n) for n in _as_list(decoded.get("w")))
        pidboxes = tuple(str(x) for x in _as_list(decoded.get("x")))
        unacked = None
        if isinstance(unacked_raw, Exception):
            errors.append(describe_error(unacked_raw, 0))
        else:
            unacked = _unacked_from(_loads(unacked_raw), visibility_timeout)
            if unacked is None:
                errors.append(
                    ProbeError("queue", "wrong_type", "the unacked_index key is not a sorted set")
                )
        if isinstance(info_raw, Exception):
            raise info_raw
        return RedisResult(
            queues=queues,
            worker_names=tuple(dict.fromkeys(names)),
            pidbox_exchanges=tuple(dict.fromkeys(pidboxes)),
            unacked=unacked,
            info=_info_from(info_raw),
            truncated=bool(decoded.get("t")),
            errors=tuple(errors),
        )

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

    def _run(self, configured: tuple[str, ...], now: float, vt: float) -> list[Any]:
        prefix = self._prefix
        pipe = self._client.pipeline(transaction=False)
        pipe.evalsha(
            QUEUES_SHA,
            0,
            prefix,
            MAX_SCAN_ITERATIONS,
            PEEK_MAX_BYTES,
            self._max_queues,
            *configured,
        )
        pipe.evalsha(
            UNACKED_SHA,
            2,
            prefix + "unacked_index",
            prefix + "unacked",
            repr(now),
            repr(vt),
            MAX_UNACKED_ROWS,
            PEEK_MAX_BYTES,
        )
        pipe.info()
        return list(pipe.execute(raise_on_error=False))


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
    priority = raw.get("pr")
    return MessagePeek(
        priority_list=int(raw.get("l", 0)),
        fingerprint=str(raw.get("f", "")),
        size_bytes=int(raw.get("s", 0)),
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
    )


def _queue_from(entry: dict[str, Any]) -> QueueRaw:
    by_priority = {int(k): int(v) for k, v in (entry.get("p") or {}).items()}
    return QueueRaw(
        name=str(entry.get("n", "")),
        depth=int(entry.get("d", 0)),
        depth_by_priority=by_priority,
        oldest=tuple(_peek_from(p) for p in _as_list(entry.get("o"))),
        problem=_text(entry.get("e")),
    )


def _unacked_from(raw: dict[str, Any], vt: float) -> UnackedRaw | None:
    if raw.get("err"):
        return None
    rows = tuple(
        UnackedEntry(
            task_id=_text(r.get("id")),
            task_name=_text(r.get("t")),
            queue=_text(r.get("q")),
            age_sec=float(r.get("a", 0.0)),
        )
        for r in _as_list(raw.get("r"))
    )
    return UnackedRaw(
        total=int(raw.get("n", 0)),
        overdue_total=int(raw.get("o", 0)),
        overdue=rows,
        visibility_timeout_sec=vt,
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
