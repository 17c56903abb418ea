"""EMF emission: the lines CloudWatch Logs would turn into metrics, parsed back."""

from __future__ import annotations

import io
import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from chalicelib.dashboard import (
    BLOCKS,
    FLEET_TABLE,
    QUEUE_TABLE,
    TARGET_ROWS,
    LogsQuery,
    dashboard_fields,
    logs_queries,
    render_block,
)
from chalicelib.metrics import (
    BILLED_TARGET_METRICS,
    CATALOGUE,
    QUEUE_METRICS,
    TARGET_METRICS,
    billed_series,
    emit_metrics,
    select_queues,
    series_defined,
)
from chalicelib.text import iso

ROOT = Path(__file__).resolve().parents[2]
UNITS = {"Count", "Percent", "Seconds", "Milliseconds"}
# The target's task outcomes since the previous check, and their payload fields.
OUTCOMES = {
    "TasksSucceeded": "tasks_succeeded",
    "TasksFailed": "tasks_failed",
    "TasksExpired": "tasks_expired",
    "FailureRatePct": "failure_rate_pct",
}


def payload(*, queues: int = 3, redis_ok: bool = True) -> dict[str, Any]:
    return {
        "target": "prod",
        "timestamp": iso(time.time()),
        "check_duration_ms": 14.2,
        "metrics": {
            "total_pending": 60,
            "total_active": 3,
            "saturation_pct": 75.0,
            "max_latency_sec": 12.5,
            "alive_workers": 2,
            "total_workers": 3,
            "stuck_tasks": 1,
            "queues_not_shown": 0,
            "redis_connected": redis_ok,
            "tasks_succeeded": 40,
            "tasks_failed": 5,
            "tasks_expired": 2,
            "failure_rate_pct": 11.11,
        },
        "queues": [
            {"name": f"q{i:03d}", "depth": i * 10, "latency_sec": float(i) if i else None}
            for i in range(queues)
        ],
        "redis": {"used_memory": 900, "maxmemory": 1000, "connected_clients": 7},
        "alerts": [
            {"type": "stuck_task", "state": "firing"},
            {"type": "queue_growing", "state": "pending"},
        ],
        "errors": [],
    }


def emit(doc: dict[str, Any], **kwargs: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(returned documents, documents parsed back from the written lines)."""
    out = io.StringIO()
    docs = emit_metrics(doc, target="prod", stream=out, **kwargs)
    lines = out.getvalue().splitlines()
    return docs, [json.loads(line) for line in lines]


def values(doc: dict[str, Any]) -> dict[str, float]:
    """The metric values an EMF document defines ({} for a plain line)."""
    if "_aws" not in doc:
        return {}
    names = [m["Name"] for d in doc["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]]
    return {n: doc[n][0] if isinstance(doc[n], list) else doc[n] for n in names}


def assert_valid_emf(doc: dict[str, Any]) -> None:
    aws = doc["_aws"]
    assert isinstance(aws["Timestamp"], int)
    assert abs(aws["Timestamp"] / 1000 - time.time()) < 3600
    (directive,) = aws["CloudWatchMetrics"]
    assert directive["Namespace"] == "Doorman"
    assert 0 < len(directive["Metrics"]) <= 100
    for dims in directive["Dimensions"]:
        assert 0 < len(dims) <= 30
        for name in dims:
            assert isinstance(doc[name], str) and doc[name]
    for m in directive["Metrics"]:
        assert m["Unit"] in UNITS
        assert "StorageResolution" not in m  # standard resolution: cheaper
        value = doc[m["Name"]]
        assert all(
            isinstance(v, int | float) for v in (value if isinstance(value, list) else [value])
        )


def test_lines_are_the_returned_documents():
    docs, parsed = emit(payload())
    assert parsed == docs
    assert len(docs) == 1 + 3
    assert_valid_emf(docs[0])
    assert [d["doorman"] for d in docs] == ["check", "queue", "queue", "queue"]
    assert all("_aws" not in d for d in docs[1:])  # no metric_queues: plain lines


def test_a_default_check_defines_one_billed_series():
    docs, _ = emit(payload(queues=30))
    assert series_defined(docs) == {("Doorman", "CheckSucceeded", (("target", "prod"),))}
    assert billed_series() == 1 == len(BILLED_TARGET_METRICS)


def test_a_metric_queue_adds_exactly_its_two_series():
    before = series_defined(emit(payload(queues=30))[0])
    docs, _ = emit(payload(queues=30), metric_queues=["q005"])
    added = series_defined(docs) - before
    assert added == {
        ("Doorman", "QueueDepth", (("target", "prod"), ("queue", "q005"))),
        ("Doorman", "QueueLatencySec", (("target", "prod"), ("queue", "q005"))),
    }
    assert series_defined(docs) >= before
    assert billed_series(1) == 3 and billed_series(2) == 5
    (line,) = [d for d in docs if d.get("queue") == "q005"]
    assert_valid_emf(line)
    assert line["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["target", "queue"]]
    assert values(line) == {"QueueDepth": 50, "QueueLatencySec": 5.0}


def test_target_line_carries_every_target_figure():
    (target, *_), _ = emit(payload())
    directive = target["_aws"]["CloudWatchMetrics"][0]
    assert directive["Dimensions"] == [["target"]]
    assert {m["Name"]: m["Unit"] for m in directive["Metrics"]} == {"CheckSucceeded": "Count"}
    assert target["target"] == "prod"
    assert {m.name for m in TARGET_METRICS} <= set(target)
    assert target["CheckSucceeded"] == 1
    assert target["TotalPending"] == 60
    assert target["SaturationPct"] == 75.0
    assert target["MaxLatencySec"] == 12.5
    assert target["AlertsFiring"] == 1  # the pending alert is not firing
    assert target["RedisMemoryPct"] == 90.0
    assert target["RedisClients"] == 7
    assert target["CheckDurationMs"] == 14.2
    assert target["QueuesLogged"] == 3
    assert target["TasksSucceeded"] == 40 and target["TasksFailed"] == 5
    assert target["TasksExpired"] == 2 and target["FailureRatePct"] == 11.11


def test_task_outcomes_are_log_fields_with_their_units_not_metrics():
    defs = {m.name: m for m in TARGET_METRICS if m.name in OUTCOMES}
    assert {n: m.unit for n, m in defs.items()} == {
        "TasksSucceeded": "Count",
        "TasksFailed": "Count",
        "TasksExpired": "Count",
        "FailureRatePct": "Percent",
    }
    assert {m.dimensions for m in defs.values()} == {("target",)}
    assert {m.source for m in defs.values()} == {f"metrics.{f}" for f in OUTCOMES.values()}
    assert not any(m.billed for m in defs.values())
    (target, *_), _ = emit(payload())
    # No series of their own: CheckSucceeded stays the only billed one.
    assert values(target) == {"CheckSucceeded": 1}
    assert series_defined([target]) == {("Doorman", "CheckSucceeded", (("target", "prod"),))}
    # Counts as whole numbers in the line, the rate as the payload has it.
    assert [type(target[n]) for n in ("TasksSucceeded", "TasksFailed", "TasksExpired")] == [int] * 3
    assert isinstance(target["FailureRatePct"], float)


def test_unmeasured_task_outcomes_emit_nothing_never_zero():
    # No worker runs the companion, or only first readings: every figure is null.
    doc = payload()
    doc["metrics"].update(dict.fromkeys(OUTCOMES.values()))
    (target, *_), _ = emit(doc)
    assert not set(OUTCOMES) & set(target)
    assert target["TotalPending"] == 60  # the rest of the line is unchanged
    # Counted, but nothing finished: the counts are real zeros, the rate is unknown.
    doc["metrics"].update(tasks_succeeded=0, tasks_failed=0, tasks_expired=3)
    (target, *_), _ = emit(doc)
    assert {n: target.get(n) for n in OUTCOMES} == {
        "TasksSucceeded": 0,
        "TasksFailed": 0,
        "TasksExpired": 3,
        "FailureRatePct": None,
    }
    assert "FailureRatePct" not in target
    # A payload from before the companion (no fields at all) is the same as null.
    doc = payload()
    for field in OUTCOMES.values():
        del doc["metrics"][field]
    (target, *_), _ = emit(doc)
    assert not set(OUTCOMES) & set(target)


def test_no_figure_per_task_name():
    doc = payload()
    doc["tasks"] = [
        {"name": "billing.charge", "succeeded": 3, "failed": 1, "failure_rate": 0.25},
        {"name": "mail.send", "succeeded": 9, "failed": 0, "failure_rate": 0.0},
    ]
    docs, _ = emit(doc)
    written = json.dumps(docs)
    assert "billing.charge" not in written and "mail.send" not in written
    assert len(series_defined(docs)) == billed_series() == 1


def test_queue_lines_have_depth_and_latency_deepest_first():
    docs, _ = emit(payload(queues=2))
    assert docs[1:] == [
        {
            "doorman": "queue",
            "target": "prod",
            "queue": "q001",
            "QueueDepth": 10,
            "QueueLatencySec": 1,
        },
        # empty queue: nothing waits
        {
            "doorman": "queue",
            "target": "prod",
            "queue": "q000",
            "QueueDepth": 0,
            "QueueLatencySec": 0,
        },
    ]


def test_queue_lines_are_capped_but_metric_queues_always_get_theirs():
    docs, _ = emit(payload(queues=50), max_logged_queues=10)
    assert [d["queue"] for d in docs[1:]] == [f"q{i:03d}" for i in range(49, 39, -1)]
    assert docs[0]["QueuesLogged"] == 10
    docs, _ = emit(payload(queues=50), max_logged_queues=0, metric_queues=["q001", "q002"])
    assert [d["queue"] for d in docs[1:]] == ["q002", "q001"]
    assert len(series_defined(docs)) == billed_series(2)


def test_queue_choice_is_deterministic_and_pins_come_first():
    queues = [{"name": n, "depth": 5, "latency_sec": 1.0} for n in ("c", "a", "b")]
    assert [q["name"] for q in select_queues(queues, 2)] == ["a", "b"]
    assert [q["name"] for q in select_queues(list(reversed(queues)), 2)] == ["a", "b"]
    assert [q["name"] for q in select_queues(queues, 2, pinned={"c"})] == ["c", "a"]


def test_a_metric_queue_is_found_under_its_sanitized_name():
    # Queues are named with raw names; the payload holds scrubbed ones, suffixed when two
    # raw names scrub alike.
    queues = [{"name": n, "depth": 5, "latency_sec": 1.0} for n in ("a", "orders_[id]~q-1a2b", "b")]
    chosen = select_queues(queues, 2, pinned={"orders_12345"})
    assert [q["name"] for q in chosen] == ["orders_[id]~q-1a2b", "a"]


def test_redis_unreachable_sends_the_heartbeat_zero_and_no_fake_zeros():
    docs, _ = emit(payload(redis_ok=False), metric_queues=["q001"])
    assert len(docs) == 1
    assert values(docs[0]) == {"CheckSucceeded": 0}
    figures = {k for k in docs[0] if k[0].isupper()}
    assert figures == {"CheckSucceeded", "CheckDurationMs", "AlertsFiring"}


def test_memory_pct_is_left_out_without_maxmemory():
    doc = payload()
    doc["redis"]["maxmemory"] = 0
    (target, *_), _ = emit(doc)
    assert "RedisMemoryPct" not in target


def test_disabled_metrics_write_nothing(monkeypatch):
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    out = io.StringIO()
    assert emit_metrics(payload(), target="prod", stream=out) == []
    assert out.getvalue() == ""


def test_service_env_does_not_change_the_dimensions(monkeypatch):
    # Alarms and the dashboard name exactly [target]; an extra dimension is another metric.
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "doorman")
    (target, *_), _ = emit(payload())
    assert target["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["target"]]
    assert "service" not in target


def test_catalogue_names_are_unique_and_documented():
    names = [m.name for m in CATALOGUE]
    assert len(names) == len(set(names))
    for m in CATALOGUE:
        assert m.unit in UNITS and m.description and m.source
        assert re.fullmatch(r"[A-Z][A-Za-z]+", m.name)
    assert {m.dimensions for m in QUEUE_METRICS} == {("target", "queue")}
    assert [m.name for m in BILLED_TARGET_METRICS] == ["CheckSucceeded"]
    assert set(OUTCOMES) <= set(names)


def test_dashboards_show_every_catalogue_figure():
    assert {m.name for m in CATALOGUE} <= dashboard_fields()
    assert set(OUTCOMES) <= dashboard_fields()


def _target_widgets() -> dict[str, str]:
    widgets = BLOCKS["target dashboard"]()["widgets"]
    return {w["properties"]["title"]: w["properties"].get("query", "") for w in widgets}


def test_target_dashboard_graphs_task_outcomes_and_the_failure_rate():
    widgets = _target_widgets()
    outcomes = widgets["Task outcomes"]
    for name in ("TasksSucceeded", "TasksFailed", "TasksExpired"):
        assert f"sum({name}) as {name}" in outcomes
    assert "FailureRatePct" not in outcomes
    (rate,) = [q for title, q in widgets.items() if title.startswith("Failure rate")]
    assert "max(FailureRatePct) as FailureRatePct" in rate
    # Both are in the committed template, as generated.
    template = (ROOT / "infra" / "doorman.yaml").read_text(encoding="utf-8")
    assert '"title": "Task outcomes"' in template
    assert "stats max(FailureRatePct) as FailureRatePct by bin(1m)" in template


def test_task_outcome_graphs_add_up_the_checks_of_a_minute_and_skip_the_unmeasured():
    measured, _ = emit(payload())
    doc = payload()
    doc["metrics"].update(tasks_succeeded=10, tasks_failed=0, tasks_expired=0, failure_rate_pct=0.0)
    second, _ = emit(doc)
    doc["metrics"].update(dict.fromkeys(OUTCOMES.values()))
    unmeasured, _ = emit(doc)
    by_title = {t: q for row in TARGET_ROWS for t, q in row}
    lines = measured + second + unmeasured
    (row,) = run_query(by_title["Task outcomes"], lines, "prod")
    assert row == {
        "bin(1m)": "bin",
        "TasksSucceeded": 50,
        "TasksFailed": 5,
        "TasksExpired": 2,
    }
    (rate,) = [q for t, q in by_title.items() if t.startswith("Failure rate")]
    assert run_query(rate, lines, "prod") == [{"bin(1m)": "bin", "FailureRatePct": 11.11}]
    # Only unmeasured checks: the bin has no figure (a gap), not a 0.
    assert run_query(by_title["Task outcomes"], unmeasured, "prod") == [{"bin(1m)": "bin"}]


def metrics_named_by_infra() -> set[str]:
    """Doorman metric names the dashboards and the alarms of infra/doorman.yaml use for the
    check (the dispatcher's own metrics, dimension ``service``, are tested with dispatch)."""
    names: set[str] = set()
    for block in BLOCKS:
        body = render_block(block)
        names |= set(re.findall(r'"Doorman",\s*"(\w+)"', body))
        names |= set(re.findall(r'MetricName=\\"(\w+)\\"', body))
    text = (ROOT / "infra" / "doorman.yaml").read_text()
    template = yaml.load(text, Loader=_CfnLoader)  # noqa: S506 (a SafeLoader)
    resources = list(template["Resources"].values())
    for entry in list(resources):
        if isinstance(entry, list):  # Fn::ForEach: [name, collection, {logical id: resource}]
            resources.extend(entry[2].values())
    for resource in resources:
        if not isinstance(resource, dict):
            continue
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::CloudWatch::Alarm" and props.get("Namespace") == "Doorman":
            if any(d.get("Name") == "service" for d in props.get("Dimensions", [])):
                continue
            names.add(props["MetricName"])
    return names


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short-form tags (!Sub, !Ref, ...) as plain values."""


def _any_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_mapping(node)  # type: ignore[arg-type]


_CfnLoader.add_multi_constructor("!", _any_tag)


def run_query(query: LogsQuery, lines: list[dict[str, Any]], target: str) -> list[dict[str, Any]]:
    """What Logs Insights answers for ``query`` over ``lines`` (all in one minute): the
    filter, the stats per group, the sort. A field a line lacks is absent, as in Logs
    Insights; a stat over a field no line has is missing from the row."""
    kept = [
        dict(line, **{"@timestamp": 1_000 + i})
        for i, line in enumerate(lines)
        if line.get("doorman") == query.kind
        and (not query.one_target or line.get("target") == target)
    ]
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for line in kept:
        key = tuple("bin" if b.startswith("bin(") else line.get(b) for b in query.by)
        groups.setdefault(key, []).append(line)
    functions = {
        "max": max,
        "min": min,
        "avg": lambda v: sum(v) / len(v),
        "sum": sum,
        "latest": lambda v: v[-1],
    }
    rows = []
    for key, members in groups.items():
        row: dict[str, Any] = dict(zip(query.by, key, strict=True))
        for fn, field in query.stats:
            found = [m[field] for m in members if field in m]
            assert all(isinstance(v, int | float) for v in found), (field, found)
            if found:
                row["LastCheck" if field == "@timestamp" else field] = functions[fn](found)
        rows.append(row)
    if query.sort:
        field, order = query.sort.split()
        rows.sort(key=lambda r: r.get(field, 0), reverse=order == "desc")
    return rows


def test_real_check_logs_every_metric_and_field_the_dashboards_and_alarms_use(
    redis_server, workers, checker
):
    from tests.conftest import producer

    redis_server.client().config_set("maxmemory", "256mb")
    workers.start("w1@metrics", queues=("celery",))
    app = producer(redis_server.url)
    for _ in range(3):
        app.sleep.apply_async((0.01,), queue="idle-queue")
    result = checker().check()
    docs, parsed = emit(result, metric_queues=["celery"])
    assert parsed == docs
    assert_valid_emf(docs[0])
    emitted = {name for doc in docs for name in values(doc)}
    wanted = metrics_named_by_infra()
    assert wanted == {"CheckSucceeded"}
    # The billed series of a real check: the heartbeat, and the metric queue's two.
    assert series_defined(docs) == {
        ("Doorman", "CheckSucceeded", (("target", "prod"),)),
        ("Doorman", "QueueDepth", (("target", "prod"), ("queue", "celery"))),
        ("Doorman", "QueueLatencySec", (("target", "prod"), ("queue", "celery"))),
    }
    assert len(series_defined(emit(result)[0])) == billed_series() == 1
    assert wanted <= emitted, f"not emitted: {sorted(wanted - emitted)}"
    # metric_queues: the queue's line is EMF, with the same fields as a plain queue line.
    assert values(next(d for d in docs if d.get("queue") == "celery")) == {
        "QueueDepth": 0,
        "QueueLatencySec": 0,
    }
    logged = {key for doc in docs for key in doc}
    missing = dashboard_fields() - logged
    # A plain worker: task outcomes are not measured, so the line has none of them (the
    # companion's test below has them).
    assert result["metrics"]["tasks_failed"] is None
    assert missing == set(OUTCOMES), f"dashboard fields no line has: {sorted(missing)}"
    # Every widget's query, run over the real lines, gives a row with every stat it asks for.
    for query in logs_queries():
        rows = run_query(query, parsed, "prod")
        assert rows, query.text()
        for row in rows:
            wanted_fields = {"LastCheck" if f == "@timestamp" else f for _fn, f in query.stats}
            assert wanted_fields - set(OUTCOMES) <= set(row), (query.text(), row)
            assert not set(OUTCOMES) & set(row)
    (fleet_row,) = run_query(FLEET_TABLE, parsed, "prod")
    assert fleet_row["target"] == "prod" and fleet_row["CheckSucceeded"] == 1
    assert fleet_row["TotalPending"] == 3 and "AliveWorkers" in fleet_row
    table = run_query(QUEUE_TABLE, parsed, "prod")
    assert table[0] == {
        "queue": "idle-queue",
        "QueueDepth": 3,
        "QueueLatencySec": table[0]["QueueLatencySec"],
    }
    assert table[0]["QueueLatencySec"] >= 0


def test_fleet_table_has_one_row_per_target_the_failing_first():
    ok, _ = emit(payload())
    out = io.StringIO()
    down = emit_metrics(payload(redis_ok=False), target="eu", stream=out)
    rows = run_query(FLEET_TABLE, ok + down, "prod")
    assert [(r["target"], r["CheckSucceeded"]) for r in rows] == [("eu", 0), ("prod", 1)]
    assert "TotalPending" not in rows[0]  # not read from a Redis that did not answer
    assert rows[1]["TotalPending"] == 60 and rows[1]["MaxLatencySec"] == 12.5


@pytest.mark.parametrize("bad", [None, "x", {"depth": "3"}])
def test_odd_queue_entries_do_not_break_emission(bad):
    doc = payload(queues=1)
    doc["queues"].append(bad)
    docs, _ = emit(doc)
    assert [d.get("queue") for d in docs[1:]] == ["q000"]


@pytest.mark.slow
def test_real_checks_with_a_companion_worker_log_the_task_outcomes(redis_server, checker):
    from tests.companion.conftest import Companions, outcomes

    companions = Companions(redis_server)
    try:
        name = "outcomes@metrics"
        companions.start(name, pool="threads", concurrency=2)
        check = checker(worker_timeout_seconds=2.0)
        first, _ = emit(check.check())
        assert not set(OUTCOMES) & set(first[0])  # a first reading measures nothing yet
        for _ in range(6):
            companions.send("comp.ok", 0.0)
        for _ in range(2):
            companions.send("comp.fail")
        for _ in range(3):
            companions.send("comp.expire_me", expires=datetime.now(UTC) - timedelta(seconds=5))
        companions.wait_for(
            name,
            lambda reply: (
                outcomes(reply).get("comp.ok", {}).get("succeeded", 0) >= 6
                and outcomes(reply).get("comp.fail", {}).get("failed", 0) >= 2
                and outcomes(reply).get("comp.expire_me", {}).get("expired", 0) >= 3
            ),
        )
        result = check.check()
        docs, parsed = emit(result)
        assert parsed == docs
        (target,) = [d for d in docs if d["doorman"] == "check"]
        assert_valid_emf(target)
        assert {n: target[n] for n in OUTCOMES} == {
            "TasksSucceeded": 6,
            "TasksFailed": 2,
            "TasksExpired": 3,
            "FailureRatePct": 25,  # 2 of 8 finished; written as short as it goes
        }
        assert series_defined(docs) == {("Doorman", "CheckSucceeded", (("target", "prod"),))}
        assert "comp.fail" not in json.dumps(docs)  # task names stay in the payload
        lines = first + parsed
        assert set(OUTCOMES) <= {key for doc in lines for key in doc}
        by_title = {t: q for row in TARGET_ROWS for t, q in row}
        (row,) = run_query(by_title["Task outcomes"], lines, "prod")
        assert (row["TasksSucceeded"], row["TasksFailed"], row["TasksExpired"]) == (6, 2, 3)
        # Nothing ran since: the next check counts real zeros and knows no rate.
        (after, *_), _ = emit(check.check())
        assert (after["TasksSucceeded"], after["TasksFailed"], after["TasksExpired"]) == (0, 0, 0)
        assert "FailureRatePct" not in after
    finally:
        companions.close()
