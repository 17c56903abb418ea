"""The fault matrix's summary: every fault test records what it injected and what it saw.

A test asks for ``fault_log`` and calls ``fault_log.record(name, alerts_lost=..., duplicates=...)``
once the fault has been injected and its effects counted. Whether the system *survived* is the
test's own outcome: a failing test records its faults as not survived (and a test that failed
before recording anything still appears, under its own name). At the end of the session a table
and the totals are printed: faults injected, survived, alerts lost (must be 0), duplicates
(must be 0).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.support.moto_server import dynamodb, moto_server

__all__ = ["dynamodb", "moto_server"]


@dataclass
class FaultRecord:
    name: str
    survived: bool
    alerts_lost: int = 0
    duplicates: int = 0


@dataclass
class FaultLog:
    """The records of one test."""

    nodeid: str
    records: list[FaultRecord] = field(default_factory=list)

    def record(
        self, name: str, *, survived: bool = True, alerts_lost: int = 0, duplicates: int = 0
    ) -> None:
        self.records.append(FaultRecord(name, survived, alerts_lost, duplicates))


_RESULTS: list[FaultRecord] = []
_FAILED_KEY = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    if report.failed and call.when in ("setup", "call"):
        item.stash[_FAILED_KEY] = True
    return report


@pytest.fixture
def fault_log(request: pytest.FixtureRequest) -> Iterator[FaultLog]:
    log = FaultLog(request.node.nodeid)
    yield log
    failed = request.node.stash.get(_FAILED_KEY, False)
    if not log.records:
        log.records.append(FaultRecord(request.node.name, survived=False))
    for rec in log.records:
        if failed:
            rec.survived = False
        _RESULTS.append(rec)


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # type: ignore[no-untyped-def]
    if not _RESULTS:
        return
    tr = terminalreporter
    tr.section("fault matrix")
    width = max(len(r.name) for r in _RESULTS)
    tr.write_line(f"{'fault':<{width}}  survived  alerts lost  duplicates")
    for r in _RESULTS:
        tr.write_line(
            f"{r.name:<{width}}  {'yes' if r.survived else 'NO':<8}  {r.alerts_lost:>11}"
            f"  {r.duplicates:>10}"
        )
    injected = len(_RESULTS)
    survived = sum(r.survived for r in _RESULTS)
    lost = sum(r.alerts_lost for r in _RESULTS)
    dupes = sum(r.duplicates for r in _RESULTS)
    tr.write_line("")
    tr.write_line(
        f"faults injected: {injected}, survived: {survived}, "
        f"alerts lost: {lost} (must be 0), duplicates: {dupes} (must be 0)"
    )
