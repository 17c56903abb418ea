"""Settings: defaults < YAML config file < environment < flags, and errors that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chalicelib.settings import (
    DEFAULT_REDIS_URL,
    ConfigError,
    Settings,
    Thresholds,
    load_settings,
)
from tests.conftest import run_cli

PASSWORD = "Zq7-S3cretPW-x"

FULL_YAML = """\
redis_url: redis://yaml-redis:6380/1
celery_broker_url: redis://yaml-broker:6381/2
check_interval_seconds: 45
monitored_queues: [alpha, beta]
global_keyprefix: "pfx:"
alert_cooldown_seconds: 120
privacy:
  sanitize_task_signatures: false
thresholds:
  max_queue_size: 500
  max_wait_time_seconds: 90
  max_task_runtime_seconds: 600
  critical_queues: [payments]
"""


def write(tmp_path: Path, text: str, name: str = "doorman.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def config_error(tmp_path: Path, yaml_text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(config_path=write(tmp_path, yaml_text), environ={})
    return str(info.value)


# --- precedence -------------------------------------------------------------------------------


def test_defaults_without_file_env_or_flags() -> None:
    settings = load_settings(environ={})
    assert settings == Settings()
    assert settings.redis_url == DEFAULT_REDIS_URL
    assert settings.broker_url == DEFAULT_REDIS_URL
    assert settings.check_interval_seconds == 30.0
    assert settings.sanitize_task_signatures is True
    assert settings.thresholds == Thresholds()


def test_yaml_file_overrides_every_default(tmp_path: Path) -> None:
    settings = load_settings(config_path=write(tmp_path, FULL_YAML), environ={})
    assert settings.redis_url == "redis://yaml-redis:6380/1"
    assert settings.celery_broker_url == "redis://yaml-broker:6381/2"
    assert settings.broker_url == "redis://yaml-broker:6381/2"
    assert settings.check_interval_seconds == 45.0
    assert settings.monitored_queues == ("alpha", "beta")
    assert settings.global_keyprefix == "pfx:"
    assert settings.alert_cooldown_seconds == 120.0
    assert settings.sanitize_task_signatures is False
    assert settings.thresholds == Thresholds(
        max_queue_size=500,
        max_wait_time_seconds=90.0,
        max_task_runtime_seconds=600.0,
        critical_queues=("payments",),
    )


ENV_CASES: list[tuple[str, str, str, Any]] = [
    # (env name, env value, Settings attribute path, expected)
    ("REDIS_URL", "redis://env-redis:7000/3", "redis_url", "redis://env-redis:7000/3"),
    (
        "CELERY_BROKER_URL",
        "redis://env-broker:7001/4",
        "celery_broker_url",
        "redis://env-broker:7001/4",
    ),
    ("CHECK_INTERVAL", "15", "check_interval_seconds", 15.0),
    ("MAX_QUEUE_SIZE", "77", "thresholds.max_queue_size", 77),
    ("MAX_WAIT_TIME", "12.5", "thresholds.max_wait_time_seconds", 12.5),
    ("MAX_TASK_RUNTIME", "3600", "thresholds.max_task_runtime_seconds", 3600.0),
    ("DOORMAN_SANITIZE_TASK_SIGNATURES", "true", "sanitize_task_signatures", True),
]


def attr(settings: Settings, path: str) -> Any:
    value: Any = settings
    for part in path.split("."):
        value = getattr(value, part)
    return value


@pytest.mark.parametrize(("env", "raw", "path", "expected"), ENV_CASES)
def test_environment_overrides_yaml(
    tmp_path: Path, env: str, raw: str, path: str, expected: Any
) -> None:
    config = write(tmp_path, FULL_YAML)
    from_file = attr(load_settings(config_path=config, environ={}), path)
    assert from_file != expected  # the file sets something else
    settings = load_settings(config_path=config, environ={env: raw})
    assert attr(settings, path) == expected


def test_doorman_config_names_the_file(tmp_path: Path) -> None:
    config = write(tmp_path, "check_interval_seconds: 41\n")
    assert load_settings(environ={"DOORMAN_CONFIG": config}).check_interval_seconds == 41.0
    # An explicit --config beats $DOORMAN_CONFIG.
    other = write(tmp_path, "check_interval_seconds: 42\n", "other.yaml")
    settings = load_settings(config_path=other, environ={"DOORMAN_CONFIG": config})
    assert settings.check_interval_seconds == 42.0


def test_flags_override_environment_and_yaml(tmp_path: Path) -> None:
    config = write(tmp_path, FULL_YAML)
    environ = {
        "REDIS_URL": "redis://env-redis:7000/3",
        "CHECK_INTERVAL": "15",
        "MAX_QUEUE_SIZE": "77",
    }
    settings = load_settings(
        config_path=config,
        environ=environ,
        overrides={
            "redis_url": "redis://flag-redis:7100/5",
            "check_interval_seconds": 5,
            "thresholds.max_queue_size": 3,
            "target": None,  # a flag not given overrides nothing
        },
    )
    assert settings.redis_url == "redis://flag-redis:7100/5"
    assert settings.check_interval_seconds == 5.0
    assert settings.thresholds.max_queue_size == 3
    assert settings.target == "default"
    # Untouched by env and flags: still the file's.
    assert settings.thresholds.max_wait_time_seconds == 90.0
    assert settings.sanitize_task_signatures is False


def test_an_overridden_bad_value_is_not_an_error(tmp_path: Path) -> None:
    config = write(tmp_path, "thresholds:\n  max_queue_size: lots\n")
    settings = load_settings(
        config_path=config,
        environ={"MAX_QUEUE_SIZE": "12", "CHECK_INTERVAL": "never"},
        overrides={"check_interval_seconds": 9},
    )
    assert settings.thresholds.max_queue_size == 12
    assert settings.check_interval_seconds == 9.0


def test_each_layer_only_overrides_what_it_sets(tmp_path: Path) -> None:
    config = write(tmp_path, "thresholds:\n  max_queue_size: 10\n")
    settings = load_settings(config_path=config, environ={"MAX_WAIT_TIME": "7"})
    assert settings.thresholds.max_queue_size == 10
    assert settings.thresholds.max_wait_time_seconds == 7.0
    assert settings.thresholds.max_task_runtime_seconds == Thresholds().max_task_runtime_seconds


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("false", False), ("0", False), ("no", False), ("TRUE", True), ("on", True)],
)
def test_sanitize_task_signatures_from_env(raw: str, expected: bool) -> None:
    settings = load_settings(environ={"DOORMAN_SANITIZE_TASK_SIGNATURES": raw})
    assert settings.sanitize_task_signatures is expected


def test_empty_sections_and_empty_file_are_allowed(tmp_path: Path) -> None:
    assert load_settings(config_path=write(tmp_path, ""), environ={}) == Settings()
    settings = load_settings(config_path=write(tmp_path, "thresholds:\nprivacy:\n"), environ={})
    assert settings == Settings()


# --- errors that name the key --------------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "named"),
    [
        ("redis_uri: redis://h:1/0\n", "redis_uri"),
        ("thresholds:\n  max_queue_sise: 5\n", "thresholds.max_queue_sise"),
        ("privacy:\n  sanitize_args: true\n", "privacy.sanitize_args"),
        ("thresholds:\n  deep:\n    x: 1\n", "thresholds.deep"),
        ("nonsense:\n  x: 1\n", "nonsense"),
    ],
)
def test_unknown_key_is_named(tmp_path: Path, yaml_text: str, named: str) -> None:
    message = config_error(tmp_path, yaml_text)
    assert f"'{named}'" in message
    assert "unknown key" in message


def test_unknown_key_suggests_the_known_one(tmp_path: Path) -> None:
    assert "did you mean 'redis_url'" in config_error(tmp_path, "redis_uri: x\n")


@pytest.mark.parametrize(
    ("yaml_text", "named"),
    [
        ("check_interval_seconds: soon\n", "check_interval_seconds"),
        ("check_interval_seconds: [1]\n", "check_interval_seconds"),
        ("monitored_queues: 5\n", "monitored_queues"),
        ("monitored_queues: [celery, 7]\n", "monitored_queues"),
        ("thresholds:\n  max_queue_size: lots\n", "thresholds.max_queue_size"),
        ("thresholds:\n  max_queue_size: 10.5\n", "thresholds.max_queue_size"),
        ("thresholds:\n  max_queue_size: true\n", "thresholds.max_queue_size"),
        ("thresholds:\n  critical_queues: {a: 1}\n", "thresholds.critical_queues"),
        ("thresholds: 5\n", "thresholds"),
        ("privacy: [a]\n", "privacy"),
        ("privacy:\n  sanitize_task_signatures: maybe\n", "privacy.sanitize_task_signatures"),
        ("alert_cooldown_seconds: a while\n", "alert_cooldown_seconds"),
        ("global_keyprefix: [x]\n", "global_keyprefix"),
        ("redis_url: 6379\n", "redis_url"),
        ("check_interval_seconds: 0\n", "check_interval_seconds"),
        ("check_interval_seconds: .nan\n", "check_interval_seconds"),
    ],
)
def test_wrong_type_is_named(tmp_path: Path, yaml_text: str, named: str) -> None:
    message = config_error(tmp_path, yaml_text)
    assert named in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("yaml_text", "named"),
    [
        ("thresholds:\n  max_queue_size: -1\n", "thresholds.max_queue_size"),
        ("thresholds:\n  max_wait_time_seconds: -0.5\n", "thresholds.max_wait_time_seconds"),
        ("thresholds:\n  max_task_runtime_seconds: -60\n", "thresholds.max_task_runtime_seconds"),
        ("alert_cooldown_seconds: -1\n", "alert_cooldown_seconds"),
        ("check_interval_seconds: -30\n", "check_interval_seconds"),
    ],
)
def test_negative_threshold_is_named(tmp_path: Path, yaml_text: str, named: str) -> None:
    message = config_error(tmp_path, yaml_text)
    assert named in message
    assert "negative" in message


@pytest.mark.parametrize(
    ("env", "raw"),
    [
        ("MAX_QUEUE_SIZE", "-3"),
        ("MAX_WAIT_TIME", "-1"),
        ("MAX_TASK_RUNTIME", "ten"),
        ("CHECK_INTERVAL", "often"),
        ("DOORMAN_SANITIZE_TASK_SIGNATURES", "perhaps"),
        ("REDIS_URL", "localhost:6379"),
        ("CELERY_BROKER_URL", "amqp://guest@rabbit//"),
    ],
)
def test_bad_environment_value_names_variable_and_key(env: str, raw: str) -> None:
    from chalicelib.settings import env_names

    key = {v: k for k, v in env_names().items()}[env]
    with pytest.raises(ConfigError) as info:
        load_settings(environ={env: raw})
    assert env in str(info.value)
    assert key in str(info.value)


def test_bad_flag_value_names_the_flag_and_key() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, overrides={"check_interval_seconds": -5})
    assert "--interval" in str(info.value)
    assert "check_interval_seconds" in str(info.value)
    with pytest.raises(ConfigError, match="unknown setting 'no_such'"):
        load_settings(environ={}, overrides={"no_such": 1})


MALFORMED_URLS = [
    (f"http://:{PASSWORD}@redis.example:6379/0", "scheme"),
    (f"redis://:{PASSWORD}@redis.example:notaport/0", "port"),
    (f"redis://:{PASSWORD}@redis.example:70000/0", "port"),
    (f"redis://:{PASSWORD}@/0", "host"),
    (f"redis://user:{PASSWORD}@:6379/0", "host"),
    (f"redis://:{PASSWORD}@redis.example:6379/zero", "database"),
    # An unescaped '@' and '/' in the password: the rest of it lands in the path.
    (f"redis://:a@b/{PASSWORD}@redis.example:6379/0", "database"),
    (f"redis://:{PASSWORD}@redis.example:6379/0?socket_timeout=soon", "socket_timeout"),
    (f"redis://:{PASSWORD}@redis.example:6379/0?socket_timeout=600", "socket_timeout"),
    (f"redis://:{PASSWORD}@redis.example:6379/0?no_such_option=1", "no_such_option"),
    (f"redis://:{PASSWORD}@redis.example:6379/0?ssl_cert_reqs=none", "ssl_cert_reqs"),
    (f"rediss://:{PASSWORD}@redis.example:6379/0?ssl_cert_reqs=bogus", "ssl_cert_reqs"),
    (f"unix://:{PASSWORD}@/tmp/redis.sock?db=x", "db"),
]


@pytest.mark.parametrize(("url", "problem"), MALFORMED_URLS)
def test_malformed_url_is_named_and_password_never_shown(
    tmp_path: Path, url: str, problem: str
) -> None:
    for kwargs in (
        {"environ": {}, "overrides": {"redis_url": url}},
        {"environ": {"REDIS_URL": url}},
        {"environ": {"CELERY_BROKER_URL": url}},
        {"environ": {}, "config_path": write(tmp_path, f"redis_url: '{url}'\n")},
    ):
        with pytest.raises(ConfigError) as info:
            load_settings(**kwargs)  # type: ignore[arg-type]
        message = str(info.value)
        assert "redis_url" in message or "celery_broker_url" in message
        assert problem in message
        assert PASSWORD not in message


def test_wrong_typed_secrets_are_never_shown(tmp_path: Path) -> None:
    message = config_error(tmp_path, f"redis_url: ['redis://:{PASSWORD}@h:1/0']\n")
    assert "redis_url" in message and PASSWORD not in message
    message = config_error(tmp_path, "hash_secret: 918273645\n")
    assert "hash_secret" in message and "918273645" not in message


def test_valid_urls_pass() -> None:
    for url in (
        "redis://localhost:6379/0",
        "redis://:pw@10.0.0.5/3",
        "rediss://user:pw@cache.example.com:6380/0?ssl_cert_reqs=required",
        "redis://h:1/0?socket_timeout=2.5&health_check_interval=30",
        "unix:///var/run/redis.sock?db=2",
    ):
        assert load_settings(environ={"REDIS_URL": url}).redis_url == url


def test_invalid_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    message = config_error(tmp_path, "redis_url: redis://h:1/0\nthresholds: [unclosed\n")
    assert "doorman.yaml" in message
    assert "not valid YAML" in message
    assert "line" in message


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    assert "mapping" in config_error(tmp_path, "- a\n- b\n")


def test_missing_config_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError) as info:
        load_settings(config_path=missing, environ={})
    assert "absent.yaml" in str(info.value) and "not found" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"DOORMAN_CONFIG": missing})
    assert "DOORMAN_CONFIG" in str(info.value) and "absent.yaml" in str(info.value)


def test_config_file_that_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_settings(config_path=str(path), environ={})


def test_unknown_key_with_odd_characters_stays_on_one_line(tmp_path: Path) -> None:
    message = config_error(tmp_path, '"bad\\nkey": 1\n')
    assert "\n" not in message
    assert "bad\\nkey" in message


# --- through the real command line ---------------------------------------------------------


CLI_CASES: list[tuple[str, list[str], dict[str, str], str | None, str]] = [
    # (id, args, env, config file text, text the one stderr line must hold)
    ("unknown-key", [], {}, "redis_uri: redis://h:1/0\n", "redis_uri"),
    ("unknown-nested", [], {}, "thresholds:\n  max_queue: 3\n", "thresholds.max_queue"),
    ("wrong-type", [], {}, "thresholds:\n  max_queue_size: many\n", "thresholds.max_queue_size"),
    ("negative", [], {}, "thresholds:\n  max_wait_time_seconds: -2\n", "max_wait_time_seconds"),
    ("bad-yaml", [], {}, "thresholds: {unclosed\n", "not valid YAML"),
    ("env-negative", [], {"MAX_QUEUE_SIZE": "-1"}, None, "MAX_QUEUE_SIZE"),
    ("env-interval", [], {"CHECK_INTERVAL": "often"}, None, "CHECK_INTERVAL"),
    ("tiny-worker-timeout", [], {}, "worker_timeout_seconds: 1e-9\n", "worker_timeout_seconds"),
    ("zero-max-queues", [], {"DOORMAN_MAX_QUEUES": "0"}, None, "max_queues"),
    (
        "zero-socket-timeout",
        ["--redis-url", "redis://h:1/0?socket_timeout=0"],
        {},
        None,
        "socket_timeout",
    ),
    (
        "url-option-off",
        ["--redis-url", "redis://h:1/0?socket_keepalive=off"],
        {},
        None,
        "socket_keepalive",
    ),
    ("flag-interval", ["--interval", "-4"], {}, None, "--interval"),
    ("missing-file", ["--config", "/nonexistent/doorman.yaml"], {}, None, "not found"),
    ("env-missing-file", [], {"DOORMAN_CONFIG": "/nonexistent/d.yaml"}, None, "DOORMAN_CONFIG"),
    ("flag-scheme", ["--redis-url", f"http://:{PASSWORD}@h:1/0"], {}, None, "redis_url"),
    ("flag-port", ["--redis-url", f"redis://:{PASSWORD}@h:port/0"], {}, None, "redis_url"),
    ("flag-host", ["--redis-url", f"redis://:{PASSWORD}@:6379/0"], {}, None, "redis_url"),
    ("flag-db", ["--redis-url", f"redis://:{PASSWORD}@h:1/db"], {}, None, "redis_url"),
    ("flag-query", ["--redis-url", f"redis://:{PASSWORD}@h:1/0?x=1"], {}, None, "redis_url"),
    ("env-url", [], {"REDIS_URL": f"redis://:{PASSWORD}@h:65536/0"}, None, "REDIS_URL"),
    ("env-broker", [], {"CELERY_BROKER_URL": f"amqp://u:{PASSWORD}@h//"}, None, "CELERY_BROKER"),
    ("file-url", [], {}, f"redis_url: 'redis://:{PASSWORD}@/0'\n", "redis_url"),
]


@pytest.mark.parametrize(
    ("args", "env", "config", "named"),
    [case[1:] for case in CLI_CASES],
    ids=[case[0] for case in CLI_CASES],
)
def test_cli_exits_3_with_one_line_naming_the_key(
    tmp_path: Path, args: list[str], env: dict[str, str], config: str | None, named: str
) -> None:
    full = ["check", "--once", "--state", str(tmp_path / "s.db"), *args]
    if config is not None:
        full += ["--config", write(tmp_path, config)]
    result = run_cli(full, env=env)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("doorman: configuration error:")
    assert named in lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert PASSWORD not in result.stderr + result.stdout
    # Nothing was created: a check that cannot run leaves no state behind.
    assert not (tmp_path / "s.db").exists()


def test_cli_precedence_file_then_env_then_flag(tmp_path: Path) -> None:
    from chalicelib.embedded import free_port

    closed = f"redis://127.0.0.1:{free_port()}/0"
    config = write(tmp_path, f"redis_url: {closed}\ntarget: from-file\n")
    base = ["check", "--once", "--config", config, "--state", str(tmp_path / "s.db")]
    targets = []
    for extra, env in (
        ([], {}),
        ([], {"DOORMAN_TARGET": "from-env"}),
        (["--target", "from-flag"], {"DOORMAN_TARGET": "from-env"}),
    ):
        result = run_cli([*base, *extra], env=env)
        assert result.returncode == 0, result.stderr
        import json

        targets.append(json.loads(result.stdout)["target"])
    assert targets == ["from-file", "from-env", "from-flag"]


def test_cli_redis_url_flag_names_the_broker_whatever_the_environment_says(tmp_path: Path) -> None:
    import json

    from chalicelib.embedded import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    result = run_cli(
        ["check", "--once", "--redis-url", url, "--state", str(tmp_path / "s.db")],
        # A RabbitMQ URL left in the shell by another project is not Doorman's business here.
        env={"CELERY_BROKER_URL": f"amqp://guest:{PASSWORD}@rabbit//"},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["errors"][0]["kind"] == "connection_refused"
    assert PASSWORD not in result.stdout + result.stderr


def test_settings_repr_never_shows_a_secret() -> None:
    settings = load_settings(
        environ={},
        overrides={
            "redis_url": f"redis://:{PASSWORD}@h:1/0",
            "celery_broker_url": f"redis://:{PASSWORD}@b:1/0",
            "hash_secret": PASSWORD,
        },
    )
    assert PASSWORD not in repr(settings)


# --- bounds: absurd values are refused by name --------------------------------------------

# (key, lowest allowed, highest allowed) of every timeout, interval and count.
BOUNDS: list[tuple[str, float, float]] = [
    ("check_interval_seconds", 1, 86400),
    ("thresholds.max_queue_size", 0, 10**9),
    ("thresholds.max_wait_time_seconds", 0, 365 * 86400),
    ("thresholds.max_task_runtime_seconds", 0, 365 * 86400),
    ("alert_cooldown_seconds", 0, 7 * 86400),
    ("alert_resolve_after_checks", 1, 100),
    ("visibility_timeout_seconds", 1, 365 * 86400),
    ("redis_timeout_seconds", 0.1, 30),
    ("worker_timeout_seconds", 0.1, 30),
    ("worker_discovery_interval_seconds", 0, 7 * 86400),
    ("worker_forget_after_seconds", 1, 30 * 86400),
    ("worker_detail_interval_seconds", 0, 86400),
    ("max_queues", 1, 100_000),
    ("check_budget_seconds", 1, 900),
    ("failure_window_seconds", 60, 86400),
    ("thresholds.max_failure_rate_pct", 0, 100),
    ("thresholds.min_task_volume", 1, 10**9),
]


def _outside(value: float, whole: bool, below: bool) -> float:
    if whole:
        return int(value) - 1 if below else int(value) + 1
    return value / 10 if below and value else (-0.001 if below else value * 1.01)


@pytest.mark.parametrize(("key", "low", "high"), BOUNDS, ids=[b[0] for b in BOUNDS])
def test_every_bound_is_enforced_and_named(
    tmp_path: Path, key: str, low: float, high: float
) -> None:
    whole = key in {
        "thresholds.max_queue_size",
        "thresholds.min_task_volume",
        "alert_resolve_after_checks",
        "max_queues",
    }
    for edge in (low, high):
        value = int(edge) if whole else edge
        settings = load_settings(environ={}, overrides={key: value})
        got = getattr(
            settings.thresholds if key.startswith("thresholds.") else settings, key.split(".")[-1]
        )
        assert got == value
    for below in (True, False):
        bad = _outside(low if below else high, whole, below)
        with pytest.raises(ConfigError) as info:
            load_settings(environ={}, overrides={key: bad})
        message = str(info.value)
        assert key in message
        if bad >= 0:  # a negative value is refused as negative
            assert f"from {low:g} to" in message or f"from {int(low)} to" in message


def test_every_timeout_interval_and_count_has_a_bound() -> None:
    from chalicelib.settings import env_names

    numeric = {
        key
        for key in env_names()
        if key.endswith(("_seconds", "_checks", "max_queues", "max_queue_size", "_pct", "_volume"))
    }
    # alert_pending_checks (a mapping of counts) is bounded in test_absurd_values_of_the_issue.
    assert numeric - {"alert_pending_checks"} == {b[0] for b in BOUNDS}


def test_absurd_values_of_the_issue(tmp_path: Path) -> None:
    message = config_error(tmp_path, "worker_timeout_seconds: 1e-9\n")
    assert "worker_timeout_seconds" in message and "from 0.1 to 30 seconds" in message
    message = config_error(tmp_path, "max_queues: 0\n")
    assert "max_queues" in message and "from 1 to 100,000" in message
    message = config_error(tmp_path, "redis_url: redis://h:1/0?socket_timeout=0\n")
    assert "socket_timeout" in message and "0.1 to 30" in message
    message = config_error(tmp_path, "alert_pending_checks: {workers_down: 1000}\n")
    assert "alert_pending_checks" in message and "from 1 to 100" in message


# --- Redis URL options: what both clients read the same way --------------------------------

REFUSED_URLS = [
    # redis-py reads "off"/"on" as True (only 0/f/false/n/no are False): refused, not misread.
    ("redis://h:1/0?socket_keepalive=off", "socket_keepalive"),
    ("redis://h:1/0?retry_on_timeout=on", "retry_on_timeout"),
    # redis-py takes only none/optional/required; kombu's CERT_* would break redis-py.
    ("rediss://h:1/0?ssl_cert_reqs=CERT_NONE", "ssl_cert_reqs"),
    ("rediss://h:1/0?ssl_cert_reqs=Required", "ssl_cert_reqs"),
    ("redis://h:1/0?ssl_check_hostname=false", "ssl_check_hostname"),
    ("unix:///tmp/r.sock?ssl_ca_certs=/ca.pem", "ssl_ca_certs"),
    # redis-py reads the first of a repeated option, kombu the last.
    ("redis://h:1/0?socket_timeout=1&socket_timeout=2", "twice"),
    ("redis://h:1/1?db=2", "two databases"),
    # Not an ASCII number: int() refuses it, and redis-py silently used db 0 for the path.
    ("redis://h:1/\u00b2", "database"),
    ("redis://h:1/0?db=\u00b2", "db"),
    ("redis://h:1/0?health_check_interval=5.5", "health_check_interval"),
    ("redis://h:1/0?health_check_interval=86400", "health_check_interval"),
    ("redis://h:1/0?max_connections=0", "max_connections"),
    ("redis://h:1/0?protocol=1", "protocol"),
    ("redis://h:1/0?socket_timeout=nan", "socket_timeout"),
    ("redis://h:1/0?socket_timeout=1e-9", "socket_timeout"),
    ("redis://h:1/0?socket_connect_timeout=0", "socket_connect_timeout"),
    ("redis://h:1/0?socket_timeout=31", "socket_timeout"),
    ("redis://h:1/0?password=x", "password"),
    ("redis://h:1/0#frag", "#"),
]


@pytest.mark.parametrize(("url", "named"), REFUSED_URLS, ids=[u for u, _ in REFUSED_URLS])
def test_url_options_either_work_on_both_clients_or_are_refused(url: str, named: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"REDIS_URL": url})
    assert "redis_url" in str(info.value)
    assert named in str(info.value)


def test_every_accepted_url_option_is_read_as_redis_py_reads_it() -> None:
    """The parsed value of each option equals what redis-py's own URL parser makes of it."""
    from redis.connection import parse_url

    from chalicelib.settings import parse_redis_url

    url = (
        "rediss://u%40x:p%23w@h:1/3?socket_timeout=0.5&socket_connect_timeout=2"
        "&socket_keepalive=F&health_check_interval=7&max_connections=9&retry_on_timeout=Yes"
        "&protocol=3&ssl_cert_reqs=optional&ssl_ca_certs=/c%20a.pem&ssl_certfile=/c.pem"
        "&ssl_keyfile=/k.pem&ssl_ca_path=/cas&ssl_check_hostname=n"
    )
    ours = parse_redis_url(url)
    theirs = parse_url(url)
    assert ours.db == theirs["db"] == 3
    for name, value in ours.options.items():
        assert theirs[name] == (int(value) if name == "protocol" else value), name
    assert set(ours.options) | {"db"} == set(theirs) - {
        "username",
        "password",
        "host",
        "port",
        "connection_class",
    }


@pytest.mark.parametrize(
    "url",
    [
        "redis://[::1]:6379/0",
        "redis://:p%2Fw%40rd@[::1]:6379?db=4",
        "redis://user:pw@h:1",
        "redis://h:1/",
        "redis://h:1/0?db=0",
        "unix://user:pw@/var/run/redis.sock?db=2",
        "rediss://h:1/0?ssl_cert_reqs=none&ssl_check_hostname=false",
    ],
)
def test_odd_but_valid_urls_are_accepted(url: str) -> None:
    assert load_settings(environ={"REDIS_URL": url}).redis_url == url
