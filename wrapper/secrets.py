"""Secrets handed over by the Deadline plugin in a private file, never on the command line.

``ATOMIC_PUBLISH_SECRETS_FILE`` names a 0600 file of ``NAME=VALUE`` lines (ftrack credentials,
webhook tokens) that the plugin writes from its configuration and deletes after the task.
They become this process's environment, and every value is masked in anything it prints.
"""
from __future__ import annotations

import os

from ..idempotency.redact import register_secret

SECRET_NAMES = ("FTRACK_API_KEY",)


def load_secrets_file() -> list[str]:
    """Apply the secrets file to ``os.environ``; returns the names it set."""
    path = os.environ.get("ATOMIC_PUBLISH_SECRETS_FILE")
    if not path:
        for name in SECRET_NAMES:
            register_secret(os.environ.get(name))
        return []
    names = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            name, sep, value = line.rstrip("\n").partition("=")
            if sep and name:
                os.environ[name] = value
                if name not in ("FTRACK_SERVER", "FTRACK_API_USER"):
                    register_secret(value)
                names.append(name)
    for name in SECRET_NAMES:
        register_secret(os.environ.get(name))
    return names
