"""Keep secrets out of logs, reports and outputs."""
from __future__ import annotations

import re

_URI_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:@/\s]*)(:(?P<pw>[^@/\s]*))?@", re.IGNORECASE)


def redact_uri(uri: str) -> str:
    """``mongodb://user:secret@host`` -> ``mongodb://user:***@host``."""
    return _URI_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@" if m["pw"] is not None
                                else f"{m['scheme']}{m['user']}@", uri)


_SECRETS: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret so that ``scrub`` removes it from any text."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


def scrub(text: str) -> str:
    """Remove every registered secret and every URI password from ``text``."""
    text = redact_uri(text)
    for secret in _SECRETS:
        text = text.replace(secret, "***")
    return text
