"""What the maintenance commands share: opening the store with an error a person can act on."""
from __future__ import annotations

import sys

from ..idempotency.redact import scrub


def open_store_for(command: str, uri: str | None, ensure_indexes: bool = False):
    """The Store, or None after printing why it cannot be opened (read-only commands create nothing)."""
    from ..idempotency.store import open_store
    from .errors import PublishError

    try:
        return open_store(uri, ensure_indexes=ensure_indexes)
    except PublishError as exc:
        print(f"atomic-publish {command}: {scrub(str(exc))}; {exc.todo}", file=sys.stderr)
        return None
