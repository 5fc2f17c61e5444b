"""Downstream integrations: trackers and notifications tied to a publish's commit.

Each integration prepares its side effect idempotently under the publish key (a receipt is
stored in the record), commits it after the version is committed, and can compensate it
when the publish rolls back. ``gate`` integrations must be prepared before the commit;
``notify`` ones are delivered after it, at least once, from an outbox in the record.
"""
from .base import Context, Integration
from .registry import available, create

__all__ = ["Context", "Integration", "available", "create"]
