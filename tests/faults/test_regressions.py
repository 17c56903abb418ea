"""Rows that once failed: a product bug each, now fixed, kept so they cannot come back.

- A ``rediss://`` URL to a server without TLS was reported as a plain timeout; the cause
  named is now TLS.
- After a worker died, every other check heard no worker at all: a reply wait that timed out
  left a BRPOP in flight on a pooled connection, and the next exchange waited on it. Remote
  control now uses a connection of its own each time.
"""

from __future__ import annotations

from pathlib import Path

from chalicelib.embedded import RedisServer, wait_for_workers
from chalicelib.sanitize import Hasher
from tests.faults.helpers import SECRET, error_kinds, local_check


def test_tls_expected_but_not_offered_is_named_tls(tmp_path: Path, fault_log) -> None:  # type: ignore[no-untyped-def]
    """A rediss:// URL to a plain redis-server: the handshake stalls and the error says only
    'timeout' ('Redis did not answer within 1 s'), not that TLS was expected and not offered."""
    server = RedisServer().start()
    try:
        url = f"rediss://127.0.0.1:{server.port}/0?ssl_cert_reqs=none"
        payload = local_check(url, tmp_path / "state.db")
    finally:
        server.stop()
    fault_log.record("regression: TLS not offered is named 'tls'")
    assert error_kinds(payload, "redis") == ["tls"], payload["errors"]


def test_a_renamed_worker_stays_online_while_the_old_name_is_forgotten(  # type: ignore[no-untyped-def]
    redis_server, workers, tmp_path, fault_log
):
    """After a restart under a new name, the live, idle new worker stays online in every
    check, back to back, while the old name goes offline and is forgotten."""
    hasher = Hasher(SECRET)
    state = tmp_path / "state.db"
    forget = {"worker_forget_after_seconds": 1.0}
    old = workers.start("w1@old", concurrency=1)
    local_check(redis_server.url, state, **forget)
    old.kill()
    workers.start("w1@new", concurrency=1, wait=False)
    wait_for_workers(redis_server.url, ["w1@new"], timeout=45)
    seen = []
    for _ in range(5):  # back to back, as a short CHECK_INTERVAL would run them
        payload = local_check(redis_server.url, state, **forget)
        seen.append({w["id_hash"]: w["status"] for w in payload["workers"]})
    fault_log.record("regression: renamed worker stays online")
    assert all(s.get(hasher.worker("w1@new")) == "online" for s in seen), seen
