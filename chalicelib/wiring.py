"""How the parts are put together for a run on this machine: settings from the command
line's values, the collector (``collect.collector_for``, as the Lambda side builds it), the
local state store and hasher.

``cli`` parses arguments and calls these; ``audit`` and ``simulate`` are libraries that take
what these build, so nothing imports the command line back.
"""

from __future__ import annotations

from typing import Any

from .collect import collector_for
from .runner import Deps
from .sanitize import Hasher
from .settings import ConfigError, Settings, load_settings


def local_settings(
    *,
    config_path: str | None = None,
    redis_url: str | None = None,
    state_path: str | None = None,
    target: str | None = None,
    interval: float | None = None,
) -> Settings:
    """The settings of a local run: the environment and config file, then these values."""
    overrides: dict[str, Any] = {
        "redis_url": redis_url,
        # A URL on the command line names the broker too, whatever the environment or the
        # config file say ("" clears it, and what it overrides is not even validated).
        "celery_broker_url": "" if redis_url is not None else None,
        "state_path": state_path,
        "target": target,
        "check_interval_seconds": interval,
    }
    return load_settings(config_path=config_path, overrides=overrides)


def local_deps(settings: Settings) -> Deps:
    """Collector, SQLite state store and hasher for a run on this machine."""
    from .state.sqlite import SqliteStore, local_secret

    state_path = settings.default_state_path
    secret = settings.hash_secret
    if not secret:
        try:
            secret = local_secret(state_path)
        except Exception as exc:
            raise ConfigError(f"state_path: {exc}") from None
    collector = collector_for(settings)
    return Deps(collector=collector, store=SqliteStore(state_path), hasher=Hasher(secret))


def close_deps(deps: Deps) -> None:
    """Close the collector's connections and the store (when it holds any)."""
    deps.collector.close()
    close = getattr(deps.store, "close", None)
    if close is not None:
        close()
