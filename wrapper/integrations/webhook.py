"""POST a JSON description of the version to a URL, with an ``Idempotency-Key`` header.

As a gate, a 2xx answer to ``publish.prepared`` is required before the commit, and the
commit and a rollback are announced too. As notify, ``publish.published`` is delivered after
the commit from the record's outbox, at least once; receivers deduplicate by the key.
A bearer token, when the receiver needs one, comes from the environment variable named by
``token_env`` (never from the manifest).
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, ClassVar

from ..errors import WorkerLocalError
from .base import GATE, NOTIFY, Context, Integration
from .http import post_json


class WebhookIntegration(Integration):
    name: ClassVar[str] = "webhook"
    phases: ClassVar[tuple[str, ...]] = (GATE, NOTIFY)
    settings_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False, "required": ["url"],
        "properties": {
            "url": {"type": "string", "pattern": r"^https?://[^\s]+$", "maxLength": 2048},
            "timeout": {"type": "number", "minimum": 1, "maximum": 300},
            "token_env": {"type": "string", "pattern": r"^[A-Z_][A-Z0-9_]{0,63}$"},
        },
    }

    def _headers(self, ctx: Context, event: str) -> dict[str, str]:
        # one key per product, version number and event: among several products, product i's
        # notification is not a duplicate of product 0's, and a version renumbered before its commit
        # (prepared again at the new number) is a new event, not a reused key with another body
        digest = hashlib.sha256("|".join((*ctx.identity, f"v{ctx.version}", self.id, event)).encode()).hexdigest()[:40]
        headers = {"Idempotency-Key": f"atomic-publish-{digest}", "User-Agent": "atomic-publish"}
        env = self.settings.get("token_env")
        if env:
            headers["Authorization"] = f"Bearer {os.environ[env]}"
        return headers

    def check_environment(self) -> None:
        env = self.settings.get("token_env")
        if env and not os.environ.get(env):
            raise WorkerLocalError(f"webhook {self.id}: environment variable {env} (its token) is not set on this worker",
                                   "set it in the worker's environment or the plugin configuration")

    def _post(self, ctx: Context, event: str) -> dict[str, Any]:
        body = {"event": event, **ctx.describe()}
        status, answer = post_json(self.settings["url"], body, self._headers(ctx, event),
                                   float(self.settings.get("timeout", 10)))
        return {"event": event, "status": status, "idempotency_key": self._headers(ctx, event)["Idempotency-Key"]}

    def prepare(self, ctx: Context) -> dict[str, Any]:
        return self._post(ctx, "publish.prepared")

    def commit(self, ctx: Context, receipt: dict[str, Any]) -> dict[str, Any]:
        return {**receipt, "committed": self._post(ctx, "publish.committed")}

    def compensate(self, ctx: Context, receipt: dict[str, Any]) -> None:
        self._post(ctx, "publish.rolled_back")

    def deliver(self, ctx: Context) -> dict[str, Any]:
        return self._post(ctx, "publish.published")
