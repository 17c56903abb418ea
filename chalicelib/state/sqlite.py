"""The local state store: one SQLite file (``--state``), safe for concurrent checks."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from pathlib import Path

from .base import StateConflict, StateError, TargetState

_APPLICATION_ID = 0x446F6F72  # "Door"
_SQLITE_HEADER = b"SQLite format 3\x00"


class SqliteStore:
    """Keeps each target's state in one row, updated under its version number."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        path = Path(self.path)
        existed = path.exists() and path.stat().st_size > 0
        if existed:
            _check_is_ours(path)
        else:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StateError(
                    f"state file {self.path}: cannot create its folder ({exc.strerror})"
                ) from None
        try:
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 10000")
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            if existed and app_id != _APPLICATION_ID:
                conn.close()
                raise StateError(
                    f"state file {self.path}: is an SQLite database of another program;"
                    " Doorman leaves it untouched (pass --state with another path)"
                )
            if not existed:
                # Only a new file is set up: opening an existing one must not change a byte
                # of it (it may be unusable, and is then left as it is).
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS targets ("
                    " target TEXT PRIMARY KEY, version INTEGER NOT NULL,"
                    " body TEXT NOT NULL, updated_at REAL NOT NULL)"
                )
            elif (
                conn.execute(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'targets'"
                ).fetchone()[0]
                != 1
            ):
                conn.close()
                raise StateError(
                    f"state file {self.path}: has no 'targets' table; it was left as it is"
                )
        except sqlite3.DatabaseError as exc:
            raise StateError(
                f"state file {self.path}: unreadable ({exc}); it was left as it is"
            ) from None
        self._conn = conn
        return conn

    def load(self, target: str) -> TargetState:
        conn = self._connect()
        try:
            row = conn.execute(
                "SELECT version, body FROM targets WHERE target = ?", (target,)
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            raise StateError(
                f"state file {self.path}: unreadable ({exc}); it was left as it is"
            ) from None
        if row is None:
            return TargetState()
        try:
            body = json.loads(row[1])
        except (TypeError, ValueError):
            raise StateError(
                f"state file {self.path}: the row of target '{target}' is not JSON;"
                " it was left as it is"
            ) from None
        try:
            return TargetState.from_json(int(row[0]), body)
        except (StateError, TypeError, ValueError) as exc:
            raise StateError(
                f"state file {self.path}: the row of target '{target}': {exc}; it was left as it is"
            ) from None

    def commit(self, target: str, state: TargetState, expected_version: int) -> TargetState:
        conn = self._connect()
        body = json.dumps(state.to_json(), separators=(",", ":"), sort_keys=True)
        new_version = expected_version + 1
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if expected_version == 0:
                    cur = conn.execute(
                        "INSERT OR IGNORE INTO targets (target, version, body, updated_at)"
                        " VALUES (?, ?, ?, ?)",
                        (target, new_version, body, time.time()),
                    )
                else:
                    cur = conn.execute(
                        "UPDATE targets SET version = ?, body = ?, updated_at = ?"
                        " WHERE target = ? AND version = ?",
                        (new_version, body, time.time(), target, expected_version),
                    )
                if cur.rowcount != 1:
                    conn.execute("ROLLBACK")
                    raise StateConflict(
                        f"target '{target}' was updated by another check (expected version"
                        f" {expected_version})"
                    )
                conn.execute("COMMIT")
            except sqlite3.DatabaseError:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            raise StateError(f"state file {self.path}: cannot be written ({exc})") from None
        return TargetState(
            version=new_version,
            last_sample=state.last_sample,
            roster=state.roster,
            observations=state.observations,
            visibility_timeout=state.visibility_timeout,
            last_discovery=state.last_discovery,
        )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _check_is_ours(path: Path) -> None:
    try:
        with path.open("rb") as handle:
            header = handle.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise StateError(f"state file {path}: cannot be read ({exc.strerror})") from None
    if header != _SQLITE_HEADER:
        raise StateError(
            f"state file {path}: is not a Doorman state database (corrupt or another file);"
            " it was left as it is - move it away or pass --state with another path"
        )


def local_secret(state_path: str) -> str:
    """The hashing secret kept beside a local state file, created (mode 0600) on first use."""
    secret_path = Path(state_path).with_name(Path(state_path).name + ".secret")
    try:
        text = secret_path.read_text(encoding="utf-8").strip()
        if text:
            return text
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StateError(f"hash secret {secret_path}: cannot be read ({exc.strerror})") from None
    secret = secrets.token_hex(32)
    try:
        secret_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return secret_path.read_text(encoding="utf-8").strip()  # another check just made it
    except OSError as exc:
        raise StateError(f"hash secret {secret_path}: cannot be created ({exc.strerror})") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secret + "\n")
    return secret
