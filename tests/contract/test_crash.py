"""A check killed at any moment leaves the SQLite state as it was, or wholly at the next version.

Workers are down and tasks wait, with no cooldown: every committed check queues exactly one
notification (a trigger, then a renotify each time). So after every kill the state file must
open, its version must be the previous one (with the very same bytes) or the next one, and the
outbox must hold exactly one notification per committed version, each once, matching the
alert state that caused it.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from chalicelib.state.sqlite import SqliteStore
from tests.conftest import ROOT, clean_env, producer

TARGET = "default"
ALERT_KEY = f"workers_down:{TARGET}"

pytestmark = pytest.mark.slow  # starts and kills check processes: the full suite only


@dataclass(frozen=True)
class Snapshot:
    version: int = 0
    body: str | None = None
    outbox: tuple[tuple[str, float, str], ...] = ()


def snapshot(path: Path) -> Snapshot:
    """What the state file holds; fails the test when it cannot be opened or read."""
    if not path.exists() or path.stat().st_size == 0:
        return Snapshot()  # killed before the file was written to
    store = SqliteStore(str(path))
    try:
        state = store.load(TARGET)  # must not raise, whatever moment the kill came at
    finally:
        store.close()
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT version, body FROM targets WHERE target = ?", (TARGET,))
        found = row.fetchone()
        outbox = conn.execute("SELECT id, created_at, body FROM outbox ORDER BY created_at")
        rows = tuple((i, float(at), body) for i, at, body in outbox.fetchall())
    finally:
        conn.close()
    if found is None:
        assert state.version == 0
        return Snapshot(outbox=rows)
    assert state.version == found[0]
    if state.version:
        alert = state.alerts[ALERT_KEY]
        assert alert.notified and alert.last_notified == (rows[-1][1] if rows else None)
    return Snapshot(found[0], found[1], rows)


def assert_consistent(before: Snapshot, after: Snapshot, secret: Path) -> None:
    assert after.version in (before.version, before.version + 1), (before.version, after.version)
    if after.version == before.version:
        assert after.body == before.body  # untouched, not half written
    notes = [json.loads(body) for _, _, body in after.outbox]
    # One notification per committed check, each exactly once: never lost, never doubled.
    assert len(notes) == after.version
    assert len({n["id"] for n in notes}) == len(notes)
    assert [n["action"] for n in notes] == ["trigger", *["renotify"] * len(notes)][: len(notes)]
    assert before.outbox == after.outbox[: len(before.outbox)]
    if secret.exists():
        assert secret.read_text().strip(), "the hash secret file is empty"


def cli_env() -> dict[str, str]:
    return clean_env(ALERT_COOLDOWN="0", DOORMAN_WORKER_TIMEOUT="0.3")


def cli_check(url: str, state: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chalicelib.cli",
            "check",
            "--once",
            "--state",
            str(state),
            "--redis-url",
            url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=str(ROOT),
        env=cli_env(),
    )


def timed_run(url: str, state: Path) -> float:
    started = time.monotonic()
    proc = cli_check(url, state)
    assert proc.wait(timeout=30) == 0
    return time.monotonic() - started


@pytest.fixture
def workers_down(redis_server):
    app = producer(redis_server.url)
    for _ in range(3):
        app.quick.apply_async(queue="waiting")
    return redis_server.url


def test_random_sigkill_of_the_check_command_never_half_writes_the_state(workers_down, tmp_path):
    url = workers_down
    # How long a first check and a later one live, on a scratch state file.
    first = timed_run(url, tmp_path / "scratch.db")
    later = timed_run(url, tmp_path / "scratch.db")

    state = tmp_path / "state.db"
    secret = tmp_path / "state.db.secret"
    rng = random.Random(20240607)
    before = snapshot(state)
    killed = 0
    # At least 15 runs, and more (40 at most) until enough were really killed mid-life: how
    # many finish before their kill depends on the machine's load.
    for run in range(40):
        if run >= 15 and killed >= 10:
            break
        lifetime = first if before.version == 0 else later
        # The first runs are killed anywhere in their life (imports included); the others in
        # the part where the check collects, commits and delivers.
        low = 0.0 if run < 5 else 0.55 * lifetime
        delay = rng.uniform(low, 1.05 * lifetime)
        proc = cli_check(url, state)
        try:
            time.sleep(delay)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                killed += 1
        finally:
            proc.wait(timeout=30)
        after = snapshot(state)
        assert_consistent(before, after, secret)
        before = after
    assert killed >= 8  # the test killed checks, it did not just watch them finish

    # And the state is still usable: an uninterrupted check commits the next version.
    timed_run(url, state)
    final = snapshot(state)
    assert_consistent(before, final, secret)
    assert final.version == before.version + 1


def test_sigkill_before_each_statement_of_the_state_store(workers_down, tmp_path):
    """Deterministic: run k dies just before the store's k-th SQL statement, k = 0, 1, ...

    Once on a new file (setting it up, first commit), then again on the existing file (the
    versioned update), each time until a run gets through all its statements.
    """
    url = workers_down
    state = tmp_path / "state.db"
    secret = tmp_path / "state.db.secret"
    driver = subprocess.Popen(
        [sys.executable, "-m", "tests.contract.crash_child", url, str(state)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=str(ROOT),
        env=cli_env(),
    )
    assert driver.stdin is not None and driver.stdout is not None
    before = snapshot(state)
    outcomes: list[str] = []
    try:
        for phase in ("new file", "existing file"):
            for kill_at in range(40):
                driver.stdin.write(f"{kill_at}\n")
                driver.stdin.flush()
                ended = driver.stdout.readline().strip()
                after = snapshot(state)
                assert_consistent(before, after, secret)
                if ended != "killed":
                    assert ended == "exited 0"
                    assert after.version == before.version + 1
                    before = after
                    break  # it ran to its end: every statement of such a run was a kill point
                outcomes.append("committed" if after.version > before.version else "kept")
                before = after
            else:
                pytest.fail(f"{phase}: a run never got past its kill point")
    finally:
        driver.stdin.close()
        driver.wait(timeout=30)
    # Kills came before, inside and after commits; the first commit of each phase came from
    # a run killed only after its COMMIT statement.
    assert outcomes.count("committed") >= 2 and outcomes.count("kept") >= 15, outcomes


def test_a_file_whose_setup_was_cut_short_is_set_up_by_the_next_check(tmp_path):
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")  # what a check killed at that moment left
    conn.close()
    assert path.stat().st_size > 0
    store = SqliteStore(str(path))
    try:
        assert store.load(TARGET).version == 0
        assert store.commit(TARGET, store.load(TARGET), 0).version == 1
    finally:
        store.close()


def test_an_empty_database_of_another_program_is_still_left_alone(tmp_path):
    from chalicelib.state import StateError

    path = tmp_path / "theirs.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 7")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StateError, match="another program"):
        SqliteStore(str(path)).load(TARGET)
    assert path.read_bytes() == before


def test_an_empty_secret_file_left_by_a_kill_is_replaced_by_a_real_secret(tmp_path):
    from chalicelib.state.sqlite import local_secret

    secret = tmp_path / "state.db.secret"
    secret.write_text("")  # created, then killed before it was written (older versions)
    made = local_secret(str(tmp_path / "state.db"))
    assert len(made) == 64
    assert local_secret(str(tmp_path / "state.db")) == made
    assert secret.read_text().strip() == made
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.db.secret"]
