"""The retrying HTTP sender: what is retried, for how long, and what is permanent."""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest

from chalicelib.notify import NotifyError
from chalicelib.notify.http import RetryPolicy, post, retry_after_seconds
from tests.notify.recorder import Reply

SECRET_PATH = "/services/T000/B000/s3cr3tWebhookToken"


def send(url: str, policy: RetryPolicy) -> None:
    post("test", url + SECRET_PATH, b"{}", policy=policy)


class Ticks:
    """A clock that moves only when asked: ``step`` seconds per reading, plus every wait
    passed to :meth:`sleep` (which returns at once and records the wait)."""

    def __init__(self, step: float = 0.0) -> None:
        self.now = 0.0
        self.step = step
        self.waits: list[float] = []

    def __call__(self) -> float:
        self.now += self.step
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def paused(policy: RetryPolicy, ticks: Ticks) -> RetryPolicy:
    return replace(policy, sleep=ticks.sleep, clock=ticks)


def test_429_honours_retry_after(recorder, fast):
    server = recorder().script(Reply(429, headers={"Retry-After": "0.3"}), Reply(200))
    ticks = Ticks()
    send(server.url, paused(fast, ticks))
    assert len(server.requests) == 2
    assert ticks.waits == [0.3]


def test_retry_after_is_capped(recorder, fast):
    server = recorder().script(Reply(429, headers={"Retry-After": "3600"}), Reply(200))
    ticks = Ticks()
    send(server.url, paused(fast, ticks))
    assert len(server.requests) == 2
    assert ticks.waits == [fast.retry_after_max]


def test_5xx_is_retried_until_success(recorder, fast):
    server = recorder().script(Reply(500), Reply(503), Reply(200))
    send(server.url, fast)
    assert len(server.requests) == 3


def test_5xx_gives_up_after_max_attempts_as_transient(recorder, fast):
    server = recorder(default=Reply(502))
    with pytest.raises(NotifyError) as info:
        send(server.url, fast)
    assert len(server.requests) == fast.max_attempts
    assert info.value.permanent is False and info.value.status == 502
    assert "gave up after 4 attempts" in info.value.message


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410])
def test_other_4xx_is_permanent_and_tried_once(recorder, fast, status):
    server = recorder(default=Reply(status, b"invalid_token"))
    with pytest.raises(NotifyError) as info:
        send(server.url, fast)
    assert len(server.requests) == 1
    assert info.value.permanent is True and info.value.status == status


def test_a_hang_times_out_and_is_retried_within_the_total_time(recorder):
    policy = RetryPolicy(
        max_attempts=10, total_seconds=0.8, request_timeout=0.2, backoff_base=0.02, backoff_max=0.02
    )
    # Each reading of the clock stands for 0.1 s: the deadline (0.8 s) is read at 0.1, then
    # each attempt reads it twice and waits 0.01-0.02 s, so the total time runs out after
    # the fourth attempt, long before the ten the policy allows.
    ticks = Ticks(step=0.1)
    server = recorder(default=Reply(200, hang=5))
    with pytest.raises(NotifyError) as info:
        send(server.url, paused(policy, ticks))
    assert len(server.requests) == 4
    assert len(ticks.waits) == 3
    assert info.value.permanent is False and info.value.status is None
    assert "timed out" in info.value.message and "gave up after 4 attempts" in info.value.message


def test_a_hang_then_success(recorder, fast, caplog):
    server = recorder().script(Reply(200, hang=5), Reply(200))
    ticks = Ticks()
    with caplog.at_level("INFO", logger="doorman.notify"):
        send(server.url, paused(fast, ticks))
    assert len(server.requests) == 2
    # The first attempt waited out its request timeout, then the backoff.
    assert f"attempt 1 failed (test: timed out after {fast.request_timeout:g} s)" in caplog.text
    assert len(ticks.waits) == 1 and ticks.waits[0] <= fast.backoff_max


def test_connection_refused_is_transient_and_never_names_the_url(fast):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(NotifyError) as info:
        send(url, fast)
    assert info.value.permanent is False
    assert "connection failed" in info.value.message
    for text in (str(info.value), repr(info.value)):
        assert "s3cr3t" not in text and str(port) not in text


def test_error_messages_never_hold_the_url(recorder, fast):
    server = recorder(default=Reply(404, b"no_service " + SECRET_PATH.encode()))
    with pytest.raises(NotifyError) as info:
        send(server.url, fast)
    assert "s3cr3t" not in str(info.value)
    assert info.value.__cause__ is None


def test_redirects_are_not_followed(recorder, fast):
    elsewhere = recorder()
    server = recorder(default=Reply(302, headers={"Location": elsewhere.url + "/x"}))
    with pytest.raises(NotifyError) as info:
        send(server.url, fast)
    assert info.value.permanent and info.value.status == 302
    assert elsewhere.requests == []


def test_non_http_url_is_refused_without_a_request():
    with pytest.raises(NotifyError) as info:
        post("test", "file:///etc/passwd", b"{}")
    assert info.value.permanent


def test_retry_after_forms():
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("garbage") is None
    assert retry_after_seconds(None) is None
    now = 1_760_000_000.0
    assert retry_after_seconds("Thu, 09 Oct 2025 08:53:40 GMT", now=now) == pytest.approx(20.0)
    assert retry_after_seconds("Thu, 01 Jan 2000 00:00:00 GMT", now=now) == 0.0
