"""Every DynamoDB failure becomes the state layer's own error; no botocore exception escapes.

moto does not throttle, so a local HTTP server answers the way DynamoDB does when it
throttles, fails or cancels a transaction, and the real boto3 client parses those replies.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from chalicelib.alerting import Silence
from chalicelib.state import StateConflict, StateError, TargetState
from chalicelib.state.dynamodb import DynamoStore
from tests.support.moto_server import make_client

PREFIX = "com.amazonaws.dynamodb.v20120810#"


class FakeDynamo:
    """Answers every request with one canned error, and records the operations asked for."""

    def __init__(self) -> None:
        self.status = 400
        self.body: dict[str, Any] = {}
        self.operations: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                fake.operations.append(self.headers.get("X-Amz-Target", "").split(".")[-1])
                data = json.dumps(fake.body).encode()
                self.send_response(fake.status)
                self.send_header("Content-Type", "application/x-amz-json-1.0")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, status: int, error_type: str, message: str, **more: Any) -> None:
        self.status = status
        self.body = {"__type": PREFIX + error_type, "message": message, **more}


@pytest.fixture
def fake() -> Iterator[FakeDynamo]:
    server = FakeDynamo()
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()
        server.thread.join()


@pytest.fixture
def store(fake: FakeDynamo) -> Iterator[DynamoStore]:
    client = make_client(fake.url, attempts=1, timeout=2)
    try:
        yield DynamoStore("doorman", client)
    finally:
        client.close()


CALLS = {
    "Query": lambda s: s.load("t"),
    "TransactWriteItems": lambda s: s.commit("t", TargetState(), 0),
    "PutItem": lambda s: s.add_silence(Silence("s-1", 0, 1)),
    "DeleteItem": lambda s: s.remove_silence("s-1"),
}


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, "ProvisionedThroughputExceededException"),
        (400, "ThrottlingException"),
        (400, "RequestLimitExceeded"),
        (500, "InternalServerError"),
        (503, "ServiceUnavailable"),
        (400, "ResourceNotFoundException"),
        (400, "AccessDeniedException"),
    ],
)
def test_service_errors_are_state_errors_naming_table_and_operation(
    fake, store, status, error_type
):
    fake.answer(status, error_type, "Rate of requests exceeds the allowed throughput.")
    for operation, call in CALLS.items():
        with pytest.raises(StateError) as caught:
            call(store)
        assert type(caught.value) is StateError
        text = str(caught.value)
        assert text.startswith(f"DynamoDB table doorman: {operation} failed ({error_type}")
    assert fake.operations == list(CALLS)


@pytest.mark.parametrize(
    ("reasons", "conflict"),
    [
        (["ConditionalCheckFailed", "None"], True),
        (["ConditionalCheckFailed", "ConditionalCheckFailed"], True),
        (["TransactionConflict", "None"], False),
        (["None", "ThrottlingError"], False),
        (["ValidationError", "None"], False),
    ],
)
def test_a_cancelled_commit_is_a_conflict_only_when_the_state_version_moved(
    fake, store, reasons, conflict
):
    from chalicelib.alerting import AlertState
    from chalicelib.model import Severity

    fake.answer(
        400,
        "TransactionCanceledException",
        "Transaction cancelled, please refer cancellation reasons for specific reasons",
        CancellationReasons=[{"Code": code, "Message": "m"} for code in reasons],
    )
    one = AlertState("k", "high_latency", Severity.WARNING, "firing", "t", "m", 1.0, 2.0)
    with pytest.raises(StateError) as caught:
        store.commit("t", TargetState(alerts={"k": one}), 0)
    assert isinstance(caught.value, StateConflict) is conflict
    if not conflict:
        assert "TransactWriteItems failed (TransactionCanceledException" in str(caught.value)


def test_mark_delivered_and_undelivered_errors_are_state_errors(fake, store):
    from chalicelib.alerting import Notification
    from chalicelib.model import Severity
    from chalicelib.state.base import OutboxItem

    fake.answer(400, "ThrottlingException", "slow down")
    n = Notification("i", "trigger", "k", "high_latency", Severity.WARNING, "t", "x", "y", 1.0)
    with pytest.raises(StateError, match="UpdateItem failed"):
        store.mark_delivered([OutboxItem("i", "t", 1.0, n)], 2.0)
    with pytest.raises(StateError, match="Query failed"):
        store.undelivered("t")
    # An item that is gone or delivered already is left alone: not an error.
    fake.answer(400, "ConditionalCheckFailedException", "The conditional request failed")
    store.mark_delivered([OutboxItem("never-listed", "t", 1.0, n)], 2.0)
    store.mark_channel(OutboxItem("never-listed", "t", 1.0, n), "slack")


def test_a_reply_that_is_not_dynamodb_is_a_state_error(fake, store):
    fake.status = 200
    fake.body = {"unexpected": True}  # parsed as an empty reply: no item, a fresh target
    assert store.load("t") == TargetState()
    fake.status = 502
    fake.body = {}
    with pytest.raises(StateError, match="Query failed"):
        store.load("t")
