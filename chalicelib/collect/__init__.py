"""Collection: one Snapshot of a Redis broker and the Celery workers behind it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import redis

from ..model import ProbeError, Snapshot, WorkerRaw
from ..settings import Settings
from .redis_probe import RedisProbe, connect, describe_error
from .worker_probe import ConfResult, WorkerProbe, mark_silent

DEFAULT_VISIBILITY_TIMEOUT = 3600.0


@dataclass(frozen=True)
class ProbePlan:
    """What the state tells the collector before it starts."""

    skip_worker: Callable[[str], bool] = field(default=lambda _name: False)
    # "always": broadcast a ping to find workers missing from the pidbox bindings;
    # "if_none": only when the bindings name no worker at all; "never".
    discover_workers: str = "never"
    visibility_timeout: float | None = None


class Collector:
    """Holds the connections for one target; reusable across checks (Lambda warm starts)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client = connect(settings.broker_url, settings.redis_timeout_seconds)
        self._redis = RedisProbe(
            self._client, keyprefix=settings.global_keyprefix, max_queues=settings.max_queues
        )
        self._tls = settings.broker_url.lower().startswith("rediss://")
        self._detail: dict[str, WorkerRaw] = {}
        self._detail_at: float | None = None
        # The workers asked when the detail was fetched, answering or not: a dead worker
        # that keeps its binding stays in the roster without making every check a full one.
        self._detail_roster: frozenset[str] = frozenset()
        self._online: tuple[str, ...] = ()  # who answered the last collect
        self._workers = WorkerProbe(
            settings.broker_url,
            keyprefix=settings.global_keyprefix,
            timeout=settings.worker_timeout_seconds,
            connect_timeout=settings.redis_timeout_seconds,
        )

    def _detail_due(self, now: float, candidates: list[str], overdue: bool) -> bool:
        """Whether this check asks the slow-changing detail as well as ``active``.

        The detail is pool size, completed-task counters and uptime (``stats``), reserved and
        scheduled tasks, and the queues each worker consumes. Fresh detail is needed when
        there is none yet, when the workers changed, when overdue unacked messages must be
        told apart (held by a live worker or orphaned), and every
        ``worker_detail_interval_seconds``; between those, the last answers are reused and
        each worker says how old they are (``detail_age_sec``).
        """
        return (
            overdue
            or self._detail_at is None
            or now - self._detail_at >= self.settings.worker_detail_interval_seconds
            or frozenset(candidates) != self._detail_roster
        )

    def _with_detail(
        self, workers: tuple[WorkerRaw, ...], fresh: bool, now: float, candidates: list[str]
    ) -> tuple[WorkerRaw, ...]:
        if fresh:
            self._detail = {w.hostname: w for w in workers if w.status == "online"}
            self._detail_at = now
            self._detail_roster = frozenset(candidates)
            return workers
        age = round(now - (self._detail_at or now), 1)
        merged = []
        for w in workers:
            known = self._detail.get(w.hostname)
            if w.status != "online" or known is None:
                if w.status == "online":  # silent when the detail was fetched: ask again
                    self._detail_at = None
                merged.append(w)
                continue
            # This round asked only ``active``: everything else is the last detail's.
            merged.append(replace(known, active=w.active, answered=w.answered, detail_age_sec=age))
        return tuple(merged)

    def persistence_config(self) -> tuple[dict[str, str] | None, tuple[ProbeError, ...]]:
        """Redis's ``save``/``appendonly`` settings (None when refused), and any error."""
        try:
            return self._redis.persistence_config(), ()
        except (redis.RedisError, OSError) as exc:
            error = describe_error(exc, self.settings.redis_timeout_seconds, tls=self._tls)
            return None, (error,)

    def worker_conf(self, online: Callable[[str], bool]) -> ConfResult:
        """The allow-listed settings of the workers that answered the last collect and that
        ``online`` accepts, asked over the same remote-control connection."""
        names = [name for name in self._online if online(name)]
        return self._workers.conf(names, budget=self._worker_budget())

    def _worker_budget(self) -> float:
        return self.settings.worker_timeout_seconds * 2.5

    def close(self) -> None:
        self._workers.close()
        with contextlib.suppress(redis.RedisError):
            self._client.close()

    def collect(self, plan: ProbePlan, clock: Callable[[], float] = time.time) -> Snapshot:
        """Never raises for a broken Redis or broker: failures become ``errors``."""
        settings = self.settings
        started = time.perf_counter()
        now = clock()
        phases: dict[str, float] = {}
        vt = (
            settings.visibility_timeout_seconds
            or plan.visibility_timeout
            or DEFAULT_VISIBILITY_TIMEOUT
        )
        # The queues the workers consume (from the last detail) are counted in the same
        # round trip, so one without a binding does not need a second pass.
        consumed_before = (q for w in self._detail.values() for q in w.queues)
        asked = tuple(dict.fromkeys((*settings.monitored_queues, *consumed_before)))
        try:
            result = self._redis.collect(asked, now, vt)
        except (redis.RedisError, OSError) as exc:
            phases["redis_ms"] = _ms(started)
            return Snapshot(
                target=settings.target,
                taken_at=now,
                redis_ok=False,
                errors=(describe_error(exc, settings.redis_timeout_seconds, tls=self._tls),),
                duration_ms=_ms(started),
                phase_ms=phases,
            )
        phases["redis_ms"] = _ms(started)

        t_workers = time.perf_counter()
        candidates = [n for n in result.worker_names if not plan.skip_worker(n)]
        budget = self._worker_budget()
        discover = plan.discover_workers == "always" or (
            plan.discover_workers == "if_none" and not candidates
        )
        tick = time.monotonic()
        overdue = result.unacked is not None and result.unacked.overdue_total > 0
        detail = self._detail_due(tick, candidates, overdue)
        workers = self._workers.probe(candidates, discover=discover, budget=budget, detail=detail)
        found = self._with_detail(workers.workers, detail, tick, candidates)
        if any(w.status != "online" for w in found):
            found = mark_silent(found, self._redis.pidbox_subscribers(result.pidbox_exchanges))
        phases["workers_ms"] = _ms(t_workers)
        self._online = tuple(w.hostname for w in found if w.status == "online")

        errors: list[ProbeError] = [*result.errors, *workers.errors]
        queues = result.queues
        consumed = {q for w in found for q in w.queues}
        missing = tuple(sorted(consumed - {q.name for q in queues}))
        if missing:
            # Named by a worker's fresh detail but not counted yet (no binding): count it too.
            try:
                queues = queues + self._redis.measure([m.encode() for m in missing], now)
            except (redis.RedisError, OSError) as exc:
                errors.append(describe_error(exc, settings.redis_timeout_seconds, tls=self._tls))

        return Snapshot(
            target=settings.target,
            taken_at=now,
            redis_ok=True,
            queues=queues,
            workers=found,
            unacked=result.unacked,
            info=result.info,
            errors=tuple(errors),
            discovery_truncated=result.truncated,
            queues_found=result.found_queues + len(queues) - len(result.queues),
            # Workers that could not be asked (remote control denied) are neither alive nor
            # dead: the rules must not conclude anything about them.
            workers_probed=not any(e.kind == "permission" for e in workers.errors),
            duration_ms=_ms(started),
            phase_ms=phases,
        )


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000.0, 2)
