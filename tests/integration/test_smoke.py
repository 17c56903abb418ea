"""The first thing that must work: one check of a real worker on a real Redis."""

from __future__ import annotations

from tests.conftest import parse_one_json, producer, run_cli


def test_one_worker_and_waiting_tasks_are_reported(redis_server, workers, checker):
    workers.start("w1@smoke", queues=("celery",))
    app = producer(redis_server.url)
    for _ in range(3):
        app.sleep.apply_async((0.01,), queue="idle-queue")
    payload = checker().check()
    assert payload["metrics"]["alive_workers"] == 1
    assert payload["workers"][0]["status"] == "online"
    assert payload["workers"][0]["concurrency"] == 2
    depths = {q["name"]: q["depth"] for q in payload["queues"]}
    assert depths["idle-queue"] == 3
    assert payload["metrics"]["total_pending"] == 3
    assert payload["privacy"]["args_accessed"] is False


def test_cli_prints_exactly_one_json_document(redis_server, tmp_path):
    result = run_cli(
        [
            "check",
            "--once",
            "--format",
            "json",
            "--redis-url",
            redis_server.url,
            "--state",
            str(tmp_path / "s.db"),
        ]
    )
    assert result.returncode == 0, result.stderr
    doc = parse_one_json(result.stdout)
    assert doc["metrics"]["redis_connected"] is True
    assert "check_duration_ms" in doc
