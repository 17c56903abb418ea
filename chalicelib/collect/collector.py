"""The Collector: one target's connections and one Snapshot per check."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import redis

from ..access import broker_access
from ..model import KOMBU_SEP, Dialect, ProbeError, QueueRaw, Snapshot, WorkerRaw
from ..sanitize import safe_name
from ..settings import Settings
from .redis_probe import (
    PRIORITY_STEPS,
    BindingKeys,
    RedisProbe,
    RedisResult,
    connect,
    describe_error,
)
from .replies import mark_silent
from .worker_probe import ConfResult, WorkerProbe, WorkerResult

DEFAULT_VISIBILITY_TIMEOUT = 3600.0


@dataclass(frozen=True)
class ProbePlan:
    """What the state tells the collector before it starts."""

    skip_worker: Callable[[str], bool] = field(default=lambda _name: False)
    # "always": broadcast a ping to find workers missing from the pidbox bindings;
    # "if_none": only when the bindings name no worker at all; "never".
    discover_workers: str = "never"
    visibility_timeout: float | None = None
    dialect: Dialect | None = None  # what the last checks learned of the broker's key names
    # Whether a worker (by hostname) has the companion, as the stored roster knows it: True
    # ask it "doorman" instead of active/reserved/scheduled; False ask those; None not known.
    companion_of: Callable[[str], bool | None] = field(default=lambda _name: None)


class Collector:
    """Holds the connections for one target; reusable across checks (Lambda warm starts)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        access = broker_access(settings)
        self._client = connect(settings.broker_url, settings.redis_timeout_seconds, access)
        self._redis = self._probe_for(explicit_dialect(settings), explicit_dialect(settings))
        self._tls = settings.broker_url.lower().startswith("rediss://")
        self._detail: dict[str, WorkerRaw] = {}
        self._detail_at: float | None = None
        # The workers asked when the detail was fetched, answering or not: a dead worker
        # that keeps its binding stays in the roster without making every check a full one.
        self._detail_roster: frozenset[str] = frozenset()
        self._online: tuple[str, ...] = ()  # who answered the last collect
        # What the last collect learned of each worker's companion (True: ask "doorman"),
        # for the plan's unknowns: the audit's and whois' plans know nothing of it.
        self._companion: dict[str, bool] = {}
        # The binding keys of the last SCAN and when (monotonic): a database shared with a
        # result backend can hold millions of keys, and binding sets change rarely, so the
        # keyspace is scanned again every worker_discovery_interval_seconds, not every check.
        self._bindings_at: float | None = None
        self._bindings: BindingKeys | None = None
        self._workers = WorkerProbe(
            settings.broker_url,
            keyprefix=settings.global_keyprefix,
            timeout=settings.worker_timeout_seconds,
            connect_timeout=settings.redis_timeout_seconds,
            access=access,
        )

    def _known_bindings(self) -> BindingKeys | None:
        """The cached binding keys while they are fresh, else None (the probe will SCAN)."""
        at = self._bindings_at
        fresh = at is not None and (
            time.monotonic() - at < self.settings.worker_discovery_interval_seconds
        )
        return self._bindings if fresh else None

    def _keep_bindings(self) -> None:
        found = self._redis.discovered
        if found is not None and found is not self._bindings and found.scanned:
            self._bindings, self._bindings_at = found, time.monotonic()

    def _probe_for(
        self,
        assumed: Dialect,
        explicit: Dialect,
        *,
        verify_sep: bool = False,
        known: BindingKeys | None = None,
    ) -> RedisProbe:
        return RedisProbe(
            self._client,
            keyprefix=assumed.global_keyprefix or "",
            max_queues=self.settings.max_queues,
            sep=(assumed.sep or KOMBU_SEP).encode(),
            priority_steps=assumed.priority_steps or PRIORITY_STEPS,
            guess_sep=explicit.sep is None,
            guess_prefix=explicit.global_keyprefix is None,
            verify_sep=verify_sep,
            known_bindings=known,
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
        self, result: WorkerResult, fresh: bool, now: float, candidates: list[str]
    ) -> tuple[WorkerRaw, ...]:
        workers = result.workers
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
            merged.append(_merge_detail(known, w, age, result.lists.get(w.hostname)))
        return tuple(merged)

    def _companion_of(self, plan: ProbePlan) -> Callable[[str], bool | None]:
        """What the plan (the stored roster) and this collector's last collect know of a
        worker's companion: either one saying it is there is enough to ask ``doorman``."""

        def companion_of(name: str) -> bool | None:
            planned, learned = plan.companion_of(name), self._companion.get(name)
            if planned is True or learned is True:
                return True
            return False if False in (planned, learned) else None

        return companion_of

    def _keep_companions(self, workers: tuple[WorkerRaw, ...]) -> None:
        self._companion = {
            w.hostname: w.has_companion for w in workers if w.has_companion is not None
        }

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
        return self._workers.conf(
            names, budget=self._worker_budget(), companion_of=self._companion.get
        )

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
        explicit = explicit_dialect(settings)
        assumed = explicit.over(plan.dialect)
        try:
            result = self._read_redis(plan, explicit, assumed, now)
        except (redis.RedisError, OSError) as exc:
            phases["redis_ms"] = _ms(started)
            return self._redis_down(now, exc, started, phases)
        phases["redis_ms"] = _ms(started)

        self._keep_bindings()
        used = Dialect(sep=result.guessed.sep, global_keyprefix=result.guessed.global_keyprefix)
        used = used.over(assumed)
        self._workers.configure(keyprefix=used.global_keyprefix or "", sep=used.sep or KOMBU_SEP)
        t_workers = time.perf_counter()
        workers = self._ask_workers(plan, result)
        found = workers.workers
        phases["workers_ms"] = _ms(t_workers)
        self._online = tuple(w.hostname for w in found if w.status == "online")

        reported = [w.dialect for w in found if w.status == "online" and w.dialect is not None]
        learned, dialect_errors = settle_dialect(reported, result, explicit, used)
        errors: list[ProbeError] = [*result.errors, *workers.errors, *dialect_errors]
        queues = result.queues + self._measure_unbound(found, result.queues, now, errors)
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
            dialect=learned.over(plan.dialect),
            # Workers that could not be asked (remote control denied) are neither alive nor
            # dead: the rules must not conclude anything about them.
            workers_probed=not any(e.kind == "permission" for e in workers.errors),
            duration_ms=_ms(started),
            phase_ms=phases,
        )

    def _read_redis(
        self, plan: ProbePlan, explicit: Dialect, assumed: Dialect, now: float
    ) -> RedisResult:
        """Plan this check's read of Redis (which queues, which key names) and run it."""
        settings = self.settings
        vt = (
            settings.visibility_timeout_seconds
            or plan.visibility_timeout
            or DEFAULT_VISIBILITY_TIMEOUT
        )
        # The queues the workers consume (from the last detail) are counted in the same
        # round trip, so one without a binding does not need a second pass.
        consumed_before = (q for w in self._detail.values() for q in w.queues)
        asked = tuple(dict.fromkeys((*settings.monitored_queues, *consumed_before)))
        # Look for lists named with another separator until a worker has confirmed ours.
        confirmed = plan.dialect is not None and plan.dialect.sep is not None
        self._redis = self._probe_for(
            assumed, explicit, verify_sep=not confirmed, known=self._known_bindings()
        )
        return self._redis.collect(asked, now, vt)

    def _redis_down(
        self, now: float, exc: BaseException, started: float, phases: dict[str, float]
    ) -> Snapshot:
        """The snapshot of a check that could not talk to Redis at all."""
        settings = self.settings
        return Snapshot(
            target=settings.target,
            taken_at=now,
            redis_ok=False,
            errors=(describe_error(exc, settings.redis_timeout_seconds, tls=self._tls),),
            duration_ms=_ms(started),
            phase_ms=phases,
        )

    def _ask_workers(self, plan: ProbePlan, result: RedisResult) -> WorkerResult:
        """Ask the workers the bindings name (and, as the plan says, any a ping finds),
        each with fresh detail or the last; the silent ones told dead or alive."""
        candidates = [n for n in result.worker_names if not plan.skip_worker(n)]
        budget = self._worker_budget()
        discover = plan.discover_workers == "always" or (
            plan.discover_workers == "if_none" and not candidates
        )
        tick = time.monotonic()
        overdue = result.unacked is not None and result.unacked.overdue_total > 0
        detail = self._detail_due(tick, candidates, overdue)
        workers = self._workers.probe(
            candidates,
            discover=discover,
            budget=budget,
            detail=detail,
            companion_of=self._companion_of(plan),
        )
        self._keep_companions(workers.workers)
        found = self._with_detail(workers, detail, tick, candidates)
        if any(w.status != "online" for w in found):
            found = mark_silent(found, self._redis.pidbox_subscribers(result.pidbox_exchanges))
        return WorkerResult(found, workers.errors)

    def _measure_unbound(
        self,
        workers: tuple[WorkerRaw, ...],
        counted: tuple[QueueRaw, ...],
        now: float,
        errors: list[ProbeError],
    ) -> tuple[QueueRaw, ...]:
        """The queues the workers consume that were not counted yet; a failure to count them
        goes to ``errors``."""
        consumed = {q for w in workers for q in w.queues}
        missing = tuple(sorted(consumed - {q.name for q in counted}))
        if not missing:
            return ()
        # Named by a worker's fresh detail but not counted yet (no binding): count it too.
        try:
            return self._redis.measure([m.encode() for m in missing], now)
        except (redis.RedisError, OSError) as exc:
            timeout = self.settings.redis_timeout_seconds
            errors.append(describe_error(exc, timeout, tls=self._tls))
            return ()


def _merge_detail(
    known: WorkerRaw, now: WorkerRaw, age: float, lists: frozenset[str] | None
) -> WorkerRaw:
    """A worker asked only its core command this check (``active`` or ``doorman``): the
    last detail, with what this check's answer holds. The companion's reserved and
    scheduled lists come with every answer: fresher than the detail, they win."""
    lists = lists or frozenset()
    reserved = known.reserved_ids[: known.reserved]
    scheduled = known.reserved_ids[known.reserved :]
    if "reserved" in lists:
        reserved = now.reserved_ids[: now.reserved]
    if "scheduled" in lists:
        scheduled = now.reserved_ids[now.reserved :]
    return replace(
        known,
        active=now.active,
        answered=now.answered,
        detail_age_sec=age,
        reserved=len(reserved),
        scheduled=len(scheduled),
        reserved_ids=reserved + scheduled,
        has_companion=now.has_companion,
        companion=now.companion,
    )


def explicit_dialect(settings: Settings) -> Dialect:
    """The key-naming options the settings fix; they win over anything learned."""
    return Dialect(
        sep=settings.priority_separator,
        priority_steps=settings.priority_steps,
        global_keyprefix=settings.global_keyprefix or None,
    )


def _show(text: str) -> str:
    """A name from the cluster (queue, prefix, separator) as an error message may hold it:
    scrubbed and cut by the sanitizer's own rule (a raw cut could leave half an address that
    scrubbing no longer recognizes), then quoted."""
    return repr(safe_name(text))


def settle_dialect(
    reported: list[Dialect], result: RedisResult, explicit: Dialect, used: Dialect
) -> tuple[Dialect, tuple[ProbeError, ...]]:
    """What to assume next time, and the ``dialect`` errors of this check.

    The workers' own broker options are the truth when they answer (all of them should
    agree); what the keys suggested is kept but named as a guess until a worker confirms it.
    """
    worker = reported[0] if reported else None
    messages: list[str] = []
    if any(d != worker for d in reported[1:]):
        messages.append(
            "the workers disagree on the broker's key options (sep, priority_steps,"
            " global_keyprefix): the first worker's are used"
        )
    messages += _separator_doubts(worker, result, explicit)
    messages += _prefix_doubts(worker, result, explicit, used)
    for queue, sep in result.foreign_priority_lists[:5]:
        messages.append(
            f"lists named {_show(queue + sep)}<n> lie beside the queue {_show(queue)}: kombu's"
            f" separator seems to be {_show(sep)} (set priority_separator: {_show(sep)})"
        )
    messages += _setting_conflicts(worker, explicit)
    learned = worker if worker is not None else Dialect()
    learned = learned.over(result.guessed)
    return learned, tuple(ProbeError("queues", "dialect", m) for m in messages)


def _separator_doubts(worker: Dialect | None, result: RedisResult, explicit: Dialect) -> list[str]:
    """The binding members read with a separator no worker confirms, or not read at all."""
    doubts: list[str] = []
    guessed = result.guessed
    if guessed.sep is not None and (worker is None or worker.sep != guessed.sep):
        doubts.append(
            f"the binding members use the separator {_show(guessed.sep)}, not kombu's default"
            f" {_show(KOMBU_SEP)}: they were read with it, but no live worker confirms it"
            f" (set priority_separator: {_show(guessed.sep)} to make it explicit)"
        )
    if result.members_sep is not None:
        doubts.append(
            f"the binding members do not use the separator set in priority_separator"
            f" ({_show(explicit.sep or KOMBU_SEP)}) but {_show(result.members_sep)}: they"
            " were not read (correct priority_separator, or leave it unset to learn it)"
        )
    return doubts


def _prefix_doubts(
    worker: Dialect | None, result: RedisResult, explicit: Dialect, used: Dialect
) -> list[str]:
    """The key prefix read with no worker confirming it, or Celery's keys not found under it."""
    doubts: list[str] = []
    prefix = used.global_keyprefix
    confirmed = worker is not None and worker.global_keyprefix == prefix
    if prefix and explicit.global_keyprefix is None and not confirmed:
        where = (
            "found Celery's keys under the key prefix"
            if result.guessed.global_keyprefix is not None
            else "reading the key prefix learned before,"
        )
        doubts.append(
            f"{where} {_show(prefix)}, but no live worker answers under it"
            f" (set global_keyprefix: {_show(prefix)} to make it explicit)"
        )
    if (
        not result.looked_everywhere
        and not result.worker_names
        and result.guessed.global_keyprefix is None
    ):
        doubts.append(
            "no worker's binding was found in the part of the database discovery read:"
            " workers may be there, unseen (set global_keyprefix, or monitored_queues)"
        )
    if result.other_prefixes:
        shown = ", ".join(_show(p) for p in result.other_prefixes[:5])
        doubts.append(
            f"no Celery keys under the key prefix {_show(used.global_keyprefix or '')}; found"
            f" them under {shown}: set global_keyprefix to the one to watch"
        )
    return doubts


def _setting_conflicts(worker: Dialect | None, explicit: Dialect) -> list[str]:
    """The key-naming settings that the answering workers contradict."""
    if worker is None:
        return []
    conflicts: list[str] = []
    for name in ("sep", "priority_steps", "global_keyprefix"):
        mine, theirs = getattr(explicit, name), getattr(worker, name)
        if mine is not None and theirs is not None and mine != theirs:
            setting = "priority_separator" if name == "sep" else name
            shown = (_show(v) if isinstance(v, str) else repr(v) for v in (mine, theirs))
            conflicts.append("{} is set to {} but the workers use {}".format(setting, *shown))
    return conflicts


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000.0, 2)
