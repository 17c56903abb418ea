"""The state database, its WAL and shared-memory files and the hash secret are private.

The real command runs in a subprocess under a permissive umask (000) and the usual one (022):
every file it creates is 0600 and the folder it creates is 0700. The WAL and SHM files exist
only while a connection is open (the last close checkpoints and deletes them), so they are
looked at while ``doorman check`` sleeps between two checks. A file made earlier that other
users can read gets one escaped warning line on stderr, and is left as it is.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, clean_env, wait_until

ENV = {"DOORMAN_WORKER_TIMEOUT": "0.2"}  # no worker runs: keep the discovery broadcast short


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def doorman(args: list[str], umask: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "chalicelib.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(**ENV),
        cwd=str(ROOT),
        umask=umask,
    )


def run(args: list[str], umask: int = 0o022) -> tuple[int, str]:
    """Run the command to its end; returns the exit code and stderr."""
    proc = doorman(args, umask)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err.decode("utf-8")


@pytest.mark.parametrize("umask", [0o000, 0o022], ids=["umask000", "umask022"])
def test_new_files_are_private_whatever_the_umask(
    redis_server: Any, tmp_path: Path, umask: int
) -> None:
    folder = tmp_path / "new" / "doorman"  # does not exist yet: the command creates it
    state = folder / "state.db"
    proc = doorman(
        ["check", "--interval", "300", "--redis-url", redis_server.url, "--state", str(state)],
        umask,
    )
    try:
        wal, shm = Path(f"{state}-wal"), Path(f"{state}-shm")
        # After the first check the connection stays open while the command waits: the WAL
        # and SHM files exist now, as SQLite created them.
        wait_until(lambda: wal.exists() and shm.exists(), 30, "the WAL and SHM files")
        secret = Path(f"{state}.secret")
        modes = {p.name: oct(mode(p)) for p in (state, wal, shm, secret)}
        assert set(modes.values()) == {"0o600"}, modes
        assert mode(folder) == 0o700, oct(mode(folder))
        # Nothing else in the folder (no leftover scratch file) and nothing other users can read.
        leftovers = {p.name: oct(mode(p)) for p in folder.iterdir() if mode(p) & 0o077}
        assert not leftovers, leftovers
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, err.decode()
    assert b"WARNING" not in err, err.decode()  # its own files never set off the warning
    assert mode(state) == 0o600


def test_existing_files_readable_by_others_get_one_escaped_warning(
    redis_server: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "st\x1b[31mate\u202e"  # the path is printed: it must come out escaped
    folder.mkdir()
    state = folder / "state.db"
    args = ["check", "--once", "--redis-url", redis_server.url, "--state", str(state)]
    code, err = run(args)
    assert code == 0, err
    assert "WARNING" not in err, err
    secret = Path(f"{state}.secret")
    state.chmod(0o644)
    secret.chmod(0o640)

    code, err = run(args)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "WARNING" in line]
    assert len(warnings) == 2, err
    about_secret = [line for line in warnings if "state.db.secret" in line]
    about_state = [line for line in warnings if "state.db.secret" not in line]
    assert len(about_secret) == 1 and "0640" in about_secret[0], err
    assert len(about_state) == 1 and "state.db" in about_state[0] and "0644" in about_state[0]
    assert "\x1b" not in err and "\u202e" not in err, err
    assert all("st\\x1b[31mate\\u202e" in line for line in warnings), err
    # Warned about, not changed: they are the operator's files.
    assert (mode(state), mode(secret)) == (0o644, 0o640)
    # A check that created its files privately is quiet again once they are fixed.
    state.chmod(0o600)
    secret.chmod(0o600)
    code, err = run(args)
    assert code == 0 and "WARNING" not in err, err
