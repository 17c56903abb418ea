"""ElastiCache IAM authentication: a short-lived token signed with the caller's own role.

ElastiCache accepts, as the password of an IAM-enabled user, a SigV4 presigned request for
the ``connect`` action of service ``elasticache`` on the cache (AWS documents it as
``RequestSigner.generate_presigned_url`` with ``expires_in=900``). Signing is local: no
network call, so it works inside a VPC without an endpoint. A token is valid for 15
minutes for new connections; a connection it opened stays authenticated, but ElastiCache
closes it after 12 hours, so Doorman renews tokens after REFRESH_AFTER seconds and opens a
new connection before MAX_CONNECTION_AGE.
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import redis

TOKEN_LIFETIME = 900  # seconds: the most ElastiCache accepts
REFRESH_AFTER = 600  # a token is renewed five minutes before it expires
MAX_CONNECTION_AGE = 11 * 3600  # ElastiCache closes IAM-authenticated connections at 12 h
SERVICE = "elasticache"


def elasticache_token(
    user_id: str,
    cache: str,
    region: str,
    credentials: Any,
    *,
    at: datetime.datetime,
    serverless: bool = False,
) -> str:
    """The IAM auth token (the password) for ``user_id`` on the replication group or
    serverless cache ``cache``, signed with ``credentials`` (botocore frozen credentials:
    access_key, secret_key, token) as of ``at`` (UTC). Raises botocore's
    NoCredentialsError when there are none."""
    from botocore.auth import SIGV4_TIMESTAMP, SigV4QueryAuth
    from botocore.awsrequest import AWSRequest

    class _SignedAt(SigV4QueryAuth):  # type: ignore[misc]
        # botocore stamps the request with the current time; the time is an argument here
        # so that a token can be checked against a fixed clock.
        def add_auth(self, request: Any) -> None:
            request.context["timestamp"] = at.strftime(SIGV4_TIMESTAMP)
            self._modify_request_before_signing(request)
            canonical = self.canonical_request(request)
            signature = self.signature(self.string_to_sign(request, canonical), request)
            self._inject_signature_to_request(request, signature)

    params = {"Action": "connect", "User": user_id}
    if serverless:
        params["ResourceType"] = "ServerlessCache"
    request = AWSRequest(method="GET", url=f"https://{cache}/?{urlencode(params)}")
    _SignedAt(credentials, SERVICE, region, expires=TOKEN_LIFETIME).add_auth(request)
    # ElastiCache takes the presigned URL without its scheme.
    return str(request.url).removeprefix("https://")


class IamCredentialProvider(redis.CredentialProvider):
    """redis-py's (and kombu's) source of the username and password of each new connection:
    the ElastiCache user id and a token renewed every REFRESH_AFTER seconds."""

    def __init__(
        self,
        user_id: str,
        cache: str,
        region: str,
        *,
        serverless: bool = False,
        credentials: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``credentials``: returns botocore frozen credentials (default: the default
        session's, i.e. the Lambda function's role, refreshed by botocore)."""
        self.user_id = user_id
        self.cache = cache
        self.region = region
        self.serverless = serverless
        self._credentials = credentials or _default_credentials()
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._signed_at = 0.0

    def get_credentials(self) -> tuple[str, str]:
        """(user id, token); raises botocore's NoCredentialsError without credentials."""
        with self._lock:
            now = self._clock()
            if self._token is None or now - self._signed_at >= REFRESH_AFTER:
                at = datetime.datetime.fromtimestamp(int(now), datetime.UTC)
                self._token = elasticache_token(
                    self.user_id,
                    self.cache,
                    self.region,
                    self._credentials(),
                    at=at.replace(tzinfo=None),
                    serverless=self.serverless,
                )
                self._signed_at = now
            return self.user_id, self._token

    def __repr__(self) -> str:  # never the token
        return f"IamCredentialProvider(user_id={self.user_id!r}, cache={self.cache!r})"


def _default_credentials() -> Callable[[], Any]:
    import botocore.session

    session = botocore.session.get_session()

    def frozen() -> Any:
        found = session.get_credentials()
        if found is None:
            from botocore.exceptions import NoCredentialsError

            raise NoCredentialsError()
        return found.get_frozen_credentials()

    return frozen


def default_region() -> str | None:
    """The region of the default AWS session (AWS_REGION in Lambda), or None."""
    import botocore.session

    region = botocore.session.get_session().get_config_variable("region")
    return str(region) if region else None


def aged(base: type[Any], max_age: float = MAX_CONNECTION_AGE) -> type[Any]:
    """``base`` (a redis-py connection class) that reconnects, with fresh credentials,
    once a connection is ``max_age`` seconds old: ElastiCache closes an IAM connection at
    12 hours."""

    class Aged(base):  # type: ignore[misc]
        _opened_at: float | None = None

        def on_connect_check_health(self, check_health: bool = True) -> None:
            super().on_connect_check_health(check_health)
            self._opened_at = time.monotonic()

        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            opened = self._opened_at
            if opened is not None and time.monotonic() - opened >= max_age:
                self._opened_at = None
                self.disconnect()  # the next line opens a new one (a new token)
            super().send_packed_command(command, check_health)

    Aged.__name__ = f"Aged{base.__name__}"
    Aged.__qualname__ = Aged.__name__
    return Aged
