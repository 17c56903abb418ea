"""``doorman check`` in direct mode: a real cluster with workers down and planted personal
data, Slack and PagerDuty played by recording servers."""

from __future__ import annotations

import json

import pytest

from tests.conftest import parse_one_json, producer, run_cli
from tests.integration.test_privacy import ARGS, KWARGS, scan
from tests.notify.recorder import Reply
from tests.notify.schemas import check_pagerduty, check_slack
from tests.support import pii_app

SLACK_TOKEN = "T0000/B0000/sl4ckS3cretTok3n"
ROUTING_KEY = "pdR0ut1ngK3yS3cret0123456789abc"


@pytest.fixture
def down_cluster(redis_server):
    """No worker, and planted tasks waiting in a planted queue."""
    app = producer(redis_server.url)
    for _ in range(3):
        app.process_user.apply_async(ARGS, KWARGS, queue=pii_app.PLANTED_QUEUE)
    return redis_server.url


def check(url, state, slack, pd, *extra):
    env = {
        "SLACK_WEBHOOK_URL": f"{slack.url}/services/{SLACK_TOKEN}",
        "PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
        "PAGERDUTY_EVENTS_URL": f"{pd.url}/v2/enqueue",
        "DOORMAN_WORKER_TIMEOUT": "0.5",
        "DOORMAN_MONITORED_QUEUES": pii_app.PLANTED_QUEUE,
    }
    proc = run_cli(["check", "--once", "--redis-url", url, "--state", str(state), *extra], env=env)
    assert proc.returncode == 0, proc.stderr
    for secret in (SLACK_TOKEN, ROUTING_KEY, "sl4ck"):
        assert secret not in proc.stdout and secret not in proc.stderr
    assert "Traceback" not in proc.stderr
    # What the command prints (the document, the dry-run and delivery lines) holds no
    # planted data either, not only what the channels receive.
    assert scan({"stdout": proc.stdout.encode(), "stderr": proc.stderr.encode()}) == []
    return proc


def assert_no_planted_data(*servers):
    blobs = {f"{i}:{n}": r.body for i, s in enumerate(servers) for n, r in enumerate(s.requests)}
    assert scan(blobs) == []


def test_workers_down_sends_one_slack_message_and_one_pagerduty_trigger(
    down_cluster, tmp_path, recorder
):
    slack = recorder(default=Reply(200, b"ok"))
    pd = recorder(default=Reply(202, b'{"status":"success"}'))
    proc = check(down_cluster, tmp_path / "s.db", slack, pd)
    payload = parse_one_json(proc.stdout)
    (sent,) = payload["notifications"]
    assert (sent["type"], sent["action"]) == ("workers_down", "trigger")
    assert sent["delivery"] == [
        {"channel": "console", "ok": True},
        {"channel": "slack", "ok": True},
        {"channel": "pagerduty", "ok": True},
    ]
    assert len(slack.requests) == 1 and len(pd.requests) == 1
    assert slack.requests[0].path == f"/services/{SLACK_TOKEN}"
    message = slack.bodies()[0]
    check_slack(message)
    assert message["blocks"][0]["text"]["text"].startswith("🚨 ")
    assert message["attachments"][0]["color"] == "#8B0000"
    event = pd.bodies()[0]
    check_pagerduty(event, ROUTING_KEY)
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == sent["key"] == "workers_down:default"
    assert event["payload"]["severity"] == "critical"
    assert_no_planted_data(slack, pd)

    # The next check is inside the cooldown: nothing new, nothing sent again.
    again = parse_one_json(check(down_cluster, tmp_path / "s.db", slack, pd).stdout)
    assert again["notifications"] == []
    assert len(slack.requests) == 1 and len(pd.requests) == 1


def test_a_dead_slack_is_tried_once_and_pagerduty_still_pages(down_cluster, tmp_path, recorder):
    slack = recorder(default=Reply(410, b"channel_is_archived"))
    pd = recorder(default=Reply(202, b'{"status":"success"}'))
    payload = parse_one_json(check(down_cluster, tmp_path / "s.db", slack, pd).stdout)
    (sent,) = payload["notifications"]
    by_channel = {d["channel"]: d for d in sent["delivery"]}
    assert by_channel["slack"] == {
        "channel": "slack",
        "ok": False,
        "error": "slack: HTTP 410 (permanent)",
        "permanent": True,
    }
    assert by_channel["pagerduty"] == {"channel": "pagerduty", "ok": True}
    assert len(slack.requests) == 1 and len(pd.requests) == 1
    check(down_cluster, tmp_path / "s.db", slack, pd)  # settled: not retried
    assert len(slack.requests) == 1 and len(pd.requests) == 1


def test_a_slack_outage_is_retried_by_the_next_check(down_cluster, tmp_path, recorder):
    slack = recorder(default=Reply(200, b"ok")).script(
        Reply(500), Reply(500), Reply(500), Reply(500)
    )
    pd = recorder(default=Reply(202, b"{}"))
    payload = parse_one_json(check(down_cluster, tmp_path / "s.db", slack, pd).stdout)
    (sent,) = payload["notifications"]
    slack_result = next(d for d in sent["delivery"] if d["channel"] == "slack")
    assert slack_result["ok"] is False and "permanent" not in slack_result
    assert len(slack.requests) == 4  # the default policy's attempts
    check(down_cluster, tmp_path / "s.db", slack, pd)
    assert len(slack.requests) == 5
    assert slack.requests[-1].body == slack.requests[0].body
    # Across --once runs PagerDuty gets the item again; its dedup_key makes that one incident.
    assert {b["dedup_key"] for b in pd.bodies()} == {"workers_down:default"}


def test_dry_run_sends_nothing_and_says_what_it_would_send(down_cluster, tmp_path, recorder):
    slack = recorder()
    pd = recorder()
    proc = check(down_cluster, tmp_path / "s.db", slack, pd, "--dry-run")
    assert slack.requests == [] and pd.requests == []
    assert "would send to slack: " in proc.stderr
    assert "would send to pagerduty: trigger [critical]" in proc.stderr
    assert "dedup_key=workers_down:default" in proc.stderr
    assert json.loads(proc.stdout)["dry_run"] is True


def test_bad_webhook_url_is_a_config_error_naming_the_key(tmp_path):
    proc = run_cli(
        ["check", "--once", "--state", str(tmp_path / "s.db")],
        env={"SLACK_WEBHOOK_URL": "ftp://hooks.example/sl4ckS3cret"},
    )
    assert proc.returncode == 3
    assert "SLACK_WEBHOOK_URL (slack_webhook_url)" in proc.stderr
    assert "sl4ckS3cret" not in proc.stderr
