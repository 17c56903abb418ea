"""The roster: who is reported offline, for how long, and when a worker is forgotten."""

from __future__ import annotations

from dataclasses import replace

from chalicelib.check import update_roster
from chalicelib.model import WorkerSample
from chalicelib.state import WorkerRecord


def _worker(id_hash: str, status: str = "online", concurrency: int | None = 4) -> WorkerSample:
    return WorkerSample(
        id_hash=id_hash,
        status=status,
        concurrency=concurrency,
        active=0,
        reserved=0,
        scheduled=0,
        pool="prefork",
        queues=(),
        processed_total=0,
        processed={},
        prefetch_count=None,
        uptime_sec=None,
        tasks=(),
    )


def test_online_worker_is_recorded_with_its_concurrency():
    roster, report = update_roster({}, (_worker("w-1"),), 100.0, 3600, probed=True)
    assert roster["w-1"] == WorkerRecord(last_seen=100.0, concurrency=4)
    assert [w.status for w in report] == ["online"]


def test_worker_that_vanished_from_the_bindings_is_reported_offline():
    roster = {"w-1": WorkerRecord(last_seen=100.0, concurrency=4)}
    new, report = update_roster(roster, (), 160.0, 3600, probed=True)
    assert [(w.id_hash, w.status, w.concurrency) for w in report] == [("w-1", "offline", 4)]
    assert new["w-1"].silent_since == 160.0
    assert not new["w-1"].forgotten


def test_silent_worker_is_forgotten_after_the_forget_period_and_not_reported():
    roster = {"w-1": WorkerRecord(last_seen=100.0, silent_since=200.0)}
    new, report = update_roster(roster, (_worker("w-1", "offline"),), 200.0 + 3600, 3600, True)
    assert new["w-1"].forgotten
    assert report == ()


def test_forgotten_worker_that_answers_again_is_back_online():
    roster = {"w-1": WorkerRecord(last_seen=100.0, silent_since=200.0, forgotten=True)}
    new, report = update_roster(roster, (_worker("w-1"),), 9000.0, 3600, True)
    assert new["w-1"] == WorkerRecord(last_seen=9000.0, concurrency=4)
    assert [w.status for w in report] == ["online"]


def test_a_check_that_could_not_ask_changes_nothing_and_reports_unknown():
    roster = {"w-1": WorkerRecord(last_seen=100.0, concurrency=2)}
    new, report = update_roster(roster, (), 500.0, 3600, probed=False)
    assert new == roster
    assert [(w.id_hash, w.status) for w in report] == [("w-1", "unknown")]


def test_not_answering_worker_keeps_known_concurrency():
    roster = {"w-1": WorkerRecord(last_seen=100.0, concurrency=8)}
    silent = replace(_worker("w-1", "not_answering"), concurrency=None)
    _new, report = update_roster(roster, (silent,), 130.0, 3600, True)
    assert [(w.status, w.concurrency) for w in report] == [("not_answering", 8)]


def test_severity_orders_by_rank_not_by_text():
    from chalicelib.model import Severity

    assert Severity.CRITICAL > Severity.WARNING
    assert Severity.EMERGENCY >= Severity.CRITICAL
    assert Severity.INFO <= Severity.WARNING
    assert max([Severity.CRITICAL, Severity.WARNING, Severity.INFO]) is Severity.CRITICAL
    assert sorted([Severity.EMERGENCY, Severity.INFO, Severity.CRITICAL]) == [
        Severity.INFO,
        Severity.CRITICAL,
        Severity.EMERGENCY,
    ]
