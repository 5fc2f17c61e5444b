"""Which store to use and how to reach it.

Precedence: ``--store`` > ``ATOMIC_PUBLISH_STORE_FILE`` (a file holding the URI, written
by the Deadline plugin so that the URI never reaches a log) > ``ATOMIC_PUBLISH_STORE``
> the embedded default.
"""
from __future__ import annotations

import os
import sys

from ..wrapper.errors import StoreConfigError, StoreUnavailable
from . import clock, embedded
from .redact import redact_uri, register_secret

DEFAULT_TIMEOUT_MS = 5000


def resolve_uri(cli_value: str | None) -> tuple[str, str]:
    """Returns (uri, where it came from); starts the embedded store when none is given."""
    if cli_value:
        if redact_uri(cli_value) != cli_value:
            print("[atomic-publish] warning: --store carries a password on the command line, where "
                  "other users can see it; use ATOMIC_PUBLISH_STORE or the plugin's StoreUri instead",
                  file=sys.stderr)
        return _registered(cli_value), "--store"
    path = os.environ.get("ATOMIC_PUBLISH_STORE_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                uri = fh.readline().strip()
        except OSError as exc:
            raise StoreConfigError(f"cannot read the store URI file named by ATOMIC_PUBLISH_STORE_FILE "
                                   f"({path}): {exc.strerror}") from None
        if not uri:
            raise StoreConfigError(f"the store URI file {path} is empty")
        return _registered(uri), "ATOMIC_PUBLISH_STORE_FILE"
    env = os.environ.get("ATOMIC_PUBLISH_STORE")
    if env:
        return _registered(env), "ATOMIC_PUBLISH_STORE"
    return embedded.ensure_running(), f"embedded ({embedded.home()})"


def _registered(uri: str) -> str:
    if not uri.startswith(("mongodb://", "mongodb+srv://")):
        raise StoreConfigError(f"store URI {redact_uri(uri)!r} does not start with mongodb:// or mongodb+srv://")
    import pymongo.uri_parser as up

    try:
        parsed = up.parse_uri(uri, validate=True, warn=False) if not uri.startswith("mongodb+srv://") else {}
    except Exception as exc:  # pymongo raises InvalidURI / ConfigurationError / ValueError
        raise StoreConfigError(f"store URI {redact_uri(uri)!r} is invalid: {redact_uri(str(exc))}") from None
    register_secret(parsed.get("password"))
    return uri


def connect(uri: str, timeout_ms: int = DEFAULT_TIMEOUT_MS):
    """A MongoClient with bounded timeouts; raises StoreUnavailable when it cannot answer."""
    import pymongo
    from pymongo import errors as perr

    # retryWrites off: every write of atomic-publish is idempotent or re-reads what it did (conditional
    # updates on the epoch, inserts that treat a duplicate id as "already there"), so our own retries are
    # safe and correctness does not depend on the server's retryable-write bookkeeping.
    options = {"serverselectiontimeoutms": timeout_ms, "connecttimeoutms": timeout_ms,
               "sockettimeoutms": max(timeout_ms * 6, 30000), "retrywrites": False}
    in_uri = {k.lower() for k in uri.partition("?")[2].replace("&", "=").split("=")[::2] if k}
    kwargs = {k: v for k, v in options.items() if k not in in_uri}  # options in the URI win
    from .command_log import install_from_env

    install_from_env()  # ATOMIC_PUBLISH_COMMAND_LOG: a test surface counting round trips
    try:
        client = pymongo.MongoClient(uri, appname="atomic-publish", tz_aware=True, **kwargs)
        clock.calibrate_client(client, f"the store at {redact_uri(uri)}")  # the ping, and the store's time
    except perr.OperationFailure as exc:
        if exc.code in (13, 18):
            raise StoreConfigError(f"the store refused the credentials in {redact_uri(uri)}: {exc.details and exc.details.get('errmsg')}") from None
        raise StoreUnavailable(f"the store at {redact_uri(uri)} failed: {exc}") from None
    except perr.ConfigurationError as exc:
        raise StoreConfigError(f"store URI {redact_uri(uri)} is misconfigured: {redact_uri(str(exc))}") from None
    except perr.PyMongoError as exc:
        raise StoreUnavailable(f"the store at {redact_uri(uri)} is unreachable: {redact_uri(str(exc))[:300]}") from None
    return client
