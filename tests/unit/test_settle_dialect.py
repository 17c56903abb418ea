"""settle_dialect: what a check learns of the broker's key names, and the doubts it names."""

from __future__ import annotations

from chalicelib.collect.collector import settle_dialect
from chalicelib.collect.redis_probe import RedisResult
from chalicelib.model import Dialect


def _result(**fields: object) -> RedisResult:
    base: dict[str, object] = {
        "queues": (),
        "worker_names": ("w1@host",),
        "pidbox_exchanges": (),
        "unacked": None,
        "info": None,
        "found_queues": 0,
        "truncated": False,
        "errors": (),
    }
    return RedisResult(**{**base, **fields})  # type: ignore[arg-type]


def test_a_worker_that_confirms_everything_leaves_no_doubt() -> None:
    worker = Dialect(sep=":", priority_steps=(1, 2), global_keyprefix="pre:")
    result = _result(guessed=Dialect(sep=":"))
    learned, errors = settle_dialect(
        [worker, worker], result, Dialect(), Dialect(sep=":", global_keyprefix="pre:")
    )
    assert errors == ()
    assert learned == worker


def test_every_doubt_is_named_once_in_a_fixed_order() -> None:
    result = _result(
        worker_names=(),
        guessed=Dialect(sep="|"),
        other_prefixes=("a:", "b:"),
        looked_everywhere=False,
        foreign_priority_lists=(("celery", ":"),),
        members_sep="/",
    )
    first = Dialect(sep=":", priority_steps=(1, 2), global_keyprefix="")
    second = Dialect(sep=":", priority_steps=(3,), global_keyprefix="")
    learned, errors = settle_dialect(
        [first, second],
        result,
        Dialect(sep="#", priority_steps=(1,)),
        Dialect(sep="|", global_keyprefix="pre:"),
    )
    assert learned == first  # the first worker's options win over the keys' guess
    assert {(e.component, e.kind) for e in errors} == {("queues", "dialect")}
    messages = [e.message for e in errors]
    starts = [
        "the workers disagree on the broker's key options",
        "the binding members use the separator '|', not kombu's default",
        "the binding members do not use the separator set in priority_separator ('#') but '/'",
        "reading the key prefix learned before, 'pre:', but no live worker answers under it",
        "no worker's binding was found in the part of the database discovery read",
        "no Celery keys under the key prefix 'pre:'; found them under 'a:', 'b:'",
        "lists named 'celery:'<n> lie beside the queue 'celery'",
        "priority_separator is set to '#' but the workers use ':'",
        "priority_steps is set to (1,) but the workers use (1, 2)",
    ]
    assert len(messages) == len(starts)
    for message, start in zip(messages, starts, strict=True):
        assert message.startswith(start), (message, start)


def test_a_prefix_found_in_the_keys_is_named_as_found_and_kept_as_a_guess() -> None:
    result = _result(worker_names=(), guessed=Dialect(global_keyprefix="app:"))
    learned, errors = settle_dialect([], result, Dialect(), Dialect(global_keyprefix="app:"))
    assert learned == Dialect(global_keyprefix="app:")
    assert [e.message for e in errors] == [
        "found Celery's keys under the key prefix 'app:', but no live worker answers under it"
        " (set global_keyprefix: 'app:' to make it explicit)"
    ]
