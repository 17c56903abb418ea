"""How Doorman reaches and authenticates to the broker, for both of its connections.

redis-py (the probe) and kombu (remote control) get the same credential provider (an
ElastiCache IAM token) and the same Sentinel master name and password.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .settings import ConfigError, Settings


@dataclass(frozen=True)
class BrokerAccess:
    # redis-py CredentialProvider (IAM), shared so one token serves both connections.
    credential_provider: Any = field(default=None, repr=False)
    sentinel_master: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    reconnect_after: float | None = None  # seconds a connection may live (IAM: 11 h)


def broker_access(settings: Settings) -> BrokerAccess:
    """The access of ``settings``; raises ConfigError when IAM auth has no region."""
    provider = None
    reconnect = None
    if settings.redis_auth == "iam":
        from .iam_auth import MAX_CONNECTION_AGE, IamCredentialProvider, default_region

        region = settings.elasticache_region or default_region()
        if not region:
            raise ConfigError(
                "elasticache_region (DOORMAN_ELASTICACHE_REGION): no AWS region to sign the"
                " IAM token for (set it, or AWS_REGION)"
            )
        assert settings.elasticache_user_id and settings.elasticache_cache  # settings checked
        provider = IamCredentialProvider(
            settings.elasticache_user_id,
            settings.elasticache_cache,
            region,
            serverless=settings.elasticache_serverless,
        )
        reconnect = float(MAX_CONNECTION_AGE)
    return BrokerAccess(
        credential_provider=provider,
        sentinel_master=settings.sentinel_master_name,
        sentinel_password=settings.sentinel_password,
        reconnect_after=reconnect,
    )
