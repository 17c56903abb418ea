"""Configuration faults: ``doorman check`` exits 3 with one line naming the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli

PASSWORD = "Cfg-Pw-7secret"

# fault -> (config file text or None, extra env, extra args, text the line must hold)
CASES: dict[str, tuple[str | None, dict[str, str], list[str], str]] = {
    "unknown key": ("redis_uri: redis://h:1/0\n", {}, [], "redis_uri"),
    "wrong type": ("thresholds:\n  max_queue_size: many\n", {}, [], "thresholds.max_queue_size"),
    "negative threshold": ("thresholds:\n  max_wait_time_seconds: -2\n", {}, [], "negative"),
    "malformed URL": (None, {}, ["--redis-url", f"redis://:{PASSWORD}@h:port/0"], "redis_url"),
    "missing required value (empty target name)": (
        None,
        {"DOORMAN_TARGET": ""},
        [],
        "DOORMAN_TARGET",
    ),
    "missing required value (empty Redis URL)": (None, {}, ["--redis-url", ""], "redis_url"),
    "config names a missing file": (
        None,
        {"DOORMAN_CONFIG": "/nonexistent/doorman-fault.yaml"},
        [],
        "DOORMAN_CONFIG",
    ),
}


@pytest.mark.parametrize("fault", list(CASES))
def test_config_fault(fault: str, tmp_path: Path, fault_log) -> None:  # type: ignore[no-untyped-def]
    text, env, extra, named = CASES[fault]
    args = ["check", "--once", "--state", str(tmp_path / "s.db"), *extra]
    if text is not None:
        config = tmp_path / "doorman.yaml"
        config.write_text(text)
        args += ["--config", str(config)]
    result = run_cli(args, env=env)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("doorman: configuration error:"), lines
    assert named in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert PASSWORD not in result.stderr
    assert not (tmp_path / "s.db").exists()
    fault_log.record(f"config: {fault}")
