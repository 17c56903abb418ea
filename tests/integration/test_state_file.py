"""A state file Doorman cannot use: the check still runs, says why, and leaves the file alone."""

from __future__ import annotations

import hashlib
import random
import sqlite3
from pathlib import Path

import pytest

from chalicelib.state import StateError, TargetState, WorkerRecord
from chalicelib.state.sqlite import SqliteStore
from tests.conftest import parse_one_json, producer, run_cli

# No worker runs here: keep the discovery broadcast (which waits its full timeout) short.
FAST = {"DOORMAN_WORKER_TIMEOUT": "0.2"}


def garbage() -> bytes:
    return random.Random(7).randbytes(8192)


def sqlite_header_then_garbage() -> bytes:
    return b"SQLite format 3\x00" + random.Random(8).randbytes(4096)


def another_programs_database(path: Path) -> bytes:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    conn.execute("INSERT INTO notes (text) VALUES ('keep me')")
    conn.commit()
    conn.close()
    return path.read_bytes()


def truncated_doorman_database(path: Path, url: str) -> bytes:
    result = run_cli(["check", "--once", "--redis-url", url, "--state", str(path)], env=FAST)
    assert result.returncode == 0, result.stderr
    data = path.read_bytes()
    assert len(data) > 4096
    return data[: len(data) // 2 + 100]


def doorman_database_with_a_bad_row(path: Path) -> bytes:
    store = SqliteStore(str(path))
    store.commit("default", TargetState(), 0)
    store.close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE targets SET body = ?", ('{"roster": {"w-1": "oops"}',))
    conn.commit()
    conn.close()
    return path.read_bytes()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "kind",
    ["garbage", "sqlite-header", "another-program", "truncated-doorman-db", "row-not-json"],
)
def test_corrupt_state_file_is_reported_and_left_unchanged(redis_server, tmp_path, kind):
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    state = state_dir / "doorman.db"
    if kind == "garbage":
        state.write_bytes(garbage())
    elif kind == "sqlite-header":
        state.write_bytes(sqlite_header_then_garbage())
    elif kind == "another-program":
        another_programs_database(state)
    elif kind == "row-not-json":
        doorman_database_with_a_bad_row(state)
    else:
        data = truncated_doorman_database(tmp_path / "scratch.db", redis_server.url)
        state.write_bytes(data)
    before = digest(state)
    producer(redis_server.url).quick.apply_async(queue="waiting")

    base = ["check", "--once", "--redis-url", redis_server.url, "--state", str(state)]
    as_json = run_cli([*base, "--format", "json"], env=FAST)
    as_text = run_cli([*base, "--format", "text"], env=FAST)

    for result in (as_json, as_text):
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
    doc = parse_one_json(as_json.stdout)
    # The check ran...
    assert doc["metrics"]["redis_connected"] is True
    assert {q["name"]: q["depth"] for q in doc["queues"]}.get("waiting") == 1
    # ...and says clearly that the state could not be used, and why.
    state_errors = [e for e in doc["errors"] if e["component"] == "state"]
    assert len(state_errors) == 1, doc["errors"]
    message = state_errors[0]["message"]
    assert state_errors[0]["kind"] == "unreadable"
    assert str(state) in message
    assert "left as it is" in message or "leaves it untouched" in message
    assert "Error      state/unreadable" in as_text.stdout
    # The file is exactly as it was, and nothing was written beside it but the secret.
    assert digest(state) == before
    leftovers = sorted(p.name for p in state_dir.iterdir())
    assert leftovers == ["doorman.db", "doorman.db.secret"]
    if kind == "another-program":
        conn = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
        assert conn.execute("SELECT text FROM notes").fetchall() == [("keep me",)]
        conn.close()


def test_empty_state_file_is_initialised(redis_server, tmp_path):
    """An empty file (e.g. made by ``touch``) holds nothing to lose: it becomes the state."""
    state = tmp_path / "doorman.db"
    state.touch()
    args = ["check", "--once", "--redis-url", redis_server.url, "--state", str(state)]
    result = run_cli(args, env=FAST)
    assert result.returncode == 0, result.stderr
    assert parse_one_json(result.stdout)["errors"] == []
    assert state.read_bytes().startswith(b"SQLite format 3\x00")


def test_state_in_an_unwritable_place_is_a_config_error(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a folder should be")
    result = run_cli(
        [
            "check",
            "--once",
            "--redis-url",
            "redis://127.0.0.1:1/0",
            "--state",
            str(blocker / "doorman.db"),
        ]
    )
    assert result.returncode == 3
    assert len(result.stderr.splitlines()) == 1
    assert "state_path" in result.stderr
    assert "Traceback" not in result.stderr
    assert blocker.read_text() == "a file where a folder should be"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("[1, 2]", "not an object"),
        ('{"roster": {"w-1": 5}}', "roster.w-1"),
        ('{"roster": {"w-1": {"concurrency": "four"}}}', "roster.w-1"),
        ('{"roster": {"w-1": {"last_seen": "yesterday"}}}', "last_seen"),
        ('{"observations": {"q:0": {"fingerprint": "m-1"}}}', "observations.q:0"),
        ('{"visibility_timeout": "long"}', "visibility_timeout"),
        ('{"last_discovery": true}', "last_discovery"),
        ('{"last_sample": "text"}', "last_sample"),
    ],
)
def test_a_row_of_the_wrong_shape_is_a_state_error(tmp_path, body, field):
    path = tmp_path / "doorman.db"
    doorman_database_with_a_bad_row(path)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE targets SET body = ?", (body,))
    conn.commit()
    conn.close()
    before = digest(path)
    store = SqliteStore(str(path))
    with pytest.raises(StateError) as info:
        store.load("default")
    store.close()
    assert field in str(info.value) and str(path) in str(info.value)
    assert digest(path) == before


def test_state_round_trip(tmp_path):
    store = SqliteStore(str(tmp_path / "doorman.db"))
    state = TargetState(
        last_sample={"metrics": {"total_pending": 3}},
        roster={"w-1": WorkerRecord(last_seen=10.0, concurrency=4)},
        visibility_timeout=3600.0,
        last_discovery=5.0,
    )
    committed = store.commit("default", state, 0)
    store.close()
    loaded = SqliteStore(str(tmp_path / "doorman.db")).load("default")
    assert loaded == committed and loaded.version == 1
