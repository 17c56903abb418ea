"""Doorman's Lambda functions (Chalice). Handlers only: the work lives in chalicelib."""

from __future__ import annotations

import warnings
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from chalice import Chalice, ConvertToMiddleware, IAMAuthorizer  # type: ignore[attr-defined]

from chalicelib.lambda_cache import cache as _cache  # noqa: F401 (tests look inside)
from chalicelib.lambda_cache import cached as _cached
from chalicelib.lambda_cache import client as _client
from chalicelib.lambda_cache import reset  # noqa: F401 (a new configuration)
from chalicelib.lambda_cache import settings as _settings
from chalicelib.lambda_cache import slots as _slots
from chalicelib.lambda_cache import ssm as _ssm
from chalicelib.lambda_cache import store as _store
from chalicelib.lambda_cache import targets as _targets
from chalicelib.settings import event_sources

app = Chalice(app_name="doorman", configure_logs=False)
logger = Logger(service="doorman")  # the "doorman" logger chalicelib writes to, as JSON
metrics = Metrics(namespace="Doorman", service="doorman")

_CORRELATION = {
    "scheduled": "id",
    "dynamodb": "Records[0].eventID",
    "sns": "Records[0].Sns.MessageId",
    "http": correlation_paths.API_GATEWAY_REST,
}
for _kind, _path in _CORRELATION.items():
    app.register_middleware(
        ConvertToMiddleware(logger.inject_lambda_context(correlation_id_path=_path)), _kind
    )
for _kind in ("dynamodb", "sns"):  # the check's metrics are EMF lines of chalicelib.metrics
    app.register_middleware(ConvertToMiddleware(metrics.log_metrics), _kind)
# A dispatch of samples only has no count to send (see dispatch): not worth a warning.
warnings.filterwarnings("ignore", "No application metrics to publish", UserWarning)

_SOURCES = event_sources()


@app.schedule("rate(1 minute)", name="check")
def check(event: Any) -> dict[str, Any]:
    """One check of every configured target, concurrently; returns a summary per target."""
    from chalicelib.metrics import emit_metrics
    from chalicelib.serverless import budget_seconds, run_targets

    context = getattr(event, "context", None)
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    budget = budget_seconds(_settings().check_budget_seconds, remaining() if remaining else None)
    outcomes = run_targets(_slots(), budget)
    for name, result in ((o.target, o.result) for o in outcomes if o.result is not None):
        chosen = _slots()[name].settings.metric_queues
        try:
            emit_metrics(result.payload, target=name, metric_queues=chosen)
        except Exception as exc:  # metrics never cost a check its result
            logger.error("metrics of %s not emitted: %s", name, type(exc).__name__)
    return {"budget_seconds": round(budget, 3), "targets": [o.summary() for o in outcomes]}


# TRIM_HORIZON: the mapping starts at the oldest record the stream keeps (24 h), so the
# notifications checks commit before it exists (first deploy) are published too.
@app.on_dynamodb_record(
    stream_arn=_SOURCES.stream_arn,
    batch_size=100,
    starting_position="TRIM_HORIZON",
    name="dispatch",
)
def dispatch(event: Any) -> dict[str, Any]:
    """Publish new outbox items to the SNS topic; failed records are retried by Lambda."""
    from chalicelib.notify.sns import SnsPublisher
    from chalicelib.serverless import DeliveryLedger, DispatchFailed, dispatch_records
    from chalicelib.settings import ConfigError

    settings = _settings()
    if not settings.topic_arn:
        raise ConfigError("topic_arn: DOORMAN_TOPIC_ARN must be set in Lambda")
    publisher = _cached("publisher", lambda: SnsPublisher(_client("sns"), settings.topic_arn))
    # Marks what was published on the outbox items: a replayed stream is not sent twice.
    ledger = None
    if settings.table_name:
        table = settings.table_name
        ledger = _cached("ledger", lambda: DeliveryLedger(_client("dynamodb"), table))
    records = event.to_dict().get("Records", [])
    report = dispatch_records(records, publisher.send, ledger=ledger)
    counts = {"Dispatched": len(report.published), "DispatchDropped": report.dropped}
    # Only counts that are not 0: this runs every minute (each check writes its sample), and
    # a series is billed for every hour it gets data. The alarms read no data as no trouble.
    for name, value in {**counts, "DispatchRetried": len(report.failed)}.items():
        if value:
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    if report.failed and not settings.dispatch_partial_batch:
        raise DispatchFailed(f"{len(report.failed)} record(s) not published; batch retried")
    return report.response()


def _secrets(channel: str) -> Any:
    from chalicelib.notify.secrets import load_channel_secrets

    settings = _settings()
    # Only this function's own parameter (its IAM policy allows no other). Powertools caches
    # the value for five minutes inside the provider kept in _cache.
    slack = settings.slack_url_param if channel == "slack" else None
    pagerduty = settings.pagerduty_key_param if channel == "pagerduty" else None
    return load_channel_secrets(slack, pagerduty, provider=_ssm())


def _deliver(event: Any, channel: str, deliver: Any) -> dict[str, Any]:
    outcomes = deliver(event.to_dict().get("Records", []), _settings(), _secrets(channel))
    sent = sum(1 for o in outcomes if o.status == "sent")
    metrics.add_dimension(name="channel", value=channel)
    metrics.add_metric(name="Delivered", unit=MetricUnit.Count, value=sent)
    return {"outcomes": [{"id": o.id, "status": o.status} for o in outcomes]}


@app.on_sns_message(topic=_SOURCES.topic, name="notify_slack")
def notify_slack(event: Any) -> dict[str, Any]:
    """Post an alert from the topic to Slack (webhook URL from SSM)."""
    from chalicelib import serverless

    return _deliver(event, "slack", serverless.notify_slack)


@app.on_sns_message(topic=_SOURCES.topic, name="notify_pagerduty")
def notify_pagerduty(event: Any) -> dict[str, Any]:
    """Send an alert from the topic to PagerDuty (routing key from SSM)."""
    from chalicelib import serverless

    return _deliver(event, "pagerduty", serverless.notify_pagerduty)


@app.route("/status", methods=["GET"], authorizer=IAMAuthorizer())
def status() -> dict[str, Any]:
    """The last sample and firing alerts of every configured target."""
    from chalicelib.serverless import read_status

    return read_status(_store(), [s.target for s in _targets()])
