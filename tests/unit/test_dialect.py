"""The broker's dialect: what is read from a worker's transport options, what is guessed
from binding members, and what the state keeps."""

from __future__ import annotations

import json

import pytest

from chalicelib.collect.redis_probe import guess_separator
from chalicelib.collect.replies import reduce_dialect
from chalicelib.model import KOMBU_PRIORITY_STEPS, KOMBU_SEP, Dialect
from chalicelib.settings import ConfigError, load_settings


def test_a_worker_on_kombus_defaults_reports_them() -> None:
    assert reduce_dialect({"visibility_timeout": 3600}) == Dialect(
        sep=KOMBU_SEP,
        priority_steps=KOMBU_PRIORITY_STEPS,
        global_keyprefix="",
        queue_order_strategy="round_robin",
    )


def test_the_docs_priority_setup_is_read() -> None:
    options = {"priority_steps": list(range(10)), "sep": ":", "queue_order_strategy": "priority"}
    assert reduce_dialect(options) == Dialect(
        sep=":",
        priority_steps=tuple(range(10)),
        global_keyprefix="",
        queue_order_strategy="priority",
    )


def test_only_the_four_shape_options_are_kept_and_odd_values_fall_back() -> None:
    options = {
        "password": "PLANTED-pw-1",
        "sentinel_kwargs": {"password": "PLANTED-pw-2"},
        "sep": "x" * 17,  # longer than any separator: not believed
        "priority_steps": [0, "3", True],
        "queue_order_strategy": "PLANTED-order",
        "global_keyprefix": 42,
    }
    dialect = reduce_dialect(options)
    assert "PLANTED" not in json.dumps(dialect.to_json())
    assert dialect == reduce_dialect({})


@pytest.mark.parametrize(
    ("members", "sep"),
    [
        ([b"celery\x06\x16\x06\x16celery"], b"\x06\x16"),
        ([b"celery::celery", b"held::held"], b":"),
        ([b"a||a"], b"|"),
        ([b"emails.high..emails.high"], b"."),
        ([b"::celery@host.celery.pidbox"], None),  # a pidbox member alone says nothing
        ([b"x" * 5000], None),
        ([], None),
    ],
)
def test_the_separator_is_guessed_from_queue_bindings(
    members: list[bytes], sep: bytes | None
) -> None:
    assert guess_separator(members) == sep


def test_a_stored_dialect_round_trips_and_a_bad_one_is_forgotten() -> None:
    dialect = Dialect(sep=":", priority_steps=(0, 5), global_keyprefix="a:")
    assert Dialect.from_json(json.loads(json.dumps(dialect.to_json()))) == dialect
    assert Dialect.from_json("nonsense") is None
    odd = Dialect.from_json({"sep": "", "priority_steps": [999], "global_keyprefix": 7})
    assert odd == Dialect()


def test_explicit_settings_win_over_what_is_learned() -> None:
    learned = Dialect(sep=":", priority_steps=tuple(range(10)), global_keyprefix="a:")
    explicit = Dialect(sep="|")
    assert explicit.over(learned) == Dialect(
        sep="|", priority_steps=tuple(range(10)), global_keyprefix="a:"
    )


def test_the_settings_take_a_separator_and_steps() -> None:
    settings = load_settings(
        environ={"DOORMAN_PRIORITY_SEPARATOR": ":", "DOORMAN_PRIORITY_STEPS": "9,0,3,6"}
    )
    assert settings.priority_separator == ":"
    assert settings.priority_steps == (0, 3, 6, 9)
    for bad in ("0,x", "0,256", "-1", ","):
        with pytest.raises(ConfigError):
            load_settings(environ={"DOORMAN_PRIORITY_STEPS": bad})
    with pytest.raises(ConfigError):
        load_settings(environ={"DOORMAN_PRIORITY_SEPARATOR": "x" * 17})


def test_names_in_dialect_errors_are_sanitized_whole_before_any_cut() -> None:
    """A raw cut could leave half an address that scrubbing no longer recognizes."""
    from chalicelib.collect.collector import _show

    shown = _show("q" * 95 + "-jane.doe@example.org-" + "z" * 400)
    assert "jane" not in shown and "example" not in shown
    assert len(shown) <= 202
