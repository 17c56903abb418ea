"""The Lambda side of Doorman, kept out of ``app.py``: targets checked concurrently within a
time budget, the outbox dispatcher over the table's stream, the SNS subscribers, ``/status``.

Everything here is handed its clients and settings; ``app.py`` builds and caches them.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .alerting import Notification
from .notify.channel import NotifyError
from .notify.secrets import ChannelSecrets, get_secure_parameter
from .notify.sns import Outcome, handle_sns_for_pagerduty, handle_sns_for_slack
from .payload import alert_json
from .runner import CheckResult, Deps, run_check
from .sanitize import Hasher
from .settings import ConfigError, Settings
from .state import StateError
from .state.dynamodb import OUTBOX_PREFIX, DynamoStore

log = logging.getLogger("doorman")

# Seconds kept from the Lambda's remaining time for reporting after the checks.
RETURN_MARGIN_SECONDS = 1.0
MIN_BUDGET_SECONDS = 0.5


def aws_client(service: str) -> Any:
    """A boto3 client with short timeouts and few retries (a check runs every minute).

    Region, credentials and endpoint come from the environment; boto3 honours
    ``AWS_ENDPOINT_URL`` (and ``AWS_ENDPOINT_URL_<SERVICE>``) itself.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"total_max_attempts": 3, "mode": "standard"},
        connect_timeout=3,
        read_timeout=5,
    )
    return boto3.client(service, config=config)


def hash_secret(settings: Settings, *, provider: Callable[[], Any] | None = None) -> str:
    """The hash secret: ``DOORMAN_HASH_SECRET``, else the SSM SecureString named by
    ``DOORMAN_HASH_SECRET_PARAM``. Raises ConfigError when neither gives one.

    ``provider`` builds the SSM provider, only when the parameter is read (a cold start
    with the secret in the environment builds no SSM client).
    """
    if settings.hash_secret:
        return settings.hash_secret
    if settings.hash_secret_param:
        try:
            ssm = provider() if provider is not None else None
            return get_secure_parameter(settings.hash_secret_param, provider=ssm)
        except NotifyError as exc:
            raise ConfigError(f"hash_secret_param: {exc.message}") from None
    raise ConfigError(
        "hash_secret: set DOORMAN_HASH_SECRET or DOORMAN_HASH_SECRET_PARAM in Lambda"
        " (hashes must stay stable across invocations)"
    )


# --- the scheduled check ------------------------------------------------------------------------


@dataclass
class TargetSlot:
    """One target's settings and connections, reused by warm invocations."""

    settings: Settings
    deps: Deps | None
    error: str | None = None  # why it cannot be checked (its collector could not be built)
    running: Future[CheckResult] | None = None

    def close(self) -> None:
        if self.deps is not None and (self.running is None or self.running.done()):
            self.deps.collector.close()


@dataclass(frozen=True)
class TargetOutcome:
    target: str
    status: str  # "ok", "failed" (raised), "timeout", "busy" (last one still running), "unusable"
    seconds: float
    result: CheckResult | None = None
    error: str | None = None

    def summary(self) -> dict[str, Any]:
        """What the scheduled function returns for this target (already sanitized)."""
        doc: dict[str, Any] = {
            "target": self.target,
            "status": self.status,
            "seconds": round(self.seconds, 3),
        }
        if self.error:
            doc["error"] = self.error
        if self.result is not None:
            payload = self.result.payload
            doc["committed"] = self.result.committed
            doc["metrics"] = payload.get("metrics", {})
            doc["alerts"] = [
                {"type": a["type"], "severity": a["severity"], "state": a["state"]}
                for a in payload.get("alerts", [])
            ]
            doc["notifications"] = [
                {"action": n["action"], "type": n["type"], "severity": n["severity"]}
                for n in payload.get("notifications", [])
            ]
            doc["errors"] = payload.get("errors", [])
        return doc


def build_slots(
    targets: Sequence[Settings], secret: str, store_for: Callable[[Settings], DynamoStore]
) -> dict[str, TargetSlot]:
    """One slot per target. A target whose connections cannot be built is kept, unusable,
    so that it is reported on every invocation without stopping the others."""
    from .collect import collector_for

    slots: dict[str, TargetSlot] = {}
    for settings in targets:
        try:
            collector = collector_for(settings)
        except ConfigError as exc:
            slots[settings.target] = TargetSlot(settings, None, str(exc))
            continue
        deps = Deps(collector=collector, store=store_for(settings), hasher=Hasher(secret))
        slots[settings.target] = TargetSlot(settings, deps)
    return slots


def _in_thread(name: str, work: Callable[[], CheckResult]) -> Future[CheckResult]:
    """Run ``work`` in a daemon thread: one that overruns its budget is left behind, never
    waited for (Lambda freezes it with the container; it finishes on a later invocation)."""
    future: Future[CheckResult] = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(work())
        except BaseException as exc:  # reported as the target's failure
            future.set_exception(exc)

    threading.Thread(target=run, name=f"check-{name}", daemon=True).start()
    return future


def budget_seconds(settings_budget: float, remaining_ms: float | None) -> float:
    """Each target's budget: the configured one, within the invocation's remaining time."""
    if remaining_ms is None:
        return settings_budget
    left = remaining_ms / 1000.0 - RETURN_MARGIN_SECONDS
    return max(MIN_BUDGET_SECONDS, min(settings_budget, left))


def run_targets(
    slots: Mapping[str, TargetSlot], budget: float, *, clock: Callable[[], float] = time.monotonic
) -> list[TargetOutcome]:
    """Check every target at once, each in its own thread and within ``budget`` seconds.

    A target that fails or overruns is reported as such and never delays or hides another;
    one whose previous check is still running (it overran an earlier budget) is not started
    again, so two checks never share its connections.
    """
    started = clock()
    futures: dict[str, Future[CheckResult]] = {}
    outcomes: dict[str, TargetOutcome] = {}
    for name, slot in slots.items():
        if slot.deps is None:
            outcomes[name] = TargetOutcome(name, "unusable", 0.0, error=slot.error)
        elif slot.running is not None and not slot.running.done():
            outcomes[name] = TargetOutcome(
                name, "busy", 0.0, error="the previous check of this target is still running"
            )
        else:
            settings, deps = slot.settings, slot.deps
            slot.running = _in_thread(name, functools.partial(run_check, settings, deps))
            futures[name] = slot.running
    finished: dict[Future[CheckResult], float] = {}
    pending = set(futures.values())
    deadline = started + budget
    while pending:
        done, pending = wait(
            pending, timeout=max(0.0, deadline - clock()), return_when="FIRST_COMPLETED"
        )
        now = clock()
        for future in done:
            finished[future] = now - started
        if not done:
            break
    for name, future in futures.items():
        if future not in finished:
            log.error("target %s: check overran its budget of %.1f s", name, budget)
            outcomes[name] = TargetOutcome(
                name, "timeout", clock() - started, error=f"over the {budget:.1f} s budget"
            )
            continue
        exc = future.exception()
        if exc is not None:
            log.error("target %s: check failed: %s", name, type(exc).__name__)
            outcomes[name] = TargetOutcome(
                name, "failed", finished[future], error=f"check raised {type(exc).__name__}"
            )
        else:
            outcomes[name] = TargetOutcome(name, "ok", finished[future], result=future.result())
    return [outcomes[name] for name in slots]


# --- the outbox dispatcher ----------------------------------------------------------------------


class DispatchFailed(RuntimeError):
    """Some records could not be published; raised when partial batch responses are off, so
    that the whole batch is retried."""


@dataclass(frozen=True)
class DeliveryLedger:
    """Which outbox items the dispatcher already published, kept on the items themselves
    (``delivered_at``, the attribute local delivery sets too).

    The stream mapping starts at the oldest record the stream keeps (TRIM_HORIZON), so a
    mapping created again reads up to 24 hours of notifications a second time; the ledger
    lets the dispatcher skip those, so that no resolved alert pages anyone again.
    ``client`` is a boto3 DynamoDB client; ``key`` the stream record's ``Keys``.
    """

    client: Any
    table: str

    def delivered(self, key: Mapping[str, Any]) -> bool:
        """True when the item was marked published; False when not, or when it is gone.
        Raises ClientError/BotoCoreError."""
        found = self.client.get_item(
            TableName=self.table,
            Key=dict(key),
            ConsistentRead=True,
            ProjectionExpression="delivered_at",
        )
        return "delivered_at" in found.get("Item", {})

    def mark(self, key: Mapping[str, Any], now: float) -> None:
        """Mark the item published (once; an item that is gone is left alone). Raises
        ClientError/BotoCoreError."""
        try:
            self.client.update_item(
                TableName=self.table,
                Key=dict(key),
                UpdateExpression="SET delivered_at = :now",
                ConditionExpression="attribute_exists(pk) AND attribute_not_exists(delivered_at)",
                ExpressionAttributeValues={":now": {"N": repr(float(now))}},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise


@dataclass
class DispatchReport:
    published: list[str] = field(default_factory=list)  # notification ids
    duplicates: int = 0  # in this batch already, or published by an earlier invocation
    ignored: int = 0  # not an INSERT of an outbox item
    dropped: int = 0  # unreadable, or refused for good by SNS (logged)
    failed: list[str] = field(default_factory=list)  # stream sequence numbers to retry

    def log(self) -> None:
        """Log the counts of one batch."""
        log.info(
            "dispatch: %d published, %d duplicates, %d ignored, %d dropped, %d to retry",
            len(self.published),
            self.duplicates,
            self.ignored,
            self.dropped,
            len(self.failed),
        )

    def response(self) -> dict[str, Any]:
        """Lambda's partial batch response (``ReportBatchItemFailures``)."""
        return {"batchItemFailures": [{"itemIdentifier": seq} for seq in self.failed]}


def _outbox_notification(record: Mapping[str, Any]) -> Notification | None:
    """The notification of a stream record that inserts an outbox item; None for any other
    record. Raises ValueError for an outbox item that cannot be read."""
    if record.get("eventName") != "INSERT":
        return None
    image = record.get("dynamodb", {}).get("NewImage") or {}
    sk = image.get("sk", {}).get("S", "")
    if not isinstance(sk, str) or not sk.startswith(OUTBOX_PREFIX):
        return None
    try:
        return Notification.from_json(json.loads(image["notification"]["S"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"unreadable outbox item ({type(exc).__name__})") from None


def dispatch_records(
    records: Iterable[Mapping[str, Any]],
    send: Callable[[Notification], None],
    *,
    ledger: DeliveryLedger | None = None,
    clock: Callable[[], float] = time.time,
) -> DispatchReport:
    """Publish the notification of every new outbox item, in stream order, once per id.

    With a ``ledger``, an item already marked published (a replayed stream) is skipped, and
    each one published is marked. The ledger never holds an alert back: when it cannot be
    read the notification is published all the same (at least once), and a failed mark is
    only logged.

    At the first transient failure the dispatcher stops: that record and every later one are
    reported failed. Lambda resumes a stream at the first failed record anyway, so sending the
    later ones would only duplicate them, and it would reorder a trigger and its resolve.
    A permanent failure (SNS refuses this message itself, see ``notify.sns.is_permanent``)
    and an unreadable outbox item are logged and dropped, counted in ``dropped``: holding
    them would block every later alert of the shard, and ``DispatchDropped`` has an alarm of
    its own. A missing topic or denied access is transient: retried through the stream.
    """
    report = DispatchReport()
    seen: set[str] = set()
    for record in records:
        sequence = str(record.get("dynamodb", {}).get("SequenceNumber", ""))
        if report.failed:  # stopped at an earlier record
            report.failed.append(sequence)
            continue
        _dispatch_one(record, sequence, send, ledger, clock, report, seen)
    report.log()
    return report


def _dispatch_one(
    record: Mapping[str, Any],
    sequence: str,
    send: Callable[[Notification], None],
    ledger: DeliveryLedger | None,
    clock: Callable[[], float],
    report: DispatchReport,
    seen: set[str],
) -> None:
    """One stream record: counted in ``report`` as published, failed, dropped, ignored (not
    an outbox insert) or a duplicate (an id sent in this batch or marked in the ledger)."""
    try:
        note = _outbox_notification(record)
    except ValueError as exc:
        log.error("dispatch: dropping record %s: %s", sequence, exc)
        report.dropped += 1
        return
    if note is None:
        report.ignored += 1
        return
    key = record.get("dynamodb", {}).get("Keys")
    if note.id in seen or (ledger is not None and key and _published_before(ledger, key, note.id)):
        report.duplicates += 1
        seen.add(note.id)
        return
    try:
        send(note)
    except NotifyError as exc:
        if not exc.permanent:
            log.warning("dispatch: %s; this record and the later ones are retried", exc.message)
            report.failed.append(sequence)
            return
        log.error("dispatch: notification %s dropped: %s", note.id, exc.message)
        report.dropped += 1
        seen.add(note.id)
        return
    seen.add(note.id)
    report.published.append(note.id)
    if ledger is not None and key:
        _mark_published(ledger, key, note.id, clock())


def _mark_published(
    ledger: DeliveryLedger, key: Mapping[str, Any], note_id: str, now: float
) -> None:
    """Mark the item published; a failure is only logged (a replay may then resend it)."""
    try:
        ledger.mark(key, now)
    except (ClientError, BotoCoreError) as exc:
        log.warning(
            "dispatch: notification %s published but not marked (%s)", note_id, type(exc).__name__
        )


def _published_before(ledger: DeliveryLedger, key: Mapping[str, Any], note_id: str) -> bool:
    """Whether the ledger says the item was published; False when it cannot be read."""
    try:
        done = ledger.delivered(key)
    except (ClientError, BotoCoreError) as exc:  # publishing twice beats not at all
        log.warning("dispatch: delivery state of %s unreadable (%s)", note_id, type(exc).__name__)
        return False
    if done:
        log.info("dispatch: notification %s was published before (stream replayed)", note_id)
    return done


# --- the SNS subscribers ------------------------------------------------------------------------


def notify_slack(
    records: Sequence[Mapping[str, Any]], settings: Settings, secrets: ChannelSecrets
) -> list[Outcome]:
    """Post the records' notifications to Slack; nothing when no webhook is configured."""
    from .notify.slack import SlackChannel

    url = secrets.slack_webhook_url or settings.slack_webhook_url
    if not url:
        log.info("slack: no webhook configured; %d record(s) not posted", len(records))
        return []
    return handle_sns_for_slack(records, SlackChannel(url, minimum=settings.slack_min_severity))


def notify_pagerduty(
    records: Sequence[Mapping[str, Any]], settings: Settings, secrets: ChannelSecrets
) -> list[Outcome]:
    """Send the records' notifications to PagerDuty; nothing when no key is configured."""
    from .notify.pagerduty import PagerDutyChannel

    key = secrets.pagerduty_routing_key or settings.pagerduty_routing_key
    if not key:
        log.info("pagerduty: no routing key configured; %d record(s) not sent", len(records))
        return []
    channel = PagerDutyChannel(
        key, settings.pagerduty_events_url, minimum=settings.pagerduty_min_severity
    )
    return handle_sns_for_pagerduty(records, channel)


# --- GET /status --------------------------------------------------------------------------------


def read_status(store: DynamoStore, targets: Sequence[str]) -> dict[str, Any]:
    """The last sample and the firing alerts of each target, as stored (sanitized already).

    Every target is read in one batch (:meth:`DynamoStore.load_many`), not a Query per
    target; a target whose state cannot be read is answered with its error. Raises
    StateError when the table itself cannot be read.
    """
    states = store.load_many(targets)
    found: list[dict[str, Any]] = []
    for target in targets:
        state = states[target]
        if isinstance(state, StateError):
            found.append({"target": target, "error": str(state)})
            continue
        firing = sorted(
            (a for a in state.alerts.values() if a.state == "firing"),
            key=lambda a: (-a.severity.rank, a.key),
        )
        found.append(
            {
                "target": target,
                "version": state.version,
                "last_sample": state.last_sample,
                "firing": [alert_json(a) for a in firing],
            }
        )
    return {"targets": found}
