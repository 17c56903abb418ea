"""Configuration checks for ``doorman audit --deep``: pure functions over sanitized data.

Inputs are the Redis INFO fields of a sample, the persistence settings when Redis allows
``CONFIG GET`` (managed Redis often refuses it), the sanitized workers, and each live worker's
allow-listed Celery settings (see ``collect.replies.reduce_conf``) keyed by worker hash.
Each check returns one ``ConfigCheck``: a row of the report, with a concrete recommendation
when it found a risk. Nothing here reads a name or value that was not already sanitized.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..alert_types import AlertType
from ..model import Finding, QueueSample, Severity, WorkerSample
from ..text import fmt_bytes, fmt_seconds

ConfValue = bool | int | float | None
Conf = Mapping[str, ConfValue]

OK, WARNING, UNKNOWN = "ok", "warning", "unknown"
CLIENTS_LIMIT = 0.80
# kombu's Redis transport redelivers an unacknowledged message after this many seconds
# unless ``broker_transport_options['visibility_timeout']`` says otherwise.
DEFAULT_VISIBILITY_TIMEOUT = 3600.0
EVICTING = ("allkeys-lru", "allkeys-lfu", "allkeys-random")
# The one policy advised for a broker (used by the redis_memory alert as well).
EVICTION_ADVICE = (
    "CONFIG SET maxmemory-policy volatile-lru: only keys with a TTL are evicted, and"
    " queues have none"
)


@dataclass(frozen=True)
class ConfigCheck:
    id: str  # stable: "redis_maxmemory", "celery_acks_late", ...
    label: str  # as the report shows it
    status: str  # "ok" | "warning" | "unknown"
    result: str
    recommendation: str | None = None

    @property
    def severity(self) -> Severity:
        return Severity.WARNING if self.status == WARNING else Severity.INFO

    def finding(self) -> Finding | None:
        """A ``config_risk`` finding for a risky setting (None when the check passed)."""
        if self.status != WARNING:
            return None
        return Finding(
            type=AlertType.CONFIG_RISK,
            severity=Severity.WARNING,
            subject=self.id,
            title=f"{self.label}: {self.result}",
            message=f"{self.label}: {self.result}",
            details={"check": self.id},
            recommendation=self.recommendation,
        )


def _int(info: Mapping[str, object], key: str) -> int | None:
    value = info.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# --- Redis -----------------------------------------------------------------------------------


def redis_maxmemory(info: Mapping[str, object]) -> ConfigCheck:
    label = "Redis maxmemory"
    limit, used = _int(info, "maxmemory"), _int(info, "used_memory")
    if limit is None:
        return ConfigCheck("redis_maxmemory", label, UNKNOWN, "not reported by INFO")
    if limit == 0:
        return ConfigCheck(
            "redis_maxmemory",
            label,
            WARNING,
            "not set: Redis grows until the host runs out of memory (OOM kill)",
            "Give Redis a limit below the host's memory, leaving headroom:"
            " CONFIG SET maxmemory 2gb (size it to the host), and the same in redis.conf",
        )
    usage = f", {100.0 * used / limit:.0f}% used" if used is not None else ""
    return ConfigCheck("redis_maxmemory", label, OK, f"{fmt_bytes(limit)}{usage}")


def redis_eviction(info: Mapping[str, object]) -> ConfigCheck:
    label = "Redis eviction policy"
    policy = info.get("maxmemory_policy")
    if not isinstance(policy, str):
        return ConfigCheck("redis_eviction", label, UNKNOWN, "not reported by INFO")
    shown = policy[:40]
    if policy == "noeviction":
        return ConfigCheck(
            "redis_eviction",
            label,
            WARNING,
            "noeviction: when memory is full every write fails, publishing tasks included",
            "CONFIG SET maxmemory-policy volatile-lru: keys with a TTL (task results) make"
            " room, queues (no TTL) are never evicted",
        )
    if policy in EVICTING:
        return ConfigCheck(
            "redis_eviction",
            label,
            WARNING,
            f"{shown}: can evict queue keys, and every task in them",
            EVICTION_ADVICE,
        )
    if policy.startswith("volatile-"):
        return ConfigCheck(
            "redis_eviction", label, OK, f"{shown} (queues have no TTL: never evicted)"
        )
    return ConfigCheck("redis_eviction", label, OK, shown)


def _save_points(value: str) -> str | None:
    """``CONFIG GET save`` as shown: digits and spaces only, else None."""
    text = value.strip()
    return text if all(ch.isdigit() or ch == " " for ch in text) else None


def redis_persistence(
    info: Mapping[str, object], config: Mapping[str, str] | None = None
) -> ConfigCheck:
    """RDB and AOF from ``CONFIG GET save appendonly`` when allowed, else from INFO."""
    label = "Redis persistence"
    rdb: bool | None = None
    aof: bool | None = None
    save = ""
    if config is not None and "save" in config:
        save = _save_points(config["save"]) or ""
        rdb = bool(config["save"].strip())
    if config is not None and "appendonly" in config:
        aof = config["appendonly"].strip().lower() == "yes"
    elif isinstance(info.get("aof_enabled"), bool):
        aof = bool(info["aof_enabled"])
    if info.get("rdb_last_bgsave_status") == "err":
        return ConfigCheck(
            "redis_persistence",
            label,
            WARNING,
            "the last RDB snapshot failed: a restart loses what changed since the one before",
            "Read the Redis log and check disk space and permissions of its dir; then BGSAVE",
        )
    if aof is False and rdb is False:
        return ConfigCheck(
            "redis_persistence",
            label,
            WARNING,
            "off (no RDB, no AOF): every queued task is lost when Redis restarts",
            "CONFIG SET appendonly yes (and appendonly yes in redis.conf), or at least RDB"
            ' snapshots: CONFIG SET save "60 1000"',
        )
    parts = []
    if rdb:
        parts.append(f"RDB (save {save})" if save else "RDB")
    if aof:
        parts.append("AOF")
    if parts:
        return ConfigCheck("redis_persistence", label, OK, " + ".join(parts))
    return ConfigCheck(
        "redis_persistence",
        label,
        UNKNOWN,
        "AOF off; RDB schedule unknown (CONFIG GET refused)" if aof is False else "unknown",
    )


def redis_clients(info: Mapping[str, object]) -> ConfigCheck:
    label = "Redis connections"
    connected, limit = _int(info, "connected_clients"), _int(info, "maxclients")
    rejected = _int(info, "rejected_connections") or 0
    if connected is None or not limit:
        return ConfigCheck("redis_clients", label, UNKNOWN, "not reported by INFO")
    pct = 100.0 * connected / limit
    text = f"{connected}/{limit} connections ({pct:.0f}%)"
    if rejected:
        text += f", {rejected} rejected since start"
    if pct > 100 * CLIENTS_LIMIT or rejected:
        return ConfigCheck(
            "redis_clients",
            label,
            WARNING,
            text,
            f"Raise maxclients (CONFIG SET maxclients {max(limit * 2, 10000)}) or lower"
            " broker_pool_limit and the number of worker processes; look for leaked connections",
        )
    return ConfigCheck("redis_clients", label, OK, text)


# --- Celery ----------------------------------------------------------------------------------


def _values(confs: Mapping[str, Conf], key: str) -> dict[str, ConfValue]:
    return {h: c[key] for h, c in sorted(confs.items()) if key in c}


def _on(bad: Sequence[str], total: int) -> str:
    return "" if len(bad) == total else f" on {len(bad)} of {total} workers"


def _no_conf(check_id: str, label: str) -> ConfigCheck:
    return ConfigCheck(check_id, label, UNKNOWN, "no live worker reported its settings")


def _must_be_true(
    confs: Mapping[str, Conf], setting: str, label: str, risk: str, fix: str
) -> ConfigCheck:
    """A boolean Celery setting that every worker should have on."""
    check_id = "celery_" + setting.removeprefix("task_")
    values = _values(confs, setting)
    if not values:
        return _no_conf(check_id, label)
    bad = [h for h, v in values.items() if v is not True]
    if not bad:
        return ConfigCheck(check_id, label, OK, "True")
    return ConfigCheck(check_id, label, WARNING, f"False{_on(bad, len(values))}: {risk}", fix)


def celery_acks_late(confs: Mapping[str, Conf]) -> ConfigCheck:
    return _must_be_true(
        confs,
        "task_acks_late",
        "Celery task_acks_late",
        "a task is lost when its worker dies mid-task",
        "Set task_acks_late=True in the Celery config (make the tasks idempotent: a task"
        " may then run twice)",
    )


def celery_reject_on_worker_lost(confs: Mapping[str, Conf]) -> ConfigCheck:
    return _must_be_true(
        confs,
        "task_reject_on_worker_lost",
        "Celery task_reject_on_worker_lost",
        "a task whose process is killed is acknowledged and silently lost",
        "Set task_reject_on_worker_lost=True (with task_acks_late=True) so the task of a"
        " killed worker process goes back to its queue",
    )


def celery_prefetch(confs: Mapping[str, Conf]) -> ConfigCheck:
    label = "Celery prefetch multiplier"
    values = {
        h: v
        for h, v in _values(confs, "worker_prefetch_multiplier").items()
        if isinstance(v, int | float)
    }
    if not values:
        return _no_conf("celery_prefetch", label)
    bad = {h: int(v) for h, v in values.items() if v != 1}
    if not bad:
        return ConfigCheck("celery_prefetch", label, OK, "1")
    worst = max(bad.values(), key=lambda v: math.inf if v <= 0 else v)
    what = (
        "0 (unlimited): a worker reserves every task it can"
        if worst <= 0
        else f"{worst}: each process reserves {worst} tasks; long tasks hold others back"
    )
    return ConfigCheck(
        "celery_prefetch",
        label,
        WARNING,
        what + _on(list(bad), len(values)),
        "Set worker_prefetch_multiplier=1 (with task_acks_late=True) so a busy process does"
        " not hold tasks that idle ones could run",
    )


@dataclass(frozen=True)
class _Redelivery:
    """What the workers' settings say about redelivery, all workers together."""

    problems: tuple[str, ...]  # each wait or time limit that outlives its worker's timeout
    needed: float  # the longest of those: the timeout must exceed it
    shortest: float  # the shortest visibility timeout of any worker
    longest_wait: float
    longest_limit: float


def _redelivery(confs: Mapping[str, Conf], now: float) -> _Redelivery:
    """Each worker's visibility timeout (kombu's default when unset) against its latest ETA
    and its task_time_limit; ``confs`` must not be empty."""
    problems: list[str] = []
    needed = 0.0
    shortest = math.inf
    longest_wait = 0.0
    longest_limit = 0.0
    for conf in confs.values():
        raw_vt = conf.get("visibility_timeout")
        vt = float(raw_vt) if isinstance(raw_vt, int | float) and raw_vt else None
        vt = vt or DEFAULT_VISIBILITY_TIMEOUT
        shortest = min(shortest, vt)
        eta = conf.get("latest_eta")
        if isinstance(eta, int | float) and not isinstance(eta, bool):
            wait = float(eta) - now
            longest_wait = max(longest_wait, wait)
            if wait > vt:
                needed = max(needed, wait)
                problems.append(
                    f"an ETA/countdown task waits {fmt_seconds(wait)} more, longer than"
                    f" {fmt_seconds(vt)}: it will be delivered again and run twice"
                )
        limit = conf.get("task_time_limit")
        if isinstance(limit, int | float) and not isinstance(limit, bool) and limit > 0:
            longest_limit = max(longest_limit, float(limit))
            if limit > vt:
                needed = max(needed, float(limit))
                problems.append(
                    f"task_time_limit {fmt_seconds(float(limit))} exceeds {fmt_seconds(vt)}:"
                    " a long task is delivered again while it still runs"
                )
    return _Redelivery(tuple(problems), needed, shortest, longest_wait, longest_limit)


def visibility_timeout(confs: Mapping[str, Conf], now: float) -> ConfigCheck:
    """The visibility timeout against the longest ETA wait and the hard time limit.

    kombu's Redis transport redelivers a message not acknowledged within the timeout. ETA and
    countdown tasks stay unacknowledged in the worker until they are due, and with
    task_acks_late a running task stays unacknowledged until it ends: either one outliving the
    timeout is delivered again, and runs twice.
    """
    label = "Visibility timeout"
    if not confs:
        return _no_conf("visibility_timeout", label)
    found = _redelivery(confs, now)
    if found.problems:
        # Round up to whole hours, with a margin, so the advice is a value one can paste.
        suggested = int(math.ceil(found.needed * 1.25 / 3600.0) * 3600)
        distinct = len(set(found.problems))
        more = f" (+{distinct - 1} more)" if distinct > 1 else ""
        return ConfigCheck(
            "visibility_timeout",
            label,
            WARNING,
            found.problems[0] + more,
            f"Raise broker_transport_options={{'visibility_timeout': {suggested}}} above the"
            " longest ETA/countdown and task_time_limit, on workers and producers alike",
        )
    facts = [fmt_seconds(found.shortest)]
    if found.longest_wait > 0:
        facts.append(f"longest ETA wait {fmt_seconds(found.longest_wait)}")
    if found.longest_limit > 0:
        facts.append(f"task_time_limit {fmt_seconds(found.longest_limit)}")
    return ConfigCheck("visibility_timeout", label, OK, ", ".join(facts))


def worker_redundancy(
    workers: Sequence[WorkerSample], queues: Sequence[QueueSample] = ()
) -> ConfigCheck:
    """Single workers, queues with one consumer, and waiting queues with none at all."""
    label = "Worker redundancy"
    online = [w for w in workers if w.status == "online"]
    if not online:
        return ConfigCheck("worker_redundancy", label, UNKNOWN, "no worker answers")
    consumers: dict[str, list[str]] = {}
    for w in online:
        for queue in w.queues:
            consumers.setdefault(queue, []).append(w.id_hash)
    orphaned = sorted(q.name for q in queues if q.depth > 0 and q.name not in consumers)
    single = sorted(q for q, hashes in consumers.items() if len(hashes) == 1)
    problems: list[str] = []
    advice: list[str] = []
    if orphaned:
        problems.append(f"no consumer for waiting {_names(orphaned)}")
        advice.append(
            f"Start workers consuming {orphaned[0]!r} (celery worker -Q {orphaned[0]}), or stop"
            " routing tasks to it"
        )
    if len(online) == 1:
        problems.append("1 worker: a single point of failure")
        advice.append("Run at least two workers, on separate hosts, for every queue")
    elif single:
        problems.append(
            "one consumer only for " + _names(single, lambda q: f"{q!r} ({consumers[q][0]})")
        )
        advice.append(
            f"Start a second worker consuming {single[0]!r} (celery worker -Q {single[0]}),"
            " on another host"
        )
    if not problems:
        return ConfigCheck(
            "worker_redundancy",
            label,
            OK,
            f"{len(online)} workers; every queue has 2 or more consumers",
        )
    return ConfigCheck("worker_redundancy", label, WARNING, "; ".join(problems), advice[0])


def _names(names: Sequence[str], show: Callable[[str], str] = repr, limit: int = 3) -> str:
    shown = ", ".join(show(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def analyse(
    redis: Mapping[str, object],
    workers: Sequence[WorkerSample],
    confs: Mapping[str, Conf],
    *,
    now: float,
    redis_config: Mapping[str, str] | None = None,
    queues: Sequence[QueueSample] = (),
) -> list[ConfigCheck]:
    """Every configuration check, in report order.

    ``confs`` holds the allow-listed settings of the workers that answered, by worker hash;
    only those of workers online in ``workers`` are considered.
    """
    online = {w.id_hash for w in workers if w.status == "online"}
    live = {h: c for h, c in confs.items() if h in online}
    return [
        redis_maxmemory(redis),
        redis_eviction(redis),
        redis_persistence(redis, redis_config),
        redis_clients(redis),
        celery_acks_late(live),
        celery_reject_on_worker_lost(live),
        celery_prefetch(live),
        visibility_timeout(live, now),
        worker_redundancy(workers, queues),
    ]
