"""Sampling for the audit: checks without commit, and what ``--deep`` asks beyond them."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..analyse.deep import ConfigCheck, ConfValue, analyse
from ..analyse.rules import evaluate
from ..check import audit_trends
from ..model import ProbeError, Sample
from ..runner import Deps, collect_and_step, load
from ..sanitize import Hasher
from ..settings import Settings
from .report import Audit, rights_check

if TYPE_CHECKING:
    from ..collect import Collector


@dataclass(frozen=True)
class DeepData:
    """What ``--deep`` collects beyond a check, already reduced to safe values."""

    redis_config: dict[str, str] | None  # CONFIG GET save/appendonly; None when refused
    confs: dict[str, dict[str, ConfValue]]  # allow-listed Celery settings by worker hash
    errors: tuple[ProbeError, ...] = ()
    # Commands Doorman's Redis user may run and never needs (FLUSHALL, ...); None: unknown.
    excess_rights: tuple[str, ...] | None = None


def collect_deep(collector: Collector, sample: Sample, hasher: Hasher) -> DeepData:
    """Persistence settings from Redis and the allow-listed settings of the live workers.

    Uses the audit's own collector: the workers that answered its last sample are asked by
    name (``destination=``), so the broadcast ends as soon as they have all answered.
    """
    config, errors = collector.persistence_config()
    online = {w.id_hash for w in sample.workers if w.status == "online"}
    result = collector.worker_conf(lambda name: hasher.worker(name) in online)
    confs = {hasher.worker(name): dict(conf) for name, conf in result.confs.items()}
    return DeepData(
        config, confs, errors + result.errors, excess_rights=_excess_rights(collector.settings)
    )


def _excess_rights(settings: Settings) -> tuple[str, ...] | None:
    """What Doorman's Redis user may do beyond its needs (see ``acl.excess_rights``), or
    None when that cannot be told (Redis gone meanwhile, MULTI refused)."""
    import redis

    from ..acl import excess_rights_of

    try:
        return excess_rights_of(settings)
    except (redis.RedisError, OSError, ValueError):
        return None


def run_audit(
    settings: Settings,
    deps: Deps,
    *,
    samples: int = 1,
    interval: float = 10.0,
    deep: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Audit:
    """Take ``samples`` checks ``interval`` seconds apart, commit none; analyse the result."""
    started = time.monotonic()
    taken = take_samples(settings, deps, samples, interval, progress=progress)
    last = taken[-1]
    trends = audit_trends(taken)
    checks: tuple[ConfigCheck, ...] | None = None
    deep_errors: tuple[ProbeError, ...] = ()
    if deep and last.redis_ok:
        if progress is not None:
            progress("Checking the configuration...")
        data = collect_deep(deps.collector, last, deps.hasher)
        checks = deep_checks(last, data, now=deps.clock())
        deep_errors = data.errors
    return Audit(
        samples=taken,
        trends=trends,
        findings=tuple(evaluate(last, trends, settings.thresholds)),
        deep=checks,
        deep_errors=deep_errors,
        thresholds=settings.thresholds,
        interval=interval,
        elapsed=time.monotonic() - started,
        deep_requested=deep,
    )


def take_samples(
    settings: Settings,
    deps: Deps,
    samples: int,
    interval: float,
    *,
    progress: Callable[[str], None] | None = None,
) -> tuple[Sample, ...]:
    """The samples of ``samples`` checks: the stored state is read once (silences are not:
    the audit sends nothing), then each step's new state feeds the next, in memory only."""
    started = time.monotonic()
    loaded = load(deps.store, settings.target, deps.clock(), silences=False)
    taken: list[Sample] = []
    for index in range(samples):
        if index:
            time.sleep(max(0.0, started + index * interval - time.monotonic()))
        if progress is not None:
            progress(f"Sampling {index + 1}/{samples}...")
        stepped = collect_and_step(settings, deps, loaded, deps.clock(), time.perf_counter())
        loaded = replace(loaded, state=stepped.state)
        taken.append(stepped.sample)
    return tuple(taken)


def deep_checks(last: Sample, data: DeepData, *, now: float) -> tuple[ConfigCheck, ...]:
    """The configuration checks of ``--deep``: the workers' settings and Redis's, and
    Doorman's own rights."""
    found = analyse(
        last.redis,
        last.workers,
        data.confs,
        now=now,
        redis_config=data.redis_config,
        queues=last.queues,
    )
    return (*found, rights_check(data.excess_rights))
