"""The one private kombu API the worker probe uses, pinned by its signature.

``publish_command`` calls ``kombu.pidbox.Mailbox._publish``; a kombu release that renames it
or changes its parameters must fail here, with a clear message, not as silent workers.
"""

from __future__ import annotations

import inspect

from kombu import pidbox

from chalicelib.collect import worker_probe


def test_mailbox_publish_takes_what_the_probe_passes() -> None:
    method = getattr(pidbox.Mailbox, "_publish", None)
    assert method is not None, "kombu's Mailbox._publish is gone: update publish_command"
    parameters = inspect.signature(method).parameters
    for name in ("type", "arguments", "destination", "reply_ticket", "channel", "timeout"):
        assert name in parameters, f"Mailbox._publish has no {name!r}: update publish_command"
    assert "serializer" in parameters


def test_the_probe_calls_it_in_one_place() -> None:
    source = inspect.getsource(worker_probe)
    assert source.count("._publish(") == 1
