"""Doorman's Lambda functions (Chalice). Handlers only: the work lives in chalicelib."""

from __future__ import annotations

from typing import Any

from chalice import Chalice  # type: ignore[attr-defined]

app = Chalice(app_name="doorman", configure_logs=False)

_deps: dict[str, Any] = {}


def _check_deps() -> tuple[Any, Any]:
    """Settings and collector, built once per container and reused by warm invocations."""
    if "settings" not in _deps:
        from chalicelib.collect import Collector
        from chalicelib.runner import Deps
        from chalicelib.sanitize import Hasher
        from chalicelib.settings import ConfigError, load_settings

        settings = load_settings()
        if not settings.hash_secret:
            raise ConfigError("hash_secret: DOORMAN_HASH_SECRET must be set in Lambda")
        _deps["settings"] = settings
        _deps["deps"] = Deps(
            collector=Collector(settings), store=None, hasher=Hasher(settings.hash_secret)
        )
    return _deps["settings"], _deps["deps"]


@app.schedule("rate(1 minute)", name="check")
def check(event: Any) -> dict[str, Any]:
    """One check of the configured target; returns the check's metrics."""
    from chalicelib.runner import run_check

    settings, deps = _check_deps()
    result = run_check(settings, deps)
    return {"target": settings.target, "metrics": result.payload["metrics"]}
