"""The dispatcher runs on every record of the table's stream, so every minute (each check
writes its sample). A custom metric is billed for each hour it receives data: counts of 0
sent every minute would be three series billed all month ($0.90) for nothing. Only the
counts that are not 0 are sent; the alarms on DispatchDropped and DispatchRetried treat
missing data as not breaching."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.metrics import series_defined
from tests.aws.test_dispatch import dispatch_env, record  # noqa: F401 (a fixture)
from tests.notify.notes import note


def emf_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if '"_aws"' in line]


def test_a_batch_of_samples_only_defines_no_series(dispatch_env, capsys):  # noqa: F811
    event = {"Records": [record(1, "SAMPLE"), record(2, "SAMPLE", name="MODIFY")]}
    capsys.readouterr()
    with dispatch_env() as client:
        assert client.lambda_.invoke("dispatch", event).payload == {"batchItemFailures": []}
    assert series_defined(emf_lines(capsys.readouterr().out)) == set()


def test_a_published_alert_defines_only_its_count(dispatch_env, topic, capsys):  # noqa: F811
    n = note()
    event = {"Records": [record(1, "SAMPLE"), record(2, f"OUTBOX#1#{n.id}", n)]}
    capsys.readouterr()
    with dispatch_env() as client:
        client.lambda_.invoke("dispatch", event)
    (doc,) = emf_lines(capsys.readouterr().out)
    assert {name for _ns, name, _dims in series_defined([doc])} == {"Dispatched"}
    assert doc["Dispatched"] == [1.0]
    topic.envelopes(1)
