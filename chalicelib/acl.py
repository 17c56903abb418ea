"""The least a Redis user needs to be Doorman: ``doorman acl`` and the audit's rights check.

Found by recording (MONITOR and ACL LOG) what a check, an ``audit --deep`` and a
notification round send, redis-py and kombu 5.7 together:

* read, under the key prefix: SCAN (binding sets), SSCAN and SCARD (``_kombu.binding.*``),
  LLEN, LINDEX and TYPE (queues and their priority lists, inside Doorman's scripts),
  EXISTS (priority lists named with another separator; kombu's binding sweep), ZCARD,
  ZCOUNT, ZRANGEBYSCORE, HSTRLEN and HGET (``unacked_index``/``unacked``, inside a script),
  INFO;
  scripts by EVALSHA and SCRIPT LOAD/EXISTS (never EVAL); TIME inside kombu's scripts;
* write, only Doorman's remote-control reply keys: its reply queue
  ``doorman-<random>.reply.<exchange>`` and its priority lists (BRPOP, DEL, LLEN), the reply
  binding ``_kombu.binding.reply.*`` and ``_kombu.binding_permanent.reply.*`` (SADD, SREM,
  DEL by kombu's sweep), and kombu's ``_kombu.binding_deadlines`` (ZADD, ZREM);
* publish only on the pidbox fanout channels ``<prefix>/<db>.<exchange>.pidbox``;
* PING, SELECT, HELLO, and MULTI/EXEC/DISCARD (kombu's transactions; the rights check).

CONFIG GET is left out on purpose: it reads the server's password (``requirepass``); the
audit then reads persistence from INFO. Anything else, such as FLUSHALL, CONFIG SET, DEL or
LPOP on a queue, SET on another key, is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .settings import Settings

# Commands Doorman's user is granted (Redis 7 names; a subcommand as command|sub).
COMMANDS = (
    # connection
    "ping",
    "select",
    "hello",
    "multi",
    "exec",
    "discard",
    # reading the broker
    "info",
    "scan",
    "sscan",
    "scard",
    "type",
    "exists",
    "llen",
    "lindex",
    "zcard",
    "zcount",
    "zrangebyscore",
    "hstrlen",
    "hget",
    "time",
    "evalsha",
    "script|load",
    "script|exists",
    # remote control: its own reply keys and the pidbox channel only (key patterns below)
    "sadd",
    "srem",
    "zadd",
    "zrem",
    "del",
    "brpop",
    "publish",
)

REPLY_QUEUES = "doorman-*.reply.*"  # see worker_probe.REPLY_OID_PREFIX


def _glob(text: str) -> str:
    """``text`` as a literal in a Redis glob pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


@dataclass(frozen=True)
class AclRules:
    """The rules of Doorman's user, without the password."""

    commands: tuple[str, ...]
    read_keys: tuple[str, ...]  # %R~ patterns
    write_keys: tuple[str, ...]  # ~ patterns (read and write)
    channels: tuple[str, ...]  # & patterns

    def tokens(self) -> list[str]:
        """The access rules as ``ACL SETUSER`` arguments (after the user's name and its
        ``on``/password), starting from nothing."""
        return [
            "resetkeys",
            "resetchannels",
            "-@all",
            *("+" + c for c in self.commands),
            *("%R~" + k for k in self.read_keys),
            *("~" + k for k in self.write_keys),
            *("&" + c for c in self.channels),
        ]

    def access_string(self) -> str:
        """ElastiCache's access string (RBAC): the same rules, ``on``, no password."""
        return " ".join(["on", *self.tokens()[2:]])


def rules(prefix: str = "", db: int = 0) -> AclRules:
    """The least rights for key prefix ``prefix`` (kombu's global_keyprefix) on database
    ``db``."""
    p = _glob(prefix)
    return AclRules(
        commands=COMMANDS,
        read_keys=(p + "*",),
        write_keys=(
            p + REPLY_QUEUES,
            p + "_kombu.binding.reply.*",
            p + "_kombu.binding_permanent.reply.*",
            p + "_kombu.binding_deadlines",
        ),
        channels=(f"{p}/{db}.*.pidbox",),
    )


def _redis_cli_quote(token: str) -> str:
    """``token`` as redis-cli reads it: bare, or double-quoted with \\xHH for anything not
    printable ASCII (a key prefix may hold any byte)."""
    if token and re.fullmatch(r"[!#-&(-\[\]-~]+", token):
        return token
    return '"' + _escaped(token, '"\\') + '"'


def _escaped(token: str, specials: str) -> str:
    """``token``'s UTF-8 bytes: printable ASCII as is (``specials`` backslashed), every other
    byte as ``\\xHH``; what both quotings below write between their quotes."""
    out = []
    for byte in token.encode("utf-8"):
        char = chr(byte)
        if char in specials:
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out)


def _shell_quote(token: str) -> str:
    """``token`` for a POSIX shell; bytes that are not printable ASCII as ``$'\\xHH'`` (never
    raw on a terminal)."""
    import shlex

    if all(0x20 <= ord(c) < 0x7F for c in token):
        return shlex.quote(token)
    return "$'" + _escaped(token, "'\\") + "'"


def render(found: AclRules, user: str, form: str, *, prefix: str, db: int) -> str:
    """What ``doorman acl`` prints: ``redis`` (a line to paste into redis-cli as an admin),
    ``shell`` (a redis-cli command reading the password from $DOORMAN_REDIS_PASSWORD) or
    ``elasticache`` (aws elasticache commands for a user and user group)."""
    what = f"key prefix {prefix!r}, database {db}"
    tokens = found.tokens()
    if form == "redis":
        line = " ".join(
            _redis_cli_quote(t) for t in ["ACL", "SETUSER", user, "reset", "on", ">PASSWORD"]
        )
        return (
            f"# Doorman's Redis user ({what}); Redis 7 or later. Paste into redis-cli as an\n"
            "# admin, with the user's password in place of PASSWORD:\n"
            + line
            + " "
            + " ".join(_redis_cli_quote(t) for t in tokens)
            + "\n"
        )
    if form == "shell":
        args = " ".join(_shell_quote(t) for t in tokens)
        return (
            f"# Doorman's Redis user ({what}); Redis 7 or later. Run as an admin:\n"
            f'redis-cli -u "$REDIS_ADMIN_URL" ACL SETUSER {_shell_quote(user)} reset on'
            f' ">$DOORMAN_REDIS_PASSWORD" {args}\n'
        )
    if form == "elasticache":
        access = _shell_quote(found.access_string())
        name = _shell_quote(user)
        return (
            f"# Doorman's ElastiCache user ({what}); engine 7 or later.\n"
            "# With a password (kept in SSM, see README):\n"
            f"aws elasticache create-user --user-id {name} --user-name {name} --engine redis"
            f' --passwords "$DOORMAN_REDIS_PASSWORD" --access-string {access}\n'
            "# Or with IAM authentication (redis_auth: iam; user id and name must match):\n"
            f"aws elasticache create-user --user-id {name} --user-name {name} --engine redis"
            f" --authentication-mode Type=iam --access-string {access}\n"
            "# A user group holding it (and the default user, which ElastiCache requires),\n"
            "# then attach the group to the replication group:\n"
            "aws elasticache create-user-group --user-group-id doorman-group --engine redis"
            f" --user-ids default {name}\n"
            'aws elasticache modify-replication-group --replication-group-id "$CACHE_ID"'
            " --user-group-ids-to-add doorman-group --apply-immediately\n"
        )
    raise ValueError(f"unknown form {form!r}")


# --- what the audit looks for ------------------------------------------------------------


def _probes(prefix: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Commands Doorman never needs, each as it would be sent (queued, never run)."""
    queue = prefix + "celery"
    return (
        ("FLUSHALL", ("FLUSHALL",)),
        ("FLUSHDB", ("FLUSHDB",)),
        ("CONFIG SET", ("CONFIG", "SET", "maxmemory-policy", "noeviction")),
        ("DEL on a queue", ("DEL", queue)),
        ("LPOP on a queue", ("LPOP", queue)),
        ("SET on any key", ("SET", prefix + "doorman:rights-check", "x")),
        ("KEYS", ("KEYS", prefix + "doorman:rights-check")),
    )


def excess_rights(client: Any, prefix: str) -> tuple[str, ...] | None:
    """The probes of :func:`_probes` this user may run, found without running any: each is
    queued inside MULTI (Redis checks the ACL when it queues a command) and the whole
    transaction is DISCARDed. None when it cannot tell (MULTI itself refused).

    Raises redis errors other than a refused command (Redis unreachable).
    """
    import redis

    pool = client.connection_pool
    conn = pool.get_connection()
    allowed: list[str] = []
    clean = False
    try:
        conn.send_command("MULTI")
        try:
            conn.read_response()
        except redis.ResponseError:
            clean = True  # nothing was queued
            return None
        for name, command in _probes(prefix):
            conn.send_command(*command)
            try:
                reply = conn.read_response()
            except redis.ResponseError:
                continue  # NOPERM (or a command this server does not have)
            if reply in (b"QUEUED", "QUEUED"):
                allowed.append(name)
        conn.send_command("DISCARD")
        conn.read_response()
        clean = True
    finally:
        if not clean:
            conn.disconnect()  # Redis drops a transaction with its connection
        pool.release(conn)
    return tuple(allowed)


def excess_rights_of(settings: Settings) -> tuple[str, ...] | None:
    """:func:`excess_rights` over a connection of its own to the broker of ``settings``."""
    from .access import broker_access
    from .collect.redis_probe import connect

    client = connect(settings.broker_url, settings.redis_timeout_seconds, broker_access(settings))
    try:
        return excess_rights(client, settings.global_keyprefix)
    finally:
        client.close()
