"""The broker URL as kombu is given it: the same server, database, user and TLS as redis-py."""

from __future__ import annotations

import pytest
from kombu import Connection
from redis.connection import parse_url

from chalicelib.collect.worker_probe import kombu_broker


@pytest.mark.parametrize(
    ("url", "host", "port", "db", "username", "password"),
    [
        ("redis://[::1]:6390/0", "::1", 6390, 0, None, None),
        ("redis://:p%2Fw%40rd%23@[::1]:6390?db=4", "::1", 6390, 4, None, "p/w@rd#"),
        ("redis://ops%40door:s%3Ac%20r@h.example:7/2", "h.example", 7, 2, "ops@door", "s:c r"),
        ("redis://h.example", "h.example", None, 0, None, None),
        ("redis://h.example/", "h.example", None, 0, None, None),
    ],
)
def test_kombu_reads_what_redis_py_reads(
    url: str, host: str, port: int | None, db: int, username: str | None, password: str | None
) -> None:
    theirs = parse_url(url)
    assert theirs["host"] == host and theirs.get("port") == port
    assert theirs.get("db", 0) == db
    assert theirs.get("username") == username and theirs.get("password") == password
    broker = kombu_broker(url)
    assert "?" not in broker.url  # kombu would pass query options to Connection() and fail
    conn = Connection(broker.url)
    assert conn.hostname == host
    assert conn.port == port  # None: both default to 6379
    assert conn.userid == username and conn.password == password
    assert int(conn.virtual_host) == db


def test_query_options_become_transport_options() -> None:
    broker = kombu_broker(
        "redis://h:1?db=3&max_connections=50&protocol=3&health_check_interval=5"
        "&socket_keepalive=f&retry_on_timeout=yes&socket_timeout=4&socket_connect_timeout=2"
    )
    assert broker.url == "redis://h:1/3"
    assert broker.transport_options == {
        "max_connections": 50,
        "health_check_interval": 5,
        "socket_keepalive": False,
        "socket_timeout": 4.0,
        "socket_connect_timeout": 2.0,
    }
    assert broker.ssl is None


def test_rediss_verifies_the_certificate_like_redis_py() -> None:
    # kombu's own default for rediss:// without options is CERT_NONE; redis-py's is required.
    assert kombu_broker("rediss://h:1/0").ssl == {"ssl_cert_reqs": "required"}
    assert parse_url("rediss://h:1/0")["connection_class"].__name__ == "SSLConnection"
    broker = kombu_broker("rediss://h:1/0?ssl_cert_reqs=none&ssl_ca_certs=/c%20a.pem")
    assert broker.ssl == {"ssl_cert_reqs": "none", "ssl_ca_certs": "/c a.pem"}
    assert broker.url == "rediss://h:1/0"


def test_unix_socket_is_kombus_socket_form() -> None:
    broker = kombu_broker("unix://u:p%40w@/var/run/re%20dis.sock?db=2&socket_timeout=3")
    assert broker.url == "redis+socket://u:p%40w@/var/run/re%20dis.sock?virtual_host=2"
    assert broker.transport_options == {"socket_timeout": 3.0}


def test_repr_never_shows_the_password() -> None:
    assert "s3cret" not in repr(kombu_broker("redis://:s3cret@h:1/0"))
