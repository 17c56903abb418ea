"""The companion's replies through the allow-list: the stats marker and the ``doorman`` reply.

The replies here are built from the contract in doorman_celery's docstring, one of them by
the companion's own counters, then made hostile: wrong types, NaN, negatives, huge mappings,
megabyte names and extra keys carrying planted personal data.
"""

from __future__ import annotations

import copy
import math
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import doorman_celery
from chalicelib.collect.replies import (
    MAX_COMPANION_QUEUES,
    MAX_COMPANION_TASKS,
    MAX_LISTED,
    MAX_TEXT,
    PROBLEM_FAILED,
    PROBLEM_MALFORMED,
    PROBLEM_NEWER,
    PROBLEM_NO_COMMAND,
    Marker,
    Reduced,
    commands_for,
    companion_errors,
    companion_marker,
    companion_verdict,
    reduce_doorman,
    reduce_stats,
)
from chalicelib.model import ActiveTask, Histogram, TaskCounters

EMAIL = "jane.planted@private-mail.example"
CARD = "4111-1111-1111-1111"
SECRET = "planted-SECRET-kwarg-901"
PLANTED = (EMAIL, CARD, SECRET)
BOUNDS = list(doorman_celery.BUCKETS)
SIZE = len(BOUNDS) + 1
BOOT = "9f3c1a0b5e7d2c4a"


def hist(count: int = 3, first: int = 4, counts: list[int] | None = None) -> dict[str, Any]:
    return {"count": count, "sum": 0.75, "max": 0.5, "first": first, "counts": counts or [1, 2]}


def good_reply() -> dict[str, Any]:
    """A ``doorman`` reply of the contract, with planted data wherever a key is not read."""
    return {
        "v": 1,
        "boot": BOOT,
        "pid": 4242,
        "started": 1767225600.123,
        "active": [
            {
                "id": "task-1",
                "name": "app.send_mail",
                "time_start": 1767225700.5,
                "worker_pid": 4343,
                "queue": "mail",
                "args": [EMAIL],
                "kwargs": {"card": CARD},
                "argsrepr": f"('{EMAIL}',)",
            },
            {"id": "task-2", "name": "app.report", "time_start": None, "worker_pid": 1},
        ],
        "tasks": {
            "app.send_mail": {
                "succeeded": 5,
                "failed": 2,
                "expired": 1,
                "runtime": hist(count=7, first=10, counts=[3, 0, 4]),
                "last_error": f"ValueError('{EMAIL}')",
            },
            "app.report": {"revoked": 3, "note": SECRET},
        },
        "queues": {"mail": {**hist(), "sample": CARD}},
        "overflow": {"tasks": {"retried": 4}, "queues": hist(count=1, first=0, counts=[1])},
        "buckets": list(BOUNDS),
        "reserved": ["task-3", "task-4"],
        "scheduled": [
            {"id": "task-5", "eta": 1767229200.0, "args": [SECRET]},
            {"id": "task-6", "eta": None},
        ],
        "extra": {"email": EMAIL, "card": CARD},
    }


def reduced_of(reply: Any) -> Reduced:
    into = Reduced()
    reduce_doorman(reply, into)
    return into


def assert_nothing_planted(value: object) -> None:
    text = repr(value)
    for planted in PLANTED:
        assert planted not in text, planted


def test_a_reply_of_the_contract_keeps_the_allow_list_only() -> None:
    data = reduced_of(good_reply())
    assert data.companion_problem is None
    assert data.active == (
        ActiveTask("task-1", "app.send_mail", 1767225700.5),
        ActiveTask("task-2", "app.report", None),
    )
    raw = data.companion
    assert raw is not None
    assert (raw.boot, raw.started, raw.bounds) == (BOOT, 1767225600.123, tuple(BOUNDS))
    runtime = raw.tasks["app.send_mail"].runtime
    assert runtime is not None and len(runtime.counts) == SIZE
    assert (runtime.counts[10], runtime.counts[11], runtime.counts[12], sum(runtime.counts)) == (
        3,
        0,
        4,
        7,
    )
    assert raw.tasks["app.send_mail"] == TaskCounters(
        succeeded=5, failed=2, expired=1, runtime=runtime
    )
    assert raw.tasks["app.report"] == TaskCounters(revoked=3)
    wait = raw.waits["mail"]
    assert (wait.count, wait.total, wait.max) == (3, 0.75, 0.5)
    assert wait.counts[4:6] == (1, 2) and sum(wait.counts) == 3
    assert raw.overflow_tasks == TaskCounters(retried=4)
    assert raw.overflow_waits is not None and raw.overflow_waits.counts[0] == 1
    # The lists the companion adds: ids only, and the latest ETA.
    assert data.reserved_ids == ("task-3", "task-4")
    assert data.scheduled_ids == ("task-5", "task-6")
    assert data.latest_eta == 1767229200.0
    assert data.lists == {"reserved", "scheduled"}
    assert_nothing_planted(data)


def test_a_reply_made_by_the_companions_own_counters_is_read() -> None:
    from doorman_celery._stats import FAILED, SUCCEEDED, Stats

    stats = Stats()
    for runtime in (0.002, 0.02, 0.2, 2.0):
        stats.outcome("app.ok", SUCCEEDED, runtime)
    stats.outcome("app.bad", FAILED, 0.05)
    stats.wait("celery", 1.5)
    reply = {
        "v": doorman_celery.VERSION,
        "boot": stats.boot,
        "pid": os.getpid(),
        "started": round(stats.started, 3),
        "active": [],
        **stats.snapshot(),
        "buckets": list(doorman_celery.BUCKETS),
    }
    data = reduced_of(reply)
    assert data.companion_problem is None and data.companion is not None
    ok = data.companion.tasks["app.ok"]
    assert ok.succeeded == 4 and ok.runtime is not None
    assert list(ok.runtime.counts) == doorman_celery.dense(reply["tasks"]["app.ok"]["runtime"])
    assert data.companion.tasks["app.bad"].failed == 1
    assert data.companion.waits["celery"].count == 1
    # A reply without the lists (the companion could not read them): not known, not "none".
    assert data.lists == set() and data.reserved_ids == () and data.latest_eta is None


def test_an_empty_histogram_is_held_without_buckets() -> None:
    reply = good_reply()
    reply["queues"] = {"idle": {"count": 0, "sum": 0.0, "max": 0.0, "first": 0, "counts": []}}
    data = reduced_of(reply)
    assert data.companion is not None
    assert data.companion.waits["idle"] == Histogram()


def _set(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    reply = good_reply()
    where: Any = reply
    for key in path[:-1]:
        where = where[key]
    where[path[-1]] = value
    return reply


def _drop(*path: Any) -> dict[str, Any]:
    reply = good_reply()
    where: Any = reply
    for key in path[:-1]:
        where = where[key]
    del where[path[-1]]
    return reply


MEGA = "x" * (1 << 20)
LONG = "y" * (MAX_TEXT + 1)
HOSTILE = {
    "v as text": _set(("v",), "1"),
    "v as bool": _set(("v",), True),
    "v zero": _set(("v",), 0),
    "v float": _set(("v",), 1.0),
    "v missing": _drop("v"),
    "boot as int": _set(("boot",), 123),
    "boot empty": _set(("boot",), ""),
    "boot planted": _set(("boot",), EMAIL),
    "boot too long": _set(("boot",), "a" * 65),
    "started NaN": _set(("started",), math.nan),
    "started inf": _set(("started",), math.inf),
    "started negative": _set(("started",), -1.0),
    "started bool": _set(("started",), True),
    "started huge int": _set(("started",), 10**400),
    "started missing": _drop("started"),
    "active not a list": _set(("active",), {"id": "x"}),
    "active entry not a dict": _set(("active", 0), EMAIL),
    "active id int": _set(("active", 0, "id"), 7),
    "active id empty": _set(("active", 0, "id"), ""),
    "active id 1 MB": _set(("active", 0, "id"), MEGA),
    "active name 1 MB": _set(("active", 0, "name"), MEGA),
    "active name over the limit": _set(("active", 0, "name"), LONG),
    "active name missing": _drop("active", 0, "name"),
    "active time NaN": _set(("active", 0, "time_start"), math.nan),
    "active time negative": _set(("active", 0, "time_start"), -3.0),
    "active time bool": _set(("active", 0, "time_start"), True),
    "active time text": _set(("active", 0, "time_start"), "2026-01-01T00:00:00"),
    "active too many": _set(("active",), [{"id": "t", "name": "n"}] * (MAX_LISTED + 1)),
    "tasks not a dict": _set(("tasks",), [EMAIL]),
    "tasks too many": _set(("tasks",), {f"t{i}": {} for i in range(MAX_COMPANION_TASKS + 1)}),
    "task name 1 MB": _set(("tasks",), {MEGA: {"succeeded": 1}}),
    "task entry not a dict": _set(("tasks", "app.report"), 3),
    "counter negative": _set(("tasks", "app.report", "revoked"), -1),
    "counter bool": _set(("tasks", "app.report", "revoked"), True),
    "counter float": _set(("tasks", "app.report", "revoked"), 1.5),
    "counter NaN": _set(("tasks", "app.report", "revoked"), math.nan),
    "counter huge": _set(("tasks", "app.report", "revoked"), 2**64),
    "counter text": _set(("tasks", "app.report", "failed"), EMAIL),
    "runtime not a dict": _set(("tasks", "app.send_mail", "runtime"), [1, 2]),
    "runtime sum NaN": _set(("tasks", "app.send_mail", "runtime", "sum"), math.nan),
    "runtime max inf": _set(("tasks", "app.send_mail", "runtime", "max"), math.inf),
    "runtime count disagrees": _set(("tasks", "app.send_mail", "runtime", "count"), 8),
    "runtime first negative": _set(("tasks", "app.send_mail", "runtime", "first"), -1),
    "runtime past the buckets": _set(("tasks", "app.send_mail", "runtime", "first"), SIZE - 2),
    "runtime counts not a list": _set(("tasks", "app.send_mail", "runtime", "counts"), "3,4"),
    "runtime bucket negative": _set(("tasks", "app.send_mail", "runtime", "counts"), [8, -1]),
    "queues too many": _set(
        ("queues",), {f"q{i}": hist() for i in range(MAX_COMPANION_QUEUES + 1)}
    ),
    "queue name 1 MB": _set(("queues",), {MEGA: hist()}),
    "queue hist not a dict": _set(("queues", "mail"), None),
    "overflow not a dict": _set(("overflow",), [EMAIL]),
    "overflow tasks bad": _set(("overflow", "tasks"), {"failed": -2}),
    "overflow queues bad": _set(("overflow", "queues"), {"count": "1"}),
    "buckets missing": _drop("buckets"),
    "buckets empty": _set(("buckets",), []),
    "buckets not increasing": _set(("buckets",), [0.1, 0.1, 0.2]),
    "buckets NaN": _set(("buckets", 3), math.nan),
    "buckets text": _set(("buckets", 0), "0.001"),
    "buckets too many": _set(("buckets",), [float(i) for i in range(1, 300)]),
    "reply a list": [good_reply()],
    "reply text": f"{{'v': 1, 'email': '{EMAIL}'}}",
    "reply None": None,
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_reply_leaves_no_data_and_names_its_problem(name: str) -> None:
    reply = copy.deepcopy(HOSTILE[name])
    data = reduced_of(reply)
    assert data.companion_problem == PROBLEM_MALFORMED
    assert data.companion is None
    assert data.active == () and data.reserved_ids == () and data.scheduled_ids == ()
    assert data.lists == set() and data.latest_eta is None
    assert_nothing_planted(data)
    errors = companion_errors({"w@x": data})
    assert [(e.component, e.kind) for e in errors] == [("workers", "companion_reply")]
    assert_nothing_planted(errors)
    assert MEGA not in repr(errors)


# A reserved or scheduled list that cannot be read (a worker holding more than MAX_LISTED
# ETA tasks is real): only that list is not known; the counters and the rest are kept.
HOSTILE_LISTS = {
    "reserved not a list": _set(("reserved",), "task-3"),
    "reserved id int": _set(("reserved", 0), 3),
    "reserved id 1 MB": _set(("reserved", 0), MEGA),
    "reserved too many": _set(("reserved",), ["t"] * (MAX_LISTED + 1)),
    "scheduled entry not a dict": _set(("scheduled", 0), "task-5"),
    "scheduled eta NaN": _set(("scheduled", 0, "eta"), math.nan),
    "scheduled eta text": _set(("scheduled", 0, "eta"), "2026-01-01T00:00:00"),
    "scheduled id missing": _drop("scheduled", 0, "id"),
    "scheduled too many": _set(("scheduled",), [{"id": "t", "eta": None}] * (MAX_LISTED + 1)),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_LISTS))
def test_an_unreadable_list_is_not_known_and_said_the_rest_is_kept(name: str) -> None:
    broken = name.split()[0]
    data = reduced_of(copy.deepcopy(HOSTILE_LISTS[name]))
    assert data.companion_problem is None and data.companion is not None
    assert data.companion.tasks == reduced_of(good_reply()).companion.tasks  # type: ignore[union-attr]
    assert broken not in data.lists and data.lists == {"reserved", "scheduled"} - {broken}
    assert (data.reserved_ids if broken == "reserved" else data.scheduled_ids) == ()
    assert data.companion_lists_unread
    assert_nothing_planted(data)
    errors = companion_errors({"w@x": data})
    assert [(e.component, e.kind) for e in errors] == [("workers", "companion_lists")]
    assert MEGA not in repr(errors) and "10,000" in errors[0].message


def test_the_hostile_cases_differ_from_a_good_reply_in_one_place_only() -> None:
    """The detector itself: the reply they are made from is read."""
    assert reduced_of(good_reply()).companion_problem is None
    assert reduced_of(_set(("extra",), {"anything": [EMAIL]})).companion_problem is None
    assert reduced_of(_drop("reserved")).companion_problem is None
    assert reduced_of(_drop("overflow")).companion_problem is None
    assert reduced_of(_set(("tasks", "app.report"), {})).companion_problem is None


def test_names_up_to_the_limit_are_kept() -> None:
    name = "n" * MAX_TEXT
    reply = _set(("tasks",), {name: {"succeeded": 1}})
    reply["active"][0]["name"] = name
    data = reduced_of(reply)
    assert data.companion is not None and name in data.companion.tasks
    assert data.active[0].task_name == name


def test_planted_values_under_unknown_keys_never_reach_the_result() -> None:
    reply = good_reply()
    reply["active"][0]["hostname"] = EMAIL
    reply["active"][0]["delivery_info"] = {"routing_key": CARD}
    reply["tasks"]["app.send_mail"]["runtime"]["who"] = SECRET
    reply["queues"]["mail"]["owner"] = EMAIL
    reply["overflow"]["names"] = [EMAIL, CARD]
    reply["buckets_note"] = SECRET
    data = reduced_of(reply)
    assert data.companion is not None
    assert_nothing_planted(data)
    assert_nothing_planted(data.companion)


def test_a_newer_reply_version_is_not_read_and_said_once() -> None:
    newer = {**good_reply(), "v": 2}
    first, second = reduced_of(newer), reduced_of(copy.deepcopy(newer))
    for data in (first, second):
        assert data.companion_problem == PROBLEM_NEWER
        assert data.companion is None and data.active == ()
        data.answered.append("doorman")
        assert companion_verdict(data, True) is False  # asked Celery's commands next time
    errors = companion_errors({"a@x": first, "b@x": second})
    assert [(e.kind, e.message.split(" ", 2)[:2]) for e in errors] == [
        ("companion_version", ["2", "workers"])
    ]


def test_error_replies_say_whether_the_command_exists() -> None:
    missing = reduced_of({"error": "KeyError('doorman')"})
    assert missing.companion_problem == PROBLEM_NO_COMMAND
    missing.answered.append("doorman")
    assert companion_verdict(missing, True) is False

    failed = reduced_of({"error": f"ValueError('{EMAIL}')"})
    assert failed.companion_problem == PROBLEM_FAILED
    failed.answered.append("doorman")
    assert companion_verdict(failed, True) is None  # not asked active: it may have one
    errors = companion_errors({"a@x": missing, "b@x": failed})
    assert [e.kind for e in errors] == ["companion_missing", "companion_error"]
    assert_nothing_planted(errors)


def stats_reply(**extra: Any) -> dict[str, Any]:
    return {
        "pool": {"max-concurrency": 4, "implementation": "celery.concurrency.prefork:TaskPool"},
        "total": {"app.ok": 3},
        "broker": {"transport_options": {"password": SECRET}},
        **extra,
    }


@pytest.mark.parametrize(
    ("reply", "marker", "usable"),
    [
        (stats_reply(doorman={"v": 1, "command": "doorman"}), Marker(True, 1), True),
        (stats_reply(), Marker(False), False),
        (stats_reply(doorman={"v": 2, "command": "doorman"}), Marker(True, 2), False),
        (stats_reply(doorman={"v": True, "command": "doorman"}), Marker(True), False),
        (stats_reply(doorman={"v": 1, "command": "other"}), Marker(True), False),
        (stats_reply(doorman=EMAIL), Marker(True), False),
        ({"error": f"ValueError('{EMAIL}')"}, Marker(None), False),
        ([EMAIL], Marker(None), False),
    ],
)
def test_the_stats_marker(reply: Any, marker: Marker, usable: bool) -> None:
    assert companion_marker(reply) == marker
    assert companion_marker(reply).usable is usable
    into = Reduced()
    reduce_stats(reply, into)
    into.answered.append("stats")
    assert into.marker == marker
    assert_nothing_planted(into)
    expected = {True: True, False: False, None: None}[marker.has]
    if marker.has is True and not usable:
        expected = False  # there, but not understood: Celery's commands
    assert companion_verdict(into, None) is expected


def test_stats_without_the_marker_turns_a_companion_worker_plain() -> None:
    """Removed from a worker: its next detail check's stats lack the marker."""
    into = Reduced()
    reduce_doorman(good_reply(), into)
    into.answered.append("doorman")
    reduce_stats(stats_reply(), into)
    into.answered.append("stats")
    assert companion_verdict(into, True) is False


def test_the_verdict_keeps_what_was_planned_when_nothing_said_otherwise() -> None:
    plain = Reduced(answered=["active"])
    assert companion_verdict(plain, False) is False
    assert companion_verdict(plain, None) is None
    asked = Reduced(answered=["doorman"])
    reduce_doorman(good_reply(), asked)
    assert companion_verdict(asked, True) is True
    broken = Reduced(answered=["doorman"])
    reduce_doorman({"v": 1}, broken)
    assert broken.companion_problem == PROBLEM_MALFORMED
    assert companion_verdict(broken, True) is True  # it has the command: never ask active


def test_commands_by_what_is_known_of_the_companion() -> None:
    def names(companion: bool | None, detail: bool) -> list[str]:
        return [c for c, _reducer in commands_for(companion, detail)]

    argument_carriers = {"active", "reserved", "scheduled"}
    assert names(True, False) == ["doorman"]
    assert names(True, True) == ["doorman", "stats", "active_queues"]
    assert not argument_carriers & set(names(True, True))
    assert names(False, False) == ["active"]
    assert set(names(False, True)) == {"active", "stats", "reserved", "scheduled", "active_queues"}
    assert names(None, False) == names(None, True) == ["stats"]


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([*PLANTED, "", "doorman", BOOT, "task-1"]),
)
json_values = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(
                ["v", "boot", "started", "active", "tasks", "queues", "buckets", "id", EMAIL]
            ),
            inner,
            max_size=5,
        ),
    ),
    max_leaves=25,
)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_reply_is_reduced_without_raising_or_leaking(reply: Any) -> None:
    data = reduced_of(reply)
    assert (data.companion is None) == (data.companion_problem is not None)
    if data.companion is None:
        assert data.active == () and data.lists == set()


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        ("doorman", {"error": "KeyError('doorman')"}),  # the companion is gone
        ("doorman", {"error": "RuntimeError('boom')"}),  # its command failed
        ("doorman", {"v": 1, "boot": 5}),  # not of the contract's shape
        ("doorman", {"v": 2}),  # a newer companion
        ("active", {"error": "RuntimeError('boom')"}),  # Celery's own command failed
    ],
)
def test_an_unusable_reply_does_not_count_as_saying_what_the_worker_runs(
    command: str, reply: Any
) -> None:
    """The worker is online, but what it runs is unknown: an overdue unacked task it may
    hold is not called orphaned (that would be a false alert on a healthy cluster)."""
    from chalicelib.collect.replies import reduce_active
    from chalicelib.collect.worker_probe import WorkerProbe, _worker_from
    from chalicelib.model import Snapshot, UnackedEntry, UnackedRaw
    from chalicelib.sanitize import Hasher, sanitize

    reducer = reduce_doorman if command == "doorman" else reduce_active
    reduced: dict[str, Reduced] = {}
    WorkerProbe._collector(command, reducer, reduced, {"w@h"})("w@h", reply)
    worker = _worker_from("w@h", reduced["w@h"], True)
    assert worker.status == "online" and command not in worker.answered
    unacked = UnackedRaw(1, 1, (UnackedEntry("t-1", "app.x", "celery", 7200.0),), 3600.0)
    snapshot = Snapshot("t", 1e9, True, workers=(worker,), unacked=unacked)
    _, entries = sanitize(snapshot, hasher=Hasher("k"), previous_observations={})
    assert [e.held_by_live_worker for e in entries] == [True]
    # A usable reply does count: then an unlisted task is orphaned.
    good: dict[str, Reduced] = {}
    WorkerProbe._collector("active", reduce_active, good, {"w@h"})("w@h", [])
    assert good["w@h"].answered == ["active"]
