"""Real local servers for simulation and tests: a redis-server and Celery worker processes.

Everything binds to 127.0.0.1 on a free port, keeps nothing on disk, and is stopped by
``stop()`` (also registered with atexit, so an interrupted run leaves nothing behind).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis


class EmbeddedError(RuntimeError):
    """A local server could not be started."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_LIVE: list[subprocess.Popen[bytes]] = []


def _stop_all() -> None:
    for proc in list(_LIVE):
        _terminate(proc)


atexit.register(_stop_all)


def _terminate(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)  # a stopped process cannot handle SIGTERM
            proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace)
    if proc in _LIVE:
        _LIVE.remove(proc)


class RedisServer:
    """A private redis-server on a free loopback port."""

    def __init__(self, *, password: str | None = None) -> None:
        self.password = password
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir: str | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password)

    def start(self, timeout: float = 10.0) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise EmbeddedError("redis-server is not installed (make install fetches it)")
        self._dir = tempfile.mkdtemp(prefix="doorman-redis-")
        for _attempt in range(3):
            self.port = free_port()
            args = [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir,
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ]
            if self.password:
                args += ["--requirepass", self.password]
            self.proc = subprocess.Popen(
                args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
            )
            _LIVE.append(self.proc)
            if self._wait_ready(timeout):
                return self
            _terminate(self.proc)
        raise EmbeddedError("redis-server did not start")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return False
            try:
                if self.client().ping():
                    return True
            except redis.RedisError:
                time.sleep(0.05)
        return False

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            _terminate(self.proc)
            self.proc = None
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


class Worker:
    """One real ``celery worker`` process of ``app`` (a module path) on ``broker``."""

    def __init__(
        self,
        app: str,
        broker: str,
        name: str,
        *,
        pool: str = "solo",
        concurrency: int = 1,
        queues: Sequence[str] = ("celery",),
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.app = app
        self.broker = broker
        self.name = name
        self.pool = pool
        self.concurrency = concurrency
        self.queues = list(queues)
        self.env = env or {}
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: str | None = None

    def start(self) -> Worker:
        fd, self.log_path = tempfile.mkstemp(prefix="doorman-worker-", suffix=".log")
        log = os.fdopen(fd, "wb")
        env = {**os.environ, **self.env, "DOORMAN_DEMO_BROKER": self.broker}
        # Make the project importable in the worker whatever the current directory is.
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            self.app,
            "worker",
            "-P",
            self.pool,
            "-c",
            str(self.concurrency),
            "-n",
            self.name,
            "-Q",
            ",".join(self.queues),
            "--without-mingle",
            "--without-gossip",
            "-l",
            "warning",
        ]
        self.proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.cwd,
            start_new_session=True,
        )
        log.close()
        _LIVE.append(self.proc)
        return self

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signum)

    def kill(self) -> None:
        """SIGKILL the worker (and its pool children): it dies without cleaning up."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        if self.proc in _LIVE:
            _LIVE.remove(self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGCONT)
            _terminate(self.proc, grace=10.0)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc = None
        if self.log_path:
            with contextlib.suppress(OSError):
                os.unlink(self.log_path)
            self.log_path = None

    def log_text(self) -> str:
        if not self.log_path:
            return ""
        try:
            return Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""


def wait_for_workers(
    broker: str,
    names: Sequence[str],
    timeout: float = 30.0,
    transport_options: dict[str, Any] | None = None,
) -> None:
    """Block until every named worker answers a ping; raise EmbeddedError otherwise.

    ``transport_options``: the workers' key prefix and separator, which the ping must share.
    """
    from celery import Celery

    app = Celery("doorman-wait", broker=broker, set_as_current=False)
    app.conf.broker_connection_retry_on_startup = True
    if transport_options:
        app.conf.broker_transport_options = dict(transport_options)
    deadline = time.monotonic() + timeout
    missing = set(names)
    try:
        while missing and time.monotonic() < deadline:
            replies = app.control.ping(destination=sorted(missing), timeout=0.5) or []
            for reply in replies:
                missing -= set(reply)
        if missing:
            raise EmbeddedError(f"{len(missing)} worker(s) did not come up in {timeout:.0f} s")
    finally:
        app.close()


def point_app_at(app: Any, broker: str) -> Any:
    """Point a Celery app used for publishing at ``broker``, dropping pooled connections.

    ``app.close()`` forgets the connection pool but not the producer pool, which would keep
    publishing to the previous broker.
    """
    app.close()
    app.conf.broker_url = broker
    amqp = app.__dict__.get("amqp")
    if amqp is not None:
        amqp._producer_pool = None
    return app
