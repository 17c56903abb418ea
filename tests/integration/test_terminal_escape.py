"""Names from the cluster never reach the operator's terminal raw, through any command.

A queue (and a task) is named with a terminal colour sequence, a forged report line, a bell, a
carriage return and a right-to-left override. Every human-facing output of the real command
(the text check, the JSON, the alert lines on stderr, the ``--dry-run`` lines, the audit,
``whois``, ``silence``, argparse's complaints, the log lines of ``-v``) must show them
escaped: no byte of it may move the cursor, recolour or reorder the terminal, or start a line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.embedded import RedisServer, Worker, wait_for_workers
from chalicelib.sanitize import Hasher
from chalicelib.text import safe_text
from tests.conftest import PII_APP, ROOT, clean_env

EVIL = "\x1b[31mRED\x1b[0m\nDoorman check - target FORGED\x07\r\u202eevil"
# Every other class the escaping promises: C1 CSI, DEL, NEL, line separator, isolates, marks.
EVIL_TOO = "q2\x9b31m\x7f\x85\u2028\u2029\u2066\u2067\u2068\u2069\u200e\u200f\u061c\u202ax\u202d"
EVIL_TASK = "tasks.\x1b]0;owned\x07send\u202ereversed\r\nDoorman check - target FORGED-TASK"
EVIL_ID = "id-\x1b[2J\u202e-1"
SEP = "\x06\x16"

# One real worker consumes another queue: the cluster is alive (so workers_down does not
# inhibit the rest), and the backlog alert fires on the first breach with a message naming the
# largest (hostile) queue.
ENV = {
    "DOORMAN_WORKER_TIMEOUT": "2",
    "MAX_QUEUE_SIZE": "1",
    "DOORMAN_ALERT_PENDING_CHECKS": "backlog_explosion=1",
}


def run_cli(args: list[str], env: dict[str, str] | None = None) -> Any:
    """conftest's ``run_cli``, but reading bytes: text mode would turn a raw CR into a newline."""
    result = subprocess.run(
        [sys.executable, "-m", "chalicelib.cli", *args],
        capture_output=True,
        env=clean_env(**(env or {})),
        cwd=str(ROOT),
        timeout=60,
        check=False,
    )
    return subprocess.CompletedProcess(
        result.args,
        result.returncode,
        result.stdout.decode("utf-8"),
        result.stderr.decode("utf-8"),
    )


def unsafe(text: str) -> list[str]:
    """The characters of ``text`` that must never reach a terminal (a newline may)."""
    found = []
    for ch in text:
        code = ord(ch)
        if ch == "\n":
            continue
        if (
            code < 0x20
            or 0x7F <= code <= 0x9F
            or 0x202A <= code <= 0x202E
            or 0x2066 <= code <= 0x2069
            or code in (0x200E, 0x200F, 0x061C, 0x2028, 0x2029)
        ):
            found.append(repr(ch))
    return found


def assert_clean(result: Any, what: str) -> None:
    for stream, text in (("stdout", result.stdout), ("stderr", result.stderr)):
        assert not unsafe(text), f"{what}: raw {sorted(set(unsafe(text)))} on {stream}: {text!r}"
        for line in text.splitlines():
            # The forged line may only appear inside the (escaped) name, never start a line.
            assert not line.startswith("Doorman check - target FORGED"), (what, stream, text)


def plant(client: Any) -> None:
    """Bind the hostile queues and fill them (one message names a hostile task and id)."""
    for name in (EVIL, EVIL_TOO):
        client.sadd("_kombu.binding.celery", f"{name}{SEP}{SEP}{name}")
    message = {
        "body": "",
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"id": EVIL_ID, "task": EVIL_TASK, "lang": "py"},
        "properties": {"delivery_tag": "1", "body_encoding": "base64"},
    }
    client.lpush(EVIL, json.dumps(message))
    for _ in range(4):
        client.lpush(EVIL, b"plain")
    client.lpush(EVIL_TOO, b"plain")


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    """A redis-server holding the hostile queues, and one worker on the ``celery`` queue."""
    server = RedisServer().start()
    worker = None
    try:
        plant(server.client())
        worker = Worker(PII_APP, server.url, "w1@escape", queues=("celery",), cwd=str(ROOT))
        worker.start()
        wait_for_workers(server.url, [worker.name], timeout=45)
        yield server.url
    finally:
        if worker is not None:
            worker.stop()
        server.stop()


@pytest.fixture
def cluster(broker: str, tmp_path: Path) -> dict[str, str]:
    return {"url": broker, "state": str(tmp_path / "state.db")}


def cli(cluster: dict[str, str], *args: str, env: dict[str, str] | None = None) -> Any:
    return run_cli(
        [*args, "--redis-url", cluster["url"], "--state", cluster["state"]],
        env={**ENV, **(env or {})},
    )


def test_safe_text_escapes_every_dangerous_class() -> None:
    for ch in EVIL + EVIL_TOO + EVIL_TASK:
        shown = safe_text(ch)
        assert not unsafe(shown) and "\n" not in shown, repr(ch)
    assert safe_text("plain queue · ünïcödé ⚠️") == "plain queue · ünïcödé ⚠️"
    # Escaping what is already escaped changes nothing: layers may each call it.
    assert safe_text(safe_text(EVIL)) == safe_text(EVIL)


def test_check_text_and_the_alert_lines_on_stderr(cluster: dict[str, str]) -> None:
    result = cli(cluster, "check", "--once", "--format", "text", "-v")
    assert result.returncode == 0, result.stderr
    assert_clean(result, "check --format text")
    # The alert line was printed (the name is in it, escaped), so the test saw the real path.
    alert = [line for line in result.stderr.splitlines() if "ALERT [critical]" in line]
    assert alert and "\\x1b[31mRED" in alert[0] and "\\u202eevil" in alert[0], result.stderr


def test_check_json(cluster: dict[str, str]) -> None:
    result = cli(cluster, "check", "--once", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert_clean(result, "check --format json")
    doc = json.loads(result.stdout)
    assert {EVIL, EVIL_TOO} <= {q["name"] for q in doc["queues"]}  # the JSON keeps the truth


def test_dry_run_lines(cluster: dict[str, str]) -> None:
    channels = {
        # Dry: nothing is sent, so nothing needs to listen on these.
        "SLACK_WEBHOOK_URL": "http://127.0.0.1:9/slack",
        "PAGERDUTY_ROUTING_KEY": "k" * 32,
        "PAGERDUTY_EVENTS_URL": "http://127.0.0.1:9/pd",
        "GENERIC_WEBHOOK_URL": "http://127.0.0.1:9/hook",
    }
    result = cli(cluster, "check", "--once", "--dry-run", "--format", "text", env=channels)
    assert result.returncode == 0, result.stderr
    assert_clean(result, "check --dry-run")
    would = [line for line in result.stderr.splitlines() if "would send" in line]
    assert len(would) >= 4 and any("FORGED" in line for line in would), result.stderr


def test_audit(cluster: dict[str, str]) -> None:
    result = cli(cluster, "audit")
    assert result.returncode == 2, result.stderr
    assert_clean(result, "audit")
    assert "FORGED" in result.stdout


def test_whois(cluster: dict[str, str]) -> None:
    first = cli(cluster, "check", "--once")  # creates the local secret
    assert first.returncode == 0, first.stderr
    secret = Path(cluster["state"] + ".secret").read_text(encoding="utf-8").strip()
    hasher = Hasher(secret)
    for wanted, expect in (
        (hasher.queue(EVIL), "queue "),
        (hasher.queue(EVIL_TOO), "queue q2"),
        (hasher.task(EVIL_ID), "task id-"),
    ):
        result = cli(cluster, "whois", wanted)
        assert result.returncode == 0, result.stderr
        assert_clean(result, f"whois {wanted}")
        assert result.stdout.startswith(expect) and result.stdout.count("\n") == 1, result.stdout
    missing = cli(cluster, "whois", EVIL)  # the operator's own argument is echoed escaped too
    assert missing.returncode == 1
    assert_clean(missing, "whois (no match)")


def test_silence_and_argument_errors(cluster: dict[str, str]) -> None:
    state = ["--state", cluster["state"]]
    added = run_cli(
        ["silence", "add", "--queue", EVIL, "--comment", EVIL_TASK, "--target", EVIL, *state]
    )
    assert added.returncode == 0, added.stderr
    assert_clean(added, "silence add")
    listed = run_cli(["silence", "list", *state])
    assert listed.returncode == 0, listed.stderr
    assert_clean(listed, "silence list")
    assert "FORGED" in listed.stdout
    removed = run_cli(["silence", "remove", EVIL, *state])
    assert removed.returncode == 1
    assert_clean(removed, "silence remove")
    unknown = run_cli(["check", "--once", EVIL])
    assert unknown.returncode == 2
    assert_clean(unknown, "unrecognized argument")
    assert "unrecognized arguments" in unknown.stderr
