"""Snapshot -> Sample: the only place raw names and ids are seen and turned into safe ones.

Hostnames and task ids become keyed hashes (HMAC-SHA256 with the target's secret), task and
queue names are scrubbed of personal data, and error texts are scrubbed the same way. The
latency of each queue is computed here because it needs the raw message ids (to follow the
oldest message across checks) and only hashes of them are kept afterwards.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from .model import (
    ActiveTaskSample,
    MessagePeek,
    Observation,
    ProbeError,
    QueueRaw,
    QueueSample,
    Sample,
    Snapshot,
    WorkerRaw,
    WorkerSample,
)

_TLDS = (
    "com|net|org|io|dev|app|co|ai|cloud|info|biz|us|uk|de|fr|es|it|nl|eu|ca|au|in|jp|br|"
    "internal|local|lan|corp|localdomain|localhost|intra|svc|cluster"
)

# Order matters: the most specific shapes first, so an email is not half-eaten as a host.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        # No hyphen in the local part: "emails-john@acme.com" keeps its "emails-" prefix, as
        # the published examples show (a hyphenated local part loses only its last segment).
        re.compile(r"[A-Za-z0-9._%+]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"),
        "[email]",
    ),
    # What the pattern above leaves (a local part ending in "-", or none): the domain still
    # goes, so no address shape survives.
    (re.compile(r"@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"), "[email]"),
    (
        re.compile(
            r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
        ),
        "[uuid]",
    ),
    (re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])"), "[ip]"),
    # IPv6: eight groups, or fewer around one "::" (so "12:30:45" is not taken for one). A
    # bare "::" holds no address, and taking it would make scrubbing change its own output.
    (
        re.compile(
            r"(?<![A-Za-z0-9:])(?:(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}"
            r"|[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6}::"
            r"(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6})?"
            r"|::[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6})(?![A-Za-z0-9:])"
        ),
        "[ip]",
    ),
    # Card numbers (four groups of four) and US social security numbers, before the phone
    # pattern would take three of their groups and leave the rest.
    (re.compile(r"(?<!\d)\d{4}(?:[ \-]\d{4}){2,3}(?!\d)|(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)"), "[id]"),
    (
        re.compile(
            r"(?<![\d+])(?:\+\d{1,3}[\s.\-]?)?(?:\(\d{2,4}\)[\s.\-]?|\d{2,4}[\s.\-])"
            r"\d{3,4}[\s.\-]\d{3,4}(?!\d)"
            r"|(?<!\d)\+\d{8,15}(?!\d)"
        ),
        "[phone]",
    ),
    # A host name ends its dotted token: "proj.app.tasks.send" is a module path, not a host.
    # "_" cannot be in a host name, so it bounds one ("sync_db-7.internal").
    (
        re.compile(
            r"(?<![A-Za-z0-9.\-])(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)+"
            rf"(?:{_TLDS})(?![A-Za-z0-9\-]|\.[A-Za-z0-9])",
            re.IGNORECASE,
        ),
        "[host]",
    ),
    (re.compile(r"(?<!\d)\d{5,}(?!\d)"), "[id]"),
)


@functools.lru_cache(maxsize=16384)
def scrub(text: str) -> str:
    """Replace personal data in a name or message: emails, UUIDs, IPs, phones, hosts, ids.

    Cached: the same queue and task names come back every check (and every warm invocation).
    """
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def names_queue(configured: Iterable[str], name: str) -> bool:
    """Whether a sanitized queue ``name`` is one of the ``configured`` (raw) queue names.

    Configured names are raw; sample names are scrubbed, and carry a ``~`` suffix when two
    raw names scrub alike.
    """
    base = name.split("~", 1)[0]
    return any(base in (raw, scrub(raw)) for raw in configured)


class Hasher:
    """Keyed, stable pseudonyms: the same secret gives the same hash across checks."""

    _CACHE_LIMIT = 50_000

    def __init__(self, secret: str) -> None:
        self._key = secret.encode("utf-8")
        self._cache: dict[tuple[str, str], str] = {}

    def _digest(self, kind: str, value: str) -> str:
        # Worker and queue names repeat every check; task ids and messages do not.
        cacheable = kind in ("worker", "queue")
        cached = self._cache.get((kind, value)) if cacheable else None
        if cached is None:
            cached = hmac.new(self._key, f"{kind}\0{value}".encode(), hashlib.sha256).hexdigest()
            if cacheable:
                if len(self._cache) >= self._CACHE_LIMIT:
                    self._cache.clear()
                self._cache[(kind, value)] = cached
        return cached

    def worker(self, hostname: str) -> str:
        return "w-" + self._digest("worker", hostname)[:8]

    def task(self, task_id: str) -> str:
        return "t-" + self._digest("task", task_id)[:12]

    def queue(self, name: str) -> str:
        return "q-" + self._digest("queue", name)[:8]

    def fingerprint(self, value: str) -> str:
        return "m-" + self._digest("message", value)[:16]


@dataclass(frozen=True)
class Privacy:
    scrub_names: bool = True

    def name(self, text: str) -> str:
        return scrub(text) if self.scrub_names else text


def parse_time(value: str | None) -> float | None:
    """ISO 8601 (as Celery writes ``eta``/``expires``) to epoch seconds; None when unusable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        # Celery writes aware timestamps; a naive one is taken as UTC.
        from datetime import UTC

        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@dataclass(frozen=True)
class _Age:
    seconds: float
    source: str
    lower_bound: bool


def _message_age(
    peek: MessagePeek, obs_key: str, previous: dict[str, Observation], now: float, hasher: Hasher
) -> tuple[_Age | None, Observation | None]:
    """The waiting time of one oldest message, best strategy first, and its observation."""
    eta = parse_time(peek.eta)
    if eta is not None and eta > now:
        return None, None  # an ETA task that is not due yet is not waiting
    fingerprint = hasher.fingerprint(peek.fingerprint)
    seen = previous.get(obs_key)
    first_seen = seen.first_seen if seen and seen.fingerprint == fingerprint else now
    observation = Observation(fingerprint=fingerprint, first_seen=first_seen)
    since_eta = eta or 0.0
    if peek.published_at is not None and 0 < peek.published_at <= now + 60:
        return _Age(now - max(peek.published_at, since_eta), "producer_header", False), observation
    expires = parse_time(peek.expires)
    if expires is not None and peek.expiration_ms is not None and peek.expiration_ms > 0:
        published = expires - peek.expiration_ms / 1000.0
        if 0 < published <= now + 60:
            return _Age(now - max(published, since_eta), "expires", False), observation
    return _Age(now - max(first_seen, since_eta), "observed", True), observation


def _queue_names(queues: tuple[QueueRaw, ...], privacy: Privacy, hasher: Hasher) -> list[str]:
    """Scrubbed names; two raw names that scrub alike get a keyed suffix, never merged."""
    names = [privacy.name(q.name) for q in queues]
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return [
        f"{name}~{hasher.queue(q.name)}" if counts[name] > 1 else name
        for name, q in zip(names, queues, strict=True)
    ]


def _queue_sample(
    raw: QueueRaw,
    name: str,
    previous: dict[str, Observation],
    observations: dict[str, Observation],
    now: float,
    hasher: Hasher,
    privacy: Privacy,
) -> QueueSample:
    queue_key = hasher.queue(raw.name)
    best: _Age | None = None
    oldest_task: str | None = None
    unreadable = False
    serializers: set[str] = set()
    redelivered = False
    for peek in raw.oldest:
        if not peek.decoded:
            unreadable = True
        if peek.content_type:
            serializers.add(_serializer(peek.content_type))
        redelivered = redelivered or peek.redelivered
        obs_key = f"{queue_key}:{peek.priority_list}"
        age, observation = _message_age(peek, obs_key, previous, now, hasher)
        if observation is not None:
            observations[obs_key] = observation
        if age is not None and (best is None or age.seconds > best.seconds):
            best = age
            oldest_task = privacy.name(peek.task_name) if peek.task_name else None
    latency: float | None
    if raw.depth == 0:
        latency, source, lower = 0.0, "empty", False
    elif not raw.peeked:
        latency, source, lower = None, "not_measured", False
    elif best is None:
        latency, source, lower = 0.0, "not_due", False
    else:
        latency, source, lower = round(max(best.seconds, 0.0), 3), best.source, best.lower_bound
    return QueueSample(
        name=name,
        depth=raw.depth,
        latency_sec=latency,
        latency_source=source,
        latency_is_lower_bound=lower,
        depth_by_priority=dict(sorted(raw.depth_by_priority.items())),
        oldest_task=oldest_task,
        unreadable_messages=unreadable,
        serializers=tuple(sorted(serializers)),
        redelivered=redelivered,
        problem=raw.problem,
        latency_window_exhausted=any(p.window_exhausted for p in raw.oldest),
    )


def _serializer(content_type: str) -> str:
    known = {
        "application/json": "json",
        "application/x-python-serialize": "pickle",
        "application/x-yaml": "yaml",
        "application/x-msgpack": "msgpack",
        "application/data": "binary",
    }
    return known.get(content_type.split(";")[0].strip().lower(), "other")


def _worker_sample(
    raw: WorkerRaw, now: float, hasher: Hasher, privacy: Privacy, queue_names: dict[str, str]
) -> WorkerSample:
    wid = hasher.worker(raw.hostname)
    tasks = tuple(
        ActiveTaskSample(
            task_id_hash=hasher.task(t.task_id),
            task_name=privacy.name(t.task_name),
            worker_id_hash=wid,
            duration_sec=round(max(now - t.started_at, 0.0), 3) if t.started_at else None,
        )
        for t in raw.active
    )
    processed: dict[str, int] = {}
    for name, count in raw.processed.items():
        safe = privacy.name(name)
        processed[safe] = processed.get(safe, 0) + count
    return WorkerSample(
        id_hash=wid,
        status=raw.status,
        concurrency=raw.concurrency,
        active=len(raw.active),
        reserved=raw.reserved,
        scheduled=raw.scheduled,
        pool=raw.pool,
        queues=tuple(sorted({queue_names.get(q) or privacy.name(q) for q in raw.queues})),
        processed_total=sum(raw.processed.values()),
        processed=processed,
        prefetch_count=raw.prefetch_count,
        uptime_sec=raw.uptime_sec,
        tasks=tasks,
        detail_age_sec=raw.detail_age_sec,
    )


@dataclass(frozen=True)
class UnackedSample:
    task_id_hash: str | None
    task_name: str | None
    queue: str | None
    age_sec: float
    held_by_live_worker: bool


MAX_QUEUE_ERRORS = 10


def queue_errors(queues: tuple[QueueSample, ...]) -> tuple[ProbeError, ...]:
    """Error entries for queues that could not be read fully, from their sanitized names.

    A key of another type under a queue's name and an ETA window that ran out are easy to
    miss as fields deep in the document; as errors, the text check and the audit show them.
    At most MAX_QUEUE_ERRORS of a kind are listed, then how many more.
    """
    wrong = [
        f"{q.name}: the key is a {q.problem.partition(':')[2] or 'non-list'}, not a list;"
        " it is not counted as a queue"
        for q in queues
        if q.problem and q.problem.startswith("wrong_type")
    ]
    window = [
        f"{q.name}: the oldest messages are all ETA tasks not due yet; the latency of what"
        " waits behind them is not measured"
        for q in queues
        if q.latency_window_exhausted
    ]
    found: list[ProbeError] = []
    for kind, messages in (("wrong_type", wrong), ("eta_window", window)):
        found.extend(ProbeError("queue", kind, m) for m in messages[:MAX_QUEUE_ERRORS])
        if len(messages) > MAX_QUEUE_ERRORS:
            more = len(messages) - MAX_QUEUE_ERRORS
            found.append(ProbeError("queue", kind, f"... and {more} more queues like these"))
    return tuple(found)


def sanitize(
    snapshot: Snapshot,
    *,
    hasher: Hasher,
    previous_observations: dict[str, Observation],
    scrub_names: bool = True,
) -> tuple[Sample, tuple[UnackedSample, ...]]:
    """Return the Sample and the sanitized overdue unacked entries (for anomaly analysis)."""
    privacy = Privacy(scrub_names)
    now = snapshot.taken_at
    observations: dict[str, Observation] = {}
    names = _queue_names(snapshot.queues, privacy, hasher)
    queues = tuple(
        _queue_sample(raw, name, previous_observations, observations, now, hasher, privacy)
        for raw, name in zip(snapshot.queues, names, strict=True)
    )
    if not snapshot.redis_ok:
        # Nothing was seen: keep following the messages we were following.
        observations = dict(previous_observations)
    # The same safe name for a queue wherever it shows, collisions included.
    queue_names = {raw.name: name for raw, name in zip(snapshot.queues, names, strict=True)}
    workers = tuple(_worker_sample(w, now, hasher, privacy, queue_names) for w in snapshot.workers)

    held = {
        tid
        for w in snapshot.workers
        if w.status != "offline"
        for tid in (*(t.task_id for t in w.active), *w.reserved_ids)
    }
    any_silent = any(w.status == "not_answering" for w in snapshot.workers)
    unacked: tuple[UnackedSample, ...] = ()
    vt: float | None = None
    if snapshot.unacked is not None:
        vt = snapshot.unacked.visibility_timeout_sec
        unacked = tuple(
            UnackedSample(
                task_id_hash=hasher.task(e.task_id) if e.task_id else None,
                task_name=privacy.name(e.task_name) if e.task_name else None,
                queue=(queue_names.get(e.queue) or privacy.name(e.queue)) if e.queue else None,
                age_sec=round(e.age_sec, 3),
                # A worker that is alive but silent may hold it: do not call it orphaned.
                held_by_live_worker=(e.task_id in held) or any_silent,
            )
            for e in snapshot.unacked.overdue
        )
    info = snapshot.info
    redis_info: dict[str, object] = {}
    if info is not None:
        redis_info = {k: v for k, v in vars(info).items() if v is not None}
    errors = (
        *(ProbeError(e.component, e.kind, scrub(e.message)) for e in snapshot.errors),
        *queue_errors(queues),
    )
    sample = Sample(
        target=snapshot.target,
        timestamp=now,
        duration_ms=snapshot.duration_ms,
        redis_ok=snapshot.redis_ok,
        queues=queues,
        workers=workers,
        anomalies=(),
        errors=errors,
        redis=redis_info,
        unacked_total=snapshot.unacked.total if snapshot.unacked else 0,
        overdue_unacked=snapshot.unacked.overdue_total if snapshot.unacked else 0,
        visibility_timeout_sec=vt,
        workers_probed=snapshot.workers_probed,
        discovery_truncated=snapshot.discovery_truncated,
        queues_found=snapshot.queues_found,
        observations=observations,
        phase_ms=dict(snapshot.phase_ms),
    )
    return sample, unacked
