"""Configuration: defaults < YAML config file < environment < command-line flags.

This module is the only reader of ``os.environ`` and of configuration files. Every
validation error is a :class:`ConfigError` whose message names the offending key
(or environment variable, or flag) and never repeats a password.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

DEFAULT_REDIS_URL = "redis://localhost:6379/0"


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid; the message names it."""


@dataclass(frozen=True)
class Thresholds:
    max_queue_size: int = 1000
    max_wait_time_seconds: float = 60.0
    max_task_runtime_seconds: float = 1800.0
    critical_queues: tuple[str, ...] = ()


@dataclass(frozen=True)
class Settings:
    # URLs may hold a password: kept out of repr() like every other secret here.
    redis_url: str = field(default=DEFAULT_REDIS_URL, repr=False)
    celery_broker_url: str | None = field(default=None, repr=False)
    target: str = "default"
    check_interval_seconds: float = 30.0
    monitored_queues: tuple[str, ...] = ()
    global_keyprefix: str = ""
    sanitize_task_signatures: bool = True
    thresholds: Thresholds = field(default_factory=Thresholds)
    alert_cooldown_seconds: float = 300.0
    alert_pending_checks: dict[str, int] = field(default_factory=dict)
    alert_resolve_after_checks: int = 2
    hash_secret: str | None = field(default=None, repr=False)
    state_path: str | None = None
    visibility_timeout_seconds: float | None = None
    redis_timeout_seconds: float = 2.0
    worker_timeout_seconds: float = 1.0
    worker_discovery_interval_seconds: float = 600.0
    worker_forget_after_seconds: float = 3600.0
    worker_detail_interval_seconds: float = 300.0
    max_queues: int = 5000
    # Notification channels. URLs and keys are secrets: kept out of repr, never printed.
    slack_webhook_url: str | None = field(default=None, repr=False)
    pagerduty_routing_key: str | None = field(default=None, repr=False)
    pagerduty_events_url: str = "https://events.pagerduty.com/v2/enqueue"
    generic_webhook_url: str | None = field(default=None, repr=False)
    generic_webhook_secret: str | None = field(default=None, repr=False)
    slack_min_severity: str = "info"
    pagerduty_min_severity: str = "warning"
    slack_url_param: str | None = None
    pagerduty_key_param: str | None = None
    # AWS (Lambda): the state table, the alert topic, the hash secret's SSM parameter, the
    # seconds one target's check may take in a scheduled invocation, and whether the
    # dispatcher reports partial batch failures (the stream's event source mapping must then
    # have FunctionResponseTypes=ReportBatchItemFailures) or fails the whole batch.
    table_name: str | None = None
    topic_arn: str | None = None
    hash_secret_param: str | None = None
    check_budget_seconds: float = 25.0
    dispatch_partial_batch: bool = False

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


def _parse_seconds(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number of seconds, got {_show(value)}")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError(f"expected a number of seconds, got {_show(value)}") from None
    else:
        raise ValueError(f"expected a number of seconds, got {_show(value)}")
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError("must be a finite number")
    if number < 0:
        raise ValueError(f"must not be negative, got {value}")
    return number


def _parse_positive_seconds(value: Any) -> float:
    number = _parse_seconds(value)
    if number <= 0:
        raise ValueError("must be greater than zero")
    return number


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


ALERT_TYPES = (
    "redis_unreachable",
    "celery_disconnected",
    "workers_down",
    "worker_offline",
    "backlog_explosion",
    "high_latency",
    "stuck_task",
    "queue_growing",
    "ghost_workers",
    "saturation_high",
    "orphaned_tasks",
    "redis_memory",
    "config_risk",
)


def _parse_checks(value: Any) -> int:
    number = _parse_count(value)
    if number < 1:
        raise ValueError("must be at least 1")
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


def _parse_severity(value: Any) -> str:
    levels = ("info", "warning", "critical", "emergency")
    text = _parse_text(value).strip().lower()
    if text not in levels:
        raise ValueError(f"expected one of {', '.join(levels)}, got {_show(value)}")
    return text


def _show(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def validate_redis_url(url: str) -> None:
    """Raise ValueError (naming the problem, never the password) unless ``url`` is usable."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError("is not a URL") from None
    if parts.scheme not in {"redis", "rediss", "unix"}:
        raise ValueError(
            f"unsupported scheme {parts.scheme!r} (expected redis://, rediss:// or unix://)"
        )
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("unix:// URL has no socket path")
        _validate_query(parts.scheme, parts.query)
        return
    if not parts.hostname:
        raise ValueError("has no host name")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has a port that is not a number from 1 to 65535") from None
    if port is not None and not 0 < port < 65536:
        raise ValueError("has a port that is not a number from 1 to 65535")
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        # Not echoed: a password holding an unescaped '@' and '/' ends up in the path.
        raise ValueError("has a database (the path after the host) that is not a number")
    _validate_query(parts.scheme, parts.query)


# Options redis-py and kombu both understand in a URL's query string, and how to read them.
_BOOL_WORDS = {"0", "1", "true", "false", "yes", "no", "on", "off", "t", "f", "y", "n"}
_QUERY_OPTIONS: dict[str, Callable[[str], bool]] = {
    "db": str.isdigit,
    # Capped like redis_timeout_seconds: a check must fail fast.
    "socket_timeout": lambda v: _is_number(v) and float(v) <= 30,
    "socket_connect_timeout": lambda v: _is_number(v) and float(v) <= 30,
    "health_check_interval": str.isdigit,
    "max_connections": str.isdigit,
    "socket_keepalive": lambda v: v.lower() in _BOOL_WORDS,
    "retry_on_timeout": lambda v: v.lower() in _BOOL_WORDS,
    "protocol": lambda v: v in {"2", "3"},
}
_TLS_QUERY_OPTIONS: dict[str, Callable[[str], bool]] = {
    "ssl_cert_reqs": lambda v: (
        v.lower() in {"none", "optional", "required", "cert_none", "cert_optional", "cert_required"}
    ),
    "ssl_ca_certs": bool,
    "ssl_certfile": bool,
    "ssl_keyfile": bool,
    "ssl_ca_path": bool,
    "ssl_check_hostname": lambda v: v.lower() in _BOOL_WORDS,
}


def _is_number(text: str) -> bool:
    try:
        return float(text) >= 0
    except ValueError:
        return False


def _validate_query(scheme: str, query: str) -> None:
    """Reject query options that would make the Redis client fail later (values never shown)."""
    from urllib.parse import parse_qsl

    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ValueError("has a query string that cannot be parsed") from None
    known = dict(_QUERY_OPTIONS)
    if scheme == "rediss":
        known.update(_TLS_QUERY_OPTIONS)
    for name, value in pairs:
        check = known.get(name)
        if check is None:
            shown = name[:30].encode("unicode_escape").decode("ascii")
            raise ValueError(f"has an unsupported option {shown!r} in its query string")
        if not check(value):
            raise ValueError(f"has an invalid value for the option {name!r}")


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
class _Field:
    parse: Callable[[Any], Any]
    env: str | None = None
    help: str = ""


_FIELDS: dict[str, _Field] = {
    "redis_url": _Field(_parse_url, "REDIS_URL", "Redis server to watch"),
    "celery_broker_url": _Field(
        _optional(_parse_url), "CELERY_BROKER_URL", "Celery broker (defaults to redis_url)"
    ),
    "target": _Field(_parse_name, "DOORMAN_TARGET", "name of the watched cluster"),
    "check_interval_seconds": _Field(_parse_positive_seconds, "CHECK_INTERVAL"),
    "monitored_queues": _Field(_parse_names, "DOORMAN_MONITORED_QUEUES"),
    "global_keyprefix": _Field(_parse_text, "DOORMAN_GLOBAL_KEYPREFIX"),
    "privacy.sanitize_task_signatures": _Field(_parse_bool, "DOORMAN_SANITIZE_TASK_SIGNATURES"),
    "thresholds.max_queue_size": _Field(_parse_count, "MAX_QUEUE_SIZE"),
    "thresholds.max_wait_time_seconds": _Field(_parse_seconds, "MAX_WAIT_TIME"),
    "thresholds.max_task_runtime_seconds": _Field(_parse_seconds, "MAX_TASK_RUNTIME"),
    "thresholds.critical_queues": _Field(_parse_names, "DOORMAN_CRITICAL_QUEUES"),
    "alert_cooldown_seconds": _Field(_parse_seconds, "ALERT_COOLDOWN"),
    "alert_pending_checks": _Field(_parse_pending_checks, "DOORMAN_ALERT_PENDING_CHECKS"),
    "alert_resolve_after_checks": _Field(_parse_checks, "DOORMAN_ALERT_RESOLVE_AFTER"),
    "hash_secret": _Field(_parse_secret, "DOORMAN_HASH_SECRET"),
    "state_path": _Field(_parse_optional_text, "DOORMAN_STATE"),
    "visibility_timeout_seconds": _Field(
        _optional(_parse_positive_seconds), "DOORMAN_VISIBILITY_TIMEOUT"
    ),
    "redis_timeout_seconds": _Field(_parse_positive_seconds, "DOORMAN_REDIS_TIMEOUT"),
    "worker_timeout_seconds": _Field(_parse_positive_seconds, "DOORMAN_WORKER_TIMEOUT"),
    "worker_discovery_interval_seconds": _Field(_parse_seconds, "DOORMAN_WORKER_DISCOVERY"),
    "worker_forget_after_seconds": _Field(_parse_seconds, "DOORMAN_WORKER_FORGET_AFTER"),
    "worker_detail_interval_seconds": _Field(_parse_seconds, "DOORMAN_WORKER_DETAIL_INTERVAL"),
    "max_queues": _Field(_parse_count, "DOORMAN_MAX_QUEUES"),
    "slack_webhook_url": _Field(
        _optional(_parse_http_url), "SLACK_WEBHOOK_URL", "Slack incoming webhook (a secret)"
    ),
    "pagerduty_routing_key": _Field(
        _parse_secret, "PAGERDUTY_ROUTING_KEY", "PagerDuty Events v2 routing key (a secret)"
    ),
    "pagerduty_events_url": _Field(
        _parse_http_url, "PAGERDUTY_EVENTS_URL", "PagerDuty Events API endpoint"
    ),
    "generic_webhook_url": _Field(
        _optional(_parse_http_url), "GENERIC_WEBHOOK_URL", "webhook receiving the alert JSON"
    ),
    "generic_webhook_secret": _Field(
        _parse_secret, "GENERIC_WEBHOOK_SECRET", "HMAC-SHA256 key signing webhook bodies"
    ),
    "slack_min_severity": _Field(_parse_severity, "DOORMAN_SLACK_MIN_SEVERITY"),
    "pagerduty_min_severity": _Field(_parse_severity, "DOORMAN_PAGERDUTY_MIN_SEVERITY"),
    "slack_url_param": _Field(
        _parse_optional_text, "DOORMAN_SLACK_URL_PARAM", "SSM SecureString holding the Slack URL"
    ),
    "pagerduty_key_param": _Field(
        _parse_optional_text,
        "DOORMAN_PAGERDUTY_KEY_PARAM",
        "SSM SecureString holding the PagerDuty routing key",
    ),
    "table_name": _Field(_parse_optional_text, "DOORMAN_TABLE", "DynamoDB state table (AWS)"),
    "topic_arn": _Field(_parse_optional_text, "DOORMAN_TOPIC_ARN", "SNS alert topic (AWS)"),
    "hash_secret_param": _Field(
        _parse_optional_text, "DOORMAN_HASH_SECRET_PARAM", "SSM SecureString with the hash secret"
    ),
    "check_budget_seconds": _Field(
        _parse_positive_seconds, "DOORMAN_CHECK_BUDGET", "seconds one target's check may take"
    ),
    "dispatch_partial_batch": _Field(
        _parse_bool, "DOORMAN_DISPATCH_PARTIAL_BATCH", "report partial stream batch failures"
    ),
    "targets": _Field(_parse_targets, "DOORMAN_TARGETS", "clusters checked by one Lambda (JSON)"),
}

# What one entry of ``targets`` may set; everything else comes from the shared settings.
TARGET_KEYS = frozenset(
    {
        "name",
        "redis_url",
        "celery_broker_url",
        "monitored_queues",
        "global_keyprefix",
        "thresholds.max_queue_size",
        "thresholds.max_wait_time_seconds",
        "thresholds.max_task_runtime_seconds",
        "thresholds.critical_queues",
    }
)

CONFIG_ENV = "DOORMAN_CONFIG"

# Command-line flags whose names differ from their key (named in error messages).
FLAGS = {"state_path": "--state", "check_interval_seconds": "--interval"}


def env_names() -> dict[str, str]:
    """Map each config key to the environment variable that sets it."""
    return {key: f.env for key, f in _FIELDS.items() if f.env}


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
    thresholds: dict[str, Any] = {}
    for key, value in values.items():
        if key.startswith("thresholds."):
            thresholds[key.split(".", 1)[1]] = value
        elif key == "privacy.sanitize_task_signatures":
            top["sanitize_task_signatures"] = value
        else:
            top[key] = value
    settings = Settings(thresholds=Thresholds(**thresholds), **top)
    if settings.worker_timeout_seconds > 30:
        raise ConfigError("worker_timeout_seconds: must be at most 30 seconds")
    if settings.redis_timeout_seconds > 30:
        raise ConfigError("redis_timeout_seconds: must be at most 30 seconds")
    return settings


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
