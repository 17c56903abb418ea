"""No alert is lost without an alarm: the dispatcher's stream mapping has an on-failure
destination (a dead-letter queue of the stack that the dispatch role may send to, set by
scripts/deploy), and alarms watch dropped and retried notifications, the mapping's iterator
age and that queue, notifying the stack's alert topic like the other alarms."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "doorman.yaml"
DEPLOY = ROOT / "scripts" / "deploy"
STAGES = ("dev", "prod")
OUTPUT = "DispatchDeadLetterQueueArn"


def template() -> dict[str, Any]:
    doc: dict[str, Any] = cfn_yaml.load(str(TEMPLATE))
    return doc


def resources(kind: str) -> dict[str, dict[str, Any]]:
    found = template()["Resources"].items()  # Fn::ForEach entries are lists: not one resource
    return {k: v for k, v in found if isinstance(v, dict) and v["Type"] == kind}


def sub(value: Any, stage: str) -> str:
    """A ``!Sub`` of the template's parameters, as deployed for ``stage``."""
    text = value["Fn::Sub"] if isinstance(value, dict) else value
    params = {"AppName": app_name(), "Stage": stage}
    return re.sub(r"\$\{(\w+)\}", lambda m: params[m.group(1)], text)


def app_name() -> str:
    # The template's default must be the Chalice app's name: functions are <app>-<stage>-<fn>.
    default: str = template()["Parameters"]["AppName"]["Default"]
    assert default == json.loads((ROOT / ".chalice" / "config.json").read_text())["app_name"]
    return default


def dispatch_queue() -> str:
    """The logical id of the queue the deploy script makes the mapping's destination."""
    value = template()["Outputs"][OUTPUT]["Value"]
    name, attribute = value["Fn::GetAtt"]
    assert attribute == "Arn"
    return str(name)


def alarm(namespace: str, metric: str) -> dict[str, Any]:
    found = [
        props
        for props in (a["Properties"] for a in resources("AWS::CloudWatch::Alarm").values())
        if props.get("Namespace") == namespace and props.get("MetricName") == metric
    ]
    assert len(found) == 1, f"one alarm on {namespace}/{metric}, found {len(found)}"
    return found[0]


def dimensions(props: dict[str, Any]) -> dict[str, Any]:
    return {d["Name"]: d["Value"] for d in props.get("Dimensions", [])}


def test_the_mapping_destination_is_a_queue_of_the_stack():
    queue = template()["Resources"][dispatch_queue()]
    assert queue["Type"] == "AWS::SQS::Queue"
    props = queue["Properties"]
    # 14 days to look at what the mapping gave up on (the outbox item itself stays in the
    # table until its TTL); encrypted without a KMS key the dispatch role would need.
    assert props["MessageRetentionPeriod"] == 1209600
    assert props["SqsManagedSseEnabled"] is True
    # Not the topic's dead-letter queue: what lands here is stream batches, not SNS messages.
    assert dispatch_queue() != template()["Outputs"]["DeadLetterQueueArn"]["Value"]["Fn::GetAtt"][0]


@pytest.mark.parametrize("stage", STAGES)
def test_the_dispatch_role_may_send_to_that_queue_only(stage):
    name = sub(template()["Resources"][dispatch_queue()]["Properties"]["QueueName"], stage)
    policy = json.loads((ROOT / ".chalice" / f"policy-{stage}-dispatch.json").read_text())
    sends = [s for s in policy["Statement"] if s["Action"] == "sqs:SendMessage"]
    assert len(sends) == 1, sends
    assert sends[0]["Effect"] == "Allow"
    assert sends[0]["Resource"] == f"arn:aws:sqs:*:*:{name}"
    assert not [s for s in policy["Statement"] if "sqs:" in json.dumps(s) and s not in sends]


def test_the_deploy_script_sets_the_destination_with_partial_batches():
    script = DEPLOY.read_text()
    assigned = re.search(rf"^\s*(\w+)=\$\(output {OUTPUT}\)", script, re.MULTILINE)
    assert assigned, f"scripts/deploy does not read the {OUTPUT} output"
    variable = assigned.group(1)
    update = re.search(r"aws lambda update-event-source-mapping (?:[^\n]*\\\n)*[^\n]*", script)
    assert update, "scripts/deploy does not update the stream mapping"
    command = update.group(0)
    assert "--function-response-types ReportBatchItemFailures" in command
    assert "--maximum-retry-attempts" in command
    destination = re.search(r"--destination-config\s+(\S+)", command)
    assert destination, command
    value = destination.group(1).strip("\"'")
    if value.startswith("$"):  # a variable holding the JSON: find its assignment
        name = value.strip("${}")
        (value,) = re.findall(rf"^\s*{name}=(.+)$", script, re.MULTILINE)
    assert "OnFailure" in value and "Destination" in value and f"${variable}" in value, value


def test_alarms_watch_drops_retries_iterator_age_and_the_queue():
    dispatch_errors = template()["Resources"]["DispatchErrorsAlarm"]["Properties"]
    function = dimensions(dispatch_errors)["FunctionName"]

    dropped = alarm("Doorman", "DispatchDropped")
    assert dimensions(dropped) == {"service": "doorman"}
    assert (dropped["Statistic"], dropped["Threshold"]) == ("Sum", 0)
    assert dropped["ComparisonOperator"] == "GreaterThanThreshold"  # any drop at all
    assert dropped["EvaluationPeriods"] == 1

    retried = alarm("Doorman", "DispatchRetried")
    assert dimensions(retried) == {"service": "doorman"}
    assert retried["Statistic"] == "Sum"
    # Sustained: one retry that succeeds is Lambda doing its job, not an alarm.
    assert retried["EvaluationPeriods"] > 1 and retried["DatapointsToAlarm"] > 1

    age = alarm("AWS/Lambda", "IteratorAge")
    assert dimensions(age) == {"FunctionName": function}  # the same function as its Errors
    assert sub(function, "dev") == "doorman-dev-dispatch"
    assert age["Statistic"] == "Maximum" and age["Threshold"] >= 60_000  # milliseconds

    dead = [
        a["Properties"]
        for a in resources("AWS::CloudWatch::Alarm").values()
        if dimensions(a["Properties"]).get("QueueName")
        == {"Fn::GetAtt": [dispatch_queue(), "QueueName"]}
    ]
    assert len(dead) == 1, "no alarm on the mapping's dead-letter queue"
    assert dead[0]["Threshold"] == 1
    assert dead[0]["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"

    for props in (dropped, retried, age, dead[0]):
        assert props["AlarmActions"] == [{"Ref": "AlertTopic"}], props["AlarmName"]
        assert props["TreatMissingData"] == "notBreaching", props["AlarmName"]


@pytest.mark.parametrize("stage", STAGES)
def test_the_dispatch_role_may_read_and_mark_outbox_items(stage):
    # The delivery ledger (chalicelib.serverless.DeliveryLedger): GetItem, UpdateItem.
    policy = json.loads((ROOT / ".chalice" / f"policy-{stage}-dispatch.json").read_text())
    table = sub(template()["Resources"]["StateTable"]["Properties"]["TableName"], stage)
    items = [
        s for s in policy["Statement"] if s["Resource"] == f"arn:aws:dynamodb:*:*:table/{table}"
    ]
    assert len(items) == 1
    assert sorted(items[0]["Action"]) == ["dynamodb:GetItem", "dynamodb:UpdateItem"]
