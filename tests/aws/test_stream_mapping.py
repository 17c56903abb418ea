"""The stream-mapping step of ``scripts/deploy``, run as written by the AWS CLI against the
moto server: the mapping Chalice created for ``dispatch`` ends up reporting partial batch
failures, retrying a bounded number of times and sending what it gives up on to the
dispatch dead-letter queue."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.moto_server import REGION, DynamoTable, MotoServer, aws

DEPLOY = Path(__file__).resolve().parents[2] / "scripts" / "deploy"


def mapping_step() -> str:
    """The lines of scripts/deploy that find the dispatcher's mapping and update it, from the
    lookup to the update command (closing the ``if`` they open)."""
    lines = DEPLOY.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "list-event-source-mappings" in line)
    update = next(
        i for i, line in enumerate(lines) if "update-event-source-mapping" in line and i > start
    )
    end = next(i for i, line in enumerate(lines) if i >= update and ">/dev/null" in line)
    return "\n".join([*lines[start : end + 1], "fi"])


@pytest.fixture
def cli(moto_server: MotoServer) -> Iterator[dict[str, str]]:
    """The AWS CLI's environment for the moto server (skips when the CLI is not installed)."""
    if shutil.which("aws") is None:
        pytest.skip("the AWS CLI (aws) is not installed")
    yield {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        "AWS_ENDPOINT_URL": moto_server.endpoint_url,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }


def test_the_deploy_script_gives_the_mapping_an_on_failure_destination(
    cli: dict[str, str], moto_server: MotoServer, dynamodb: DynamoTable
) -> None:
    lam, iam, sqs = (aws(moto_server, s) for s in ("lambda", "iam", "sqs"))
    suffix = uuid.uuid4().hex[:8]
    try:
        stream = dynamodb.client.describe_table(TableName=dynamodb.name)["Table"]["LatestStreamArn"]
        role = iam.create_role(RoleName=f"dispatch-{suffix}", AssumeRolePolicyDocument="{}")
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as archive:
            archive.writestr("app.py", "def dispatch(event, context):\n    return {}\n")
        function = f"doorman-test-dispatch-{suffix}"
        lam.create_function(
            FunctionName=function,
            Runtime="python3.11",
            Role=role["Role"]["Arn"],
            Handler="app.dispatch",
            Code={"ZipFile": code.getvalue()},
        )
        # What `chalice deploy` creates: the mapping, nothing more.
        uuid_ = lam.create_event_source_mapping(
            EventSourceArn=stream,
            FunctionName=function,
            StartingPosition="TRIM_HORIZON",
            BatchSize=100,
        )["UUID"]
        queue = sqs.create_queue(QueueName=f"doorman-test-dispatch-dlq-{suffix}")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]

        result = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + mapping_step()],
            env={**cli, "stream_arn": stream, "dispatch_dlq_arn": queue_arn},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr

        mapping = lam.get_event_source_mapping(UUID=uuid_)
        assert mapping["DestinationConfig"] == {"OnFailure": {"Destination": queue_arn}}
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert mapping["MaximumRetryAttempts"] == 20
        assert mapping["BisectBatchOnFunctionError"] is True
        assert mapping["StartingPosition"] == "TRIM_HORIZON"
    finally:
        for client in (lam, iam, sqs):
            client.close()
