"""What the Lambda functions keep between warm invocations: clients, settings, targets and
their connections, each built on first use (imports are lazy: a cold start pays only for
what its function uses)."""

from __future__ import annotations

from typing import Any

cache: dict[str, Any] = {}


def reset() -> None:
    """Forget every cached client, setting and target connection (a new configuration)."""
    for slot in cache.get("slots", {}).values():
        slot.close()
    cache.clear()


def cached(name: str, build: Any) -> Any:
    """The value kept under ``name``, built by ``build()`` the first time."""
    if name not in cache:
        cache[name] = build()
    return cache[name]


def client(service: str) -> Any:
    from chalicelib.serverless import aws_client

    return cached(f"client:{service}", lambda: aws_client(service))


def settings() -> Any:
    from chalicelib.settings import load_settings

    return cached("settings", load_settings)


def ssm() -> Any:
    from aws_lambda_powertools.utilities.parameters import SSMProvider

    return cached("ssm", lambda: SSMProvider(boto3_client=client("ssm")))


def store() -> Any:
    from chalicelib.settings import ConfigError
    from chalicelib.state.dynamodb import DynamoStore

    table = settings().table_name
    if not table:
        raise ConfigError("table_name: DOORMAN_TABLE must be set in Lambda")
    return cached("store", lambda: DynamoStore(table, client("dynamodb")))


def targets() -> Any:
    from chalicelib.settings import load_targets

    return cached("targets", load_targets)


def slots() -> Any:
    from chalicelib.serverless import build_slots, hash_secret
    from chalicelib.state.dynamodb import DynamoStore

    def build() -> Any:
        secret = hash_secret(settings(), provider=ssm)
        table = store().table_name  # each target gets a store of its own
        return build_slots(targets(), secret, lambda _: DynamoStore(table, client("dynamodb")))

    return cached("slots", build)
