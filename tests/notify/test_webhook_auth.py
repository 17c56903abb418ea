"""A webhook URL with a user name and password is sent with HTTP Basic auth, never shown."""

from __future__ import annotations

import base64
import logging
from urllib.parse import quote

import pytest

from chalicelib.notify import NotifyError
from chalicelib.notify.direct import channels_from_settings
from chalicelib.notify.webhook import SIGNATURE_HEADER, WebhookChannel, verify
from chalicelib.settings import load_settings
from tests.notify.notes import note
from tests.notify.recorder import Reply

USER = "door@man"
PASSWORD = "pA55:w/rd#?%é"
SECRET = "whS3cret-shared"


def with_userinfo(url: str, path: str = "/hook") -> str:
    host = url.split("://", 1)[1]
    return f"http://{quote(USER, safe='')}:{quote(PASSWORD, safe='')}@{host}{path}"


def expected_header() -> str:
    return "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode("ascii")


def test_userinfo_is_sent_as_basic_auth_and_not_in_the_url(recorder, fast):
    server = recorder(default=Reply(204, b""))
    WebhookChannel(with_userinfo(server.url, "/hook?x=1"), SECRET, fast).send(note())
    (request,) = server.requests
    assert request.headers["Authorization"] == expected_header()
    assert request.path == "/hook?x=1"
    assert request.headers["Host"] == server.url.split("://", 1)[1]
    assert verify(SECRET, request.body, request.headers[SIGNATURE_HEADER])


def test_userinfo_from_the_settings_reaches_the_receiver(recorder, fast):
    server = recorder(default=Reply(200))
    settings = load_settings(environ={"GENERIC_WEBHOOK_URL": with_userinfo(server.url)})
    (channel,) = channels_from_settings(settings, policy=fast)
    channel.send(note())
    assert [r.headers.get("Authorization") for r in server.requests] == [expected_header()]
    assert [r.path for r in server.requests] == ["/hook"]


def test_a_user_without_a_password(recorder, fast):
    server = recorder(default=Reply(200))
    host = server.url.split("://", 1)[1]
    WebhookChannel(f"http://token@{host}/", None, fast).send(note())
    (request,) = server.requests
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"token:").decode()


def test_the_password_is_never_shown(recorder, fast, caplog):
    caplog.set_level(logging.DEBUG)
    refusing = recorder(default=Reply(401, b"no"))
    failing = recorder(default=Reply(503, b"down"))
    shown: list[str] = []
    for url in (
        with_userinfo(refusing.url),
        with_userinfo(failing.url),
        with_userinfo("http://127.0.0.1:1"),
    ):
        channel = WebhookChannel(url, SECRET, fast)
        shown += [repr(channel), channel.describe(note())]
        with pytest.raises(NotifyError) as info:
            channel.send(note())
        shown += [str(info.value), repr(info.value)]
    settings = load_settings(environ={"GENERIC_WEBHOOK_URL": with_userinfo(refusing.url)})
    shown.append(repr(settings))
    shown += [r.getMessage() for r in caplog.records]
    text = "\n".join(shown)
    assert "HTTP 401" in text and "HTTP 503" in text  # the failures themselves are told
    for secret in (PASSWORD, quote(PASSWORD, safe=""), quote(USER, safe="")):
        assert secret not in text
