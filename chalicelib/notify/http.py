"""HTTP delivery with bounded retries: what Slack, PagerDuty and webhooks post through.

Every channel builds its own request and says which answers count as success; this module
sends it. Retried: 429 (honouring ``Retry-After``, capped), 5xx, connection errors and
timeouts, within a cap on attempts and on total time. Any other answer is permanent and is
raised at once. Error messages name the channel and the HTTP status, never the URL, a routing
key or a secret (a Slack webhook URL *is* a secret). User info in a URL becomes HTTP Basic
authentication and never appears in the request line.
"""

from __future__ import annotations

import base64
import email.utils
import logging
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from .channel import NotifyError
from .document import to_json_bytes

log = logging.getLogger("doorman.notify")

USER_AGENT = "doorman-notify/1"


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds on one delivery: attempts, total seconds, and the wait between attempts."""

    max_attempts: int = 4
    total_seconds: float = 20.0
    request_timeout: float = 5.0
    backoff_base: float = 0.5  # first wait; doubled each attempt, with jitter
    backoff_max: float = 4.0
    retry_after_max: float = 10.0  # a longer Retry-After is capped to this
    # How the waits are waited and the total time measured; tests pass their own.
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based), full jitter on top half."""
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))
        return float(ceiling / 2 + random.uniform(0, ceiling / 2))


DEFAULT_POLICY = RetryPolicy()


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A webhook that redirects is misconfigured; following it would resend the body elsewhere.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def split_credentials(url: str) -> tuple[str, str | None]:
    """``url`` without its ``user:password@`` part, and the HTTP Basic ``Authorization``
    value that part stands for (None without one). urllib would take the user info for part
    of the host name and fail every delivery with a DNS error; the user info is never sent
    in the URL, so it appears in no request line, log or error."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return url, None
    user, _colon, password = userinfo.partition(":")
    pair = f"{unquote(user)}:{unquote(password)}".encode()
    credentials = "Basic " + base64.b64encode(pair).decode("ascii")
    return urlunsplit(parts._replace(netloc=host)), credentials


def _request(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Response:
    """One POST. Returns any HTTP answer; raises OSError (URLError, timeout) without one."""
    req = urllib.request.Request(url, data=body, method="POST")  # noqa: S310 - http(s) only
    req.add_header("User-Agent", USER_AGENT)
    for name, value in headers.items():
        req.add_header(name, value)
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return Response(resp.status, resp.read(65536), dict(resp.headers.items()))
    except urllib.error.HTTPError as exc:
        try:
            data = exc.read(65536)
        except OSError:
            data = b""
        finally:
            exc.close()
        return Response(exc.code, data, dict(exc.headers.items()) if exc.headers else {})


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds asked by a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = datetime.now(UTC).timestamp() if now is None else now
    return max(0.0, when.timestamp() - current)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def _attempt(
    channel: str, url: str, body: bytes, headers: Mapping[str, str], timeout: float, shown: float
) -> Response | str:
    """One request: the HTTP answer, or why there was none (the text of the error, which
    names the policy's request timeout ``shown``)."""
    try:
        return _request(url, body, headers, timeout)
    except TimeoutError:
        return f"{channel}: timed out after {shown:g} s"
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            return f"{channel}: timed out after {shown:g} s"
        # The reason's text can repeat the host; only its kind is named.
        return f"{channel}: connection failed ({type(reason).__name__})"
    except (OSError, ValueError) as exc:
        return f"{channel}: connection failed ({type(exc).__name__})"


def _asked_wait(resp: Response, policy: RetryPolicy) -> float | None:
    """The wait a 429's ``Retry-After`` asks for, capped; None when there is none."""
    if resp.status != 429:
        return None
    asked = retry_after_seconds(_header(resp.headers, "Retry-After"))
    return None if asked is None else min(asked, policy.retry_after_max)


def post(
    channel: str,
    url: str,
    body: bytes,
    *,
    headers: Mapping[str, str] | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
    success: Collection[int] = (200, 201, 202, 204),
    retry: Callable[[int], bool] = lambda status: status == 429 or 500 <= status < 600,
) -> Response:
    """POST ``body`` to ``url`` until a status in ``success``; returns that response.

    Raises NotifyError: permanent for a status neither successful nor retryable, transient
    when the attempts or the time run out on retryable failures. Waits go through
    ``policy.sleep`` and the total time is measured by ``policy.clock``.
    """
    if not url.lower().startswith(("http://", "https://")):
        raise NotifyError(f"{channel}: the endpoint is not an http(s) URL", permanent=True)
    clock = policy.clock
    deadline = clock() + policy.total_seconds
    url, credentials = split_credentials(url)
    sent_headers = {"Content-Type": "application/json", **(headers or {})}
    if credentials is not None:
        sent_headers["Authorization"] = credentials
    attempt = 0
    last = f"{channel}: not sent"
    last_status: int | None = None
    while (remaining := deadline - clock()) > 0:
        attempt += 1
        wait: float | None = None
        timeout = min(policy.request_timeout, remaining)
        resp = _attempt(channel, url, body, sent_headers, timeout, policy.request_timeout)
        if isinstance(resp, str):
            last, last_status = resp, None
        elif resp.status in success:
            if attempt > 1:
                log.info("%s delivered after %d attempts", channel, attempt)
            return resp
        else:
            last, last_status = f"{channel}: HTTP {resp.status}", resp.status
            if not retry(resp.status):
                log.warning(
                    "%s refused the notification: HTTP %d (permanent)", channel, resp.status
                )
                raise NotifyError(last + " (permanent)", permanent=True, status=resp.status)
            wait = _asked_wait(resp, policy)
        wait = policy.backoff(attempt) if wait is None else wait
        if attempt >= policy.max_attempts or clock() + wait >= deadline:
            break
        log.info("%s attempt %d failed (%s); retrying in %.2f s", channel, attempt, last, wait)
        policy.sleep(wait)
    log.warning("%s: giving up after %d attempts: %s", channel, attempt, last)
    raise NotifyError(
        f"{last} (gave up after {attempt} attempts)", permanent=False, status=last_status
    )


def post_json(channel: str, url: str, document: Mapping[str, Any], **options: Any) -> Response:
    """:func:`post` with ``document`` encoded as compact UTF-8 JSON."""
    return post(channel, url, to_json_bytes(document), **options)
