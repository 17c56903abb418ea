"""EMF emission: the lines CloudWatch Logs would turn into metrics, parsed back."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from chalicelib.dashboard import dashboard_metric_names, render_block
from chalicelib.metrics import (
    CATALOGUE,
    QUEUE_METRICS,
    TARGET_METRICS,
    billed_series,
    emit_metrics,
    select_queues,
)
from chalicelib.payload import iso

ROOT = Path(__file__).resolve().parents[2]
UNITS = {"Count", "Percent", "Seconds", "Milliseconds"}


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
        assert all(isinstance(v, float) for v in (value if isinstance(value, list) else [value]))


def test_lines_are_the_returned_documents_and_valid_emf():
    docs, parsed = emit(payload())
    assert parsed == docs
    assert len(docs) == 1 + 3
    for doc in docs:
        assert_valid_emf(doc)


def test_target_document_has_every_target_metric_with_its_unit():
    (target, *_), _ = emit(payload())
    directive = target["_aws"]["CloudWatchMetrics"][0]
    assert directive["Dimensions"] == [["target"]]
    assert target["target"] == "prod"
    units = {m["Name"]: m["Unit"] for m in directive["Metrics"]}
    assert units == {m.name: m.unit for m in TARGET_METRICS}
    got = values(target)
    assert got["TotalPending"] == 60
    assert got["SaturationPct"] == 75.0
    assert got["MaxLatencySec"] == 12.5
    assert got["CheckSucceeded"] == 1
    assert got["AlertsFiring"] == 1  # the pending alert is not firing
    assert got["RedisMemoryPct"] == 90.0
    assert got["RedisClients"] == 7
    assert got["CheckDurationMs"] == 14.2


def test_queue_documents_have_target_and_queue_dimensions():
    docs, _ = emit(payload(queues=2))
    queue_docs = docs[1:]
    assert [d["queue"] for d in queue_docs] == ["q001", "q000"]  # deepest first
    for doc in queue_docs:
        directive = doc["_aws"]["CloudWatchMetrics"][0]
        assert directive["Dimensions"] == [["target", "queue"]]
        assert {m["Name"]: m["Unit"] for m in directive["Metrics"]} == {
            "QueueDepth": "Count",
            "QueueLatencySec": "Seconds",
        }
    empty = values(queue_docs[1])
    assert empty == {"QueueDepth": 0, "QueueLatencySec": 0}  # empty queue: nothing waits


def test_per_queue_series_are_capped_to_the_largest_queues():
    docs, _ = emit(payload(queues=50), max_queue_series=20)
    queue_docs = docs[1:]
    series = sum(len(d["_aws"]["CloudWatchMetrics"][0]["Metrics"]) for d in queue_docs)
    assert series == 20
    assert [d["queue"] for d in queue_docs] == [f"q{i:03d}" for i in range(49, 39, -1)]
    assert billed_series(20) == len(TARGET_METRICS) + 20
    docs, _ = emit(payload(queues=50), max_queue_series=0)
    assert len(docs) == 1


def test_queue_choice_is_deterministic_and_pins_come_first():
    queues = [{"name": n, "depth": 5, "latency_sec": 1.0} for n in ("c", "a", "b")]
    assert [q["name"] for q in select_queues(queues, 4)] == ["a", "b"]
    assert [q["name"] for q in select_queues(list(reversed(queues)), 4)] == ["a", "b"]
    assert [q["name"] for q in select_queues(queues, 4, pinned={"c"})] == ["c", "a"]


def test_a_pinned_queue_is_found_under_its_sanitized_name():
    # Pins are configured with raw names; the payload holds scrubbed ones, suffixed when two
    # raw names scrub alike.
    queues = [{"name": n, "depth": 5, "latency_sec": 1.0} for n in ("a", "orders_[id]~q-1a2b", "b")]
    chosen = select_queues(queues, 4, pinned={"orders_12345"})
    assert [q["name"] for q in chosen] == ["orders_[id]~q-1a2b", "a"]


def test_redis_unreachable_sends_the_heartbeat_zero_and_no_fake_zeros():
    docs, _ = emit(payload(redis_ok=False))
    assert len(docs) == 1
    got = values(docs[0])
    assert got["CheckSucceeded"] == 0
    assert set(got) == {"CheckSucceeded", "CheckDurationMs", "AlertsFiring"}


def test_memory_pct_is_left_out_without_maxmemory():
    doc = payload()
    doc["redis"]["maxmemory"] = 0
    (target, *_), _ = emit(doc)
    assert "RedisMemoryPct" not in values(target)


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


def test_dashboard_shows_every_catalogue_metric():
    assert dashboard_metric_names() == {m.name for m in CATALOGUE}


def metrics_named_by_infra() -> set[str]:
    """Doorman metric names the dashboard and the alarms of infra/doorman.yaml use for the
    check (the dispatcher's own metrics, dimension ``service``, are tested with dispatch)."""
    names = set(dashboard_metric_names())
    body = render_block()
    names |= set(re.findall(r'"Doorman",\s*"(\w+)"', body))
    names |= set(re.findall(r'MetricName=\\"(\w+)\\"', body))
    text = (ROOT / "infra" / "doorman.yaml").read_text()
    template = yaml.load(text, Loader=_CfnLoader)  # noqa: S506 (a SafeLoader)
    for resource in template["Resources"].values():
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


def test_real_check_emits_every_metric_the_dashboard_and_alarms_use(redis_server, workers, checker):
    from tests.conftest import producer

    redis_server.client().config_set("maxmemory", "256mb")
    workers.start("w1@metrics", queues=("celery",))
    app = producer(redis_server.url)
    for _ in range(3):
        app.sleep.apply_async((0.01,), queue="idle-queue")
    result = checker().check()
    docs, parsed = emit(result)
    assert parsed == docs
    for doc in docs:
        assert_valid_emf(doc)
    emitted = {name for doc in docs for name in values(doc)}
    wanted = metrics_named_by_infra()
    assert "CheckSucceeded" in wanted and "QueueDepth" in wanted
    assert wanted <= emitted, f"not emitted: {sorted(wanted - emitted)}"
    queues = {d["queue"]: values(d) for d in docs[1:]}
    assert queues["idle-queue"]["QueueDepth"] == 3


@pytest.mark.parametrize("bad", [None, "x", {"depth": "3"}])
def test_odd_queue_entries_do_not_break_emission(bad):
    doc = payload(queues=1)
    doc["queues"].append(bad)
    docs, _ = emit(doc)
    assert [d.get("queue") for d in docs[1:]] == ["q000"]
