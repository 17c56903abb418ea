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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from .analyse.outcomes import counters_add, hist_add
from .model import (
    ActiveTaskSample,
    CompanionRaw,
    Histogram,
    MessagePeek,
    Observation,
    ProbeError,
    QueueRaw,
    QueueSample,
    Sample,
    Snapshot,
    TaskCounters,
    WorkerRaw,
    WorkerSample,
)

_TLDS = (
    "com|net|org|io|dev|app|co|ai|cloud|info|biz|us|uk|de|fr|es|it|nl|eu|ca|au|in|jp|br|"
    "internal|local|lan|corp|localdomain|localhost|intra|svc|cluster"
)

# Every character outside ASCII except the Unicode spaces: letters of any script, and the
# combining marks that Python's \w leaves out ("o" + U+0308 spells "ö" as well as U+00F6).
_WIDE = (
    "\u0080-\u0084\u0086-\u009f\u00a1-\u167f\u1681-\u1fff\u200b-\u2027\u202a-\u202e"
    "\u2030-\u205e\u2060-\u2fff\u3001-\U0010ffff"
)
# The local part of an address. No "-": "emails-john@acme.com" keeps its "emails-" prefix,
# as the published examples show (a hyphenated local part loses only its last segment).
_LOCAL = rf"[A-Za-z0-9_.%+{_WIDE}]"
# "@", URL-encoded (once to thrice: "%40", "%2540"), full-width, small, and as HTML entities.
# The repeat is bounded: "%252525..." must not be rescanned from every "%".
_AT = r"(?:@|%(?:25){0,3}40|\uff20|\ufe6b|&#0{0,3}64;|&#[xX]0{0,3}40;|&commat;)"
# A domain: labels of letters (any script), digits, "-" and URL-encoded bytes, with no TLD
# required ("jane@localhost" is an address). Possessive: it never gives back what it took.
_LABEL = rf"(?:[A-Za-z0-9\-{_WIDE}]|%[0-9A-Fa-f]{{2}})++"
_HOST = rf"[A-Za-z0-9{_WIDE}]"

# Order matters: the most specific shapes first, so an email is not half-eaten as a host.
#
# Every pattern is linear in its input: a pattern that scans a run of characters may start
# only at the run's first character (a lookbehind), and repeats are bounded or possessive,
# so no run is rescanned from each of its positions (that made a 32,000-character name
# take a second). Where it can, a pattern starts with a character class and checks what
# comes before with a lookbehind after it ("\d(?<!\d\d)" rather than "(?<!\d)\d"): the
# regex engine then skips ahead to the next candidate character instead of trying every
# position. Each pattern also names characters it cannot match without (its triggers),
# and is not run at all on a text holding none of them.
_ANY_AT = "@%&\uff20\ufe6b"
_DIGITS = "0123456789"
# An address is found from its "@" (a forward scan over "@" and domain, which never gives
# back what it took), then its local part from there backwards (see _scrub_emails).
_AT_DOMAIN = re.compile(rf"{_AT}{_LABEL}(?:\.{_LABEL})*+")
_LOCAL_RUN = re.compile(rf"{_LOCAL}*+")
# Characters that are not local-part characters and rarely in a name, to mark addresses.
_MARKERS = "\x00\x01\x02\x03\x04\x05\x06\x07\x0e\x0f\x10\x11\x12\x13\x14\x15"
# A marker and the run of local-part characters before it, matched from the run's start.
_LOCAL_BEFORE = {m: re.compile(rf"(?<!{_LOCAL}){_LOCAL}*+{re.escape(m)}") for m in _MARKERS}

_PATTERNS: tuple[tuple[re.Pattern[str], str, tuple[str, ...]], ...] = (
    (
        re.compile(
            r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
        ),
        "[uuid]",
        (),
    ),
    (
        re.compile(r"\d(?<![\d.]\d)\d{0,2}\.(?:\d{1,3}\.){2}\d{1,3}(?![\d.])"),
        "[ip]",
        (".", _DIGITS),
    ),
    # IPv6: eight groups, or fewer around one "::" (so "12:30:45" is not taken for one). A
    # bare "::" holds no address, and taking it would make scrubbing change its own output;
    # so would taking "::0" right after a replacement ("00000::0" -> "[id]::0"), hence "]".
    (
        re.compile(
            r"(?<![A-Za-z0-9:\]])(?:(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}"
            r"|[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6}::"
            r"(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6})?"
            r"|::[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6})(?![A-Za-z0-9:])"
        ),
        "[ip]",
        (":",),
    ),
    # Card numbers (four groups of four) and US social security numbers, before the phone
    # pattern would take three of their groups and leave the rest.
    (
        re.compile(r"\d(?<!\d\d)(?:\d{3}(?:[ \-]\d{4}){2,3}|\d{2}-\d{2}-\d{4})(?!\d)"),
        "[id]",
        (_DIGITS,),
    ),
    (
        # With a country code; as one run of digits after "+"; with the area code in
        # brackets; with none of these. Each begins with the character it needs.
        re.compile(
            r"\+(?<![\d+]\+)\d{1,3}[\s.\-]?(?:\(\d{2,4}\)[\s.\-]?|\d{2,4}[\s.\-])"
            r"\d{3,4}[\s.\-]\d{3,4}(?!\d)"
            r"|\+(?<!\d\+)\d{8,15}(?!\d)"
            r"|\((?<![\d+]\()\d{2,4}\)[\s.\-]?\d{3,4}[\s.\-]\d{3,4}(?!\d)"
            r"|\d(?<![\d+]\d)\d{1,3}[\s.\-]\d{3,4}[\s.\-]\d{3,4}(?!\d)"
        ),
        "[phone]",
        (_DIGITS,),
    ),
    # A host name ends its dotted token: "proj.app.tasks.send" is a module path, not a host.
    # "_" cannot be in a host name, so it bounds one ("sync_db-7.internal"). Labels may be
    # in any script ("cache.exämple.org"). Every label but the last is taken for good
    # (possessive), and only the last is tried as a top-level domain: backing off label by
    # label over a long dotted run cost a pass over all the domains at each label.
    (
        re.compile(
            rf"(?<![A-Za-z0-9.\-{_WIDE}])(?:{_HOST}(?:[A-Za-z0-9\-{_WIDE}]*{_HOST})?\.(?={_HOST}))++"
            rf"(?i:{_TLDS})(?![A-Za-z0-9\-{_WIDE}]|\.{_HOST})",
        ),
        "[host]",
        (".",),
    ),
    (re.compile(r"\d(?<!\d\d)\d{4,}(?!\d)"), "[id]", (_DIGITS,)),
)

# What scrubbing puts in place of what it takes out.
_TOKENS = ("[email]", *sorted({replacement for _, replacement, _ in _PATTERNS}))

# Names are shown at most this long; a longer one is cut (see safe_name).
NAME_MAX = 200
# A name is scrubbed whole up to this length; a longer one is cut to it before scrubbing
# (at a boundary no address or number runs across), so that no name can cost more than a
# few milliseconds whatever it holds: scrubbing is linear, but dense hostile text costs
# about half a microsecond a character. Only the first NAME_MAX characters are shown.
SCRUB_MAX = 16 << 10
# Real addresses, host names, phone and card numbers are shorter than this (an address has
# at most 254 characters), so a cut this far back from a boundary splits none of them.
_EDGE = 256
# A character no pattern can match, where a cut splits nothing it could have found ("&",
# "#" and ";" are not among them: "&#64;" is an "@").
_HARD_BOUNDARY = re.compile(r"[/,|=\"'<>\[\]{}!?*^~`$\\]")
_DIGEST = 12
_CUT_MARK = "…#"

# Short texts repeat (the same queue and task names every check): their results are cached.
_CACHE_TEXT_MAX = 1024


def _triggered(text: str, triggers: tuple[str, ...]) -> bool:
    """Whether ``text`` holds a character of each trigger group (cheap: no regex involved).

    Outside ASCII, ``\\d`` matches other scripts' digits too, so digits are assumed there.
    """
    ascii_only = text.isascii()
    return all(
        (group == _DIGITS and not ascii_only) or any(c in text for c in group) for group in triggers
    )


def _scrub_emails(text: str) -> str:
    """``text`` with every address (or "@" and domain, when no local part) as "[email]".

    Two passes, each linear: every "@" (or encoded "@") with its domain becomes a marker
    that is no local-part character; then each marker takes the run of local-part
    characters before it, matched only from the start of the run. A single pattern would
    have to look for an encoded "@" inside the run from each of its characters.
    """
    if not any(c in text for c in _ANY_AT):
        return text
    marker = next((c for c in _MARKERS if c not in text), None)
    if marker is None:
        # Every marker is taken: one pass, one step per address, in Python.
        reverse, size, last = text[::-1], len(text), 0
        pieces: list[str] = []
        for found in _AT_DOMAIN.finditer(text):
            local = _LOCAL_RUN.match(reverse, size - found.start(), size - last)
            start = found.start() - (local.end() - local.start() if local else 0)
            pieces += (text[last:start], "[email]")
            last = found.end()
        return "".join((*pieces, text[last:]))
    marked = _AT_DOMAIN.sub(marker, text)
    if marked == text:
        return text
    return _LOCAL_BEFORE[marker].sub("[email]", marked)


def _scrub(text: str) -> str:
    text = _scrub_emails(text)
    for pattern, replacement, triggers in _PATTERNS:
        if _triggered(text, triggers):
            text = pattern.sub(replacement, text)
    return text


_scrub_cached = functools.lru_cache(maxsize=16384)(_scrub)


def scrub(text: str) -> str:
    """Return ``text`` with personal data replaced: emails, UUIDs, IPs, phones, hosts, ids.

    Linear in the length of ``text``. Short texts are cached: the same queue and task names
    come back every check (and every warm invocation); long ones are not kept in memory.
    """
    return _scrub_cached(text) if len(text) <= _CACHE_TEXT_MAX else _scrub(text)


def _window(text: str, limit: int) -> str:
    """The start of ``text`` (longer than ``limit``) that can be scrubbed without a split.

    Cut at the last hard boundary within _EDGE characters before ``limit``, or else _EDGE
    characters before it: either way, no real address or number runs across the cut, so
    scrubbing the window leaves no half of one behind.
    """
    head = text[:limit]
    boundary = -1
    for found in _HARD_BOUNDARY.finditer(head, max(limit - _EDGE, 0)):
        boundary = found.start()
    return head[: boundary + 1] if boundary >= 0 else head[: max(limit - _EDGE, 0)]


def _cut(text: str, digest_of: str) -> str:
    """``text`` cut to NAME_MAX characters: its start, "…#" and 12 hex of ``digest_of``.

    Never splits a scrubbing token such as "[email]".
    """
    head = text[: NAME_MAX - len(_CUT_MARK) - _DIGEST]
    bracket = head.rfind("[")
    if (
        bracket >= 0
        and "]" not in head[bracket:]
        and any(text.startswith(token, bracket) for token in _TOKENS)
    ):
        head = head[:bracket]
    digest = hashlib.sha256(digest_of.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST]
    return f"{head}{_CUT_MARK}{digest}"


def _fit(text: str, transform: Callable[[str], str]) -> str:
    """``transform(text)`` (a scrub, or nothing), cut to NAME_MAX when longer.

    The digest is of the transformed text: the digest of a scrubbed name holds no more than
    the scrubbed name itself, so no personal data is in it, while two names that still
    differ after scrubbing keep distinct cuts. A text longer than SCRUB_MAX is cut to it
    first and its length joins the digest.
    """
    if len(text) > SCRUB_MAX:
        done = transform(_window(text, SCRUB_MAX))
        return _cut(done, f"{done}\0{len(text)}")
    done = transform(text)
    return done if len(done) <= NAME_MAX else _cut(done, done)


@functools.lru_cache(maxsize=16384)
def _safe_name_cached(text: str) -> str:
    return _fit(text, _scrub)


def safe_name(text: str) -> str:
    """Return a task or queue name as it may be shown: scrubbed, at most NAME_MAX long.

    A longer one keeps its start and ends in "…#" and 12 hex digits of a SHA-256 of the
    whole scrubbed name, so the same name always gives the same cut and two names that
    differ after scrubbing stay apart (names that scrub alike meet, as short ones do; the
    queue list tells those apart with a keyed suffix).
    """
    return _safe_name_cached(text) if len(text) <= _CACHE_TEXT_MAX else _fit(text, _scrub)


def cut_name(text: str) -> str:
    """Return an unscrubbed name (``sanitize_task_signatures: false``) cut as safe_name cuts."""
    return _fit(text, str)


def names_queue(configured: Iterable[str], name: str) -> bool:
    """Whether a sanitized queue ``name`` is one of the ``configured`` (raw) queue names.

    Configured names are raw; sample names are scrubbed (or only cut), and carry a ``~``
    suffix when two raw names scrub alike.
    """
    base = name.split("~", 1)[0]
    return any(base in (raw, cut_name(raw), safe_name(raw)) for raw in configured)


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
        """Return a task or queue name as it may leave: scrubbed (unless turned off) and cut."""
        return safe_name(text) if self.scrub_names else cut_name(text)


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
    expired = sum(peek.expired_seen for peek in raw.oldest)
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
        expired_waiting=expired,
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
        companion=raw.has_companion,
        outcomes=_outcomes(raw.companion, privacy, queue_names),
    )


def _outcomes(
    raw: CompanionRaw | None, privacy: Privacy, queue_names: dict[str, str]
) -> CompanionRaw | None:
    """The companion's counters with task and queue names as every other name is shown;
    names that come out alike are added together (nothing is dropped)."""
    if raw is None:
        return None
    tasks: dict[str, TaskCounters] = {}
    for name, counters in raw.tasks.items():
        safe = privacy.name(name)
        tasks[safe] = counters_add(tasks[safe], counters) if safe in tasks else counters
    waits: dict[str, Histogram] = {}
    for queue, hist in raw.waits.items():
        safe = queue_names.get(queue) or privacy.name(queue)
        waits[safe] = hist_add(waits.get(safe), hist) or hist
    return replace(raw, tasks=tasks, waits=waits)


@dataclass(frozen=True)
class UnackedSample:
    task_id_hash: str | None
    task_name: str | None
    queue: str | None
    age_sec: float
    held_by_live_worker: bool


def _unacked_samples(
    snapshot: Snapshot, hasher: Hasher, privacy: Privacy, queue_names: Mapping[str, str]
) -> tuple[UnackedSample, ...]:
    """The overdue unacked entries, hashed, each told whether a live worker may hold it."""
    if snapshot.unacked is None:
        return ()
    held = {
        tid
        for w in snapshot.workers
        if w.status != "offline"
        for tid in (*(t.task_id for t in w.active), *w.reserved_ids)
    }
    # Silent, or answering without saying what it runs (its active or companion reply was
    # an error or unreadable, so not recorded as answered): it may hold any of them.
    any_silent = any(
        w.status == "not_answering"
        or (w.status == "online" and not {"active", "doorman"} & set(w.answered))
        for w in snapshot.workers
    )
    return tuple(
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


MAX_QUEUE_ERRORS = 10


def _wrong_type(name: str, problem: str) -> str:
    """``wrong_type:<type>`` (the queue's own key) or ``wrong_type:<type>:<n>`` (its
    priority list n), as a sentence."""
    _kind, _, rest = problem.partition(":")
    found, _, level = rest.partition(":")
    found = found or "non-list"
    if level:
        return f"{name}: its priority list {level} is a {found}, not a list; it is not counted"
    return f"{name}: the key is a {found}, not a list; it is not counted as a queue"


def queue_errors(queues: tuple[QueueSample, ...]) -> tuple[ProbeError, ...]:
    """Error entries for queues that could not be read fully, from their sanitized names.

    A key of another type under a queue's name and an ETA window that ran out are easy to
    miss as fields deep in the document; as errors, the text check and the audit show them.
    At most MAX_QUEUE_ERRORS of a kind are listed, then how many more.
    """
    wrong = [_wrong_type(q.name, q.problem) for q in queues if q.problem]
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
    unacked = _unacked_samples(snapshot, hasher, privacy, queue_names)
    vt = snapshot.unacked.visibility_timeout_sec if snapshot.unacked is not None else None
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
        visibility_timeout_sec=vt,
        workers_probed=snapshot.workers_probed,
        discovery_truncated=snapshot.discovery_truncated,
        queues_found=snapshot.queues_found,
        observations=observations,
        phase_ms=dict(snapshot.phase_ms),
    )
    return sample, unacked
