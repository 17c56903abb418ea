"""Fixtures of the serverless tests: the Chalice app with its environment on a moto server
(DynamoDB table with a stream, SNS topic with an SQS subscription, SSM SecureStrings), local
recording servers for Slack and PagerDuty, and a reader of the table's stream."""

from __future__ import annotations

import datetime
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.settings import CONFIG_ENV, env_names
from tests.notify.recorder import Recorder, Reply
from tests.support.moto_server import (
    REGION,
    DynamoTable,
    MotoServer,
    Topic,
    aws,
    dynamodb,
    moto_server,
    topic,
)

__all__ = ["Topic", "aws", "dynamodb", "moto_server", "topic"]

SLACK_PATH = "/services/T000/B000/slack-webhook-secret"
PD_KEY = "R0UT1NGKEY0123456789abcdefabcdef"
STAGE = "test"


class Stream:
    """Reads a table's stream from its start, as Lambda's event source mapping would, and
    turns the records into the event Lambda hands the function."""

    def __init__(
        self, server: MotoServer, table: DynamoTable, position: str = "TRIM_HORIZON"
    ) -> None:
        """``position``: where the reading starts (TRIM_HORIZON, or LATEST: from now on)."""
        self.client = aws(server, "dynamodbstreams")
        self.arn = table.client.describe_table(TableName=table.name)["Table"]["LatestStreamArn"]
        shard = self.client.describe_stream(StreamArn=self.arn)["StreamDescription"]["Shards"][0]
        self._iterator = self.client.get_shard_iterator(
            StreamArn=self.arn, ShardId=shard["ShardId"], ShardIteratorType=position
        )["ShardIterator"]

    def event(self) -> dict[str, Any]:
        """The records written since the last call, as a Lambda DynamoDB stream event."""
        page = self.client.get_records(ShardIterator=self._iterator, Limit=1000)
        self._iterator = page.get("NextShardIterator") or self._iterator
        records = []
        for record in page["Records"]:
            record = dict(record)
            inner = dict(record["dynamodb"])
            created = inner["ApproximateCreationDateTime"]
            if isinstance(created, datetime.datetime):  # boto3 parsed it; Lambda sends epoch
                inner["ApproximateCreationDateTime"] = created.timestamp()
            record["dynamodb"] = inner
            record["eventSourceARN"] = self.arn
            records.append(record)
        return {"Records": records}

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def stream(moto_server: MotoServer, dynamodb: DynamoTable) -> Iterator[Stream]:
    s = Stream(moto_server, dynamodb)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def slack() -> Iterator[Recorder]:
    server = Recorder(Reply(200, b"ok")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pagerduty() -> Iterator[Recorder]:
    server = Recorder(Reply(202, b'{"status":"success"}')).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def secrets(moto_server: MotoServer, slack: Recorder) -> Iterator[dict[str, str]]:
    """SecureStrings holding the Slack webhook URL and the PagerDuty routing key."""
    ssm = aws(moto_server, "ssm")
    prefix = f"/doorman/{uuid.uuid4().hex[:8]}"
    ssm.put_parameter(Name=f"{prefix}/slack", Value=slack.url + SLACK_PATH, Type="SecureString")
    ssm.put_parameter(Name=f"{prefix}/pagerduty", Value=PD_KEY, Type="SecureString")
    try:
        yield {
            "DOORMAN_SLACK_URL_PARAM": f"{prefix}/slack",
            "DOORMAN_PAGERDUTY_KEY_PARAM": f"{prefix}/pagerduty",
        }
    finally:
        ssm.close()


@pytest.fixture(scope="session")
def app_module() -> Iterator[Any]:
    """``app.py``, imported once. Powertools' Logger configures the ``doorman`` logger (a
    stdout JSON handler, a level, filters on the root handlers) when the module is imported;
    that is undone at once, so that the other tests see the logging they expect."""
    logger = logging.getLogger("doorman")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    root_filters = {h: list(h.filters) for h in logging.root.handlers}
    import app

    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate
    for handler, filters in root_filters.items():
        handler.filters[:] = filters
    app.reset()
    yield app
    app.reset()


@pytest.fixture
def lambda_env(
    monkeypatch: pytest.MonkeyPatch,
    moto_server: MotoServer,
    dynamodb: DynamoTable,
    app_module: Any,
    tmp_path: Path,
) -> Iterator[Any]:
    """The environment every function gets in AWS, pointed at moto; the app's caches are
    emptied before and after. Yields a function that makes a chalice.test.Client."""
    for name in [*env_names().values(), CONFIG_ENV, "AWS_PROFILE", "DOORMAN_TARGETS"]:
        monkeypatch.delenv(name, raising=False)
    for name, value in {
        "AWS_ENDPOINT_URL": moto_server.endpoint_url,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "DOORMAN_TABLE": dynamodb.name,
        "DOORMAN_HASH_SECRET": "e2e-hash-secret",
        "DOORMAN_WORKER_TIMEOUT": "0.5",
        "DOORMAN_DISPATCH_PARTIAL_BATCH": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "Doorman",
    }.items():
        monkeypatch.setenv(name, value)
    # A project of its own: the stages in the repository's .chalice/config.json (edited by
    # the deploy work) must not change what these tests run with.
    project = tmp_path / "project"
    (project / ".chalice").mkdir(parents=True)
    (project / ".chalice" / "config.json").write_text(
        json.dumps({"version": "2.0", "app_name": "doorman", "stages": {STAGE: {}}})
    )
    app_module.reset()

    def client() -> Any:
        from chalice.test import Client

        return Client(app_module.app, stage_name=STAGE, project_dir=str(project))

    try:
        yield client
    finally:
        app_module.reset()
