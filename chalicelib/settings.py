"""Configuration: defaults < YAML config file < environment < command-line flags.

This module reads Doorman's settings from the environment and configuration files (the
demo app, the embedded servers and the audit's NO_COLOR check read their own variables).
Every validation error is a :class:`ConfigError` whose message names the offending key
(or environment variable, or flag) and never repeats a password.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .alert_types import ALERT_TYPE_NAMES, CATALOGUE
from .model import Severity

# Re-exported: it lived here, and callers build Settings with it.
from .thresholds import Thresholds as Thresholds

DEFAULT_REDIS_URL = "redis://localhost:6379/0"


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid; the message names it."""


# --- value parsers -------------------------------------------------------------------------


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
    raise ValueError(f"expected true or false, got {_show(value)}")


def _parse_count(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected a whole number, got {_show(value)}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        number = int(value.strip())
    else:
        raise ValueError(f"expected a whole number, got {_show(value)}")
    if number < 0:
        raise ValueError(f"must not be negative, got {number}")
    return number


def _parse_number(value: Any, noun: str = "a number") -> float:
    """A finite, non-negative number, from a number or its text (bools refused)."""
    if isinstance(value, bool):
        raise ValueError(f"expected {noun}, got {_show(value)}")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError(f"expected {noun}, got {_show(value)}") from None
    else:
        raise ValueError(f"expected {noun}, got {_show(value)}")
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError("must be a finite number")
    if number < 0:
        raise ValueError(f"must not be negative, got {value}")
    return number


def _parse_seconds(value: Any) -> float:
    return _parse_number(value, "a number of seconds")


DAY = 86400.0


def _seconds_between(low: float, high: float) -> Callable[[Any], float]:
    """A number of seconds from ``low`` to ``high`` (absurd values are refused by name)."""

    def parse(value: Any) -> float:
        number = _parse_seconds(value)
        if not low <= number <= high:
            raise ValueError(
                f"must be from {_fmt(low)} to {_fmt(high)} seconds, got {_show(value)}"
            )
        return number

    return parse


def _number_between(low: float, high: float) -> Callable[[Any], float]:
    """A finite number from ``low`` to ``high`` (a percentage, say)."""

    def parse(value: Any) -> float:
        number = _parse_number(value)
        if not low <= number <= high:
            raise ValueError(f"must be from {low:g} to {high:g}, got {_show(value)}")
        return number

    return parse


def _count_between(low: int, high: int) -> Callable[[Any], int]:
    """A whole number from ``low`` to ``high``."""

    def parse(value: Any) -> int:
        number = _parse_count(value)
        if not low <= number <= high:
            raise ValueError(f"must be from {low} to {high:,}, got {number}")
        return number

    return parse


def _fmt(seconds: float) -> str:
    return f"{seconds:g}" if seconds < 1e6 else f"{seconds:.0f}"


T = TypeVar("T")


def _optional(parse: Callable[[Any], T]) -> Callable[[Any], T | None]:
    """``parse``, except that a missing or blank value means "not set" (None)."""

    def parse_optional(value: Any) -> T | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return parse(value)

    return parse_optional


def _parse_text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {_show(value)}")
    return value


def _parse_optional_text(value: Any) -> str | None:
    if value is None:
        return None
    text = _parse_text(value)
    return text or None


def _parse_name(value: Any) -> str:
    text = _parse_text(value).strip()
    if not text:
        raise ValueError("must not be empty")
    return text


# Every alert type's name (the catalogue's), as alert_pending_checks takes them.
ALERT_TYPES = ALERT_TYPE_NAMES
# alert_pending_checks' default, as the configuration table shows it (from the catalogue).
_PENDING_SHOWN = "1 for emergencies and {}, else 2".format(
    ", ".join(f"`{t.value}`" for t, kind in CATALOGUE.items() if kind.pending_checks == 1)
)


# Checks an alert waits for (to fire, to resolve): more than this is never meant.
MAX_CHECKS = 100


def _parse_checks(value: Any) -> int:
    number = _parse_count(value)
    if not 1 <= number <= MAX_CHECKS:
        raise ValueError(f"must be from 1 to {MAX_CHECKS}, got {number}")
    return number


def _parse_pending_checks(value: Any) -> dict[str, int]:
    """``{alert_type: checks}``, or ``type=checks,type=checks`` from the environment."""
    if isinstance(value, str):
        pairs: list[tuple[Any, Any]] = []
        for part in value.split(","):
            if part.strip():
                name, sep, count = part.partition("=")
                if not sep:
                    raise ValueError(f"expected type=checks pairs, got {_show(part.strip())}")
                pairs.append((name.strip(), count.strip()))
    elif isinstance(value, Mapping):
        pairs = list(value.items())
    else:
        raise ValueError(f"expected a mapping of alert type to checks, got {_show(value)}")
    result: dict[str, int] = {}
    for name, count in pairs:
        if name not in ALERT_TYPES:
            raise ValueError(f"unknown alert type {_show(name)}")
        result[name] = _parse_checks(count)
    return result


def _parse_names(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        items: list[Any] = [part for part in value.split(",")]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError(f"expected a list of names, got {_show(value)}")
    names: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"expected a list of names, found {_show(item)}")
        if item.strip():
            names.append(item.strip())
    return tuple(dict.fromkeys(names))


def _parse_separator(value: Any) -> str:
    """kombu's ``sep``: 1 to 16 characters."""
    text = _parse_text(value)
    if not 1 <= len(text) <= 16:
        raise ValueError(f"must be 1 to 16 characters, got {len(text)}")
    return text


def _parse_steps(value: Any) -> tuple[int, ...]:
    """kombu's ``priority_steps``: whole numbers 0 to 255, as a list or "0,3,6,9"."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise ValueError(f"expected a list of whole numbers, got {_show(value)}")
    steps: set[int] = set()
    for item in items:
        try:
            step = int(item.strip()) if isinstance(item, str) else item
        except ValueError:
            raise ValueError(f"expected whole numbers, found {_show(item)}") from None
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= 255:
            raise ValueError(f"expected whole numbers from 0 to 255, found {_show(item)}")
        steps.add(step)
    return tuple(sorted(steps))


def _parse_url(value: Any) -> str:
    if not isinstance(value, str):
        # Never shown: a URL can carry a password.
        raise ValueError(f"expected a URL as text, got a {_type_name(value)}")
    url = value.strip()
    validate_redis_url(url)
    return url


def _parse_secret(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected text, got a {_type_name(value)}")  # the value is a secret
    return value or None


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "number", float: "number", list: "list", dict: "mapping"}.get(
        type(value), type(value).__name__
    )


def _parse_http_url(value: Any) -> str:
    """An http(s) URL with a host; the value is never shown (a webhook URL is a secret)."""
    if not isinstance(value, str):
        raise ValueError(f"expected a URL as text, got a {_type_name(value)}")
    url = value.strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if parts.scheme not in {"http", "https"}:
        raise ValueError("expected an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("has no host name")
    return url


def _parse_auth(value: Any) -> str:
    text = _parse_text(value).strip().lower()
    if text not in {"password", "iam"}:
        raise ValueError(f"expected password or iam, got {_show(value)}")
    return text


def _parse_severity(value: Any) -> Severity:
    levels = tuple(s.value for s in Severity)
    text = _parse_text(value).strip().lower()
    if text not in levels:
        raise ValueError(f"expected one of {', '.join(levels)}, got {_show(value)}")
    return Severity(text)


def _show(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def validate_redis_url(url: str) -> None:
    """Raise ValueError (naming the problem, never the password) unless ``url`` is usable."""
    parse_redis_url(url)


@dataclass(frozen=True)
class RedisUrl:
    """A Redis URL as both of Doorman's clients read it: redis-py (``Redis.from_url``, which
    parses the URL itself) and kombu (remote control, which is handed the same facts in its
    own terms by the worker probe). Only options of :data:`URL_OPTIONS` get this far."""

    scheme: str  # redis, rediss or unix
    # The URL's userinfo@host:port exactly as written (percent-encoding kept): both clients
    # decode it the same way. Empty for a unix socket without credentials.
    netloc: str = field(repr=False)
    socket_path: str | None  # unix:// only, percent-encoded as written
    db: int
    options: Mapping[str, Any]  # every query option but ``db``, parsed to its value
    # sentinel:// only: every Sentinel's (host, port), in the order given; the master's
    # password is the first URL's (Celery's form), the Sentinels' own is sentinel_password.
    sentinels: tuple[tuple[str, int], ...] = ()

    @property
    def has_password(self) -> bool:
        """Whether the URL carries a password (never which)."""
        return bool(urlsplit("//" + self.netloc).password) if "@" in self.netloc else False


@dataclass(frozen=True)
class UrlOption:
    """One query option of a Redis URL.

    ``parse`` turns the text into the value redis-py itself reads from the URL (raising
    ValueError for anything redis-py would misread or that makes no sense for a check);
    ``tls``: only on ``rediss://``; ``kombu``: how remote control gets it, one of ``url``
    (the database: the path of kombu's URL), ``transport`` (a kombu Redis transport option of
    the same name), ``ssl`` (kombu's ``ssl`` mapping, handed to redis-py's SSL connection) or
    ``none`` (not for kombu: see ``why``)."""

    parse: Callable[[str], Any]
    kombu: str
    tls: bool = False
    why: str = ""


# The smallest and largest value of a Redis timeout (seconds), in the URL or the settings.
REDIS_TIMEOUT_RANGE = (0.1, 30.0)
_TRUE_WORDS = {"1", "t", "true", "y", "yes"}
# redis-py's to_bool: these are False, anything else is True ("off" would be True there).
_FALSE_WORDS = {"0", "f", "false", "n", "no"}
_DIGITS = re.compile(r"[0-9]{1,9}")


def _url_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in _TRUE_WORDS:
        return True
    if lowered in _FALSE_WORDS:
        return False
    raise ValueError("expected one of 1, 0, true, false, yes, no, t, f, y, n")


def _url_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not _DIGITS.fullmatch(text) or not low <= int(text) <= high:
            raise ValueError(f"expected a whole number from {low} to {high}")
        return int(text)

    return parse


def _url_seconds(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not low <= number <= high:  # NaN fails too
            raise ValueError(f"expected seconds from {low:g} to {high:g}")
        return number

    return parse


def _url_choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return text

    return parse


def _url_path(text: str) -> str:
    if not text or "\x00" in text:
        raise ValueError("expected a file path")
    return text


# Every query option a Redis URL may carry, each working on both connections; any other
# option is refused at load time. (redis-py reads the values from the URL itself, and its
# query options win over the keyword arguments Doorman passes.)
URL_OPTIONS: dict[str, UrlOption] = {
    "db": UrlOption(_url_int(0, 2**31 - 1), "url"),
    "socket_timeout": UrlOption(_url_seconds(*REDIS_TIMEOUT_RANGE), "transport"),
    "socket_connect_timeout": UrlOption(_url_seconds(*REDIS_TIMEOUT_RANGE), "transport"),
    "socket_keepalive": UrlOption(_url_bool, "transport"),
    "health_check_interval": UrlOption(_url_int(0, 3600), "transport"),
    "max_connections": UrlOption(_url_int(1, 10_000), "transport"),
    "retry_on_timeout": UrlOption(
        _url_bool, "none", why="Doorman never retries within a check (redis-py: 0 retries)"
    ),
    "protocol": UrlOption(
        _url_choice("2", "3"), "none", why="kombu's Redis transport speaks RESP2 only"
    ),
    # redis-py takes exactly these three words (kombu also takes CERT_*; redis-py does not).
    "ssl_cert_reqs": UrlOption(_url_choice("none", "optional", "required"), "ssl", tls=True),
    "ssl_ca_certs": UrlOption(_url_path, "ssl", tls=True),
    "ssl_certfile": UrlOption(_url_path, "ssl", tls=True),
    "ssl_keyfile": UrlOption(_url_path, "ssl", tls=True),
    "ssl_ca_path": UrlOption(_url_path, "ssl", tls=True),
    "ssl_check_hostname": UrlOption(_url_bool, "ssl", tls=True),
}


def parse_redis_url(url: str) -> RedisUrl:
    """``url`` read once for both clients; raises ValueError naming the problem (and the
    option), never the password."""
    if url[:11].lower() == "sentinel://":
        return _parse_sentinel_url(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError("is not a URL") from None
    if parts.scheme not in {"redis", "rediss", "unix"}:
        raise ValueError(
            f"unsupported scheme {parts.scheme!r} (expected redis://, rediss://, unix:// or"
            " sentinel://)"
        )
    if parts.fragment or url.endswith("#"):
        # Not shown: a '#' in an unescaped password starts a fragment.
        raise ValueError("has a '#' (a fragment); escape a '#' in the password as %23")
    options = _parse_query(parts.scheme, parts.query)
    query_db = options.pop("db", None)
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("unix:// URL has no socket path")
        return RedisUrl("unix", parts.netloc, parts.path, query_db or 0, options)
    if not parts.hostname:
        raise ValueError("has no host name")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has a port that is not a number from 1 to 65535") from None
    if port is not None and not 0 < port < 65536:
        raise ValueError("has a port that is not a number from 1 to 65535")
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    path_db: int | None = None
    if path:
        if not _DIGITS.fullmatch(path):
            # Not echoed: a password holding an unescaped '@' and '/' ends up in the path.
            raise ValueError("has a database (the path after the host) that is not a number")
        path_db = int(path)
    if path_db is not None and query_db is not None and path_db != query_db:
        raise ValueError("names two databases (the path and the option 'db')")
    db = query_db if query_db is not None else path_db
    return RedisUrl(parts.scheme, parts.netloc, None, db or 0, options)


SENTINEL_PORT = 26379


def _parse_sentinel_url(url: str) -> RedisUrl:
    """Celery's Sentinel form ``sentinel://[:pw@]host[:port][/db];sentinel://host2[:port]``;
    raises ValueError naming the problem, never the password."""
    sentinels: list[tuple[str, int]] = []
    first: Any = None
    for index, part in enumerate(url.split(";")):
        try:
            parts = urlsplit(part.strip())
            port = parts.port
        except ValueError:
            raise ValueError(f"Sentinel {index + 1}: is not a URL with a port number") from None
        if parts.scheme.lower() != "sentinel":
            raise ValueError(f"Sentinel {index + 1}: every part must be a sentinel:// URL")
        if not parts.hostname:
            raise ValueError(f"Sentinel {index + 1}: has no host name")
        if parts.query or parts.fragment:
            raise ValueError(f"Sentinel {index + 1}: options are not supported on sentinel://")
        sentinels.append((parts.hostname, port or SENTINEL_PORT))
        if first is None:
            first = parts
    assert first is not None
    path = first.path[1:] if first.path.startswith("/") else first.path
    if path and not _DIGITS.fullmatch(path):
        raise ValueError("has a database (the path after the host) that is not a number")
    return RedisUrl("sentinel", first.netloc, None, int(path or 0), {}, tuple(sentinels))


def _parse_query(scheme: str, query: str) -> dict[str, Any]:
    """The query options, parsed; raises ValueError naming an unknown, repeated or invalid
    option and the allowed values (never the value given: a path may be private)."""
    from urllib.parse import parse_qsl

    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ValueError("has a query string that cannot be parsed") from None
    found: dict[str, Any] = {}
    for name, value in pairs:
        option = URL_OPTIONS.get(name)
        if option is None or (option.tls and scheme != "rediss"):
            shown = name[:30].encode("unicode_escape").decode("ascii")
            where = " (TLS options need rediss://)" if option is not None else ""
            raise ValueError(f"has an unsupported option {shown!r} in its query string{where}")
        if name in found:
            # redis-py reads the first, kombu the last: one of them would be wrong.
            raise ValueError(f"has the option {name!r} twice")
        try:
            found[name] = option.parse(value)
        except ValueError as exc:
            raise ValueError(f"has an invalid value for the option {name!r}: {exc}") from None
    return found


# --- the schema ------------------------------------------------------------------------------


def _parse_targets(value: Any) -> tuple[dict[str, Any], ...]:
    """A list of target mappings (JSON text from the environment), each flattened to dotted
    keys; the values are parsed by :func:`load_targets` with the shared settings' parsers."""
    if isinstance(value, str):
        import json

        if not value.strip():
            return ()
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError("is not valid JSON") from None
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list of targets, got {_type_name(value)}")
    targets: list[dict[str, Any]] = []
    for index, entry in enumerate(value):
        if not isinstance(entry, Mapping):
            raise ValueError(f"item {index}: expected a mapping, got {_type_name(entry)}")
        flat: dict[str, Any] = {}
        for key, raw in entry.items():
            if key == "thresholds" and isinstance(raw, Mapping):
                flat.update({f"thresholds.{k}": v for k, v in raw.items()})
            else:
                flat[str(key)] = raw
        unknown = sorted(k for k in flat if k not in TARGET_KEYS)
        if unknown:
            raise ValueError(f"item {index}: unknown key {_quote(unknown[0])}")
        if "name" not in flat:
            raise ValueError(f"item {index}: has no 'name'")
        targets.append(flat)
    return tuple(targets)


@dataclass(frozen=True)
class Setting:
    """How one setting is read: its config key, its environment variable, its parser (which
    returns the final value or raises ValueError with the reason), its help, and whether one
    entry of ``targets`` may set it. ``form`` is how the environment writes a list
    (``comma-separated``), ``shown`` the default in words where the value alone says too
    little (``learned``)."""

    key: str
    env: str | None
    parse: Callable[[Any], Any]
    help: str = ""
    per_target: bool = False
    form: str = ""
    shown: str = ""


_SPEC = "doorman.setting"


def _setting(
    default: Any,
    parse: Callable[[Any], Any],
    env: str | None,
    help: str = "",
    *,
    key: str = "",
    per_target: bool = False,
    secret: bool = False,
    form: str = "",
    shown: str = "",
) -> Any:
    """A dataclass field declaring its setting (``key``: the config key when it is not the
    field's name; ``secret``: kept out of repr()). Returns a ``dataclasses.field``; a
    callable ``default`` is a factory."""
    spec = Setting(key, env, parse, help, per_target, form, shown)
    if callable(default):
        return field(default_factory=default, repr=not secret, metadata={_SPEC: spec})
    return field(default=default, repr=not secret, metadata={_SPEC: spec})


# Each key of a section (``thresholds.*``): the section's own dataclass holds the defaults.
_THRESHOLDS = {
    "max_queue_size": Setting(
        "", "MAX_QUEUE_SIZE", _count_between(0, 10**9), "tasks pending in all queues", True
    ),
    "max_wait_time_seconds": Setting(
        "", "MAX_WAIT_TIME", _seconds_between(0, 365 * DAY), "age of the oldest waiting task", True
    ),
    "max_task_runtime_seconds": Setting(
        "",
        "MAX_TASK_RUNTIME",
        _seconds_between(0, 365 * DAY),
        "a running task older than this is stuck",
        True,
    ),
    "critical_queues": Setting(
        "", "DOORMAN_CRITICAL_QUEUES", _parse_names, "queues whose latency is critical", True
    ),
    "max_failure_rate_pct": Setting(
        "",
        "MAX_FAILURE_RATE",
        _number_between(0, 100),
        "a task name's failure rate (%) over failure_window_seconds (needs the companion)",
        True,
    ),
    "min_task_volume": Setting(
        "",
        "DOORMAN_MIN_TASK_VOLUME",
        _count_between(1, 10**9),
        "runs of a task name in the window before its failure rate counts",
        True,
    ),
}


@dataclass(frozen=True)
class Settings:
    """Every setting, each declared once: its field carries key, environment, parser, help."""

    # URLs may hold a password: kept out of repr() like every other secret here.
    redis_url: str = _setting(
        DEFAULT_REDIS_URL,
        _parse_url,
        "REDIS_URL",
        "the Redis to watch",
        per_target=True,
        secret=True,
    )
    celery_broker_url: str | None = _setting(
        None,
        _optional(_parse_url),
        "CELERY_BROKER_URL",
        "where Celery's queues are (used for everything when set)",
        per_target=True,
        secret=True,
        shown="`redis_url`",
    )
    target: str = _setting(
        "default", _parse_name, "DOORMAN_TARGET", "the name of this cluster in reports"
    )
    check_interval_seconds: float = _setting(
        30.0,
        _seconds_between(1, DAY),
        "CHECK_INTERVAL",
        "seconds between checks without `--once`",
    )
    monitored_queues: tuple[str, ...] = _setting(
        (),
        _parse_names,
        "DOORMAN_MONITORED_QUEUES",
        "queues always reported",
        per_target=True,
        form="comma-separated",
        shown="discover",
    )
    global_keyprefix: str = _setting(
        "",
        _parse_text,
        "DOORMAN_GLOBAL_KEYPREFIX",
        "kombu's key prefix (`global_keyprefix` transport option)",
        per_target=True,
        shown="learned",
    )
    # kombu's "sep" and "priority_steps" transport options; None: learned from the workers.
    priority_separator: str | None = _setting(
        None,
        _optional(_parse_separator),
        "DOORMAN_PRIORITY_SEPARATOR",
        "kombu's `sep` transport option (1–16 characters)",
        per_target=True,
        shown="learned",
    )
    priority_steps: tuple[int, ...] | None = _setting(
        None,
        _optional(_parse_steps),
        "DOORMAN_PRIORITY_STEPS",
        "kombu's `priority_steps` transport option (0–255)",
        per_target=True,
        form="`0,3,6,9`",
        shown="learned",
    )
    sanitize_task_signatures: bool = _setting(
        True,
        _parse_bool,
        "DOORMAN_SANITIZE_TASK_SIGNATURES",
        "scrub task and queue names",
        key="privacy.sanitize_task_signatures",
    )
    thresholds: Thresholds = field(default_factory=Thresholds, metadata={_SPEC: _THRESHOLDS})
    alert_cooldown_seconds: float = _setting(
        300.0,
        _seconds_between(0, 7 * DAY),
        "ALERT_COOLDOWN",
        "quiet time between repeats of an alert",
    )
    alert_pending_checks: dict[str, int] = _setting(
        dict,
        _parse_pending_checks,
        "DOORMAN_ALERT_PENDING_CHECKS",
        "breaching checks before an alert fires",
        form="`type=n,...`",
        shown=_PENDING_SHOWN,
    )
    alert_resolve_after_checks: int = _setting(
        2,
        _parse_checks,
        "DOORMAN_ALERT_RESOLVE_AFTER",
        "clean checks before a firing alert resolves",
    )
    hash_secret: str | None = _setting(
        None,
        _parse_secret,
        "DOORMAN_HASH_SECRET",
        "key of the `w-`/`t-` hashes",
        secret=True,
        shown="kept beside the state",
    )
    state_path: str | None = _setting(
        None,
        _parse_optional_text,
        "DOORMAN_STATE",
        "the local state file",
        shown="`~/.local/state/doorman/state.db`",
    )
    visibility_timeout_seconds: float | None = _setting(
        None,
        _optional(_seconds_between(1, 365 * DAY)),
        "DOORMAN_VISIBILITY_TIMEOUT",
        "for orphan detection",
        shown="learned from workers, else 3600",
    )
    redis_timeout_seconds: float = _setting(
        2.0,
        _seconds_between(*REDIS_TIMEOUT_RANGE),
        "DOORMAN_REDIS_TIMEOUT",
        "connect and read timeout for Redis (no retries)",
    )
    # Below 0.1 s no worker can answer (a false "all workers down"); above 30 s a check hangs.
    worker_timeout_seconds: float = _setting(
        1.0,
        _seconds_between(0.1, 30),
        "DOORMAN_WORKER_TIMEOUT",
        "how long a worker may take to answer",
    )
    worker_discovery_interval_seconds: float = _setting(
        600.0,
        _seconds_between(0, 7 * DAY),
        "DOORMAN_WORKER_DISCOVERY",
        "between discovery broadcasts",
    )
    worker_forget_after_seconds: float = _setting(
        3600.0,
        _seconds_between(1, 30 * DAY),
        "DOORMAN_WORKER_FORGET_AFTER",
        "silent workers are forgotten after this",
    )
    failure_window_seconds: float = _setting(
        300.0,
        _seconds_between(60, DAY),
        "DOORMAN_FAILURE_WINDOW",
        "the window of task outcomes the failure rate is taken over (needs the companion)",
        per_target=True,
    )
    worker_detail_interval_seconds: float = _setting(
        300.0,
        _seconds_between(0, DAY),
        "DOORMAN_WORKER_DETAIL_INTERVAL",
        "how long the worker detail (pool size, counters, uptime, reserved/scheduled counts,"
        " queues) is reused",
    )
    max_queues: int = _setting(
        5000,
        _count_between(1, 100_000),
        "DOORMAN_MAX_QUEUES",
        "queues reported at most; more are named in `errors[]` (`truncated`)",
    )
    # Queues whose depth and latency are CloudWatch metrics (two billed series each), for
    # alarms; every other figure stays in the check's log line.
    metric_queues: tuple[str, ...] = _setting(
        (),
        _parse_names,
        "DOORMAN_METRIC_QUEUES",
        "queues whose depth and latency are CloudWatch metrics (2 series, $0.60 a month each)",
        per_target=True,
    )
    # Notification channels. URLs and keys are secrets: kept out of repr, never printed.
    slack_webhook_url: str | None = _setting(
        None,
        _optional(_parse_http_url),
        "SLACK_WEBHOOK_URL",
        "Slack incoming webhook (a secret)",
        secret=True,
    )
    pagerduty_routing_key: str | None = _setting(
        None,
        _parse_secret,
        "PAGERDUTY_ROUTING_KEY",
        "Events API v2 integration key (a secret)",
        secret=True,
    )
    pagerduty_events_url: str = _setting(
        "https://events.pagerduty.com/v2/enqueue",
        _parse_http_url,
        "PAGERDUTY_EVENTS_URL",
        "PagerDuty Events API endpoint",
    )
    generic_webhook_url: str | None = _setting(
        None,
        _optional(_parse_http_url),
        "GENERIC_WEBHOOK_URL",
        "receives the alert document as JSON (user info in the URL: HTTP Basic auth)",
        secret=True,
    )
    generic_webhook_secret: str | None = _setting(
        None,
        _parse_secret,
        "GENERIC_WEBHOOK_SECRET",
        "signs webhook bodies (optional)",
        secret=True,
    )
    slack_min_severity: Severity = _setting(
        Severity.INFO, _parse_severity, "DOORMAN_SLACK_MIN_SEVERITY", "least severity sent to Slack"
    )
    pagerduty_min_severity: Severity = _setting(
        Severity.WARNING,
        _parse_severity,
        "DOORMAN_PAGERDUTY_MIN_SEVERITY",
        "least severity sent to PagerDuty; resolves always go",
    )
    slack_url_param: str | None = _setting(
        None,
        _parse_optional_text,
        "DOORMAN_SLACK_URL_PARAM",
        "Lambda: SSM SecureString holding the Slack URL",
    )
    pagerduty_key_param: str | None = _setting(
        None,
        _parse_optional_text,
        "DOORMAN_PAGERDUTY_KEY_PARAM",
        "Lambda: SSM SecureString holding the routing key",
    )
    # AWS (Lambda): the state table, the alert topic, the hash secret's SSM parameter, the
    # seconds one target's check may take in a scheduled invocation, and whether the
    # dispatcher reports partial batch failures (the stream's event source mapping must then
    # have FunctionResponseTypes=ReportBatchItemFailures) or fails the whole batch.
    table_name: str | None = _setting(
        None, _parse_optional_text, "DOORMAN_TABLE", "DynamoDB state table (AWS)"
    )
    topic_arn: str | None = _setting(
        None, _parse_optional_text, "DOORMAN_TOPIC_ARN", "SNS alert topic (AWS)"
    )
    hash_secret_param: str | None = _setting(
        None,
        _parse_optional_text,
        "DOORMAN_HASH_SECRET_PARAM",
        "SSM SecureString with the hash secret",
    )
    check_budget_seconds: float = _setting(
        25.0,
        _seconds_between(1, 900),
        "DOORMAN_CHECK_BUDGET",
        "seconds one target's check may take",
    )
    dispatch_partial_batch: bool = _setting(
        False,
        _parse_bool,
        "DOORMAN_DISPATCH_PARTIAL_BATCH",
        "report partial stream batch failures",
    )
    # How Doorman reaches and authenticates to the broker: "password" (the URL's own, if
    # any) or "iam" (an ElastiCache IAM token signed with the function's role, for the
    # ElastiCache user ``elasticache_user_id`` of the cache or replication group
    # ``elasticache_cache``); ``sentinel_master_name`` and ``sentinel_password`` with a
    # ``sentinel://`` URL.
    redis_auth: str = _setting(
        "password",
        _parse_auth,
        "DOORMAN_REDIS_AUTH",
        "`iam`: ElastiCache IAM authentication"
        " (see [Running with least privilege](#running-with-least-privilege))",
    )
    elasticache_user_id: str | None = _setting(
        None,
        _parse_optional_text,
        "DOORMAN_ELASTICACHE_USER",
        "the ElastiCache user the IAM token is for",
    )
    elasticache_cache: str | None = _setting(
        None,
        _parse_optional_text,
        "DOORMAN_ELASTICACHE_CACHE",
        "the replication group or serverless cache the IAM token is for",
    )
    elasticache_serverless: bool = _setting(
        False,
        _parse_bool,
        "DOORMAN_ELASTICACHE_SERVERLESS",
        "whether that cache is serverless (IAM auth)",
    )
    elasticache_region: str | None = _setting(
        None,
        _parse_optional_text,
        "DOORMAN_ELASTICACHE_REGION",
        "the region the IAM token is signed for",
    )
    sentinel_master_name: str | None = _setting(
        None,
        _parse_optional_text,
        "DOORMAN_SENTINEL_MASTER",
        "Sentinel master name (with a `sentinel://` URL)",
    )
    sentinel_password: str | None = _setting(
        None,
        _parse_secret,
        "DOORMAN_SENTINEL_PASSWORD",
        "password of the Sentinels (a secret)",
        secret=True,
    )

    @property
    def broker_url(self) -> str:
        """The URL of the Redis that holds Celery's queues (the broker, else ``redis_url``)."""
        return self.celery_broker_url or self.redis_url

    @property
    def default_state_path(self) -> str:
        if self.state_path:
            return self.state_path
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return str(Path(base) / "doorman" / "state.db")


# Not a field: the list of targets one Lambda checks, each entry over the shared settings.
TARGETS = Setting(
    "targets",
    "DOORMAN_TARGETS",
    _parse_targets,
    "clusters checked by one Lambda (JSON list; each entry: `name` and the per-target keys)",
)


@dataclass(frozen=True)
class Declared:
    """One config key as :func:`declared` lists it: where it lands in Settings, its
    declaration and its default."""

    key: str
    section: str | None  # the field of Settings holding a section (``thresholds``), else None
    name: str  # the attribute (of Settings, or of the section)
    spec: Setting
    default: Any


def _default(f: Field[Any]) -> Any:
    """The default of a dataclass field (made by its factory when it has one)."""
    return f.default_factory() if callable(f.default_factory) else f.default


def _declared_fields() -> list[Declared]:
    """Every key a field of Settings declares (a section's keys one by one), in order."""
    found: list[Declared] = []
    for f in fields(Settings):
        spec = f.metadata[_SPEC]
        if isinstance(spec, Setting):
            found.append(Declared(spec.key or f.name, None, f.name, spec, _default(f)))
            continue
        section_defaults = _default(f)
        for name, sub in spec.items():
            key = f"{f.name}.{name}"
            found.append(Declared(key, f.name, name, sub, getattr(section_defaults, name)))
    return found


def declared() -> tuple[Declared, ...]:
    """Every config key in the order it is read: Settings' fields, ``targets`` after
    ``dispatch_partial_batch`` (where it always was)."""
    found = _declared_fields()
    at = next(i for i, d in enumerate(found) if d.key == "dispatch_partial_batch") + 1
    found.insert(at, Declared(TARGETS.key, None, TARGETS.key, TARGETS, ()))
    return tuple(found)


_DECLARED = declared()
# Generated from the declarations: the parser of each key, where its value goes, and the
# sections (a key ``section.name`` fills the section's dataclass).
_FIELDS: dict[str, Setting] = {d.key: d.spec for d in _DECLARED}
_ATTRS: dict[str, tuple[str | None, str]] = {d.key: (d.section, d.name) for d in _DECLARED}
_SECTIONS: dict[str, type[Thresholds]] = {"thresholds": Thresholds}

# What one entry of ``targets`` may set; everything else comes from the shared settings.
TARGET_KEYS = frozenset({"name", *(d.key for d in _DECLARED if d.spec.per_target)})


def show_default(value: Any) -> str:
    """A default as the configuration table writes it: numbers and booleans bare, text in
    backticks, nothing set as ``none``."""
    if value is None or value == () or value == {} or value == "":
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, tuple):
        return ", ".join(f"`{item}`" for item in value)
    return f"`{value}`"


def config_table() -> list[str]:
    """The configuration table (markdown, one row per key): key, environment variable (with
    the form a list takes there), default and meaning, all from the declarations."""
    rows = ["| key | environment | default | meaning |", "|---|---|---|---|"]
    for d in _DECLARED:
        env = f"`{d.spec.env}`" if d.spec.env else ""
        if d.spec.form:
            env += f" ({d.spec.form})"
        default = d.spec.shown or show_default(d.default)
        rows.append(f"| `{d.key}` | {env} | {default} | {d.spec.help} |")
    return rows


CONFIG_ENV = "DOORMAN_CONFIG"

# Command-line flags whose names differ from their key (named in error messages).
FLAGS = {"state_path": "--state", "check_interval_seconds": "--interval"}


def env_names() -> dict[str, str]:
    """Map each config key to the environment variable that sets it."""
    return {key: spec.env for key, spec in _FIELDS.items() if spec.env}


def _quote(key: str) -> str:
    """A key as written in a message: quoted, on one line, and not endless."""
    shown = key if len(key) <= 60 else key[:57] + "..."
    return "'" + shown.encode("unicode_escape").decode("ascii").replace("'", "\\'") + "'"


def _flatten(data: Mapping[str, Any], prefix: str, source: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise ConfigError(f"{source}: key {_show(key)} is not text")
        dotted = f"{prefix}{key}"
        if dotted in _FIELDS:
            flat[dotted] = value
            continue
        section = any(name.startswith(dotted + ".") for name in _FIELDS)
        if not section:
            raise ConfigError(f"{source}: unknown key {_quote(dotted)}{_suggest(dotted)}")
        if value is None:
            continue  # an empty section (every key under it commented out)
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"{source}: {dotted}: expected a mapping of keys, got {_type_name(value)}"
            )
        flat.update(_flatten(value, dotted + ".", source))
    return flat


def _suggest(key: str) -> str:
    import difflib

    close = difflib.get_close_matches(key, list(_FIELDS), n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


def read_config_file(path: str) -> dict[str, Any]:
    """Return the flattened keys of a YAML config file; raises ConfigError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path}: is not UTF-8 text") from None
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path}: is not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {path}: must hold a mapping of keys, not a list or value")
    return _flatten(data, "", f"config file {path}")


def load_settings(
    *,
    config_path: str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build Settings from defaults, a config file, the environment and flag overrides.

    ``overrides`` maps config keys (dotted) to values given on the command line; a key whose
    value is None is not overriding. Raises ConfigError naming the key on any invalid value.
    """
    values = _values(config_path=config_path, environ=environ, overrides=overrides)
    values.pop("targets", None)  # the command line checks one target; see load_targets
    return _build(values)


def _values(
    *,
    config_path: str | None,
    environ: Mapping[str, str] | None,
    overrides: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Every key set by a layer, parsed: the winning value of each."""
    env = os.environ if environ is None else environ
    # Each key's raw value and where it came from; a higher layer replaces a lower one, and
    # only the value that wins is parsed (a bad value that is overridden is no error).
    raw_values: dict[str, tuple[Any, str]] = {}

    path = config_path or env.get(CONFIG_ENV) or None
    if path:
        try:
            flat = read_config_file(path)
        except ConfigError as exc:
            if config_path:
                raise
            raise ConfigError(f"{CONFIG_ENV}: {exc}") from None
        for key, raw in flat.items():
            raw_values[key] = (raw, f"config file {path}: {key}")

    for key, spec in _FIELDS.items():
        if spec.env and spec.env in env:
            raw_values[key] = (env[spec.env], f"{spec.env} ({key})")

    for key, raw in (overrides or {}).items():
        if raw is None:
            continue
        if key not in _FIELDS:
            raise ConfigError(f"unknown setting {_quote(key)}")
        flag = FLAGS.get(key, "--" + key.replace("_", "-").replace(".", "-"))
        raw_values[key] = (raw, f"{flag} ({key})")

    values = {key: _convert(key, raw, where) for key, (raw, where) in raw_values.items()}
    return values


def load_targets(
    *,
    config_path: str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> list[Settings]:
    """The Settings of every target to check: one per entry of ``targets`` (config file key,
    or ``DOORMAN_TARGETS`` as JSON), each entry's keys over the shared settings; without a
    list, the one target :func:`load_settings` describes. Raises ConfigError naming the entry
    and key."""
    values = _values(config_path=config_path, environ=environ, overrides=overrides)
    entries: tuple[dict[str, Any], ...] = values.pop("targets", ())
    if not entries:
        return [_build(values)]
    found: list[Settings] = []
    names: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"targets[{index}]"
        name = _convert("target", entry["name"], f"{where}.name")
        if name in names:
            raise ConfigError(f"{where}.name: target {_show(name)} is listed twice")
        names.add(name)
        own = {
            key: _convert(key, raw, f"{where} ({name}).{key}")
            for key, raw in entry.items()
            if key != "name"
        }
        found.append(_build({**values, **own, "target": name}))
    return found


def _convert(key: str, raw: Any, where: str) -> Any:
    try:
        return _FIELDS[key].parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _build(values: Mapping[str, Any]) -> Settings:
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    for key, value in values.items():
        section, name = _ATTRS[key]
        (sections[section] if section else top)[name] = value
    built: dict[str, Any] = {name: kind(**sections[name]) for name, kind in _SECTIONS.items()}
    settings = Settings(**built, **top)
    _check_access(settings)
    return settings


def _check_access(settings: Settings) -> None:
    """Refuse broker access settings that cannot work together; raises ConfigError."""
    url = parse_redis_url(settings.broker_url)
    if url.scheme == "sentinel" and not settings.sentinel_master_name:
        raise ConfigError(
            "sentinel_master_name (DOORMAN_SENTINEL_MASTER): required with a sentinel:// URL"
        )
    if url.scheme != "sentinel" and settings.sentinel_master_name:
        raise ConfigError(
            "sentinel_master_name (DOORMAN_SENTINEL_MASTER): set, but the broker URL is not"
            " a sentinel:// URL"
        )
    if settings.redis_auth != "iam":
        return
    for key, env in (
        ("elasticache_user_id", "DOORMAN_ELASTICACHE_USER"),
        ("elasticache_cache", "DOORMAN_ELASTICACHE_CACHE"),
    ):
        if not getattr(settings, key):
            raise ConfigError(f"{key} ({env}): required with redis_auth: iam")
    if url.has_password:
        # The token is the password: one in the URL too would sit in the environment.
        raise ConfigError(
            "redis_auth: iam: the broker URL must carry no password (the IAM token is used)"
        )


# --- deployment wiring -------------------------------------------------------------------------

# The value .chalice/config.json holds until scripts/deploy fills in the stack's outputs.
DEPLOY_PLACEHOLDER = "set-by-scripts/deploy"
# Used only when app.py is imported outside Chalice's commands and Lambda (tests, local tools):
# Chalice never reads them there.
UNSET_STREAM_ARN = "arn:aws:dynamodb:us-east-1:000000000000:table/doorman-unset/stream/unset"
UNSET_TOPIC_ARN = "arn:aws:sns:us-east-1:000000000000:doorman-unset"
_PARTITION_REGION_ACCOUNT = r"arn:aws(?:-[a-z]+)*:{service}:[a-z]{{2}}(?:-[a-z]+)+-\d:\d{{12}}:"
_ARN_FORMS = {
    "DOORMAN_STREAM_ARN": (
        "a DynamoDB stream ARN (arn:aws:dynamodb:<region>:<account>:table/<table>/stream/<label>)",
        re.compile(
            _PARTITION_REGION_ACCOUNT.format(service="dynamodb")
            + r"table/[A-Za-z0-9_.-]{3,255}/stream/[A-Za-z0-9_.:-]{1,64}"
        ),
    ),
    "DOORMAN_TOPIC_ARN": (
        "an SNS topic ARN (arn:aws:sns:<region>:<account>:<topic>)",
        re.compile(
            _PARTITION_REGION_ACCOUNT.format(service="sns") + r"[A-Za-z0-9_-]{1,256}(?:\.fifo)?"
        ),
    ),
}


@dataclass(frozen=True)
class EventSources:
    """What Chalice's decorators subscribe to, fixed when ``app.py`` is imported: by
    ``chalice deploy``/``package`` (the stage's environment variables) and in Lambda."""

    stream_arn: str
    topic: str


def event_sources(environ: Mapping[str, str] | None = None) -> EventSources:
    """The outbox stream and the alert topic from DOORMAN_STREAM_ARN and DOORMAN_TOPIC_ARN.

    Raises ConfigError naming the variable when a value is the deploy placeholder or not an
    ARN of its kind, or when it is unset under a Chalice command (AWS_CHALICE_CLI_MODE) or in
    Lambda: Chalice creates the functions one by one, so a bad event source found by AWS
    would leave a half-deployed stage; found here, nothing is created."""
    env = os.environ if environ is None else environ
    deploying = bool(env.get("AWS_CHALICE_CLI_MODE") or env.get("AWS_LAMBDA_FUNCTION_NAME"))
    values: dict[str, str] = {}
    for name, (form, pattern) in _ARN_FORMS.items():
        value = env.get(name, "")
        if not value:
            if deploying:
                raise ConfigError(f"{name} is not set: it must be {form}")
        elif value == DEPLOY_PLACEHOLDER:
            raise ConfigError(
                f"{name} is still the placeholder {DEPLOY_PLACEHOLDER!r}: deploy with "
                "scripts/deploy, which fills it in from the stack's outputs"
            )
        elif not pattern.fullmatch(value):
            shown = value[:120].encode("unicode_escape").decode("ascii")
            raise ConfigError(f"{name} is not {form}: {shown!r}")
        values[name] = value
    return EventSources(
        stream_arn=values["DOORMAN_STREAM_ARN"] or UNSET_STREAM_ARN,
        topic=values["DOORMAN_TOPIC_ARN"] or UNSET_TOPIC_ARN,
    )
