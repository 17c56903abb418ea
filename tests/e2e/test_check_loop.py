"""Without --once, ``doorman check`` repeats every interval and stops cleanly on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tests.conftest import ROOT


def test_loop_prints_one_document_per_check_and_stops_on_sigint(redis_server, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "DOORMAN_"))}
    env["CHECK_INTERVAL"] = "1"  # the shortest interval the settings accept
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chalicelib.cli",
            "check",
            "--redis-url",
            redis_server.url,
            "--state",
            str(tmp_path / "s.db"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(ROOT),
        env=env,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert time.monotonic() - started < 5
    docs = [json.loads(line) for line in lines + out.splitlines() if line.strip()]
    assert len(docs) >= 3
    assert all(d["metrics"]["redis_connected"] for d in docs)
    stamps = [d["timestamp"] for d in docs]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert "Traceback" not in err
    assert "stopped" in err
