"""The deep configuration checks (pure), the allow-list that feeds them, and report helpers."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.analyse import deep
from chalicelib.analyse.deep import (
    DEFAULT_VISIBILITY_TIMEOUT,
    OK,
    UNKNOWN,
    WARNING,
    analyse,
)
from chalicelib.audit.render import encodable, use_colour
from chalicelib.collect.replies import CONF_BOOLS, CONF_NUMBERS, latest_eta, reduce_conf
from chalicelib.model import QueueSample, Severity, WorkerSample
from chalicelib.text import fmt_seconds
from tests.support import pii_app

NOW = 1_800_000_000.0
ALLOWED = {*CONF_BOOLS, *CONF_NUMBERS, "visibility_timeout"}


def worker(id_hash: str, *queues: str, status: str = "online") -> WorkerSample:
    return WorkerSample(
        id_hash=id_hash,
        status=status,
        concurrency=2,
        active=0,
        reserved=0,
        scheduled=0,
        pool="prefork",
        queues=queues,
        processed_total=0,
        processed={},
        prefetch_count=2,
        uptime_sec=10,
        tasks=(),
    )


def queue(name: str, depth: int) -> QueueSample:
    return QueueSample(
        name=name,
        depth=depth,
        latency_sec=0.0,
        latency_source="empty",
        latency_is_lower_bound=False,
        depth_by_priority={},
        oldest_task=None,
        unreadable_messages=False,
        serializers=(),
        redelivered=False,
        problem=None,
    )


GOOD_CONF: dict[str, Any] = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    "task_time_limit": None,
    "visibility_timeout": 7200,
}


# --- Redis -----------------------------------------------------------------------------------


def test_maxmemory_unset_is_a_risk_with_a_command_to_fix_it():
    check = deep.redis_maxmemory({"maxmemory": 0, "used_memory": 1_000_000})
    assert check.status == WARNING
    assert "not set" in check.result
    assert check.recommendation and "CONFIG SET maxmemory" in check.recommendation


def test_maxmemory_set_shows_usage_and_missing_info_is_unknown():
    check = deep.redis_maxmemory({"maxmemory": 2 * 1024**3, "used_memory": 1024**3})
    assert (check.status, check.result) == (OK, "2.0 GB, 50% used")
    assert deep.redis_maxmemory({}).status == UNKNOWN


@pytest.mark.parametrize(
    ("policy", "status", "words"),
    [
        ("noeviction", WARNING, "writes fail"),
        ("allkeys-lru", WARNING, "evict queue keys"),
        ("allkeys-random", WARNING, "evict queue keys"),
        ("volatile-lru", OK, "never evicted"),
        ("volatile-ttl", OK, "never evicted"),
    ],
)
def test_eviction_policy(policy, status, words):
    check = deep.redis_eviction({"maxmemory_policy": policy})
    assert check.status == status
    assert words in check.result.replace("every write fails", "writes fail")
    if status == WARNING:
        assert check.recommendation and "volatile-lru" in check.recommendation


def test_eviction_policy_unknown_without_info():
    assert deep.redis_eviction({}).status == UNKNOWN


def test_persistence_off_from_config():
    check = deep.redis_persistence({}, {"save": "", "appendonly": "no"})
    assert check.status == WARNING and "lost when Redis restarts" in check.result
    assert check.recommendation and "appendonly yes" in check.recommendation


@pytest.mark.parametrize(
    ("config", "result"),
    [
        ({"save": "3600 1 300 100", "appendonly": "no"}, "RDB (save 3600 1 300 100)"),
        ({"save": "", "appendonly": "yes"}, "AOF"),
        ({"save": "60 1000", "appendonly": "yes"}, "RDB (save 60 1000) + AOF"),
    ],
)
def test_persistence_on(config, result):
    check = deep.redis_persistence({}, config)
    assert (check.status, check.result) == (OK, result)


def test_persistence_without_config_falls_back_to_info():
    assert deep.redis_persistence({"aof_enabled": True}, None).status == OK
    unknown = deep.redis_persistence({"aof_enabled": False}, None)
    assert unknown.status == UNKNOWN and "CONFIG GET refused" in unknown.result
    failed = deep.redis_persistence({"aof_enabled": False, "rdb_last_bgsave_status": "err"})
    assert failed.status == WARNING and "snapshot failed" in failed.result


def test_persistence_never_shows_an_unexpected_save_value():
    check = deep.redis_persistence({}, {"save": "x; evil", "appendonly": "no"})
    assert check.status == OK and check.result == "RDB"


@pytest.mark.parametrize(
    ("connected", "rejected", "status"),
    [(12, 0, OK), (8000, 0, OK), (8001, 0, WARNING), (12, 3, WARNING)],
)
def test_client_headroom(connected, rejected, status):
    info = {"connected_clients": connected, "maxclients": 10000, "rejected_connections": rejected}
    check = deep.redis_clients(info)
    assert check.status == status
    assert check.result.startswith(f"{connected}/10000 connections")
    if status == WARNING:
        assert check.recommendation and "maxclients" in check.recommendation


def test_client_headroom_unknown_without_maxclients():
    assert deep.redis_clients({"connected_clients": 3}).status == UNKNOWN


# --- Celery ----------------------------------------------------------------------------------


def test_acks_late_off_on_some_workers():
    confs = {"w-1": {"task_acks_late": False}, "w-2": {"task_acks_late": True}}
    check = deep.celery_acks_late(confs)
    assert check.status == WARNING
    assert check.result.startswith("False on 1 of 2 workers")
    assert check.recommendation and "task_acks_late=True" in check.recommendation
    assert deep.celery_acks_late({"w-1": {"task_acks_late": True}}).status == OK
    everywhere = deep.celery_acks_late({"w-1": {"task_acks_late": False}})
    assert everywhere.result.startswith("False:")


def test_reject_on_worker_lost_default_none_is_a_risk():
    check = deep.celery_reject_on_worker_lost({"w-1": {"task_reject_on_worker_lost": None}})
    assert check.status == WARNING
    assert check.recommendation and "task_reject_on_worker_lost=True" in check.recommendation


def test_celery_checks_are_unknown_without_settings():
    for check in (
        deep.celery_acks_late({}),
        deep.celery_reject_on_worker_lost({"w-1": {}}),
        deep.celery_prefetch({}),
        deep.visibility_timeout({}, NOW),
    ):
        assert check.status == UNKNOWN, check
        assert check.recommendation is None


@pytest.mark.parametrize(
    ("value", "status", "words"),
    [(1, OK, "1"), (4, WARNING, "4: each process reserves 4 tasks"), (0, WARNING, "unlimited")],
)
def test_prefetch_multiplier(value, status, words):
    check = deep.celery_prefetch({"w-1": {"worker_prefetch_multiplier": value}})
    assert check.status == status
    assert words in check.result
    if status == WARNING:
        assert check.recommendation and "worker_prefetch_multiplier=1" in check.recommendation


def test_eta_longer_than_the_default_visibility_timeout():
    conf = {"latest_eta": NOW + 7200}
    check = deep.visibility_timeout({"w-1": conf}, NOW)
    assert check.status == WARNING
    assert "ETA/countdown task waits 2 h" in check.result and "1 h" in check.result
    # 7200 s x 1.25, rounded up to whole hours.
    assert check.recommendation and "'visibility_timeout': 10800" in check.recommendation


def test_time_limit_longer_than_the_visibility_timeout():
    conf = {"visibility_timeout": 600, "task_time_limit": 1800}
    check = deep.visibility_timeout({"w-1": conf}, NOW)
    assert check.status == WARNING
    assert check.result.startswith("task_time_limit 30 min exceeds 10 min")
    assert check.recommendation and "'visibility_timeout': 3600" in check.recommendation


def test_visibility_timeout_long_enough():
    conf = {"visibility_timeout": 86400, "latest_eta": NOW + 7200, "task_time_limit": 600}
    check = deep.visibility_timeout({"w-1": conf}, NOW)
    assert check.status == OK
    assert check.result == "24 h, longest ETA wait 2 h, task_time_limit 10 min"
    default = deep.visibility_timeout({"w-1": {}}, NOW)
    assert (default.status, default.result) == (OK, fmt_seconds(DEFAULT_VISIBILITY_TIMEOUT))


def test_single_worker_is_a_single_point_of_failure():
    check = deep.worker_redundancy([worker("w-1", "celery")])
    assert check.status == WARNING and "single point of failure" in check.result
    assert check.recommendation and "two workers" in check.recommendation


def test_queue_with_one_consumer_among_several_workers():
    workers = [worker("w-1", "celery", "emails"), worker("w-2", "celery")]
    check = deep.worker_redundancy(workers)
    assert check.status == WARNING
    assert "'emails' (w-1)" in check.result
    assert check.recommendation and "-Q emails" in check.recommendation


def test_waiting_queue_without_consumer():
    workers = [worker("w-1", "celery"), worker("w-2", "celery")]
    check = deep.worker_redundancy(workers, [queue("celery", 0), queue("reports", 5)])
    assert check.status == WARNING and "no consumer for waiting 'reports'" in check.result
    # An empty queue nobody consumes is not a risk.
    assert deep.worker_redundancy(workers, [queue("old", 0)]).status == OK


def test_redundancy_counts_online_workers_only():
    workers = [worker("w-1", "celery"), worker("w-2", "celery", status="offline")]
    assert "single point of failure" in deep.worker_redundancy(workers).result
    assert deep.worker_redundancy([worker("w-2", status="offline")]).status == UNKNOWN
    ok = deep.worker_redundancy([worker("w-1", "celery"), worker("w-2", "celery")])
    assert ok.status == OK and ok.result.startswith("2 workers")


def test_analyse_runs_every_check_and_ignores_settings_of_workers_not_online():
    workers = [worker("w-1", "celery"), worker("w-2", "celery", status="offline")]
    confs = {"w-1": GOOD_CONF, "w-2": {**GOOD_CONF, "task_acks_late": False}}
    info = {
        "maxmemory": 1024**3,
        "used_memory": 1024**2,
        "maxmemory_policy": "volatile-lru",
        "connected_clients": 5,
        "maxclients": 10000,
        "aof_enabled": True,
    }
    checks = analyse(info, workers, confs, now=NOW)
    assert [c.id for c in checks] == [
        "redis_maxmemory",
        "redis_eviction",
        "redis_persistence",
        "redis_clients",
        "celery_acks_late",
        "celery_reject_on_worker_lost",
        "celery_prefetch",
        "visibility_timeout",
        "worker_redundancy",
    ]
    risky = [c.id for c in checks if c.status == WARNING]
    assert risky == ["worker_redundancy"]  # one live worker; w-2's acks_late is not counted


def test_a_risky_check_becomes_a_config_risk_finding():
    check = deep.redis_maxmemory({"maxmemory": 0})
    finding = check.finding()
    assert finding is not None
    assert (finding.type, finding.severity, finding.subject) == (
        "config_risk",
        Severity.WARNING,
        "redis_maxmemory",
    )
    assert finding.key("prod") == "config_risk:prod:redis_maxmemory"
    assert finding.recommendation == check.recommendation
    assert deep.redis_maxmemory({"maxmemory": 10}).finding() is None


# --- the allow-list in front of them ---------------------------------------------------------


def conf_reply() -> dict[str, Any]:
    """The shape of a real ``conf(with_defaults=True)`` reply, with secrets in it."""
    return {
        "broker_url": f"redis://:{pii_app.PLANTED_TRANSPORT_PASSWORD}@db-7-jane.internal:6379/0",
        "broker_transport_options": {
            "visibility_timeout": 3600.0,
            "planted_password": pii_app.PLANTED_TRANSPORT_PASSWORD,
        },
        "secret_api_key": pii_app.PLANTED_SECRET_SETTING,
        "task_acks_late": False,
        "task_reject_on_worker_lost": None,
        "worker_prefetch_multiplier": 4,
        "task_time_limit": 300,
        "task_soft_time_limit": None,
        "worker_concurrency": 8,
        "task_default_queue": pii_app.PLANTED_QUEUE,
        "include": [pii_app.PLANTED_TASK_NAME],
    }


def test_reduce_conf_keeps_only_the_allow_listed_flags_and_numbers():
    kept = reduce_conf(conf_reply())
    assert kept == {
        "task_acks_late": False,
        "task_reject_on_worker_lost": None,
        "worker_prefetch_multiplier": 4,
        "task_time_limit": 300,
        "task_soft_time_limit": None,
        "worker_concurrency": 8,
        "visibility_timeout": 3600.0,
    }
    text = json.dumps(kept)
    for planted in (*pii_app.PLANTED, "planted_password", "secret_api_key"):
        assert planted not in text


def test_reduce_conf_reads_old_setting_names_and_drops_wrong_types():
    kept = reduce_conf(
        {
            "CELERY_ACKS_LATE": True,
            "CELERYD_PREFETCH_MULTIPLIER": 1,
            "task_reject_on_worker_lost": "yes",  # a string: dropped, not guessed
            "task_time_limit": float("inf"),
            "worker_concurrency": True,  # a bool is not a number
            "BROKER_TRANSPORT_OPTIONS": {"visibility_timeout": "3600"},
        }
    )
    assert kept == {"task_acks_late": True, "worker_prefetch_multiplier": 1}
    assert reduce_conf(["not", "a", "dict"]) == {}
    assert reduce_conf(None) == {}


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=30), children, max_size=4)
    ),
    max_leaves=20,
)
KEYS = st.sampled_from(
    [name for names in (*CONF_BOOLS.values(), *CONF_NUMBERS.values()) for name in names]
    + ["broker_transport_options", "BROKER_TRANSPORT_OPTIONS", "broker_url", "secret"]
)


@pytest.mark.slow  # property run: the full suite only
@given(st.dictionaries(KEYS | st.text(max_size=30), JSON, max_size=12))
def test_reduce_conf_never_keeps_text_or_unknown_keys(reply):
    kept = reduce_conf(reply)
    assert set(kept) <= ALLOWED
    for value in kept.values():
        assert value is None or isinstance(value, bool | int | float)


def test_latest_eta_reads_only_the_eta_field():
    reply = [
        {
            "eta": "2027-01-01T00:00:00+00:00",
            "priority": 6,
            "request": {"id": pii_app.PLANTED_TASK_ID, "args": [pii_app.PLANTED_EMAIL]},
        },
        {"eta": "2027-01-01T02:00:00", "request": {}},  # naive: taken as UTC
        {"eta": "not a date"},
        {"eta": 12},
        "junk",
    ]
    expected = datetime(2027, 1, 1, 2, tzinfo=UTC).timestamp()
    assert latest_eta(reply) == expected
    assert latest_eta([]) is None
    assert latest_eta({"eta": "2027-01-01T00:00:00"}) is None


# --- report helpers ----------------------------------------------------------------------------


class FakeTerminal(io.StringIO):
    def __init__(self, tty: bool, encoding: str = "utf-8") -> None:
        super().__init__()
        self._tty = tty
        self._encoding = encoding

    def isatty(self) -> bool:
        return self._tty

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._encoding


def test_colour_only_on_a_terminal_and_never_with_no_color():
    assert use_colour(FakeTerminal(tty=True), {}) is True
    assert use_colour(FakeTerminal(tty=False), {}) is False
    assert use_colour(FakeTerminal(tty=True), {"NO_COLOR": "1"}) is False
    # no-color.org: any non-empty value disables colour; an empty one does not.
    assert use_colour(FakeTerminal(tty=True), {"NO_COLOR": ""}) is True


def test_glyphs_fall_back_to_ascii_when_the_stream_cannot_encode_them():
    text = "✓ celery  3 pending ↑+3 — CONGESTED ═══"
    assert encodable(text, FakeTerminal(tty=False)) == text
    ascii_text = encodable(text, FakeTerminal(tty=False, encoding="ascii"))
    assert ascii_text.isascii()
    assert "^+3" in ascii_text and "- CONGESTED" in ascii_text
    assert ascii_text.startswith("+ celery")
