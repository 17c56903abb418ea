"""The TLS options of a ``rediss://`` URL work on both connections of a check.

A real redis-server serving TLS only (certificates made here with openssl, for 127.0.0.1),
and one real Celery worker connected over TLS with a client certificate.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from chalicelib.collect.worker_probe import WorkerProbe
from chalicelib.embedded import Worker, free_port, wait_for_workers
from chalicelib.settings import URL_OPTIONS, load_settings
from tests.conftest import ROOT, check_once

WORKER = "w1@tls"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(folder: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all by the CA."""
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=doorman-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        cwd=folder,
    )
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, extra in (("server", ["-extfile", "san.cnf"]), ("client", [])):
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            cwd=folder,
        )
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            f"{name}.crt",
            *extra,
            cwd=folder,
        )
    cas = folder / "cas"
    cas.mkdir()
    shutil.copy(folder / "ca.crt", cas / "ca.crt")
    openssl("rehash", str(cas), cwd=folder)


@dataclass(frozen=True)
class TlsRedis:
    port: int
    certs: Path

    def url(self, query: str = "") -> str:
        return f"rediss://127.0.0.1:{self.port}/0" + (f"?{query}" if query else "")

    @property
    def ca(self) -> str:
        return str(self.certs / "ca.crt")

    def client_cert_query(self) -> str:
        return (
            f"ssl_ca_certs={self.ca}&ssl_certfile={self.certs / 'client.crt'}"
            f"&ssl_keyfile={self.certs / 'client.key'}"
        )


@pytest.fixture(scope="module")
def tls_cluster() -> Iterator[TlsRedis]:
    binary = shutil.which("redis-server")
    assert binary is not None
    certs = Path(tempfile.mkdtemp(prefix="doorman-tls-"))
    make_certificates(certs)
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(certs / "server.crt"),
            "--tls-key-file",
            str(certs / "server.key"),
            "--tls-ca-cert-file",
            str(certs / "ca.crt"),
            "--tls-auth-clients",
            "optional",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(certs),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = TlsRedis(port, certs)
    worker: Worker | None = None
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if redis.Redis.from_url(server.url(f"ssl_ca_certs={server.ca}")).ping():
                    break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        # kombu's own URL form for the worker: ssl_cert_reqs must be given.
        worker_url = server.url("ssl_cert_reqs=required&" + server.client_cert_query())
        worker = Worker(
            "tests.support.pii_app", worker_url, WORKER, pool="solo", cwd=str(ROOT)
        ).start()
        wait_for_workers(worker_url, [WORKER], timeout=45)
        yield server
    finally:
        if worker is not None:
            worker.stop()
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(certs, ignore_errors=True)


def check(url: str, tmp_path: Path) -> dict[str, Any]:
    values: dict[str, Any] = {
        "redis_url": url,
        "state_path": str(tmp_path / "state.db"),
        "hash_secret": "test-secret",
        "worker_timeout_seconds": 2.0,
    }
    return check_once(load_settings(environ={}, overrides=values))


def assert_sees_the_worker(payload: dict[str, Any]) -> None:
    assert payload["errors"] == []
    assert payload["metrics"]["redis_connected"] is True
    assert payload["metrics"]["alive_workers"] == 1, payload["workers"]


TLS_QUERIES = {
    "ssl_ca_certs": "ssl_ca_certs={ca}",
    "ssl_cert_reqs": "ssl_cert_reqs=none",
    "ssl_check_hostname": "ssl_cert_reqs=required&ssl_check_hostname=false&ssl_ca_certs={ca}",
    "ssl_ca_path": "ssl_ca_path={cas}",
    "ssl_certfile": "{client}",
    "ssl_keyfile": "{client}&socket_timeout=5&protocol=3&max_connections=5",
}


def test_every_tls_option_is_tested() -> None:
    assert {name for name, option in URL_OPTIONS.items() if option.tls} == set(TLS_QUERIES)


@pytest.mark.parametrize("option", sorted(TLS_QUERIES))
def test_a_tls_option_leaves_the_workers_visible(
    tls_cluster: TlsRedis, tmp_path: Path, option: str
) -> None:
    query = TLS_QUERIES[option].format(
        ca=tls_cluster.ca,
        cas=tls_cluster.certs / "cas",
        client=tls_cluster.client_cert_query(),
    )
    assert_sees_the_worker(check(tls_cluster.url(query), tmp_path))


def test_remote_control_verifies_the_certificate_like_redis_py(tls_cluster: TlsRedis) -> None:
    """Without the CA, redis-py refuses the server's certificate; so must kombu (whose own
    default for rediss:// is not to verify it)."""
    url = tls_cluster.url()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_timeout=2).ping()
    probe = WorkerProbe(url, timeout=1.0, connect_timeout=1.0)
    try:
        result = probe.probe([WORKER], discover=False, budget=3.0)
    finally:
        probe.close()
    assert [w.status for w in result.workers] == ["not_answering"]
    assert result.errors != ()
