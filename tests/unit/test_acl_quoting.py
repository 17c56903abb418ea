"""The quoting doorman acl prints a key prefix with: pasteable, and never raw bytes."""

from __future__ import annotations

from chalicelib.acl import _redis_cli_quote, _shell_quote


def test_redis_cli_quoting() -> None:
    assert _redis_cli_quote("~app:*") == "~app:*"
    assert _redis_cli_quote('a"b\\c') == '"a\\"b\\\\c"'
    assert _redis_cli_quote("é\x1b") == '"\\xc3\\xa9\\x1b"'
    assert _redis_cli_quote("") == '""'


def test_shell_quoting() -> None:
    assert _shell_quote("a b") == "'a b'"
    assert _shell_quote("it's\x1b") == "$'it\\'s\\x1b'"
    assert "\x1b" not in _shell_quote("\x1b[31m")
