"""``doorman simulate``: real workers on an embedded Redis, checked by the real runner."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from .embedded import EmbeddedError, RedisServer, Worker, point_app_at, wait_for_workers
from .report import render_text
from .settings import load_settings
from .wiring import close_deps, local_deps

DEMO_APP = "chalicelib.demo_app"
# The demo's tasks carry made-up personal data; none of it may show in the output.
DEMO_ADDRESSES = ("ada.lovelace@example.com", "grace.hopper@example.org")


# Each worker's prefork pool: the "expiring" scenario keeps every slot busy.
CONCURRENCY = 2
# "charge": every 4th amount is within the demo's card limit, the other 3 are declined.
DEMO_AMOUNTS = (1999, 7500, 12000, 8900)
# "expiring": the reports that keep the pool busy (s), and the e-mails' expires (s after sending).
BUSY_SECONDS = 1.0
EXPIRES_SECONDS = 0.5


@dataclass(frozen=True)
class Scenario:
    """A preset cluster. ``task``: "email" (quick), "slow" (2 s), "stuck" (runs past its
    limit), "charge" (a card charge, 3 in 4 declined: the task raises), "expiring" (e-mails
    sent with ``expires`` EXPIRES_SECONDS behind two BUSY_SECONDS reports filling the pool).

    ``after_first_check``: the tasks are sent after the first check instead of before it. The
    check learns task outcomes by differencing the worker companion's counters between two
    checks, and the first check only records them, so what these tasks did shows from the
    second check on (such a scenario needs two checks). ``pending_checks``: alert types that
    fire after this many breaching checks (``alert_pending_checks``), e.g. 1 for an alert
    that can only breach from the second check on.
    """

    name: str
    description: str
    workers: int
    enqueue: int
    task: str = "email"
    max_queue_size: int = 10
    max_task_runtime: float = 1800.0
    settle: float = 0.5
    after_first_check: bool = False
    pending_checks: tuple[tuple[str, int], ...] = ()


SCENARIOS = {
    "healthy": Scenario("healthy", "one worker, a few quick tasks", workers=1, enqueue=3),
    "workers-down": Scenario(
        "workers-down", "no worker running, 5 tasks waiting", workers=0, enqueue=5
    ),
    "backlog": Scenario(
        "backlog", "one worker, 20 slow tasks, threshold 10", workers=1, enqueue=20, task="slow"
    ),
    "stuck": Scenario(
        "stuck",
        "a task running past max_task_runtime (2 s)",
        workers=1,
        enqueue=1,
        task="stuck",
        max_task_runtime=2.0,
        settle=3.0,
    ),
    "failing": Scenario(
        "failing",
        "12 card charges after the first check, 9 declined; task_failure_rate fires at once",
        workers=1,
        enqueue=12,
        task="charge",
        settle=0.2,
        after_first_check=True,
        pending_checks=(("task_failure_rate", 1),),
    ),
    "expiring": Scenario(
        "expiring",
        f"6 e-mails with expires {EXPIRES_SECONDS:g} s after the first check,"
        f" queued behind {BUSY_SECONDS:g} s reports on a busy worker",
        workers=1,
        enqueue=6,
        task="expiring",
        settle=0.2,
        after_first_check=True,
    ),
}


@contextmanager
def cluster(workers: int) -> Iterator[tuple[RedisServer, list[Worker]]]:
    """An embedded Redis and ``workers`` real prefork workers, all stopped on exit."""
    server = RedisServer().start()
    started: list[Worker] = []
    try:
        for index in range(workers):
            started.append(
                Worker(
                    DEMO_APP,
                    server.url,
                    f"demo-{index + 1}@doorman-sim",
                    pool="prefork",
                    concurrency=CONCURRENCY,
                ).start()
            )
        if started:
            wait_for_workers(server.url, [w.name for w in started])
        yield server, started
    finally:
        # A cold shutdown (SIGQUIT): nothing of the simulation is kept, so running tasks need
        # not finish (a warm one waits for them: up to stop()'s 10 s grace for "stuck").
        for worker in started:
            with contextlib.suppress(ProcessLookupError):
                worker.signal(signal.SIGQUIT)
        for worker in started:
            worker.stop()
        server.stop()


def _enqueue(url: str, scenario: Scenario) -> None:
    from . import demo_app

    point_app_at(demo_app.app, url)
    if scenario.task == "expiring":
        for _slot in range(CONCURRENCY):
            demo_app.build_report.delay(BUSY_SECONDS)
    for index in range(scenario.enqueue):
        address = DEMO_ADDRESSES[index % len(DEMO_ADDRESSES)]
        if scenario.task == "email":
            demo_app.send_welcome_email.delay(address, f"Welcome, {address}!")
        elif scenario.task == "expiring":
            demo_app.send_welcome_email.apply_async(
                (address, f"Welcome, {address}!"), expires=EXPIRES_SECONDS
            )
        elif scenario.task == "charge":
            demo_app.charge_card.delay(address, DEMO_AMOUNTS[index % len(DEMO_AMOUNTS)])
        elif scenario.task == "slow":
            demo_app.build_report.delay(2.0)
        else:
            demo_app.build_report.delay(60.0)
    demo_app.app.close()


def _wait_done(url: str, timeout: float = 30.0) -> None:
    """Until no task waits in the demo's queue nor is held unacknowledged by a worker (each
    ended: run, failed or discarded at expiry); raises EmbeddedError after ``timeout``
    seconds (the next check would show a scenario that has not happened yet)."""
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not client.llen("celery") and not client.hlen("unacked"):
                return
            time.sleep(0.05)
    finally:
        client.close()
    raise EmbeddedError(f"the scenario's tasks did not finish within {timeout:.0f} s")


def run_scenario(scenario: Scenario, checks: int = 1) -> list[dict[str, Any]]:
    """Run ``scenario`` on a fresh embedded cluster; return the payload of each check.

    The tasks are sent before the first check, or, for ``after_first_check``, right after it:
    the second check then follows once they all ended (plus ``settle``)."""
    from .runner import run_check

    state_dir = tempfile.mkdtemp(prefix="doorman-sim-")
    try:
        with cluster(scenario.workers) as (server, _workers):
            if not scenario.after_first_check:
                _enqueue(server.url, scenario)
                time.sleep(scenario.settle)
            settings = load_settings(
                environ={},
                overrides={
                    "redis_url": server.url,
                    "state_path": str(Path(state_dir) / "state.db"),
                    "target": f"simulation-{scenario.name}",
                    "thresholds.max_queue_size": scenario.max_queue_size,
                    "thresholds.max_task_runtime_seconds": scenario.max_task_runtime,
                    "worker_discovery_interval_seconds": 3600,
                    "alert_pending_checks": dict(scenario.pending_checks) or None,
                },
            )
            deps = local_deps(settings)
            payloads = []
            try:
                for index in range(checks):
                    if index == 1 and scenario.after_first_check:
                        _enqueue(server.url, scenario)
                        _wait_done(server.url)
                        time.sleep(scenario.settle)
                    elif index:
                        time.sleep(1.0)
                    payloads.append(run_check(settings, deps).payload)
            finally:
                close_deps(deps)
            return payloads
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


def _summary_row(name: str, payload: dict[str, Any]) -> str:
    m = payload["metrics"]
    firing = [a for a in payload["alerts"] if a["state"] == "firing"]
    alerts = ", ".join(f"{a['type']} ({a['severity']})" for a in firing) or "none"
    return (
        f"  {name:<14}{m['alive_workers']}/{m['total_workers']:<6}{m['total_pending']:>8}"
        f"{m['max_latency_sec']:>10.1f}  {m['saturation_pct']:>6.1f}%  {alerts}"
    )


Output = Callable[[str], None]


def _render(payload: dict[str, Any], fmt: str) -> str:
    return json.dumps(payload, indent=2) if fmt == "json" else render_text(payload)


def show(scenario: Scenario, checks: int, fmt: str, *, out: Output) -> None:
    """Run ``scenario`` with ``checks`` checks and write each payload (``fmt``: json, text)."""
    for payload in run_scenario(scenario, checks=checks):
        out(_render(payload, fmt))


def tour(fmt: str, *, out: Output) -> None:
    """Every scenario in turn, two checks each, then a summary table."""
    rows: list[str] = []
    started = time.monotonic()
    for name, scenario in SCENARIOS.items():
        out(f"\n=== {name}: {scenario.description}")
        payloads = run_scenario(scenario, checks=2)
        for index, payload in enumerate(payloads, 1):
            if fmt != "json":
                out(f"-- check {index}")
            out(_render(payload, fmt))
        rows.append(_summary_row(name, payloads[-1]))
    out("\nSummary")
    out(
        f"  {'scenario':<14}{'workers':<8}{'pending':>8}{'latency s':>10}  {'satur.':>7}"
        "  firing alerts"
    )
    out("\n".join(rows))
    out(
        f"\n{len(rows)} scenarios on real workers in {time.monotonic() - started:.0f} s;"
        " every process was stopped."
    )
