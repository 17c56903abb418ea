"""GET /status for a fleet: every target's state read in batches (BatchGetItem), not a Query
per target, against a moto server; the answer is what a target-by-target load gives."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from chalicelib.serverless import read_status
from chalicelib.state import TargetState
from chalicelib.state.dynamodb import DynamoStore
from tests.contract.test_state_contract import alert
from tests.support.moto_server import DynamoTable

TARGETS = 130  # over BatchGetItem's 100 keys: two calls for the samples


def counting(client: Any) -> Counter[str]:
    """The API operations ``client`` makes from now on (botocore's own event hooks)."""
    calls: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    client.meta.events.register("before-call.dynamodb", count)
    return calls


def fill(store: DynamoStore) -> list[str]:
    names = [f"cluster-{i:03d}" for i in range(TARGETS)]
    for i, name in enumerate(names):
        if i % 10 == 9:
            continue  # never checked: no state yet
        alerts = {}
        if i % 3 == 0:
            firing = alert(f"workers_down:{name}")
            resolved = alert(f"queue_growing:{name}", state="resolved")
            alerts = {firing.key: firing, resolved.key: resolved}
        sample = {"metrics": {"total_pending": i}, "target": name}
        store.commit(name, TargetState(last_sample=sample, alerts=alerts), 0)
    return names


def test_status_of_a_fleet_reads_in_batches(dynamodb: DynamoTable):
    store = DynamoStore(dynamodb.name, dynamodb.client)
    names = fill(store)
    calls = counting(dynamodb.client)
    answer = read_status(store, names)
    alert_items = sum(2 for i in range(TARGETS) if i % 3 == 0 and i % 10 != 9)
    assert calls == Counter(
        {"BatchGetItem": math.ceil(TARGETS / 100) + math.ceil(alert_items / 100)}
    )
    rows = {row["target"]: row for row in answer["targets"]}
    assert [row["target"] for row in answer["targets"]] == names
    for i, name in enumerate(names):
        row = rows[name]
        if i % 10 == 9:
            assert row == {"target": name, "version": 0, "last_sample": None, "firing": []}
            continue
        assert row["version"] == 1
        assert row["last_sample"]["metrics"]["total_pending"] == i
        firing = [a["key"] for a in row["firing"]]
        assert firing == ([f"workers_down:{name}"] if i % 3 == 0 else [])
    # The same answer a Query per target gives.
    for name in names[:12]:
        state = store.load(name)
        assert rows[name]["version"] == state.version
        assert rows[name]["last_sample"] == state.last_sample


def test_a_torn_read_is_read_again_alone(dynamodb: DynamoTable):
    """An alert item newer than the manifest (a commit being applied): that target alone is
    read again with a Query, and answered as load() answers."""
    store = DynamoStore(dynamodb.name, dynamodb.client)
    a = alert("workers_down:x")
    store.commit("x", TargetState(alerts={a.key: a}), 0)
    store.commit("y", TargetState(), 0)
    item = next(i for i in dynamodb.items() if i["sk"]["S"].startswith("ALERT#"))
    item["version"] = {"N": "7"}
    dynamodb.client.put_item(TableName=dynamodb.name, Item=item)
    calls = counting(dynamodb.client)
    states = store.load_many(["x", "y"])
    assert calls["BatchGetItem"] == 2 and calls["Query"] >= 1
    assert states["y"] == TargetState(version=1)
    assert states["x"] == store.load("x")


def test_an_unreadable_state_is_that_targets_error(dynamodb: DynamoTable):
    store = DynamoStore(dynamodb.name, dynamodb.client)
    store.commit("good", TargetState(last_sample={"ok": 1}), 0)
    store.commit("bad", TargetState(), 0)
    item = next(i for i in dynamodb.items() if i["pk"]["S"].endswith("bad"))
    item["body"] = {"S": "{not json"}
    dynamodb.client.put_item(TableName=dynamodb.name, Item=item)
    rows = read_status(store, ["bad", "good"])["targets"]
    assert "unreadable" in rows[0]["error"] and rows[0]["target"] == "bad"
    assert rows[1]["last_sample"] == {"ok": 1}
