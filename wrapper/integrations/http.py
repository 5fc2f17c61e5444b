"""A small JSON-over-HTTP client (standard library) whose errors carry their class."""
from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any

from ...idempotency.redact import redact_uri
from ..errors import PermanentError, TransientError


class HttpTransient(TransientError):
    """5xx, 429, timeouts and connection errors; ``retry_after`` honours the server's Retry-After."""

    def __init__(self, cause: str, retry_after: float | None = None):
        super().__init__(cause)
        self.retry_after = retry_after


class HttpPermanent(PermanentError):
    default_todo = "fix the integration's settings or the receiving service, then resubmit"


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def post_json(url: str, body: dict[str, Any], headers: dict[str, str], timeout: float) -> tuple[int, Any]:
    """POST ``body``; returns (status, decoded answer) on 2xx, raises HttpTransient / HttpPermanent."""
    data = json.dumps(body, sort_keys=True, default=str).encode("utf-8")
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    shown = redact_uri(url)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            text = answer.read().decode("utf-8", "replace")
            try:
                return answer.status, json.loads(text) if text else None
            except ValueError:
                return answer.status, text
    except urllib.error.HTTPError as exc:
        status = exc.code
        if status >= 500 or status in (408, 425, 429):
            raise HttpTransient(f"{shown} answered HTTP {status}", _retry_after(exc.headers.get("Retry-After"))) from None
        raise HttpPermanent(f"{shown} refused the request with HTTP {status}") from None
    except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise HttpTransient(f"cannot reach {shown}: {reason}") from None
