"""The local state store: one SQLite file (``--state``), safe for concurrent checks."""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from ..alerting import Notification, Silence
from ..text import safe_text
from .base import (
    OUTBOX_TTL_SECONDS,
    OutboxItem,
    StateConflict,
    StateError,
    TargetState,
    decode_silences,
)

_APPLICATION_ID = 0x446F6F72  # "Door"
_SQLITE_HEADER = b"SQLite format 3\x00"
# The state (task and worker pseudonyms, queue names, alert history) and the hash secret are
# the operator's alone: files 0600 and a folder made for them 0700, whatever the umask.
PRIVATE_FILE = 0o600
PRIVATE_FOLDER = 0o700

log = logging.getLogger("doorman")

_UNREADABLE = "unreadable ({why}); it was left as it is"


class SqliteStore:
    """Keeps each target's state in one row, updated under its version number."""

    def __init__(self, path: str, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._conn: sqlite3.Connection | None = None

    @contextmanager
    def _translated(self, failure: str) -> Iterator[None]:
        """Turn an SQLite error inside the block into StateError("state file <path>: <failure>
        (<why>)"); ``failure`` says what could not be done, and may hold ``{why}``."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            text = failure if "{why}" in failure else failure + " ({why})"
            raise StateError(f"state file {self.path}: " + text.format(why=exc)) from None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        existed = self._prepare_file()
        with self._translated(_UNREADABLE):
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 10000")
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            if existed and app_id != _APPLICATION_ID and not _unfinished_setup(conn):
                conn.close()
                raise StateError(
                    f"state file {self.path}: is an SQLite database of another program;"
                    " Doorman leaves it untouched (pass --state with another path)"
                )
            if app_id != _APPLICATION_ID:
                # Only a new file is set up (or one whose setup was cut short: still empty):
                # opening an existing one must not change a byte of it (it may be unusable,
                # and is then left as it is).
                _set_up(conn)
            elif not _has_targets_table(conn):
                conn.close()
                raise StateError(
                    f"state file {self.path}: has no 'targets' table; it was left as it is"
                )
            else:
                _create_tables(conn)  # Doorman's own file from before the outbox existed
        self._conn = conn
        return conn

    def _prepare_file(self) -> bool:
        """Check the state file before SQLite opens it, or create it privately when missing.

        Returns True when it existed with content (then it must be a Doorman database)."""
        path = Path(self.path)
        existed = path.exists() and path.stat().st_size > 0
        if existed:
            _check_is_ours(path)
        if path.exists():
            # SQLite creates the WAL and SHM files with the database's mode: a database made
            # readable earlier exposes them too. The operator's files are not changed.
            for item, what in ((path, "state file"), *_sidecars(path)):
                warn_if_exposed(item, what)
            return existed
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER)
        except OSError as exc:
            raise StateError(
                f"state file {self.path}: cannot create its folder ({exc.strerror})"
            ) from None
        try:
            # Created here, 0600, before SQLite opens it (SQLite would create it 0644
            # less the umask); its WAL and SHM files then get the same mode from SQLite.
            create_private(path)
        except OSError as exc:
            raise StateError(
                f"state file {self.path}: cannot be created ({exc.strerror})"
            ) from None
        return existed

    def load(self, target: str) -> TargetState:
        conn = self._connect()
        with self._translated(_UNREADABLE):
            row = conn.execute(
                "SELECT version, body FROM targets WHERE target = ?", (target,)
            ).fetchone()
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

    def commit(
        self,
        target: str,
        state: TargetState,
        expected_version: int,
        outbox: Sequence[Notification] = (),
    ) -> TargetState:
        conn = self._connect()
        body = json.dumps(state.to_json(), separators=(",", ":"), sort_keys=True)
        new_version = expected_version + 1
        now = self._clock()
        with self._translated("cannot be written"):
            conn.execute("BEGIN IMMEDIATE")
            try:
                if expected_version == 0:
                    cur = conn.execute(
                        "INSERT OR IGNORE INTO targets (target, version, body, updated_at)"
                        " VALUES (?, ?, ?, ?)",
                        (target, new_version, body, now),
                    )
                else:
                    cur = conn.execute(
                        "UPDATE targets SET version = ?, body = ?, updated_at = ?"
                        " WHERE target = ? AND version = ?",
                        (new_version, body, now, target, expected_version),
                    )
                if cur.rowcount != 1:
                    conn.execute("ROLLBACK")
                    raise StateConflict(
                        f"target '{target}' was updated by another check (expected version"
                        f" {expected_version})"
                    )
                conn.executemany(
                    "INSERT OR IGNORE INTO outbox (id, target, created_at, body, expires_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [
                        (
                            n.id,
                            target,
                            n.at,
                            json.dumps(n.to_json(), separators=(",", ":")),
                            n.at + OUTBOX_TTL_SECONDS,
                        )
                        for n in outbox
                    ],
                )
                conn.execute("DELETE FROM outbox WHERE expires_at < ?", (now,))
                conn.execute("COMMIT")
            except sqlite3.DatabaseError:
                conn.execute("ROLLBACK")
                raise
        return replace(state, version=new_version)

    def undelivered(self, target: str, limit: int = 100) -> list[OutboxItem]:
        conn = self._connect()
        with self._translated("outbox unreadable"):
            rows = conn.execute(
                "SELECT id, target, created_at, body, channels FROM outbox"
                " WHERE target = ? AND delivered_at IS NULL ORDER BY created_at, id LIMIT ?",
                (target, limit),
            ).fetchall()
        items = []
        for row in rows:
            try:
                notification = Notification.from_json(json.loads(row[3]))
            except (TypeError, ValueError, KeyError):
                continue  # a row this version cannot read is left for a human to look at
            done = frozenset(c for c in (row[4] or "").split(",") if c)
            items.append(OutboxItem(row[0], row[1], float(row[2]), notification, done))
        return items

    def mark_delivered(self, items: Sequence[OutboxItem], now: float) -> None:
        conn = self._connect()
        with self._translated("cannot be written"):
            conn.executemany(
                "UPDATE outbox SET delivered_at = ? WHERE id = ? AND delivered_at IS NULL",
                [(now, item.id) for item in items],
            )

    def mark_channel(self, item: OutboxItem, channel: str) -> None:
        done = ",".join(sorted({*item.channels_done, channel}))
        conn = self._connect()
        with self._translated("cannot be written"):
            conn.execute(
                "UPDATE outbox SET channels = ? WHERE id = ? AND delivered_at IS NULL",
                (done, item.id),
            )

    def add_silence(self, silence: Silence) -> None:
        conn = self._connect()
        with self._translated("cannot be written"):
            conn.execute(
                "INSERT OR REPLACE INTO silences (id, ends_at, body) VALUES (?, ?, ?)",
                (silence.id, silence.ends_at, json.dumps(silence.to_json())),
            )

    def silences(self, now: float | None = None) -> list[Silence]:
        conn = self._connect()
        with self._translated("silences unreadable"):
            rows = conn.execute("SELECT body FROM silences ORDER BY ends_at, id").fetchall()
        return decode_silences((body for (body,) in rows), now)

    def remove_silence(self, silence_id: str) -> bool:
        conn = self._connect()
        with self._translated("cannot be written"):
            cur = conn.execute("DELETE FROM silences WHERE id = ?", (silence_id,))
        return cur.rowcount == 1

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _unfinished_setup(conn: sqlite3.Connection) -> bool:
    """An SQLite file with nothing in it: a Doorman setup cut short (or nobody's data)."""
    tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    user_version = conn.execute("PRAGMA user_version").fetchone()[0]
    return bool(tables == 0 and user_version == 0)


def _set_up(conn: sqlite3.Connection) -> None:
    """Make ``conn``'s file a Doorman state database, in one transaction: a check killed in
    the middle leaves a file that is either empty or complete."""
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS targets ("
            " target TEXT PRIMARY KEY, version INTEGER NOT NULL,"
            " body TEXT NOT NULL, updated_at REAL NOT NULL)"
        )
        _create_tables(conn)
        conn.execute("COMMIT")
    except sqlite3.DatabaseError:
        conn.execute("ROLLBACK")
        raise


def _has_targets_table(conn: sqlite3.Connection) -> bool:
    found = conn.execute(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'targets'"
    ).fetchone()[0]
    return bool(found == 1)


def _create_tables(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS outbox ("
        " id TEXT PRIMARY KEY, target TEXT NOT NULL, created_at REAL NOT NULL,"
        " body TEXT NOT NULL, expires_at REAL NOT NULL, delivered_at REAL, channels TEXT)"
    )
    columns = {row[1] for row in conn.execute("PRAGMA table_info(outbox)")}
    if "channels" not in columns:  # a state file written before per-channel marks
        conn.execute("ALTER TABLE outbox ADD COLUMN channels TEXT")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS silences (id TEXT PRIMARY KEY, ends_at REAL NOT NULL,"
        " body TEXT NOT NULL)"
    )


def _sidecars(path: Path) -> tuple[tuple[Path, str], ...]:
    """The WAL and shared-memory files SQLite keeps beside ``path`` (they may not exist)."""
    return (
        (path.with_name(path.name + "-wal"), "state file WAL"),
        (path.with_name(path.name + "-shm"), "state file shared memory"),
    )


def create_private(path: Path) -> bool:
    """Create ``path`` empty with mode 0600 whatever the umask; returns False if it existed.

    ``O_EXCL``: a file that appeared meanwhile (another check creating it, privately too) is
    left alone, and a symbolic link planted at ``path`` is not followed.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, PRIVATE_FILE)  # a umask such as 0277 would have left it unwritable
    finally:
        os.close(fd)
    return True


def warn_if_exposed(path: Path, what: str) -> bool:
    """Log one warning line when ``path`` exists and its group or others have any access.

    Returns True when it warned. The path is escaped: it is printed to a terminal.
    """
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return False
    if not mode & 0o077:
        return False
    log.warning(
        "%s %s is open to other users (mode %04o); Doorman creates it 0600: run chmod 600 on it",
        what,
        safe_text(path),
        mode,
    )
    return True


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
            warn_if_exposed(secret_path, "hash secret")
            return text
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StateError(f"hash secret {secret_path}: cannot be read ({exc.strerror})") from None
    secret = secrets.token_hex(32)
    # Written whole under a temporary name, then linked into place (which never replaces a
    # file): a check killed half way leaves no secret file, or a complete one, never an empty
    # file that would make every later hash keyless.
    scratch = secret_path.with_name(f"{secret_path.name}.{os.getpid()}.tmp")
    try:
        secret_path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER)
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
        os.fchmod(fd, PRIVATE_FILE)  # exactly 0600, whatever the umask
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(secret + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(scratch, secret_path)
            return secret
        except FileExistsError:
            pass  # another check just made it, or an empty one was left by an older version
        text = secret_path.read_text(encoding="utf-8").strip()
        if text:
            warn_if_exposed(secret_path, "hash secret")
            return text
        os.replace(scratch, secret_path)
        return secret_path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise StateError(f"hash secret {secret_path}: cannot be created ({exc.strerror})") from None
    finally:
        scratch.unlink(missing_ok=True)
