"""``doorman simulate`` starts real servers, reports what it saw, and leaves nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from chalicelib.simulate import DEMO_ADDRESSES
from tests.conftest import run_cli


def _simulate(
    args: list[str], tmp_path: Path
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run ``doorman simulate ARGS`` with its own temporary directory; return its result and
    the processes it left running. Every process it starts inherits ``TMPDIR`` (the workers
    keep it in their environment) or works in a directory made there (redis-server, which
    overwrites its environment with its title, runs in its ``--dir``): simulations running
    in parallel do not count."""
    result = run_cli(["simulate", *args], env={"TMPDIR": str(tmp_path)}, timeout=120)
    mark = f"TMPDIR={tmp_path}".encode()
    left = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue  # gone meanwhile, or not ours to read
            if mark in environ or cwd.startswith(f"{tmp_path}/"):
                left.append(entry.name)
    return result, left


def _payloads(stdout: str) -> list[dict]:
    """Every JSON document the simulation printed, in order."""
    decoder = json.JSONDecoder()
    text, payloads = stdout.strip(), []
    while text:
        doc, end = decoder.raw_decode(text)
        payloads.append(doc)
        text = text[end:].strip()
    return payloads


def _assert_no_planted_data(result: subprocess.CompletedProcess[str]) -> None:
    # The demo's tasks carry e-mail addresses; none may show, nor any part of one.
    for address in DEMO_ADDRESSES:
        for part in (address, *address.split("@")):
            assert part not in result.stdout + result.stderr, part


def _firing(payload: dict) -> list[tuple[str, str, str]]:
    return [
        (a["type"], a["severity"], a["title"]) for a in payload["alerts"] if a["state"] == "firing"
    ]


def test_workers_down_scenario_reports_pending_tasks_and_no_alive_worker(tmp_path):
    result, left = _simulate(
        ["--scenario", "workers-down", "--format", "json", "--checks", "1"], tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    payload = json.loads(result.stdout)
    assert [a["type"] for a in payload["alerts"]] == ["workers_down"]
    assert payload["alerts"][0]["state"] == "firing"
    assert payload["metrics"]["total_pending"] == 5
    assert payload["metrics"]["alive_workers"] == 0
    assert payload["metrics"]["redis_connected"] is True
    _assert_no_planted_data(result)
    assert left == []  # every process it started was stopped


def test_custom_simulation_with_one_worker_sees_it_online(tmp_path):
    result, left = _simulate(["--workers", "1", "--enqueue", "0", "--format", "json"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    payloads = _payloads(result.stdout)
    assert len(payloads) == 2  # two checks by default
    payload = payloads[-1]
    assert payload["metrics"]["alive_workers"] == 1
    assert payload["workers"][0]["id_hash"].startswith("w-")
    assert "doorman-sim" not in result.stdout
    assert left == []  # every process it started was stopped


def test_failing_scenario_counts_the_declined_charges_and_fires_task_failure_rate(tmp_path):
    result, left = _simulate(
        ["--scenario", "failing", "--format", "json", "--checks", "2"], tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    first, second = _payloads(result.stdout)
    # The first check records the companion's counters; the charges are sent after it.
    assert first["metrics"]["tasks_failed"] is None
    assert first["companion"]["first_reading"] is True
    assert _firing(first) == []
    assert second["workers"][0]["companion"] is True
    [charge] = second["tasks"]
    assert charge["name"] == "demo.charge_card"
    # 12 charges, every 4th within the card limit: the truth the demo knows.
    assert (charge["succeeded"], charge["failed"], charge["expired"]) == (3, 9, 0)
    assert charge["failure_rate"] == 0.75
    assert second["metrics"]["tasks_failed"] == 9
    assert second["metrics"]["failure_rate_pct"] == 75.0
    assert _firing(second) == [("task_failure_rate", "critical", "Task failing: demo.charge_card")]
    _assert_no_planted_data(result)
    assert left == []  # every process it started was stopped


def test_expiring_scenario_counts_the_expired_emails_and_fires_tasks_expired(tmp_path):
    result, left = _simulate(
        ["--scenario", "expiring", "--format", "text", "--checks", "2"], tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    first, second = result.stdout.split("Doorman check - ")[1:]
    assert "counters read for the first time" in first
    assert "Tasks expired" not in first
    assert "2 succeeded, 0 failed, 6 expired since the last check" in second
    assert "demo.send_welcome_email: 6 expired" in second
    assert "demo.build_report: 2 succeeded" in second
    assert "[warning] Tasks expired: demo.send_welcome_email (firing)" in second
    _assert_no_planted_data(result)
    assert left == []  # every process it started was stopped


def test_expiring_scenario_payload_has_the_expiries_per_task_name(tmp_path):
    result, left = _simulate(
        ["--scenario", "expiring", "--format", "json", "--checks", "2"], tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    payload = _payloads(result.stdout)[-1]
    tasks = {t["name"]: t for t in payload["tasks"]}
    assert set(tasks) == {"demo.build_report", "demo.send_welcome_email"}
    emails = tasks["demo.send_welcome_email"]
    assert (emails["succeeded"], emails["failed"], emails["expired"]) == (0, 0, 6)
    assert emails["failure_rate"] is None  # none ran: an expiry is not a failure
    assert tasks["demo.build_report"]["succeeded"] == 2
    assert payload["metrics"]["tasks_expired"] == 6
    assert _firing(payload) == [
        ("tasks_expired", "warning", "Tasks expired: demo.send_welcome_email")
    ]
    _assert_no_planted_data(result)
    assert left == []  # every process it started was stopped
