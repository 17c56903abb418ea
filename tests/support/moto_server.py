"""DynamoDB emulated by moto's server over real HTTP on a free loopback port.

Nothing in boto3 is patched: the client talks HTTP to a ``ThreadedMotoServer`` started by the
fixture, with dummy credentials (no credential lookup, no instance metadata), and the table is
created the way ``infra/`` creates it: ``pk``/``sk`` strings, on demand, a NEW_IMAGE stream
(the outbox dispatcher reads it) and TTL on ``expires_at``.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer

REGION = "us-east-1"


def make_client(endpoint_url: str, *, attempts: int = 2, timeout: float = 5.0) -> Any:
    """A DynamoDB client for ``endpoint_url`` with dummy credentials and short retries."""
    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(
            retries={"total_max_attempts": attempts, "mode": "standard"},
            connect_timeout=timeout,
            read_timeout=timeout,
        ),
    )


def create_table(client: Any, name: str) -> None:
    client.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    )
    client.get_waiter("table_exists").wait(
        TableName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 50}
    )
    client.update_time_to_live(
        TableName=name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"},
    )


class MotoServer:
    """One moto server in a thread of this process, bound to 127.0.0.1 on a free port."""

    def __init__(self) -> None:
        self.port = 0
        self._server: ThreadedMotoServer | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        # Port 0: the OS picks a free port when the server binds (no window in which another
        # process could take it), and the server says which.
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        self.port = self._server.get_host_and_port()[1]
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def client(self, **options: Any) -> Any:
        return make_client(self.endpoint_url, **options)


@dataclass
class DynamoTable:
    server: MotoServer
    client: Any
    name: str

    def items(self) -> list[dict[str, Any]]:
        """Every item of the table (a Scan, following its pages)."""
        found: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": self.name, "ConsistentRead": True}
        while True:
            page = self.client.scan(**kwargs)
            found.extend(page.get("Items", []))
            if not page.get("LastEvaluatedKey"):
                return found
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """One server for the session (stopping one takes half a second); tables are per test."""
    # The server logs every request through werkzeug at INFO; only its errors are of interest.
    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    werkzeug.setLevel(logging.ERROR)
    server = MotoServer().start()
    try:
        yield server
    finally:
        server.stop()
        werkzeug.setLevel(level)


@pytest.fixture
def dynamodb(moto_server: MotoServer) -> Iterator[DynamoTable]:
    """A fresh Doorman table on a private moto server, and a client for it."""
    client = moto_server.client()
    name = "doorman-" + uuid.uuid4().hex[:8]
    create_table(client, name)
    try:
        yield DynamoTable(moto_server, client, name)
    finally:
        client.close()


def aws(server: MotoServer, service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=server.endpoint_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 2, "mode": "standard"}),
    )


class Topic:
    """An SNS topic with an SQS subscription that keeps what the topic delivers."""

    def __init__(self, server: MotoServer) -> None:
        self.sns = aws(server, "sns")
        self.sqs = aws(server, "sqs")
        name = "doorman-" + uuid.uuid4().hex[:8]
        self.arn = self.sns.create_topic(Name=name)["TopicArn"]
        self.queue_url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        self.sns.subscribe(TopicArn=self.arn, Protocol="sqs", Endpoint=queue_arn)

    def envelopes(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The SNS envelopes the subscription received (waits for ``count``, then a moment
        more so that an extra, unexpected message is seen too)."""
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        settle = None
        while time.monotonic() < deadline:
            got = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            )
            for m in got.get("Messages", []):
                found.append(json.loads(m["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])
            if len(found) >= count:
                settle = settle or time.monotonic() + 0.3
                if time.monotonic() > settle:
                    break
            time.sleep(0.05)
        return found

    def close(self) -> None:
        self.sns.close()
        self.sqs.close()


@pytest.fixture
def topic(moto_server: MotoServer) -> Iterator[Topic]:
    t = Topic(moto_server)
    try:
        yield t
    finally:
        t.close()
