"""Local checks (as ``doorman check --once`` runs them) that SIGKILL themselves at a chosen moment.

    python -m tests.contract.crash_child REDIS_URL STATE_PATH

A driver: it imports everything once, then for each number K read from stdin forks a child
that runs one check and kills itself (SIGKILL, no clean-up of any kind) just before the K-th
SQL statement the state store runs, counted from 0 across connecting, loading, committing and
delivering. For each child it writes one line: ``killed`` or ``exited <code>``. It exits at
the end of its input. The driver has no threads, so forking it is safe.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import traceback
from typing import Any

import chalicelib.state.sqlite as sqlite_store
from chalicelib.delivery import ConsoleChannel, deliver_outbox
from chalicelib.runner import run_check
from chalicelib.settings import load_settings
from chalicelib.wiring import local_deps

ENVIRON = {"ALERT_COOLDOWN": "0", "DOORMAN_WORKER_TIMEOUT": "0.2"}


def check_then_die(redis_url: str, state_path: str, kill_at: int) -> None:
    ran = [0]

    def trace(_statement: str) -> None:
        if ran[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        ran[0] += 1

    real_connect = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = real_connect(*args, **kwargs)
        conn.set_trace_callback(trace)
        return conn

    sqlite_store.sqlite3.connect = connect  # type: ignore[assignment]  # fault injection

    settings = load_settings(
        environ=ENVIRON, overrides={"redis_url": redis_url, "state_path": state_path}
    )
    deps = local_deps(settings)
    try:
        result = run_check(settings, deps)
        if result.committed:
            deliver_outbox(deps.store, settings.target, [ConsoleChannel()])
    finally:
        deps.collector.close()
        deps.store.close()


def main(redis_url: str, state_path: str) -> int:
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                check_then_die(redis_url, state_path, int(line))
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            print("killed", flush=True)
        else:
            print(f"exited {os.waitstatus_to_exitcode(status)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
