"""SNS fan-out: the publisher the dispatcher uses, and the subscribers behind the topic.

One SNS message per notification, ``MessageStructure=json``: ``default`` is the alert
document (JSON text, what Lambda and SQS subscribers receive), ``email`` the readable text.
Message attributes ``severity``, ``alert_type``, ``target``, ``action`` allow filter policies,
but each subscriber also asks its channel (``Channel.wants``) in code.

Subscribers are safe to run twice on one message: PagerDuty deduplicates on ``dedup_key``;
Slack has no such key, so each container remembers the notification ids it posted (a
bounded in-memory set). A duplicate that reaches a fresh container (cold start, or a second
concurrent container) is posted again: at-least-once, as SNS itself is.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..alerting import RESOLVE, TRIGGER, Notification, notification_id
from ..model import Severity
from ..sanitize import parse_time, scrub
from . import email
from .channel import Channel, MinimumSeverity, NotifyError, SeenIds
from .document import alert_document, from_document, truncate

log = logging.getLogger("doorman.notify")

SNS_MAX_BYTES = 256 * 1024
# Room kept for the subject, attributes and the JSON structure around the two messages.
_BUDGET = SNS_MAX_BYTES - 8 * 1024


def _attrs(note: Notification) -> dict[str, dict[str, str]]:
    return {
        "severity": {"DataType": "String", "StringValue": note.severity.value},
        "alert_type": {"DataType": "String", "StringValue": note.type},
        "target": {"DataType": "String", "StringValue": note.target or "-"},
        "action": {"DataType": "String", "StringValue": note.action},
    }


def _message(note: Notification) -> str:
    return json.dumps(
        {
            "default": json.dumps(alert_document(note), separators=(",", ":"), default=str),
            "email": email.body(note),
        },
        separators=(",", ":"),
    )


def _fit(note: Notification) -> str:
    """The SNS message of ``note``, with details cut until it fits SNS's limit."""
    message = _message(note)
    if len(message.encode()) <= _BUDGET:
        return message
    cut = replace(
        note,
        details={"truncated": True, "detail_keys": len(note.details)},
        message=truncate(note.message, 2000),
        recommendation=truncate(note.recommendation, 2000) if note.recommendation else None,
        title=truncate(note.title, 500),
    )
    message = _message(cut)
    if len(message.encode()) > _BUDGET:  # only absurd keys or targets are left
        cut = replace(cut, key=truncate(cut.key, 1000), subject=truncate(cut.subject, 500))
        message = _message(cut)
    return message


def publish_request(note: Notification, topic_arn: str) -> dict[str, Any]:
    """The ``Publish`` parameters for ``note`` (pure; the message fits 256 KB)."""
    message = _fit(note)
    return {
        "TopicArn": topic_arn,
        "Message": message,
        "MessageStructure": "json",
        "Subject": email.subject(note),
        "MessageAttributes": _attrs(note),
    }


# Publish errors (botocore's SNS service model) by which SNS refuses the message itself, a
# too-long message or a malformed attribute: sending it again fails the same way, and holding
# it in the stream would block every later alert of the shard. Such a message is dropped and
# counted (``DispatchDropped``, whose alarm fires on any drop). Every other error is about
# the topic, the account or the service, and equally fatal for every message: a missing topic
# (``NotFound``), access (``AuthorizationError``, ``AccessDenied``, ``InvalidClientTokenId``,
# ``InvalidSecurity``), the topic's KMS key (``KMS*``), throttling, internal errors and any
# code not known here. Those are retried through the stream until the setup is fixed (the
# retry and iterator-age alarms fire meanwhile; after the last retry the mapping's
# on-failure destination keeps the batch and its own alarm fires).
_MESSAGE_REFUSED_CODES = frozenset(
    {"InvalidParameter", "InvalidParameterValue", "ParameterValueInvalid", "ValidationException"}
)
# ``arn:<partition>:sns:<region>:<account>:<topic>``
_TOPIC_ARN = re.compile(r"arn:aws[\w-]*:sns:[a-z0-9-]+:\d{12}:[\w-]{1,256}(\.fifo)?")


def is_permanent(code: str, message: str) -> bool:
    """True when SNS refused the message itself (see ``_MESSAGE_REFUSED_CODES``); False for
    every error a fixed topic, policy or key would cure. An invalid-parameter error about the
    topic ARN is the configuration's, not the message's: retried."""
    if code not in _MESSAGE_REFUSED_CODES:
        return False
    return "topicarn" not in message.lower().replace(" ", "")


@dataclass(frozen=True)
class SnsPublisher(MinimumSeverity):
    """Publishes notifications to one topic through an injected boto3 SNS client; every
    severity (the subscribers filter)."""

    client: Any
    topic_arn: str
    name: str = "sns"
    minimum: Severity = Severity.INFO

    def describe(self, note: Notification) -> str:
        """The email subject the message carries."""
        return email.subject(note)

    def send(self, note: Notification) -> None:
        """Publish ``note``. Raises NotifyError: permanent only when SNS refused this message
        (:func:`is_permanent`); transient for the topic, access, KMS, throttling, service and
        connection errors, and for a configured topic ARN that is not one (not sent)."""
        if not _TOPIC_ARN.fullmatch(self.topic_arn):
            # Not named: a placeholder or a mangled value is the deploy's to fix.
            raise NotifyError(
                f"{self.name}: the topic ARN is not an SNS topic ARN", permanent=False
            )
        try:
            self.client.publish(**publish_request(note, self.topic_arn))
        except Exception as exc:
            response = getattr(exc, "response", None)
            code = ""
            text = ""
            status = None
            if isinstance(response, Mapping):
                error = response.get("Error", {})
                code = str(error.get("Code", ""))
                text = str(error.get("Message", ""))
                status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            kind = code or type(exc).__name__
            raise NotifyError(
                f"{self.name}: publish failed ({kind})",
                permanent=is_permanent(code, text),
                status=status if isinstance(status, int) else None,
            ) from None


# --- subscribers ----------------------------------------------------------------------------


# One per container: outlives an invocation, not a cold start.
SLACK_SEEN = SeenIds()


@dataclass(frozen=True)
class Outcome:
    id: str | None
    status: str  # "sent", "skipped", "duplicate", "invalid", "failed"
    error: str | None = None


def record_message(record: Mapping[str, Any]) -> str:
    """The message text of one record (Lambda's ``Sns`` shape or the SNS envelope an SQS
    subscription receives). Raises ValueError when neither is there."""
    sns = record.get("Sns", record)
    if not isinstance(sns, Mapping) or not isinstance(sns.get("Message"), str):
        raise ValueError("record has no SNS message")
    return str(sns["Message"])


def parse_record(record: Mapping[str, Any]) -> Notification | None:
    """The notification an SNS record carries, None for an alarm state that is not sent;
    raises ValueError on anything else.

    Two kinds of message reach the topic: Doorman's alert documents, and the state changes
    of the stack's own CloudWatch alarms (no check running, function errors, dead letters).
    """
    message = record_message(record)
    try:
        doc = json.loads(message)
        if not isinstance(doc, dict):
            raise ValueError("not an object")
        if "AlarmName" in doc and "NewStateValue" in doc:
            return alarm_notification(doc)
        return from_document(doc)
    except (TypeError, KeyError, ValueError) as exc:
        # Only the kind of error: a ValueError's text can quote the field (a severity, say).
        raise ValueError(f"not a Doorman notification ({type(exc).__name__})") from None


def alarm_notification(doc: Mapping[str, Any]) -> Notification | None:
    """A CloudWatch alarm's state change as a critical notification: ALARM triggers and OK
    resolves (keyed by the alarm, so PagerDuty closes the incident it opened); other states
    (INSUFFICIENT_DATA) are not sent. The texts are AWS's, about Doorman's own metrics; they
    are scrubbed all the same."""
    state = doc["NewStateValue"]
    action = {"ALARM": TRIGGER, "OK": RESOLVE}.get(state) if isinstance(state, str) else None
    if action is None:
        return None
    name = truncate(scrub(str(doc["AlarmName"])), 200)
    at = parse_time(str(doc.get("StateChangeTime", "")).replace("+0000", "+00:00"))
    at = at if at is not None else time.time()
    key = f"aws_alarm:{name}"
    reason = truncate(scrub(str(doc.get("NewStateReason") or "")), 2000)
    return Notification(
        id=notification_id(key, action, at),
        action=action,
        key=key,
        type="aws_alarm",
        severity=Severity.CRITICAL,
        target=name,
        title=f"CloudWatch alarm {name}" + (" is back to OK" if action == RESOLVE else ""),
        message=reason or f"{name} went to {state}",
        at=at,
        subject=name,
        details={"state": state},
    )


def handle_records(
    records: Iterable[Mapping[str, Any]],
    channel: Channel,
    *,
    seen: SeenIds | None = None,
) -> list[Outcome]:
    """Deliver every record's notification that ``channel`` wants through it.

    ``seen``: ids already delivered by this container are skipped, and successes are added.
    Malformed records and permanent failures are logged and skipped. Raises the first
    transient NotifyError after trying every record, so that the invocation is retried
    (records already delivered are then skipped by ``seen``, or deduplicated by the
    receiver).
    """
    outcomes: list[Outcome] = []
    transient: NotifyError | None = None
    for record in records:
        try:
            note = parse_record(record)
        except ValueError as exc:
            log.error("%s: skipping a record: %s", channel.name, exc)
            outcomes.append(Outcome(None, "invalid", str(exc)))
            continue
        if note is None:
            outcomes.append(Outcome(None, "skipped"))
            continue
        if not channel.wants(note):
            outcomes.append(Outcome(note.id, "skipped"))
            continue
        if seen is not None and note.id in seen:
            log.info("%s: notification already delivered by this container", channel.name)
            outcomes.append(Outcome(note.id, "duplicate"))
            continue
        try:
            channel.send(note)
        except NotifyError as exc:
            outcomes.append(Outcome(note.id, "failed", exc.message))
            if exc.permanent:
                log.error("%s: dropped after a permanent error: %s", channel.name, exc.message)
            elif transient is None:
                transient = exc
            continue
        if seen is not None:
            seen.add(note.id)
        outcomes.append(Outcome(note.id, "sent"))
    if transient is not None:
        raise transient
    return outcomes


def handle_sns_for_slack(
    records: Iterable[Mapping[str, Any]], channel: Channel, *, seen: SeenIds | None = None
) -> list[Outcome]:
    """The Slack subscriber: the channel's severity filter, and this container's seen-set."""
    return handle_records(records, channel, seen=SLACK_SEEN if seen is None else seen)


def handle_sns_for_pagerduty(
    records: Iterable[Mapping[str, Any]], channel: Channel
) -> list[Outcome]:
    """The PagerDuty subscriber: idempotent through dedup_key (resolves always go out: see
    ``PagerDutyChannel``)."""
    return handle_records(records, channel)
