"""Every option a Redis URL may carry works on both connections of a check.

A check talks to Redis twice over: redis-py (queues, INFO) and kombu (remote control of the
workers). One real redis-server and one real Celery worker serve the whole module; each URL
is checked in-process and must see the worker alive, with no worker error and no
``workers_down``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis

from chalicelib.embedded import RedisServer, Worker, wait_for_workers
from chalicelib.settings import URL_OPTIONS, load_settings
from tests.conftest import ROOT, check_once

WORKER = "w1@urlopts"


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisServer]:
    server = RedisServer().start()
    worker = Worker("tests.support.pii_app", server.url, WORKER, pool="solo", cwd=str(ROOT)).start()
    try:
        wait_for_workers(server.url, [WORKER], timeout=45)
        yield server
    finally:
        worker.stop()
        server.stop()


def base(server: RedisServer, db: str = "/0") -> str:
    return f"redis://127.0.0.1:{server.port}{db}"


def check(url: str, tmp_path: Path, **more: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "redis_url": url,
        "state_path": str(tmp_path / "state.db"),
        "hash_secret": "test-secret",
        "worker_timeout_seconds": 2.0,
    }
    values.update(more)
    return check_once(load_settings(environ={}, overrides=values))


def assert_sees_the_worker(payload: dict[str, Any]) -> None:
    worker_errors = [e for e in payload["errors"] if e["component"] == "workers"]
    assert worker_errors == []
    assert payload["metrics"]["alive_workers"] == 1, payload["workers"]
    assert [a["type"] for a in payload["anomalies"] if a["type"] == "workers_down"] == []
    assert payload["metrics"]["redis_connected"] is True
    assert [a for a in payload["alerts"] if a.get("type") == "workers_down"] == []


# One valid value of every plain (non-TLS) option the settings accept; the TLS options are
# tested against a TLS server below.
PLAIN_VALUES = {
    "db": ["0"],
    "socket_timeout": ["5", "0.1"],
    "socket_connect_timeout": ["5"],
    "health_check_interval": ["5", "0"],
    "max_connections": ["50", "1"],
    "socket_keepalive": ["f", "true", "yes"],
    "retry_on_timeout": ["yes", "n"],
    "protocol": ["3", "2"],
}


def test_every_plain_option_is_tested() -> None:
    plain = {name for name, option in URL_OPTIONS.items() if not option.tls}
    assert plain == set(PLAIN_VALUES)


@pytest.mark.parametrize(
    "query",
    [f"{name}={value}" for name, values in PLAIN_VALUES.items() for value in values]
    + [
        "max_connections=50&protocol=3&health_check_interval=5&socket_keepalive=f&retry_on_timeout=yes"
    ],
)
def test_an_accepted_option_leaves_the_workers_visible(
    cluster: RedisServer, tmp_path: Path, query: str
) -> None:
    url = base(cluster, "" if query.startswith("db=") else "/0") + "?" + query
    assert_sees_the_worker(check(url, tmp_path))


def test_db_in_path_and_query_that_agree(cluster: RedisServer, tmp_path: Path) -> None:
    assert_sees_the_worker(check(base(cluster, "/0") + "?db=0", tmp_path))


def test_no_db_at_all_and_a_bare_slash(cluster: RedisServer, tmp_path: Path) -> None:
    assert_sees_the_worker(check(base(cluster, ""), tmp_path))
    assert_sees_the_worker(check(base(cluster, "/"), tmp_path))


def test_a_worker_on_another_db_is_not_seen_on_db_0(tmp_path: Path) -> None:
    """The db reaches kombu: a worker on db 3 answers a URL naming db 3 (path or query)."""
    server = RedisServer().start()
    url3 = f"redis://127.0.0.1:{server.port}/3"
    worker = Worker("tests.support.pii_app", url3, "w3@db", pool="solo", cwd=str(ROOT)).start()
    try:
        wait_for_workers(url3, ["w3@db"], timeout=45)
        assert_sees_the_worker(check(url3, tmp_path))
        assert_sees_the_worker(check(f"redis://127.0.0.1:{server.port}?db=3", tmp_path))
        other = check(f"redis://127.0.0.1:{server.port}?db=0", tmp_path / "other")
        assert other["metrics"]["alive_workers"] == 0
    finally:
        worker.stop()
        server.stop()


PASSWORD = "p@ss/w:rd?#%&é"


def test_username_and_a_percent_encoded_password(tmp_path: Path) -> None:
    server = RedisServer().start()
    user = "ops@door:man"
    try:
        server.client().execute_command(
            "ACL", "SETUSER", user, "on", ">" + PASSWORD, "~*", "&*", "+@all"
        )
        auth = f"{quote(user, safe='')}:{quote(PASSWORD, safe='')}@"
        url = f"redis://{auth}127.0.0.1:{server.port}/0"
        worker = Worker("tests.support.pii_app", url, "w@acl", pool="solo", cwd=str(ROOT)).start()
        try:
            wait_for_workers(url, ["w@acl"], timeout=45)
            payload = check(url + "?protocol=3&health_check_interval=5", tmp_path)
            assert_sees_the_worker(payload)
        finally:
            worker.stop()
    finally:
        server.stop()


@pytest.fixture
def unix_server() -> Iterator[Path]:
    """A redis-server listening on a unix socket only (no TCP port at all)."""
    binary = shutil.which("redis-server")
    assert binary is not None
    folder = Path(tempfile.mkdtemp(prefix="doorman-unix-"))
    sock = folder / "redis.sock"
    proc = subprocess.Popen(
        [binary, "--port", "0", "--unixsocket", str(sock), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=folder,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if redis.Redis(unix_socket_path=str(sock)).ping():
                    break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield sock
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def test_unix_socket_url_reaches_the_workers(unix_server: Path, tmp_path: Path) -> None:
    """A worker on db 2 of a unix-socket Redis, seen through ``unix://...?db=2``."""
    kombu_url = f"redis+socket://{unix_server}?virtual_host=2"
    worker = Worker(
        "tests.support.pii_app", kombu_url, "w@unix", pool="solo", cwd=str(ROOT)
    ).start()
    try:
        wait_for_workers(kombu_url, ["w@unix"], timeout=45)
        payload = check(f"unix://{unix_server}?db=2&socket_timeout=3", tmp_path)
        assert_sees_the_worker(payload)
        other = check(f"unix://{unix_server}", tmp_path / "db0")
        assert other["metrics"]["alive_workers"] == 0
    finally:
        worker.stop()


ISSUE_QUERY = (
    "max_connections=50&protocol=3&health_check_interval=5&socket_keepalive=f&retry_on_timeout=yes"
)


def test_check_and_audit_commands_see_the_worker_with_every_option(
    cluster: RedisServer, tmp_path: Path
) -> None:
    """With a task waiting, a silent worker would be 'All workers down' (an emergency)."""
    from tests.conftest import producer, run_cli

    app = producer(cluster.url)
    app.sleep.apply_async((1,), queue="nobody-consumes")
    url = f"redis://127.0.0.1:{cluster.port}?db=0&{ISSUE_QUERY}"
    env = {"DOORMAN_HASH_SECRET": "test-secret", "DOORMAN_WORKER_TIMEOUT": "2"}
    state = str(tmp_path / "state.db")
    checked = run_cli(
        ["check", "--once", "--dry-run", "--format", "json", "--redis-url", url, "--state", state],
        env=env,
    )
    assert checked.returncode in (0, 1), checked.stderr
    payload = json.loads(checked.stdout)
    assert_sees_the_worker(payload)
    audited = run_cli(["audit", "--deep", "--redis-url", url, "--state", state], env=env)
    out = audited.stdout + audited.stderr
    assert "1 of 1 worker answering" in out, out
    assert "All workers down" not in out and "remote control failed" not in out, out
    # The worker's settings were read over the same remote-control connection (--deep).
    assert "task_acks_late" in out, out
