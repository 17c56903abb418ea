"""ElastiCache IAM authentication: the token is botocore's SigV4 presign of
``elasticache:Connect``, and both of Doorman's connections (redis-py and kombu) log in with
it against a real redis-server whose user has the token as its password."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
import redis
from botocore.credentials import Credentials

from chalicelib import acl
from chalicelib.access import BrokerAccess
from chalicelib.collect.redis_probe import connect
from chalicelib.collect.worker_probe import WorkerProbe
from chalicelib.embedded import RedisServer
from chalicelib.iam_auth import (
    REFRESH_AFTER,
    TOKEN_LIFETIME,
    IamCredentialProvider,
    elasticache_token,
)
from chalicelib.settings import load_settings
from tests.conftest import check_once

CREDS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
SESSION_CREDS = Credentials("ASIAEXAMPLE", "c2VjcmV0LXNlY3JldA", token="FwoGZX-session/token+=")
AT = datetime.datetime(2026, 1, 2, 3, 4, 5)
USER = "doorman-iam"
CACHE = "orders-cache"
REGION = "eu-west-1"


def presigned_by_botocore(creds: Credentials, serverless: bool = False) -> str:
    """The token as AWS documents it: RequestSigner.generate_presigned_url, 900 s."""
    from botocore.model import ServiceId
    from botocore.session import get_session
    from botocore.signers import RequestSigner

    signer = RequestSigner(
        ServiceId("elasticache"),
        REGION,
        "elasticache",
        "v4",
        creds,
        get_session().get_component("event_emitter"),
    )
    query = f"Action=connect&User={USER}" + ("&ResourceType=ServerlessCache" if serverless else "")
    url = signer.generate_presigned_url(
        {
            "method": "GET",
            "url": f"https://{CACHE}/?{query}",
            "body": {},
            "headers": {},
            "context": {},
        },
        operation_name="connect",
        expires_in=900,
        region_name=REGION,
    )
    return str(url).removeprefix("https://")


@pytest.mark.parametrize("creds", [CREDS, SESSION_CREDS], ids=["keys", "session-token"])
@pytest.mark.parametrize("serverless", [False, True], ids=["replication-group", "serverless"])
def test_token_is_botocores_presigned_connect(creds: Credentials, serverless: bool) -> None:
    reference = presigned_by_botocore(creds, serverless)
    stamp = dict(parse_qsl(urlsplit("https://" + reference).query))["X-Amz-Date"]
    at = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ")
    ours = elasticache_token(USER, CACHE, REGION, creds, at=at, serverless=serverless)
    assert ours == reference


def sigv4_by_hand(token: str, secret: str) -> str:
    """The signature of a presigned GET, computed from the SigV4 specification."""
    parts = urlsplit("https://" + token)
    params = [(k, v) for k, v in parse_qsl(parts.query) if k != "X-Amz-Signature"]
    canonical_query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params)
    )
    canonical = "\n".join(
        [
            "GET",
            "/",
            canonical_query,
            f"host:{parts.netloc}",
            "",
            "host",
            hashlib.sha256(b"").hexdigest(),
        ]
    )
    values = dict(params)
    date = values["X-Amz-Date"]
    scope = f"{date[:8]}/{REGION}/elasticache/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + secret).encode()
    for part in (date[:8], REGION, "elasticache", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def test_token_at_a_fixed_clock() -> None:
    token = elasticache_token(USER, CACHE, REGION, SESSION_CREDS, at=AT)
    assert not token.startswith("https://")
    parts = urlsplit("https://" + token)
    assert parts.netloc == CACHE and parts.path == "/"
    values = dict(parse_qsl(parts.query))
    assert values["Action"] == "connect" and values["User"] == USER
    assert values["X-Amz-Date"] == "20260102T030405Z"
    assert values["X-Amz-Expires"] == str(TOKEN_LIFETIME) == "900"
    assert values["X-Amz-Credential"] == f"ASIAEXAMPLE/20260102/{REGION}/elasticache/aws4_request"
    assert values["X-Amz-Security-Token"] == SESSION_CREDS.token
    assert values["X-Amz-Signature"] == sigv4_by_hand(token, SESSION_CREDS.secret_key)
    # The same inputs give the same token; another second gives another.
    assert elasticache_token(USER, CACHE, REGION, SESSION_CREDS, at=AT) == token
    later = AT + datetime.timedelta(seconds=1)
    assert elasticache_token(USER, CACHE, REGION, SESSION_CREDS, at=later) != token


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def provider(clock: Clock) -> IamCredentialProvider:
    return IamCredentialProvider(USER, CACHE, REGION, credentials=lambda: CREDS, clock=clock)


def iam_user(server: RedisServer, *tokens: str) -> None:
    """Doorman's least-privilege user, whose passwords are ``tokens``."""
    server.client().execute_command(
        "ACL",
        "SETUSER",
        USER,
        "reset",
        "on",
        *(">" + t for t in tokens),
        *acl.rules("", 0).tokens(),
        "+acl|whoami",  # for the test to ask who it is and which connection it holds
        "+client|id",
    )


def test_provider_renews_the_token_before_it_expires() -> None:
    clock = Clock(AT.replace(tzinfo=datetime.UTC).timestamp())
    source = provider(clock)
    user, first = source.get_credentials()
    assert user == USER
    assert "X-Amz-Date=20260102T030405Z" in first
    clock.now += REFRESH_AFTER - 1
    assert source.get_credentials() == (USER, first)  # still fresh: not signed again
    clock.now += 1
    _, second = source.get_credentials()
    assert second != first and "X-Amz-Date=20260102T031405Z" in second
    assert REFRESH_AFTER < TOKEN_LIFETIME  # renewed before ElastiCache would refuse it
    assert "Signature" not in repr(source) and first not in repr(source)


def test_both_connections_log_in_with_the_token_and_follow_its_renewal(
    redis_server: RedisServer, workers: Any
) -> None:
    workers.start("w1@iam")
    clock = Clock(time.time())
    source = provider(clock)
    _, token = source.get_credentials()
    iam_user(redis_server, token)
    url = f"redis://127.0.0.1:{redis_server.port}/0"  # no password anywhere
    access = BrokerAccess(credential_provider=source)

    client = connect(url, 2.0, access)
    assert client.acl_whoami() == USER
    probe = WorkerProbe(url, timeout=2.0, connect_timeout=2.0, access=access)
    try:
        found = probe.probe(["w1@iam"], discover=False, budget=5.0)
        assert found.errors == ()
        assert [w.status for w in found.workers] == ["online"]

        # The token expires: the next one is signed and the next connections use it.
        clock.now += REFRESH_AFTER + 1
        _, renewed = source.get_credentials()
        assert renewed != token
        admin = redis_server.client()
        admin.execute_command("ACL", "SETUSER", USER, "<" + token, ">" + renewed)
        client.connection_pool.disconnect()
        assert client.acl_whoami() == USER
        probe.close()
        found = probe.probe(["w1@iam"], discover=False, budget=5.0)
        assert [w.status for w in found.workers] == ["online"], found.errors
        # A connection with the old token is refused: the new one really was used.
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=redis_server.port, username=USER, password=token).ping()
    finally:
        probe.close()
        client.close()


def test_connections_are_replaced_before_their_age_limit(
    redis_server: RedisServer, workers: Any
) -> None:
    """ElastiCache closes an IAM connection after 12 hours: Doorman opens a new one first
    (here after 0.5 s), on both connections."""
    workers.start("w1@age")
    clock = Clock(time.time())
    source = provider(clock)
    iam_user(redis_server, source.get_credentials()[1])
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    access = BrokerAccess(credential_provider=source, reconnect_after=0.5)
    client = connect(url, 2.0, access)
    probe = WorkerProbe(url, timeout=2.0, connect_timeout=2.0, access=access)
    try:
        first = client.client_id()
        assert client.client_id() == first  # young: the same connection
        app = probe._celery()
        time.sleep(0.6)
        assert client.client_id() != first
        assert probe._celery() is not app
        found = probe.probe(["w1@age"], discover=False, budget=5.0)
        assert [w.status for w in found.workers] == ["online"], found.errors
    finally:
        probe.close()
        client.close()


def test_check_with_redis_auth_iam(
    redis_server: RedisServer, workers: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The settings path: no password in the URL, the token signed with the (here: fixed)
    AWS credentials the function's role would give, for both connections of a check."""
    workers.start("w1@iamcheck")
    for name, value in {
        "AWS_ACCESS_KEY_ID": CREDS.access_key,
        "AWS_SECRET_ACCESS_KEY": CREDS.secret_key,
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    # The check signs at its own clock: the user takes the tokens of the next seconds.
    start = int(time.time())
    tokens = [
        elasticache_token(
            USER,
            CACHE,
            REGION,
            CREDS,
            at=datetime.datetime.fromtimestamp(start + s, datetime.UTC).replace(tzinfo=None),
        )
        for s in range(0, 30)
    ]
    iam_user(redis_server, *tokens)
    settings = load_settings(
        environ={},
        overrides={
            "redis_url": f"redis://127.0.0.1:{redis_server.port}/0",
            "redis_auth": "iam",
            "elasticache_user_id": USER,
            "elasticache_cache": CACHE,
            "elasticache_region": REGION,
            "state_path": str(tmp_path / "state.db"),
            "hash_secret": "test-secret",
            "worker_timeout_seconds": 2.0,
        },
    )
    payload = check_once(settings)
    assert payload["errors"] == []
    assert payload["metrics"]["redis_connected"] is True
    assert payload["metrics"]["alive_workers"] == 1
    assert not any(e for e in redis_server.client().acl_log(50) if e["username"] == USER)
