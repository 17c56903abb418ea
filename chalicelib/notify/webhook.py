"""Generic webhook: the alert document as JSON, signed with HMAC-SHA256 when a secret is set.

``X-Doorman-Signature: sha256=<hex>`` is the HMAC of the exact request body under the shared
secret; a receiver recomputes it and compares in constant time. 2xx is success, 429/5xx are
retried, any other answer is permanent.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from ..alerting import Notification
from ..model import Severity
from .channel import MinimumSeverity
from .document import alert_document, to_json_bytes
from .http import DEFAULT_POLICY, RetryPolicy, post

SIGNATURE_HEADER = "X-Doorman-Signature"


def sign(secret: str, body: bytes) -> str:
    """The signature header's value for ``body``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """True when ``header`` is the signature of ``body`` under ``secret``."""
    return hmac.compare_digest(sign(secret, body), header.strip())


@dataclass(frozen=True)
class WebhookChannel(MinimumSeverity):
    url: str
    secret: str | None = None
    policy: RetryPolicy = DEFAULT_POLICY
    name: str = "webhook"
    minimum: Severity = Severity.INFO

    def __repr__(self) -> str:
        return f"WebhookChannel(name={self.name!r}, signed={self.secret is not None})"

    def send(self, note: Notification) -> None:
        """Deliver ``note``; raises NotifyError."""
        body = to_json_bytes(alert_document(note))
        headers = {SIGNATURE_HEADER: sign(self.secret, body)} if self.secret else {}
        post(
            self.name,
            self.url,
            body,
            headers=headers,
            policy=self.policy,
            success=range(200, 300),
        )

    def describe(self, note: Notification) -> str:
        signed = " (signed)" if self.secret else ""
        return f"{note.action} [{note.severity.value}] {note.title}{signed}"
