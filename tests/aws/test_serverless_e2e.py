"""The Lambda functions end to end, through chalice.test.Client: real Redis, real Celery
workers, DynamoDB/SNS/SQS/SSM on a moto server over HTTP, Slack and PagerDuty as local
recording servers.

check (scheduled) -> table (sample, alert, outbox) -> stream records -> dispatch -> SNS topic
-> SQS subscription (what SNS delivers) -> notify_slack / notify_pagerduty -> HTTP requests;
and GET /status from the table.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from chalicelib.embedded import RedisServer
from tests.aws.conftest import PD_KEY, SLACK_PATH, Stream, Topic
from tests.conftest import WorkerFactory, producer, wait_until
from tests.integration.test_privacy import ARGS, KWARGS, scan
from tests.notify.recorder import Recorder
from tests.notify.schemas import check_pagerduty, check_slack
from tests.support import pii_app
from tests.support.moto_server import DynamoTable

TARGET = "e2e"
CW = {"source": "aws.events", "detail_type": "Scheduled Event", "detail": {}, "resources": []}


def kinds(items: list[dict[str, Any]]) -> list[str]:
    return sorted(i["sk"]["S"].split("#", 1)[0] for i in items)


def deliver(client: Any, envelope: dict[str, Any]) -> tuple[Any, Any]:
    """Hand one SNS envelope (as the SQS subscription got it) to both subscribers."""
    event = client.events.generate_sns_event(
        message=envelope["Message"],
        subject=envelope.get("Subject") or "",
        message_attributes=envelope["MessageAttributes"],
    )
    slack = client.lambda_.invoke("notify_slack", event).payload
    pagerduty = client.lambda_.invoke("notify_pagerduty", event).payload
    return slack, pagerduty


def test_workers_down_travels_from_check_to_slack_and_pagerduty_and_resolves(
    lambda_env: Callable[[], Any],
    monkeypatch: Any,
    redis_server: RedisServer,
    workers: WorkerFactory,
    dynamodb: DynamoTable,
    stream: Stream,
    topic: Topic,
    slack: Recorder,
    pagerduty: Recorder,
    secrets: dict[str, str],
    app_module: Any,
) -> None:
    for name, value in {
        "REDIS_URL": redis_server.url,
        "DOORMAN_TARGET": TARGET,
        "DOORMAN_TOPIC_ARN": topic.arn,
        "DOORMAN_MONITORED_QUEUES": pii_app.PLANTED_QUEUE,
        "PAGERDUTY_EVENTS_URL": pagerduty.url + "/v2/enqueue",
        "DOORMAN_PAGERDUTY_MIN_SEVERITY": "critical",
        **secrets,
    }.items():
        monkeypatch.setenv(name, value)
    app = producer(redis_server.url)
    for _ in range(3):
        app.process_user.apply_async(ARGS, KWARGS, queue=pii_app.PLANTED_QUEUE)
    blobs: dict[str, bytes] = {}

    with lambda_env() as client:
        # 1. Workers down, tasks pending: the check commits the alert and its notification.
        cw_event = client.events.generate_cw_event(**CW)
        down = client.lambda_.invoke("check", cw_event).payload
        blobs["check-down"] = json.dumps(down).encode()
        (result,) = down["targets"]
        assert result["status"] == "ok" and result["committed"] is True, result
        assert result["metrics"]["total_pending"] == 3
        assert result["notifications"] == [
            {"action": "trigger", "type": "workers_down", "severity": "emergency"}
        ]
        assert app_module.logger.get_correlation_id() == cw_event["id"]
        # The hash secret came from the environment: no SSM client was built for it.
        assert "ssm" not in app_module._cache and "client:ssm" not in app_module._cache
        items = dynamodb.items()
        blobs["table-down"] = json.dumps(items).encode()
        assert kinds(items) == ["ALERT", "OUTBOX", "SAMPLE"]
        (outbox,) = [i for i in items if i["sk"]["S"].startswith("OUTBOX#")]
        note = json.loads(outbox["notification"]["S"])
        assert (note["action"], note["type"]) == ("trigger", "workers_down")

        # 2. The stream hands the new items to dispatch: only the outbox INSERT is published.
        event = stream.event()
        assert {r["eventName"] for r in event["Records"]} == {"INSERT"}
        assert len(event["Records"]) == 3
        assert client.lambda_.invoke("dispatch", event).payload == {"batchItemFailures": []}
        (envelope,) = topic.envelopes(1)
        blobs["sns-down"] = json.dumps(envelope).encode()
        attrs = envelope["MessageAttributes"]
        assert attrs["severity"] == {"Type": "String", "Value": "emergency"}
        assert attrs["alert_type"]["Value"] == "workers_down"
        doc = json.loads(envelope["Message"])
        assert (doc["id"], doc["key"], doc["action"]) == (
            note["id"],
            f"workers_down:{TARGET}",
            "trigger",
        )

        # 3. The subscribers turn the SNS message into a Slack post and a PagerDuty event.
        slack_out, pd_out = deliver(client, envelope)
        assert slack_out == {"outcomes": [{"id": note["id"], "status": "sent"}]}
        assert pd_out == {"outcomes": [{"id": note["id"], "status": "sent"}]}
        (posted,) = slack.requests
        assert posted.path == SLACK_PATH  # the URL came from the SecureString
        check_slack(posted.json())
        (paged,) = pagerduty.bodies()
        check_pagerduty(paged, PD_KEY)
        assert (paged["event_action"], paged["dedup_key"]) == ("trigger", f"workers_down:{TARGET}")

        # 4. GET /status: the last sample and the firing alert, sanitized.
        response = client.http.get("/status")
        assert response.status_code == 200
        blobs["status"] = response.body
        (status,) = json.loads(response.body)["targets"]
        assert status["target"] == TARGET
        assert status["last_sample"]["metrics"]["total_pending"] == 3
        assert [a["type"] for a in status["firing"]] == ["workers_down"]

        # 5. The workers come back and drain the queue: two clean checks resolve the alert.
        workers.start(
            f"w1@{pii_app.PLANTED_WORKER_HOST}", concurrency=1, queues=(pii_app.PLANTED_QUEUE,)
        )
        redis = redis_server.client()
        wait_until(
            lambda: redis.llen(pii_app.PLANTED_QUEUE) == 0 and redis.zcard("unacked_index") == 0,
            20,
            "the worker to drain the queue",
        )
        first = client.lambda_.invoke("check", cw_event).payload["targets"][0]
        assert first["status"] == "ok" and first["notifications"] == [], first
        assert first["metrics"]["alive_workers"] == 1
        second = client.lambda_.invoke("check", cw_event).payload["targets"][0]
        blobs["check-up"] = json.dumps([first, second]).encode()
        assert second["notifications"] == [
            {"action": "resolve", "type": "workers_down", "severity": "emergency"}
        ]

        # 6. The resolve travels the same path. The stream also carries MODIFY and REMOVE
        # records (the sample rewritten, the alert deleted), which dispatch ignores.
        event = stream.event()
        names = {r["eventName"] for r in event["Records"]}
        assert {"MODIFY", "REMOVE", "INSERT"} <= names, names
        assert client.lambda_.invoke("dispatch", event).payload == {"batchItemFailures": []}
        (envelope,) = topic.envelopes(1)
        blobs["sns-up"] = json.dumps(envelope).encode()
        assert envelope["MessageAttributes"]["severity"]["Value"] == "emergency"
        assert json.loads(envelope["Message"])["action"] == "resolve"
        slack_out, pd_out = deliver(client, envelope)
        assert [o["status"] for o in slack_out["outcomes"]] == ["sent"]
        assert [o["status"] for o in pd_out["outcomes"]] == ["sent"]
        check_slack(slack.bodies()[1])
        assert slack.bodies()[1]["blocks"][0]["text"]["text"].startswith("✅ Resolved")
        resolved = pagerduty.bodies()[1]
        check_pagerduty(resolved, PD_KEY)
        assert (resolved["event_action"], resolved["dedup_key"]) == (
            "resolve",
            f"workers_down:{TARGET}",
        )

        response = client.http.get("/status")
        (status,) = json.loads(response.body)["targets"]
        assert status["firing"] == [] and status["last_sample"]["metrics"]["alive_workers"] == 1
        blobs["status-up"] = response.body

    blobs["table-up"] = json.dumps(dynamodb.items()).encode()
    blobs |= {f"slack{i}": r.body for i, r in enumerate(slack.requests)}
    blobs |= {f"pd{i}": r.body for i, r in enumerate(pagerduty.requests)}
    assert scan(blobs) == []
