"""``doorman audit`` on real scenarios: real redis-server, real Celery workers, the real CLI.

The exit code is the contract CI relies on: 0 healthy, 1 warnings, 2 critical. Several
tests share one healthy two-worker cluster (started once for the module); the scenarios that
break workers get their own.
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chalicelib.embedded import RedisServer, wait_for_workers
from chalicelib.sanitize import Hasher
from tests.conftest import ROOT, WorkerFactory, producer, run_cli, wait_until
from tests.support import pii_app

SECRET = "test-secret"
HASHER = Hasher(SECRET)
ANSI = re.compile(r"\x1b\[")
SECTIONS = ("Infrastructure", "Workers", "Queues", "Metrics", "Recommendations")
# Planted in pii_app's settings; also in PLANTED, listed here so the intent is explicit.
CONF_SECRETS = (pii_app.PLANTED_SECRET_SETTING, pii_app.PLANTED_TRANSPORT_PASSWORD)


class Cluster:
    def __init__(self, server: RedisServer, workers: WorkerFactory, names: list[str]) -> None:
        self.server = server
        self.workers = workers
        self.names = names

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Two prefork workers on 'celery'; the first runs with task_acks_late off and a host
    name full of personal data."""
    server = RedisServer().start()
    factory = WorkerFactory(server.url)
    names = [f"w1@{pii_app.PLANTED_WORKER_HOST}", "w2@audit"]
    try:
        factory.start(names[0], env={"PII_ACKS_LATE": "0"}, wait=False)
        factory.start(names[1], wait=False)
        wait_for_workers(server.url, names, timeout=45)
        yield Cluster(server, factory, names)
    finally:
        for worker in factory.started:
            worker.kill()
        factory.stop_all()
        server.stop()


def audit(
    url: str, tmp_path: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_cli(
        ["audit", "--redis-url", url, "--state", str(tmp_path / "state.db"), *extra],
        env={"DOORMAN_HASH_SECRET": SECRET, **(env or {})},
    )


def section(stdout: str, title: str) -> str:
    """The lines of one report section (up to the next blank line)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    body: list[str] = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        body.append(line)
    return "\n".join(body)


def row(stdout: str, title: str, needle: str) -> str:
    found = [line for line in section(stdout, title).splitlines() if needle in line]
    assert len(found) == 1, (needle, section(stdout, title))
    return found[0]


# --- the shared healthy cluster --------------------------------------------------------------


def test_healthy_cluster_exits_0_with_every_section(cluster, tmp_path):
    result = audit(cluster.url, tmp_path)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    for title in SECTIONS:
        assert re.search(rf"^{title}$", out, re.M), title
    assert "Status: HEALTHY" in out
    assert "Trends" not in out and "Configuration Analysis" not in out
    assert "connected (Redis " in row(out, "Infrastructure", "Redis")
    assert "2 of 2 workers answering" in row(out, "Infrastructure", "Celery")
    for name in cluster.names:
        line = row(out, "Workers", HASHER.worker(name))
        assert "online" in line and "0/2 slots" in line
    assert "empty" in row(out, "Queues", "celery")
    assert "(0/4 slots busy, headroom 4 slots)" in row(out, "Metrics", "Saturation")
    assert "nothing to do" in section(out, "Recommendations")
    assert "All systems healthy" in out
    assert re.search(r"^Audit completed in \d+\.\d s$", out, re.M)
    # Not a terminal: no colour, and one sample prints no progress.
    assert not ANSI.search(out + result.stderr)
    assert "Sampling" not in result.stderr
    # A dry run: the state file got no sample, so no alert state moved.
    assert "would send" not in result.stderr


def test_deep_flags_missing_maxmemory_and_acks_late(cluster, tmp_path):
    result = audit(cluster.url, tmp_path, "--deep")
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    config = section(out, "Configuration Analysis")
    maxmemory = row(out, "Configuration Analysis", "Redis maxmemory")
    assert maxmemory.lstrip().startswith("!") and "not set" in maxmemory
    acks = row(out, "Configuration Analysis", "task_acks_late")
    assert acks.lstrip().startswith("!") and "False on 1 of 2 workers" in acks
    # pii_app sets prefetch 1 and both workers consume 'celery'.
    assert row(out, "Configuration Analysis", "prefetch").lstrip().startswith("✓")
    assert row(out, "Configuration Analysis", "Worker redundancy").lstrip().startswith("✓")
    assert "persistence" in config and "off (no RDB, no AOF)" in config
    recommendations = section(out, "Recommendations")
    assert "CONFIG SET maxmemory" in recommendations
    assert "Set task_acks_late=True" in recommendations
    assert "Warnings found" in out


def test_samples_show_growth_arrows_and_trends(cluster, tmp_path):
    app = producer(cluster.url)
    queue = "audit-growing"
    stop = threading.Event()

    def produce() -> None:
        while not stop.is_set():
            # Often enough that every interval between two samples grows, even on a busy
            # machine: a queue counts as growing only while its last interval grew.
            app.quick.apply_async(queue=queue)
            stop.wait(0.03)

    filler = threading.Thread(target=produce, daemon=True)
    filler.start()
    try:
        result = audit(cluster.url, tmp_path, "--samples", "3", "--interval", "0.5")
    finally:
        stop.set()
        filler.join(5)
        cluster.server.client().delete(queue)
    out = result.stdout
    assert "Sampling 1/3..." in result.stderr and "Sampling 3/3..." in result.stderr
    assert "Sampling" not in out
    growing = row(out, "Queues", queue)
    match = re.search(r"↑\+(\d+)", growing)
    assert match and int(match.group(1)) > 0, growing
    assert re.search(r"^Trends \(over 3 samples, ", out, re.M)
    trend = row(out, "Trends", queue)
    first, last = map(int, re.search(r"\((\d+) → (\d+)\)", trend).groups())
    assert last - first == int(match.group(1)) and "↑" in trend
    # Every sample of an audit asks for the workers' counters, so the throughput is measured
    # across the samples (the workers idle: nothing completed).
    assert re.search(r"Throughput +0 tasks/min", out), out
    # Three rising samples while the workers idle: a growing queue and ghost workers.
    assert "Ghost workers" in section(out, "Recommendations")
    assert f"Queue {queue} growing" in section(out, "Recommendations")
    assert result.returncode == 1, out


def read_pty(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run the CLI with stdout on a pseudo-terminal; return its exit code and output."""
    master, slave = pty.openpty()
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "CELERY_", "DOORMAN_"))
    }
    full_env.pop("NO_COLOR", None)
    full_env.update(env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "chalicelib.cli", *args],
        stdout=slave,
        stderr=subprocess.PIPE,
        env=full_env,
        cwd=str(ROOT),
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        code = proc.wait(30)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_colour_only_on_a_terminal_without_no_color(cluster, tmp_path):
    args = ["audit", "--redis-url", cluster.url, "--state", str(tmp_path / "state.db")]
    code, coloured = read_pty(args, {"DOORMAN_HASH_SECRET": SECRET})
    assert code == 0, coloured
    assert ANSI.search(coloured), coloured
    assert "\x1b[32m" in coloured  # healthy is green

    code, plain = read_pty(args, {"DOORMAN_HASH_SECRET": SECRET, "NO_COLOR": "1"})
    assert code == 0, plain
    assert "Status: HEALTHY" in plain
    assert not ANSI.search(plain), plain


def test_audit_output_holds_no_planted_data(cluster, tmp_path):
    """Args, kwargs, ids, names, hosts and the workers' secret settings stay out, --deep too."""
    app = producer(cluster.url)
    client = cluster.server.client()
    try:
        for index in range(3):
            app.process_user.apply_async(
                (pii_app.PLANTED_EMAIL, pii_app.PLANTED_CARD),
                {"note": pii_app.PLANTED_PHONE, "secret": pii_app.PLANTED_KWARG},
                queue=pii_app.PLANTED_QUEUE,
                task_id=f"{pii_app.PLANTED_TASK_ID}-{index}",
            )
        # Held by a worker until due: its scheduled() entry carries the arguments.
        app.sleep.apply_async(
            (0.01, pii_app.PLANTED_EMAIL, pii_app.PLANTED_SSN),
            queue="celery",
            countdown=600,
            task_id=pii_app.PLANTED_TASK_ID + "-eta",
        )
        wait_until(lambda: client.llen("celery") == 0, 10, "a worker to take the ETA task")
        outputs = []
        for extra in ([], ["--deep", "--samples", "2", "--interval", "0.2"]):
            result = audit(cluster.url, tmp_path, *extra, env={"DOORMAN_HASH_SECRET": SECRET})
            outputs.append(result.stdout + result.stderr)
            assert "Doorman audit" in result.stdout, result.stderr
        everything = "\n".join(outputs)
        # The planted queue is reported, by its scrubbed name, with its depth.
        assert "emails-[email]" in everything and "3 pending" in everything
        assert "Configuration Analysis" in outputs[1]
        for planted in (*pii_app.PLANTED, *CONF_SECRETS, "planted_password", "secret_api_key"):
            assert planted not in everything, planted
    finally:
        client.delete(pii_app.PLANTED_QUEUE)


# --- scenarios with their own workers ----------------------------------------------------------


def test_workers_down_with_tasks_pending_is_critical(redis_server, workers, tmp_path):
    worker = workers.start("w1@down", concurrency=1)
    worker.kill()
    app = producer(redis_server.url)
    for _ in range(4):
        app.quick.apply_async(queue="celery")
    result = audit(redis_server.url, tmp_path)
    out = result.stdout
    assert result.returncode == 2, out + result.stderr
    assert "Status: CRITICAL" in out
    assert "offline" in row(out, "Workers", HASHER.worker("w1@down"))
    assert "0 of 1 worker answering" in row(out, "Infrastructure", "Celery")
    assert "4 pending" in row(out, "Queues", "celery")
    assert "[emergency] All workers down" in section(out, "Recommendations")
    assert "Critical problems found" in out


def test_stuck_task_warns_then_a_backlog_is_critical(redis_server, workers, tmp_path):
    worker = workers.start("w1@busy", concurrency=1, queues=("work",))
    client = redis_server.client()
    app = producer(redis_server.url)
    env = {"MAX_TASK_RUNTIME": "1", "MAX_QUEUE_SIZE": "3"}
    try:
        app.sleep.apply_async((30,), queue="work")
        wait_until(lambda: client.zcard("unacked_index") == 1, 10, "the task to start")
        time.sleep(1.5)  # past MAX_TASK_RUNTIME

        stuck = audit(redis_server.url, tmp_path, env=env)
        out = stuck.stdout
        assert stuck.returncode == 1, out + stuck.stderr  # stuck_task is a warning
        line = row(out, "Workers", HASHER.worker("w1@busy"))
        assert "1/1 slots" in line and "at capacity" in line
        assert "[warning] Task stuck" in section(out, "Recommendations")
        assert "Warnings found" in out

        for _ in range(6):
            app.sleep.apply_async((30,), queue="work")
        wait_until(lambda: client.llen("work") >= 5, 10, "the backlog")
        backlog = audit(redis_server.url, tmp_path, env=env)
        out = backlog.stdout
        assert backlog.returncode == 2, out + backlog.stderr  # backlog_explosion is critical
        queue = row(out, "Queues", "work")
        assert "CONGESTED" in queue and queue.lstrip().startswith("✗")
        assert "[critical] Backlog explosion" in section(out, "Recommendations")
        assert "threshold 3" in row(out, "Metrics", "Total pending")
    finally:
        worker.kill()


def test_unreachable_redis_is_critical_and_bad_arguments_are_config_errors(tmp_path):
    from chalicelib.embedded import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    result = audit(url, tmp_path, "--deep")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "not run: Redis unreachable" in section(result.stdout, "Configuration Analysis")
    assert re.search(r"✗ Redis\s+unreachable: ", section(result.stdout, "Infrastructure"))
    assert "Status: CRITICAL" in result.stdout
    assert "Traceback" not in result.stderr

    bad = audit(url, tmp_path, "--samples", "0")
    assert bad.returncode == 3 and "--samples" in bad.stderr
    assert "Traceback" not in bad.stderr
