"""``doorman simulate`` starts real servers, reports what it saw, and leaves nothing behind."""

from __future__ import annotations

import json
import subprocess

from chalicelib.simulate import DEMO_ADDRESSES
from tests.conftest import run_cli


def _doorman_processes() -> set[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True)
    return {
        line.split(None, 1)[0]
        for line in out.stdout.splitlines()
        if "doorman-redis-" in line or "doorman-sim" in line or "chalicelib.demo_app" in line
    }


def test_workers_down_scenario_reports_pending_tasks_and_no_alive_worker():
    before = _doorman_processes()
    result = run_cli(
        ["simulate", "--scenario", "workers-down", "--format", "json", "--checks", "1"],
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    payload = json.loads(result.stdout)
    assert [a["type"] for a in payload["alerts"]] == ["workers_down"]
    assert payload["alerts"][0]["state"] == "firing"
    assert payload["metrics"]["total_pending"] == 5
    assert payload["metrics"]["alive_workers"] == 0
    assert payload["metrics"]["redis_connected"] is True
    # The demo's tasks carry e-mail addresses; none may show, nor any part of one.
    for address in DEMO_ADDRESSES:
        for part in (address, *address.split("@")):
            assert part not in result.stdout + result.stderr, part
    assert _doorman_processes() <= before


def test_custom_simulation_with_one_worker_sees_it_online():
    result = run_cli(
        ["simulate", "--workers", "1", "--enqueue", "0", "--format", "json"], timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    decoder = json.JSONDecoder()
    text, payloads = result.stdout.strip(), []
    while text:
        doc, end = decoder.raw_decode(text)
        payloads.append(doc)
        text = text[end:].strip()
    assert len(payloads) == 2  # two checks by default
    payload = payloads[-1]
    assert payload["metrics"]["alive_workers"] == 1
    assert payload["workers"][0]["id_hash"].startswith("w-")
    assert "doorman-sim" not in result.stdout
