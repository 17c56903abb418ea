"""Redis Sentinel: real ``redis-server --sentinel`` processes watching a real master and
replica, a real worker on Celery's ``sentinel://`` broker URL; Doorman checks through the
Sentinels, and after the master is killed and the replica promoted, its next checks follow."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from chalicelib.embedded import Worker, _terminate, free_port, wait_for_workers
from chalicelib.runner import run_check
from chalicelib.settings import load_settings
from tests.conftest import ROOT

MASTER = "mymaster"
MASTER_PW = "master-Pw-31x"
SENTINEL_PW = "sentinel-Pw-77q"
DOWN_AFTER_MS = 500  # small: the suite stays fast
FOLLOW_BOUND = 30.0  # seconds from the kill to a good check (failover included)


@dataclass
class SentinelCluster:
    dir: str
    master_port: int = 0
    replica_port: int = 0
    sentinel_ports: list[int] = field(default_factory=list)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start_redis(self, name: str, port: int, *extra: str) -> None:
        args = [
            "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", self.dir, "--dbfilename", f"{name}.rdb",
            "--requirepass", MASTER_PW, "--masterauth", MASTER_PW, "--loglevel", "warning",
            *extra,
        ]  # fmt: skip
        self.procs[name] = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )

    def start_sentinel(self, index: int, port: int) -> None:
        conf = Path(self.dir) / f"sentinel-{index}.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
            f"requirepass {SENTINEL_PW}\n"
            f"sentinel sentinel-pass {SENTINEL_PW}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {self.master_port} 2\n"
            f"sentinel auth-pass {MASTER} {MASTER_PW}\n"
            f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER} 5000\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
        )
        self.procs[f"sentinel-{index}"] = subprocess.Popen(
            ["redis-server", str(conf), "--sentinel", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def url(self) -> str:
        first, *rest = self.sentinel_ports
        return ";".join(
            [f"sentinel://:{MASTER_PW}@127.0.0.1:{first}/0"]
            + [f"sentinel://127.0.0.1:{p}" for p in rest]
        )

    def sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, password=SENTINEL_PW, socket_timeout=2)

    def master_address(self) -> tuple[str, int] | None:
        for port in self.sentinel_ports:
            with contextlib.suppress(redis.RedisError):
                found = self.sentinel(port).sentinel_get_master_addr_by_name(MASTER)
                if found:
                    host = found[0].decode() if isinstance(found[0], bytes) else str(found[0])
                    return host, int(found[1])
        return None

    def stop(self) -> None:
        for proc in self.procs.values():
            _terminate(proc)  # type: ignore[arg-type]


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(redis.RedisError):
            if condition():
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def sentinels() -> Iterator[SentinelCluster]:
    cluster = SentinelCluster(tempfile.mkdtemp(prefix="doorman-sentinel-"))
    try:
        cluster.master_port, cluster.replica_port = free_port(), free_port()
        cluster.start_redis("master", cluster.master_port)
        cluster.start_redis(
            "replica", cluster.replica_port, "--replicaof", "127.0.0.1", str(cluster.master_port)
        )
        replica = redis.Redis(port=cluster.replica_port, password=MASTER_PW)
        wait_for(
            lambda: replica.info("replication").get("master_link_status") == "up",
            20,
            "the replica to sync",
        )
        cluster.sentinel_ports = [free_port() for _ in range(3)]
        for index, port in enumerate(cluster.sentinel_ports):
            cluster.start_sentinel(index, port)
        for port in cluster.sentinel_ports:
            s = cluster.sentinel(port)
            wait_for(
                lambda s=s: (
                    len(s.sentinel_slaves(MASTER)) == 1 and len(s.sentinel_sentinels(MASTER)) == 2
                ),
                30,
                "the Sentinels to know the replica and each other",
            )
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.dir, ignore_errors=True)


def test_checks_go_through_sentinel_and_follow_a_failover(
    sentinels: SentinelCluster, tmp_path: Path
) -> None:
    url = sentinels.url()
    env = {"SENTINEL_MASTER": MASTER, "SENTINEL_PASSWORD": SENTINEL_PW}
    worker = Worker("tests.support.sentinel_app", url, "w1@sentinel", env=env, cwd=str(ROOT))
    worker.start()
    try:
        transport = {"master_name": MASTER, "sentinel_kwargs": {"password": SENTINEL_PW}}
        wait_for_workers(url, ["w1@sentinel"], timeout=45, transport_options=transport)
        master = redis.Redis(port=sentinels.master_port, password=MASTER_PW)
        for _ in range(3):
            master.lpush("waiting", b"{}")
        settings = load_settings(
            environ={},
            overrides={
                "redis_url": url,
                "sentinel_master_name": MASTER,
                "sentinel_password": SENTINEL_PW,
                "state_path": str(tmp_path / "state.db"),
                "hash_secret": "test-secret",
                "worker_timeout_seconds": 2.0,
                "redis_timeout_seconds": 1.0,
                "monitored_queues": ["waiting"],
            },
        )
        from chalicelib.wiring import local_deps

        deps = local_deps(settings)  # one collector for every check, as the loop keeps it
        try:
            first = run_check(settings, deps).payload
            assert first["errors"] == [], first["errors"]
            assert first["metrics"]["redis_connected"] is True
            assert first["metrics"]["alive_workers"] == 1
            assert {q["name"]: q["depth"] for q in first["queues"]}["waiting"] == 3
            # The data reached the replica before the master dies.
            replica = redis.Redis(port=sentinels.replica_port, password=MASTER_PW)
            wait_for(lambda: replica.llen("waiting") == 3, 10, "replication of the queue")

            killed_at = time.monotonic()
            sentinels.procs["master"].kill()
            sentinels.procs["master"].wait(10)
            wait_for(
                lambda: sentinels.master_address() == ("127.0.0.1", sentinels.replica_port),
                FOLLOW_BOUND,
                "Sentinel to promote the replica",
            )
            promoted_after = time.monotonic() - killed_at
            payloads = []
            while True:
                payload = run_check(settings, deps).payload
                payloads.append(payload)
                if payload["metrics"]["redis_connected"] and payload["metrics"]["alive_workers"]:
                    break
                assert time.monotonic() - killed_at < FOLLOW_BOUND, payload["errors"]
                time.sleep(0.5)
            followed_after = time.monotonic() - killed_at
            # Redis itself is followed at once: the broken pooled connection is retried once,
            # and the new one goes to the master the Sentinels name (the worker takes a
            # moment longer to reconnect, which Doorman reports as it is).
            assert all(p["metrics"]["redis_connected"] for p in payloads), [
                p["errors"] for p in payloads
            ]
            good = payloads[-1]
            assert {q["name"]: q["depth"] for q in good["queues"]}["waiting"] == 3
            # The resolve-after checks later, nothing about an unreachable Redis is firing.
            for _ in range(settings.alert_resolve_after_checks + 1):
                last = run_check(settings, deps).payload
            assert last["metrics"]["redis_connected"] is True
            firing = [a["type"] for a in last["alerts"] if a.get("state") == "firing"]
            assert "redis_unreachable" not in firing, last["alerts"]
            assert not any(a["type"] == "redis_unreachable" for a in last["anomalies"])
            print(
                f"failover: promoted {promoted_after:.1f} s after the kill, checks followed"
                f" {followed_after:.1f} s after it ({len(payloads)} check(s))"
            )
        finally:
            deps.collector.close()
            if deps.store is not None:
                deps.store.close()
    finally:
        worker.stop()
