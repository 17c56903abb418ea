"""Two workers started with the same name answer every question twice: Doorman says so
instead of silently counting them as one."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import WorkerFactory, wait_until

pytestmark = pytest.mark.slow  # real workers


def test_two_workers_sharing_a_name_are_reported(workers: WorkerFactory, checker: Any) -> None:
    workers.start("twin@doorman-test", pool="solo", concurrency=1)
    workers.start("twin@doorman-test", pool="solo", concurrency=1)
    workers.start("single@doorman-test", pool="solo", concurrency=1)
    check = checker(worker_timeout_seconds=2.0)
    seen: list[dict[str, Any]] = []

    def reported() -> bool:
        payload = check.check()
        seen.append(payload)
        return any(e["kind"] == "duplicate_name" for e in payload["errors"])

    wait_until(reported, 30, "the shared name to be reported")
    payload = seen[-1]
    (error,) = [e for e in payload["errors"] if e["kind"] == "duplicate_name"]
    assert error["component"] == "workers" and error["message"].startswith("1 worker name(s)")
    assert "twin" not in error["message"]  # names are hashed everywhere, errors included
    # Both names answered: the single worker was not left out by the twin's second answer.
    assert payload["metrics"]["alive_workers"] == 2


def test_distinct_names_raise_no_such_error(workers: WorkerFactory, checker: Any) -> None:
    workers.start("one@doorman-test", pool="solo", concurrency=1)
    workers.start("two@doorman-test", pool="solo", concurrency=1)
    check = checker(worker_timeout_seconds=2.0)
    for _ in range(3):
        payload = check.check()
        assert not [e for e in payload["errors"] if e["kind"] == "duplicate_name"]
    assert payload["metrics"]["alive_workers"] == 2
