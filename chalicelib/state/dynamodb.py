"""The AWS state store: one DynamoDB table keyed ``pk``/``sk``, written in one transaction.

Items of a target (``pk = TARGET#<name>``):

- ``SAMPLE``: ``version``, the state body (last sample, roster, observations, history, ...;
  JSON, zlib-compressed when large) and ``alert_versions``, a manifest naming every alert item
  of this version and the version that last wrote it;
- ``ALERT#<key>``: one alert state each (``body`` JSON, plus readable copies of its fields);
- ``OUTBOX#<ts>#<id>``: a notification committed with the state that caused it (read by the
  dispatcher from the table's stream).

Silences live under ``pk = SILENCES``, ``sk = SILENCE#<id>``. Every item carries an
``expires_at`` TTL attribute (epoch seconds) so the table stays bounded.

A commit is one ``TransactWriteItems`` conditioned on the ``SAMPLE`` version: a concurrent
check that committed first makes it fail whole (:class:`StateConflict`), so an alert state and
its notification are written together or not at all. Reads of several items by ``Query`` are
not isolated from a transaction in flight, so ``load`` checks the alert items against the
manifest and reads again when they do not match.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..alerting import AlertState, Notification, Silence
from .base import (
    OUTBOX_TTL_SECONDS,
    OutboxItem,
    StateConflict,
    StateError,
    TargetState,
    decode_silences,
)

log = logging.getLogger("doorman")

Item = dict[str, Any]

SAMPLE_SK = "SAMPLE"
ALERT_PREFIX = "ALERT#"
OUTBOX_PREFIX = "OUTBOX#"
SILENCES_PK = "SILENCES"
SILENCE_PREFIX = "SILENCE#"

STATE_TTL_SECONDS = 30 * 86400
ALERT_TTL_SECONDS = 30 * 86400
SILENCE_GRACE_SECONDS = 86400
# An unchanged alert item is rewritten once half its TTL has passed, so it never expires
# while the state still names it.
ALERT_REFRESH_SECONDS = ALERT_TTL_SECONDS // 2

MAX_TRANSACTION_ITEMS = 100
MAX_ITEM_BYTES = 350_000  # DynamoDB's limit is 400 KB; keep a margin for attribute overhead
COMPRESS_ABOVE_BYTES = 64_000
MAX_KEY_BYTES = 1000  # sort keys may hold 1024 bytes, partition keys 2048
READ_ATTEMPTS = 3
BATCH_GET_KEYS = 100  # BatchGetItem's limit per call


@dataclass(frozen=True)
class _Known:
    """An alert item as last read or written by this store: what it holds and until when."""

    body: dict[str, Any]
    version: int
    expires_at: int


@dataclass(frozen=True)
class _Seen:
    """The alert items stored at ``version``, as this store last saw them."""

    version: int
    alerts: dict[str, _Known]


class _Torn(Exception):
    """An alert item read in a batch does not match the manifest (a commit in flight)."""


class DynamoStore:
    """Keeps each target's state in one DynamoDB table; ``client`` is a boto3 DynamoDB client.

    The client is built (and closed) by the caller, so its region, endpoint (boto3 honours
    ``AWS_ENDPOINT_URL``), retries and timeouts are the caller's choice.
    """

    def __init__(
        self,
        table_name: str,
        client: Any,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.table_name = table_name
        self._client = client
        self._clock = clock
        self._sleep = sleep  # between reads again (a torn read, unprocessed keys)
        self._seen: dict[str, _Seen] = {}

    # --- the seam: every call to DynamoDB goes through here ---------------------------------

    def _call(self, operation: str, **kwargs: Any) -> Any:
        """Call one DynamoDB operation; raises StateError naming the table and the operation."""
        method = getattr(self._client, _snake(operation))
        try:
            return method(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(operation, exc) from None

    def _error(self, operation: str, exc: Exception) -> StateError:
        return StateError(
            f"DynamoDB table {self.table_name}: {operation} failed ({_describe(exc)})"
        )

    def _query(self, *, stop_after: int | None = None, **kwargs: Any) -> list[Item]:
        """Every item a Query matches, following its pages (at least ``stop_after`` of them)."""
        items: list[Item] = []
        start: Item | None = None
        while True:
            if start is not None:
                kwargs["ExclusiveStartKey"] = start
            page = self._call("Query", TableName=self.table_name, **kwargs)
            items.extend(page.get("Items", []))
            start = page.get("LastEvaluatedKey")
            if not start or (stop_after is not None and len(items) >= stop_after):
                return items

    # --- state -------------------------------------------------------------------------------

    def load(self, target: str) -> TargetState:
        pk = _target_pk(target)
        torn: list[str] = []
        for attempt in range(READ_ATTEMPTS):
            items = self._query(
                KeyConditionExpression="pk = :pk",
                FilterExpression="NOT begins_with(sk, :outbox)",
                ExpressionAttributeValues={":pk": _s(pk), ":outbox": _s(OUTBOX_PREFIX)},
                ConsistentRead=True,
            )
            sample = next((i for i in items if _text(i, "sk") == SAMPLE_SK), None)
            if sample is None:
                self._seen[target] = _Seen(0, {})
                return TargetState()
            version, body, manifest = self._decode_sample(target, sample)
            by_key = {
                _text(i, "alert_key"): i
                for i in items
                if (_text(i, "sk") or "").startswith(ALERT_PREFIX)
            }
            known: dict[str, _Known] = {}
            torn = []
            for key, written in manifest.items():
                item = by_key.get(key)
                if item is None or _number(item, "version") != written:
                    torn.append(key)  # read while another commit was being applied
                    continue
                known[key] = self._decode_alert(target, key, item, written)
            if not torn:
                break
            if attempt < READ_ATTEMPTS - 1:
                self._sleep(0.05 * (attempt + 1))
        if torn:
            # Still not matching after re-reading: the items are gone (expired, or removed by
            # hand). The state is used without them rather than left unusable.
            log.warning("state of a target names %d alert item(s) not found; skipped", len(torn))
        self._seen[target] = _Seen(version, known)
        try:  # the alerts decoded like every other part of the state
            return TargetState.from_json(
                version, {**body, "alerts": {key: k.body for key, k in known.items()}}
            )
        except StateError as exc:
            raise self._shape(target, str(exc)) from None

    def load_many(self, targets: Sequence[str]) -> dict[str, TargetState | StateError]:
        """The state of each of ``targets`` read in batches, for ``GET /status``: the
        ``SAMPLE`` items by ``BatchGetItem`` (100 keys a call), then the alert items their
        manifests name, the same way. A fleet of N targets with A alert items costs
        ceil(N/100) + ceil(A/100) calls, not a Query per target.

        A target whose alert items do not match its manifest (read while a commit was being
        applied) is read again alone with :meth:`load`. A target's own StateError (an
        unreadable item) is its value in the result; a failed call raises StateError.
        """
        pks = {target: _target_pk(target) for target in targets}
        samples = self._batch_get([_key(pk, SAMPLE_SK) for pk in pks.values()])
        found: dict[str, TargetState | StateError] = {}
        decoded: dict[str, tuple[int, Any, dict[str, int]]] = {}
        for target, pk in pks.items():
            sample = samples.get((pk, SAMPLE_SK))
            if sample is None:
                found[target] = TargetState()
                continue
            try:
                decoded[target] = self._decode_sample(target, sample)
            except StateError as exc:
                found[target] = exc
        alert_keys = [
            _key(pks[target], _alert_sk(key))
            for target, (_version, _body, manifest) in decoded.items()
            for key in manifest
        ]
        alerts = self._batch_get(alert_keys)
        for target, (version, body, manifest) in decoded.items():
            try:
                found[target] = self._assemble(target, version, body, manifest, alerts)
            except _Torn:
                try:
                    found[target] = self.load(target)
                except StateError as exc:
                    found[target] = exc
            except StateError as exc:
                found[target] = exc
        return {target: found[target] for target in targets}

    def _assemble(
        self,
        target: str,
        version: int,
        body: Any,
        manifest: Mapping[str, int],
        alerts: Mapping[tuple[str, str], Item],
    ) -> TargetState:
        """The state from its sample and the alert items read in a batch; raises _Torn when
        an item does not match the manifest, StateError when one is unreadable."""
        pk = _target_pk(target)
        known: dict[str, Any] = {}
        for key, written in manifest.items():
            item = alerts.get((pk, _alert_sk(key)))
            if item is None or _number(item, "version") != written:
                raise _Torn(key)
            known[key] = self._decode_alert(target, key, item, written).body
        try:
            return TargetState.from_json(version, {**body, "alerts": known})
        except StateError as exc:
            raise self._shape(target, str(exc)) from None

    def _batch_get(self, keys: Sequence[Item]) -> dict[tuple[str, str], Item]:
        """The items of ``keys`` (strongly consistent), by (pk, sk); a key with no item is
        left out. Keys DynamoDB leaves unprocessed (throttling) are asked again a few times;
        raises StateError when some still are, or when a call fails."""
        items: dict[tuple[str, str], Item] = {}
        unique = list({(_text(k, "pk"), _text(k, "sk")): k for k in keys}.values())
        for start in range(0, len(unique), BATCH_GET_KEYS):
            pending: list[Item] = unique[start : start + BATCH_GET_KEYS]
            for attempt in range(READ_ATTEMPTS + 2):
                answer = self._call(
                    "BatchGetItem",
                    RequestItems={self.table_name: {"Keys": pending, "ConsistentRead": True}},
                )
                for item in answer.get("Responses", {}).get(self.table_name, []):
                    items[(_text(item, "pk") or "", _text(item, "sk") or "")] = item
                left = answer.get("UnprocessedKeys", {}).get(self.table_name, {})
                pending = list(left.get("Keys", []))
                if not pending:
                    break
                self._sleep(0.05 * 2**attempt)
            if pending:
                raise StateError(
                    f"DynamoDB table {self.table_name}: BatchGetItem left {len(pending)} key(s)"
                    " unprocessed (throttled)"
                )
        return items

    def commit(
        self,
        target: str,
        state: TargetState,
        expected_version: int,
        outbox: Sequence[Notification] = (),
    ) -> TargetState:
        pk = _target_pk(target)
        now = self._clock()
        new_version = expected_version + 1
        previous = self._previous_alerts(target, expected_version)
        writes, manifest, known = self._alert_writes(pk, state, previous, new_version, now)
        deletes = [
            {"Delete": {"TableName": self.table_name, "Key": _key(pk, _alert_sk(key))}}
            for key in previous
            if key not in state.alerts
        ]
        notes: dict[str, Item] = {}
        for note in outbox:
            notes.setdefault(note.id, self._outbox_item(pk, target, note))

        sample = self._sample_item(target, pk, state, new_version, manifest, now)
        if expected_version == 0:
            sample_put = self._put(sample, "attribute_not_exists(pk)")
        else:
            sample_put = self._put(
                sample,
                "#version = :expected",
                names={"#version": "version"},
                values={":expected": _n(expected_version)},
            )
        outbox_puts = {
            note_id: self._put(item, "attribute_not_exists(pk)") for note_id, item in notes.items()
        }
        count = 1 + len(writes) + len(deletes) + len(outbox_puts)
        if count > MAX_TRANSACTION_ITEMS:
            raise StateError(
                f"DynamoDB table {self.table_name}: TransactWriteItems for target '{target}'"
                f" would hold {count} items (the state, {len(writes)} alert writes,"
                f" {len(deletes)} alert deletes, {len(outbox_puts)} notifications); one"
                f" transaction takes at most {MAX_TRANSACTION_ITEMS} and splitting it would"
                " break atomicity, so nothing was written"
            )
        self._transact(target, sample_put, [*writes, *deletes], outbox_puts)
        self._seen[target] = _Seen(new_version, known)
        return replace(state, version=new_version)

    def _alert_writes(
        self,
        pk: str,
        state: TargetState,
        previous: Mapping[str, _Known],
        new_version: int,
        now: float,
    ) -> tuple[list[Item], dict[str, int], dict[str, _Known]]:
        """The puts of the alert items that changed (or are due a TTL refresh), the manifest
        of every alert item of ``new_version``, and what each of them now holds."""
        writes: list[Item] = []
        manifest: dict[str, int] = {}
        known: dict[str, _Known] = {}
        alert_ttl = _epoch(now + ALERT_TTL_SECONDS)
        for key, alert in state.alerts.items():
            body = alert.to_json()
            before = previous.get(key)
            if (
                before is not None
                and before.body == body
                and before.expires_at - now > ALERT_REFRESH_SECONDS
            ):
                manifest[key], known[key] = before.version, before  # unchanged: not rewritten
                continue
            writes.append(self._put(self._alert_item(pk, alert, body, new_version, alert_ttl)))
            manifest[key] = new_version
            known[key] = _Known(body, new_version, alert_ttl)
        return writes, manifest, known

    def _transact(
        self, target: str, sample_put: Item, alert_ops: list[Item], outbox_puts: dict[str, Item]
    ) -> None:
        """Run the commit's transaction; a notification already queued is left as it was."""
        outbox = dict(outbox_puts)
        for _attempt in range(3):
            ids = list(outbox)
            ops = [sample_put, *alert_ops, *(outbox[i] for i in ids)]
            try:
                self._client.transact_write_items(TransactItems=ops)
                return
            except ClientError as exc:
                reasons = [r.get("Code") for r in exc.response.get("CancellationReasons") or []]
                if _code(exc) != "TransactionCanceledException" or len(reasons) != len(ops):
                    raise self._error("TransactWriteItems", exc) from None
                if reasons[0] == "ConditionalCheckFailed":
                    raise StateConflict(
                        f"target '{target}' was updated by another check (DynamoDB table"
                        f" {self.table_name}: the state is no longer at the version read)"
                    ) from None
                first = 1 + len(alert_ops)
                duplicates = {
                    ids[n - first]
                    for n, code in enumerate(reasons)
                    if n >= first and code == "ConditionalCheckFailed"
                }
                if not duplicates or any(
                    code not in (None, "None", "ConditionalCheckFailed") for code in reasons
                ):
                    raise self._error("TransactWriteItems", exc) from None
                # Those notifications are queued already (a retried commit): queueing them
                # again would send them twice, so the commit goes on without them.
                for note_id in duplicates:
                    del outbox[note_id]
            except BotoCoreError as exc:
                raise self._error("TransactWriteItems", exc) from None
        raise StateError(
            f"DynamoDB table {self.table_name}: TransactWriteItems for target '{target}'"
            " kept being cancelled; nothing was written"
        )

    def _previous_alerts(self, target: str, expected_version: int) -> dict[str, _Known]:
        """The alert items stored at ``expected_version`` (to diff against); may raise."""
        seen = self._seen.get(target)
        if seen is not None and seen.version == expected_version:
            return seen.alerts
        if expected_version == 0:
            return {}
        # Not loaded through this store: read the manifest, every alert is rewritten.
        reply = self._call(
            "GetItem",
            TableName=self.table_name,
            Key=_key(_target_pk(target), SAMPLE_SK),
            ConsistentRead=True,
        )
        item = reply.get("Item")
        if item is None or _number(item, "version") != expected_version:
            raise StateConflict(
                f"target '{target}' was updated by another check (expected version"
                f" {expected_version})"
            )
        _, _, manifest = self._decode_sample(target, item)
        return {key: _Known({}, written, 0) for key, written in manifest.items()}

    # --- outbox ------------------------------------------------------------------------------

    def undelivered(self, target: str, limit: int = 100) -> list[OutboxItem]:
        items = self._query(
            stop_after=limit,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :outbox)",
            FilterExpression="attribute_not_exists(delivered_at)",
            ExpressionAttributeValues={
                ":pk": _s(_target_pk(target)),
                ":outbox": _s(OUTBOX_PREFIX),
            },
            ConsistentRead=True,
        )
        found: list[OutboxItem] = []
        for item in items[:limit]:  # in key order: oldest first
            try:
                note = Notification.from_json(json.loads(_text(item, "notification") or ""))
                created_at = float(item["created_at"]["N"])
            except (TypeError, ValueError, KeyError):
                continue  # an item this version cannot read is left for a human to look at
            done = frozenset(item.get("channels", {}).get("SS", []))
            found.append(OutboxItem(note.id, target, created_at, note, done))
        return found

    def mark_delivered(self, items: Sequence[OutboxItem], now: float) -> None:
        for item in items:
            self._update_undelivered(item, "SET delivered_at = :now", {":now": _n(now)})

    def mark_channel(self, item: OutboxItem, channel: str) -> None:
        self._update_undelivered(item, "ADD channels :c", {":c": {"SS": [channel]}})

    def _update_undelivered(self, item: OutboxItem, expression: str, values: Item) -> None:
        """Update an outbox item still owed; one that is gone or delivered is left alone."""
        try:
            self._client.update_item(
                TableName=self.table_name,
                Key=_key(_target_pk(item.target), _outbox_sk(item.created_at, item.id)),
                UpdateExpression=expression,
                ConditionExpression="attribute_exists(pk) AND attribute_not_exists(delivered_at)",
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":  # gone or done already
                raise self._error("UpdateItem", exc) from None
        except BotoCoreError as exc:
            raise self._error("UpdateItem", exc) from None

    # --- silences ----------------------------------------------------------------------------

    def add_silence(self, silence: Silence) -> None:
        self._call(
            "PutItem",
            TableName=self.table_name,
            Item={
                **_key(SILENCES_PK, _bounded(SILENCE_PREFIX, silence.id)),
                "silence_id": _s(silence.id),
                "ends_at": _n(silence.ends_at),
                "body": _s(json.dumps(silence.to_json(), separators=(",", ":"))),
                "expires_at": _n(_epoch(silence.ends_at + SILENCE_GRACE_SECONDS)),
            },
        )

    def silences(self, now: float | None = None) -> list[Silence]:
        items = self._query(
            KeyConditionExpression="pk = :pk AND begins_with(sk, :silence)",
            ExpressionAttributeValues={":pk": _s(SILENCES_PK), ":silence": _s(SILENCE_PREFIX)},
            ConsistentRead=True,
        )
        found = decode_silences((_text(item, "body") or "" for item in items), now)
        return sorted(found, key=lambda s: (s.ends_at, s.id))

    def remove_silence(self, silence_id: str) -> bool:
        reply = self._call(
            "DeleteItem",
            TableName=self.table_name,
            Key=_key(SILENCES_PK, _bounded(SILENCE_PREFIX, silence_id)),
            ReturnValues="ALL_OLD",
        )
        return bool(reply.get("Attributes"))

    def close(self) -> None:
        self._seen.clear()

    # --- items -------------------------------------------------------------------------------

    def _put(
        self,
        item: Item,
        condition: str | None = None,
        *,
        names: Mapping[str, str] | None = None,
        values: Mapping[str, Any] | None = None,
    ) -> Item:
        put: Item = {"TableName": self.table_name, "Item": item}
        if condition is not None:
            put["ConditionExpression"] = condition
        if names:
            put["ExpressionAttributeNames"] = dict(names)
        if values:
            put["ExpressionAttributeValues"] = dict(values)
        return {"Put": put}

    def _sample_item(
        self,
        target: str,
        pk: str,
        state: TargetState,
        version: int,
        manifest: Mapping[str, int],
        now: float,
    ) -> Item:
        body = replace(state, alerts={}).to_json()  # alerts are items of their own
        del body["alerts"]
        data = json.dumps(body, separators=(",", ":"), sort_keys=True).encode("utf-8")
        item: Item = {
            **_key(pk, SAMPLE_SK),
            "version": _n(version),
            "alert_versions": {"M": {k: _n(v) for k, v in manifest.items()}},
            "updated_at": _n(now),
            "expires_at": _n(_epoch(now + STATE_TTL_SECONDS)),
        }
        if len(data) > COMPRESS_ABOVE_BYTES:
            data = zlib.compress(data, 6)
            item["body_z"] = {"B": data}
        else:
            item["body"] = _s(data.decode("utf-8"))
        size = len(data) + sum(len(k.encode()) + 8 for k in manifest)
        if size > MAX_ITEM_BYTES:
            raise StateError(
                f"DynamoDB table {self.table_name}: the state of target '{target}' takes"
                f" {size // 1000} KB compressed, over the {MAX_ITEM_BYTES // 1000} KB kept for"
                " one item (too many queues or workers?); nothing was written"
            )
        return item

    def _decode_sample(self, target: str, item: Item) -> tuple[int, Any, dict[str, int]]:
        try:
            version = int(item["version"]["N"])
            if "body_z" in item:
                raw = zlib.decompress(bytes(item["body_z"]["B"])).decode("utf-8")
            else:
                raw = item["body"]["S"]
            body = json.loads(raw)
            manifest = {
                str(k): int(v["N"]) for k, v in item.get("alert_versions", {"M": {}})["M"].items()
            }
        except (KeyError, TypeError, ValueError, AttributeError, zlib.error):
            raise self._shape(target, "its state item is unreadable") from None
        return version, body, manifest

    def _alert_item(
        self, pk: str, alert: AlertState, body: dict[str, Any], version: int, expires_at: int
    ) -> Item:
        item: Item = {
            **_key(pk, _alert_sk(alert.key)),
            "alert_key": _s(alert.key),
            "version": _n(version),
            "body": _s(json.dumps(body, separators=(",", ":"), sort_keys=True)),
            # Readable copies for the console and for queries; ``body`` is what is loaded.
            "type": _s(alert.type),
            "state": _s(alert.state),
            "severity": _s(alert.severity.value),
            "first_seen": _n(alert.first_seen),
            "last_seen": _n(alert.last_seen),
            "breach_count": _n(alert.breach_count),
            "expires_at": _n(expires_at),
        }
        if alert.last_notified is not None:
            item["last_notified"] = _n(alert.last_notified)
        return item

    def _decode_alert(self, target: str, key: str, item: Item, version: int) -> _Known:
        try:
            body = json.loads(item["body"]["S"])
            expires_at = int(float(item.get("expires_at", {"N": "0"})["N"]))
        except (KeyError, TypeError, ValueError):
            raise self._shape(target, f"alerts.{key[:80]}") from None
        if not isinstance(body, dict):
            raise self._shape(target, f"alerts.{key[:80]}")
        return _Known(body, version, expires_at)

    def _outbox_item(self, pk: str, target: str, note: Notification) -> Item:
        return {
            **_key(pk, _outbox_sk(note.at, note.id)),
            "id": _s(note.id),
            "target": _s(target),
            "action": _s(note.action),
            "alert_key": _s(note.key),
            "notification": _s(json.dumps(note.to_json(), separators=(",", ":"))),
            "created_at": _n(note.at),
            "expires_at": _n(_epoch(note.at + OUTBOX_TTL_SECONDS)),
        }

    def _shape(self, target: str, what: str) -> StateError:
        return StateError(
            f"DynamoDB table {self.table_name}: the state of target '{target}': {what};"
            " it was left as it is"
        )


# --- keys and attribute values ---------------------------------------------------------------


def _bounded(prefix: str, text: str) -> str:
    """``prefix + text``, or a digest of ``text`` when that would be too long for a key."""
    if len((prefix + text).encode("utf-8")) <= MAX_KEY_BYTES:
        return prefix + text
    return prefix + "~" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def _target_pk(target: str) -> str:
    return _bounded("TARGET#", target)


def _alert_sk(key: str) -> str:
    return _bounded(ALERT_PREFIX, key)


def _outbox_sk(at: float, note_id: str) -> str:
    # Fixed width, so that key order is time order.
    return _bounded(OUTBOX_PREFIX, f"{max(at, 0.0):020.6f}#{note_id}")


def _key(pk: str, sk: str) -> Item:
    return {"pk": _s(pk), "sk": _s(sk)}


def _s(text: str) -> dict[str, str]:
    return {"S": text}


def _n(number: float) -> dict[str, str]:
    if isinstance(number, int) or float(number).is_integer():
        return {"N": str(int(number))}
    return {"N": repr(float(number))}


def _epoch(at: float) -> int:
    return math.ceil(at)


def _text(item: Item, name: str) -> str | None:
    value = item.get(name)
    if isinstance(value, dict) and isinstance(value.get("S"), str):
        return str(value["S"])
    return None


def _number(item: Item, name: str) -> int | None:
    value = item.get(name)
    try:
        return int(value["N"]) if isinstance(value, dict) else None
    except (KeyError, TypeError, ValueError):
        return None


def _error_field(exc: Exception, name: str) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error")
        if isinstance(error, dict):
            return str(error.get(name) or "")
    return ""


def _code(exc: Exception) -> str:
    return _error_field(exc, "Code")


def _describe(exc: Exception) -> str:
    """The error's code and message, short (no request ids)."""
    code = _code(exc)
    if code:
        message = _error_field(exc, "Message")
        return f"{code}: {message[:200]}" if message else code
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _snake(operation: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in operation).lstrip("_")
