"""``doorman simulate``: real workers on an embedded Redis, checked by the real runner."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .embedded import RedisServer, Worker, point_app_at, wait_for_workers
from .report import render_text
from .settings import load_settings
from .wiring import close_deps, local_deps

DEMO_APP = "chalicelib.demo_app"
# The demo's tasks carry made-up personal data; none of it may show in the output.
DEMO_ADDRESSES = ("ada.lovelace@example.com", "grace.hopper@example.org")


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    workers: int
    enqueue: int
    task: str = "email"  # "email" (quick), "slow" (2 s), "stuck" (runs past its limit)
    max_queue_size: int = 10
    max_task_runtime: float = 1800.0
    settle: float = 0.5


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
                    concurrency=2,
                ).start()
            )
        if started:
            wait_for_workers(server.url, [w.name for w in started])
        yield server, started
    finally:
        for worker in started:
            worker.stop()
        server.stop()


def _enqueue(url: str, scenario: Scenario) -> None:
    from . import demo_app

    point_app_at(demo_app.app, url)
    for index in range(scenario.enqueue):
        address = DEMO_ADDRESSES[index % len(DEMO_ADDRESSES)]
        if scenario.task == "email":
            demo_app.send_welcome_email.delay(address, f"Welcome, {address}!")
        elif scenario.task == "slow":
            demo_app.build_report.delay(2.0)
        else:
            demo_app.build_report.delay(60.0)
    demo_app.app.close()


def run_scenario(scenario: Scenario, checks: int = 1) -> list[dict[str, Any]]:
    """Run ``scenario`` on a fresh embedded cluster; return the payload of each check."""
    from .runner import run_check

    state_dir = tempfile.mkdtemp(prefix="doorman-sim-")
    try:
        with cluster(scenario.workers) as (server, _workers):
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
                },
            )
            deps = local_deps(settings)
            payloads = []
            try:
                for index in range(checks):
                    if index:
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
