"""Delivery faults: every notification reaches each channel that can take it exactly once."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.delivery import deliver_outbox
from chalicelib.notify import RetryPolicy
from chalicelib.notify.pagerduty import PagerDutyChannel
from chalicelib.notify.slack import SlackChannel
from chalicelib.notify.sns import SnsPublisher
from chalicelib.serverless import dispatch_records
from chalicelib.state import TargetState
from chalicelib.state.dynamodb import DynamoStore
from chalicelib.state.sqlite import SqliteStore
from tests.aws.conftest import Stream, Topic, aws
from tests.conftest import producer
from tests.faults.helpers import check_with_store
from tests.notify.notes import note
from tests.notify.recorder import Recorder, Reply

FAST = RetryPolicy(
    max_attempts=3,
    total_seconds=2.0,
    request_timeout=0.3,
    backoff_base=0.02,
    backoff_max=0.05,
    retry_after_max=0.2,
)
KEY = "R0UT1NGKEY0123456789abcdefabcdef"
TARGET = "prod-eu"


@pytest.fixture
def server() -> Iterator[Recorder]:
    rec = Recorder(Reply(200, b"ok")).start()
    try:
        yield rec
    finally:
        rec.stop()


def ok_reply(channel: str) -> Reply:
    return Reply(200, b"ok") if channel == "slack" else Reply(202, b'{"status":"success"}')


# (channel, scripted replies, permanent?)
CASES: dict[str, tuple[str, tuple[Reply, ...], bool]] = {
    "Slack 429": ("slack", (Reply(429, b"rate_limited", {"Retry-After": "0"}),), False),
    "Slack 5xx": ("slack", (Reply(503, b"busy"),) * 3, False),
    "Slack 410": ("slack", (Reply(410, b"channel_is_archived"),), True),
    "PagerDuty 400": ("pagerduty", (Reply(400, b'{"status":"invalid event"}'),), True),
    "PagerDuty 429": ("pagerduty", (Reply(429, b"{}"),), False),
    "PagerDuty 5xx": ("pagerduty", (Reply(500, b"{}"),) * 3, False),
    "hanging endpoint": ("slack", (Reply(200, b"ok", hang=5.0),) * 3, False),
}


@pytest.mark.parametrize("fault", list(CASES))
def test_channel_fault(fault: str, server: Recorder, tmp_path: Path, fault_log) -> None:  # type: ignore[no-untyped-def]
    channel, replies, permanent = CASES[fault]
    ok = ok_reply(channel)
    server.default = ok
    server.script(*replies)
    to = (
        SlackChannel(server.url + "/hook", FAST)
        if channel == "slack"
        else PagerDutyChannel(KEY, server.url, FAST)
    )
    store = SqliteStore(str(tmp_path / "state.db"))
    n = note(at=time.time())
    try:
        store.commit(TARGET, TargetState(), 0, [n])
        rounds: list[list[Any]] = []
        started = time.monotonic()
        for _ in range(3):  # the next checks deliver what is still owed
            rounds.append(deliver_outbox(store, TARGET, [to]))
        took = time.monotonic() - started
        left = store.undelivered(TARGET)
    finally:
        store.close()
    assert took < 2 * FAST.total_seconds + 1.0, took  # bounded, the hang included
    assert left == []
    answered_ok = sum(1 for i, _ in enumerate(server.requests) if i >= len(replies))
    results = [r for batch in rounds for r in batch]
    if permanent:
        assert len(server.requests) == 1  # tried once, recorded as refused for good
        assert [(r.ok, r.permanent) for r in results] == [(False, True)]
        lost = 0  # refused by the receiver for good: logged, never retried
    else:
        assert [r.ok for r in results][-1] is True, results
        lost = 0 if answered_ok else 1
    fault_log.record(f"delivery: {fault}", alerts_lost=lost, duplicates=max(0, answered_ok - 1))
    assert answered_ok <= 1


def test_sns_unreachable_during_dispatch(moto_server, dynamodb, redis_server, fault_log) -> None:  # type: ignore[no-untyped-def]
    app = producer(redis_server.url)
    for _ in range(3):
        app.quick.apply_async(queue="waiting")
    assert check_with_store(redis_server.url, DynamoStore(dynamodb.name, dynamodb.client)).committed
    topic = Topic(moto_server)
    stream = Stream(moto_server, dynamodb)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    import boto3
    from botocore.config import Config

    dead = boto3.client(
        "sns",
        endpoint_url=f"http://127.0.0.1:{dead_port}",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=1, read_timeout=1),
    )
    live = aws(moto_server, "sns")
    try:
        event = stream.event()
        failed = dispatch_records(event["Records"], SnsPublisher(dead, topic.arn).send)
        assert failed.published == [] and failed.failed, failed
        # Lambda retries from the first failed record, once SNS is back.
        records = event["Records"]
        seqs = [str(r["dynamodb"]["SequenceNumber"]) for r in records]
        retry = records[seqs.index(failed.failed[0]) :]
        ok = dispatch_records(retry, SnsPublisher(live, topic.arn).send)
        assert ok.failed == [] and len(ok.published) == 1, ok
        envelopes = topic.envelopes(1)
    finally:
        dead.close()
        live.close()
        stream.close()
        topic.close()
    received = len(envelopes)
    fault_log.record(
        "delivery: SNS unreachable during dispatch",
        alerts_lost=1 - min(1, received),
        duplicates=max(0, received - 1),
    )
    assert received == 1
