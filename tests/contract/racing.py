"""Two checks of one target at once: the pieces each racer runs (in a process or a thread)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from chalicelib.alerting import Notification
from chalicelib.state.base import StateStore, TargetState

TARGET = "default"


class RendezvousStore:
    """A store that, on commit, waits until the other check has reached its commit too.

    Both checks have then loaded (``run_check`` loads first), so both hold the same version:
    the race the conditional commit exists for. ``serialize`` (a lock) makes the two commits
    reach the backing store one after the other, in whichever order the racers take it.
    """

    def __init__(self, inner: StateStore, barrier: Any, serialize: Any = None) -> None:
        self.inner = inner
        self.barrier = barrier
        self.serialize = serialize

    def commit(
        self,
        target: str,
        state: TargetState,
        expected_version: int,
        outbox: Sequence[Notification] = (),
    ) -> TargetState:
        self.barrier.wait(timeout=60)
        if self.serialize is None:
            return self.inner.commit(target, state, expected_version, outbox)
        with self.serialize:
            return self.inner.commit(target, state, expected_version, outbox)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # everything but commit is the backing store's


class OneAtATimeCollector:
    """Collects under a lock shared by the racing threads of one process.

    Two collectors broadcasting at once from one process share kombu's process-wide producer
    pool and can block each other for good; each check runs in its own process in real use.
    Only the collection is taken in turn: both checks still load before either commits.
    """

    def __init__(self, inner: Any, lock: Any) -> None:
        self.inner = inner
        self.lock = lock

    def collect(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return self.inner.collect(*args, **kwargs)

    def close(self) -> None:
        self.inner.close()


def check_with(redis_url: str, store: StateStore, collect_lock: Any = None) -> dict[str, Any]:
    """One real check of ``redis_url`` through ``store``; returns its payload."""
    from chalicelib.collect import Collector
    from chalicelib.runner import Deps, run_check
    from chalicelib.sanitize import Hasher
    from chalicelib.settings import load_settings

    # No worker runs: the discovery broadcast waits its whole timeout, keep it short.
    settings = load_settings(
        environ={}, overrides={"redis_url": redis_url, "worker_timeout_seconds": 0.3}
    )
    collector: Any = Collector(settings)
    if collect_lock is not None:
        collector = OneAtATimeCollector(collector, collect_lock)
    deps = Deps(collector=collector, store=store, hasher=Hasher("k"))
    try:
        return run_check(settings, deps).payload
    finally:
        deps.collector.close()
        store.close()


def sqlite_racer(redis_url: str, state_path: str, barrier: Any, results: Any) -> None:
    """Entry point of a racing process: a check on the shared SQLite file."""
    from chalicelib.state.sqlite import SqliteStore

    try:
        payload = check_with(redis_url, RendezvousStore(SqliteStore(state_path), barrier))
        results.put(("ok", payload))
    except BaseException as exc:  # reported to the test, which fails with it
        results.put(("error", repr(exc)))


def dynamodb_racer(
    redis_url: str,
    table: str,
    client: Any,
    barrier: threading.Barrier,
    serialize: Any,
    collect_lock: Any,
    results: list[tuple[str, Any]],
) -> None:
    """Body of a racing thread: a check on the shared DynamoDB table."""
    from chalicelib.state.dynamodb import DynamoStore

    store = RendezvousStore(DynamoStore(table, client), barrier, serialize)
    try:
        results.append(("ok", check_with(redis_url, store, collect_lock)))
    except BaseException as exc:  # reported to the test, which fails with it
        results.append(("error", repr(exc)))
