"""A check killed (SIGKILL) at a random step between collect and commit, over repeated runs:
the outbox holds every notification of every committed check exactly once.

Reuses tests/contract's crash driver, which forks one check per line and kills it just before
the K-th SQL statement of the state store (load, commit, delivery).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from tests.conftest import ROOT, producer
from tests.contract.test_crash import assert_consistent, cli_env, snapshot


@pytest.mark.parametrize("seed", [11, 23, 37])
def test_randomized_kills_between_collect_and_commit(seed, redis_server, tmp_path, fault_log):  # type: ignore[no-untyped-def]
    app = producer(redis_server.url)
    for _ in range(3):
        app.quick.apply_async(queue="waiting")
    state = tmp_path / "state.db"
    secret = tmp_path / "state.db.secret"
    rng = random.Random(seed)
    driver = subprocess.Popen(
        [sys.executable, "-m", "tests.contract.crash_child", redis_server.url, str(state)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=str(ROOT),
        env=cli_env(),
    )
    assert driver.stdin is not None and driver.stdout is not None
    before = snapshot(state)
    kills = 0
    try:
        for kill_at in [*(rng.randrange(0, 8) for _ in range(10)), 10_000]:
            driver.stdin.write(f"{kill_at}\n")
            driver.stdin.flush()
            ended = driver.stdout.readline().strip()
            assert ended in ("killed", "exited 0"), ended
            kills += ended == "killed"
            after = snapshot(state)
            assert_consistent(before, after, secret)
            before = after
    finally:
        driver.stdin.close()
        driver.wait(timeout=30)
    assert kills >= 4
    notes = [json.loads(body) for _, _, body in before.outbox]
    ids = [n["id"] for n in notes]
    committed = before.version
    fault_log.record(
        f"crash: {kills} random SIGKILLs (seed {seed})",
        alerts_lost=max(0, committed - len(set(ids))),
        duplicates=len(ids) - len(set(ids)),
    )
    assert committed >= 1 and len(ids) == committed == len(set(ids))
