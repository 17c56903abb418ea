"""Each setting is declared once, on its Settings field; the key table, the environment
names, the per-target keys and ``doorman config`` are generated from those declarations."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from chalicelib.settings import (
    _FIELDS,
    TARGET_KEYS,
    Setting,
    Settings,
    config_table,
    declared,
    env_names,
    load_settings,
    load_targets,
)
from chalicelib.thresholds import Thresholds
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]

# The tables as they were written by hand before the declarations, with the keys added since
# (their order is the order the environment is read in).
OLD_KEYS = [
    "redis_url",
    "celery_broker_url",
    "target",
    "check_interval_seconds",
    "monitored_queues",
    "global_keyprefix",
    "priority_separator",
    "priority_steps",
    "privacy.sanitize_task_signatures",
    "thresholds.max_queue_size",
    "thresholds.max_wait_time_seconds",
    "thresholds.max_task_runtime_seconds",
    "thresholds.critical_queues",
    "thresholds.max_failure_rate_pct",
    "thresholds.min_task_volume",
    "alert_cooldown_seconds",
    "alert_pending_checks",
    "alert_resolve_after_checks",
    "hash_secret",
    "state_path",
    "visibility_timeout_seconds",
    "redis_timeout_seconds",
    "worker_timeout_seconds",
    "worker_discovery_interval_seconds",
    "worker_forget_after_seconds",
    "failure_window_seconds",
    "worker_detail_interval_seconds",
    "max_queues",
    "metric_queues",
    "slack_webhook_url",
    "pagerduty_routing_key",
    "pagerduty_events_url",
    "generic_webhook_url",
    "generic_webhook_secret",
    "slack_min_severity",
    "pagerduty_min_severity",
    "slack_url_param",
    "pagerduty_key_param",
    "table_name",
    "topic_arn",
    "hash_secret_param",
    "check_budget_seconds",
    "dispatch_partial_batch",
    "targets",
    "redis_auth",
    "elasticache_user_id",
    "elasticache_cache",
    "elasticache_serverless",
    "elasticache_region",
    "sentinel_master_name",
    "sentinel_password",
]
OLD_TARGET_KEYS = {
    "name",
    "redis_url",
    "celery_broker_url",
    "monitored_queues",
    "global_keyprefix",
    "priority_separator",
    "priority_steps",
    "thresholds.max_queue_size",
    "thresholds.max_wait_time_seconds",
    "thresholds.max_task_runtime_seconds",
    "thresholds.critical_queues",
    "thresholds.max_failure_rate_pct",
    "thresholds.min_task_volume",
    "failure_window_seconds",
    "metric_queues",
}
SECRETS = {
    "redis_url",
    "celery_broker_url",
    "hash_secret",
    "slack_webhook_url",
    "pagerduty_routing_key",
    "generic_webhook_url",
    "generic_webhook_secret",
    "sentinel_password",
}


def test_generated_tables_are_the_hand_written_ones() -> None:
    assert list(_FIELDS) == OLD_KEYS
    assert TARGET_KEYS == OLD_TARGET_KEYS
    assert env_names()["privacy.sanitize_task_signatures"] == "DOORMAN_SANITIZE_TASK_SIGNATURES"
    assert env_names()["thresholds.max_wait_time_seconds"] == "MAX_WAIT_TIME"
    assert env_names()["targets"] == "DOORMAN_TARGETS"
    assert len(set(env_names().values())) == len(OLD_KEYS)  # one variable per key


def test_every_field_is_declared_and_secrets_stay_out_of_repr() -> None:
    for f in dataclasses.fields(Settings):
        spec = f.metadata["doorman.setting"]
        specs = spec.values() if isinstance(spec, dict) else [spec]
        assert all(isinstance(s, Setting) and s.env and s.help for s in specs), f.name
    hidden = {f.name for f in dataclasses.fields(Settings) if not f.repr}
    assert hidden == SECRETS
    assert all(d.spec.help for d in declared())


def test_defaults_listed_are_the_defaults_loaded() -> None:
    settings = load_settings(environ={})
    for d in declared():
        if d.key == "targets":
            continue
        holder = getattr(settings, d.section) if d.section else settings
        assert getattr(holder, d.name) == d.default, d.key
    assert settings.thresholds == Thresholds()


def test_a_per_target_key_is_read_into_its_section() -> None:
    env = {
        "DOORMAN_TARGETS": '[{"name": "a", "thresholds": {"max_queue_size": 7}}, {"name": "b"}]',
        "MAX_QUEUE_SIZE": "9",
        "DOORMAN_SANITIZE_TASK_SIGNATURES": "false",
    }
    a, b = load_targets(environ=env)
    assert (a.target, a.thresholds.max_queue_size) == ("a", 7)
    assert (b.target, b.thresholds.max_queue_size) == ("b", 9)
    assert a.sanitize_task_signatures is False


def test_doorman_config_lists_every_key_from_the_declarations() -> None:
    done = run_cli(["config"])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines == config_table()
    assert lines[0] == "| key | environment | default | meaning |"
    rows = {line.split(" | ")[0].strip("|` "): line for line in lines[2:]}
    assert list(rows) == OLD_KEYS
    assert rows["max_queues"] == (
        "| `max_queues` | `DOORMAN_MAX_QUEUES` | 5000 | queues reported at most; more are named"
        " in `errors[]` (`truncated`) |"
    )
    assert (
        "| `PAGERDUTY_EVENTS_URL` | `https://events.pagerduty.com/v2/enqueue` |"
        in (rows["pagerduty_events_url"])
    )


def test_doorman_config_matches_the_readme_table() -> None:
    """Every one-key row of README's configuration table is a row ``doorman config`` prints."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = readme.index("| key | environment | default | meaning |")
    table = []
    for line in readme[start + 2 :]:
        if not line.startswith("|"):
            break
        table.append(line)
    ours = set(config_table())
    single = [row for row in table if "`, `" not in row.split(" | ")[0]]
    assert len(single) >= 26
    assert [row for row in single if row not in ours] == []
