"""Which store to use and how to reach it.

Precedence: ``--store`` > ``ATOMIC_PUBLISH_STORE_FILE`` (a file holding the URI, written
by the Deadline plugin so that the URI never reaches a log) > ``ATOMIC_PUBLISH_STORE``
> the embedded default.
"""
from __future__ import annotations

import os
import sys

from ..wrapper.errors import StoreConfigError, StoreNotRunning, StoreUnavailable  # noqa: F401
from . import clock, embedded, reach
from .redact import redact_uri, register_secret

DEFAULT_TIMEOUT_MS = 5000


def resolve_uri(cli_value: str | None, start_embedded: bool = True) -> tuple[str, str]:
    """Returns (uri, where it came from). When none is given: the embedded store, started unless
    ``start_embedded`` is False (read-only commands), which raises StoreNotRunning instead."""
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
    if not start_embedded:
        uri = embedded.running_uri()
        if uri is None:
            raise StoreNotRunning(f"no store is running: the embedded store (data in {embedded.home()}) is not "
                                  "started, and neither --store nor ATOMIC_PUBLISH_STORE is set")
        return uri, f"embedded ({embedded.home()})"
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


def connect(uri: str, timeout_ms: int | None = None):
    """A MongoClient with bounded timeouts; raises StoreUnavailable (one line: which store, what failed,
    what to check) when it cannot answer within ``timeout_ms`` (default: reach.timeout_seconds(), 5 s)."""
    import pymongo
    from pymongo import errors as perr

    if timeout_ms is None:
        timeout_ms = int(reach.timeout_seconds() * 1000)

    # retryWrites off: every write of atomic-publish is idempotent or re-reads what it did (conditional
    # updates on the epoch, inserts that treat a duplicate id as "already there"), so our own retries are
    # safe and correctness does not depend on the server's retryable-write bookkeeping.
    options = {"serverselectiontimeoutms": timeout_ms, "connecttimeoutms": timeout_ms,
               "sockettimeoutms": max(timeout_ms * 6, 30000), "retrywrites": False}
    in_uri = {k.lower() for k in uri.partition("?")[2].replace("&", "=").split("=")[::2] if k}
    kwargs = {k: v for k, v in options.items() if k not in in_uri}  # options in the URI win
    from .command_log import install_from_env

    install_from_env()  # ATOMIC_PUBLISH_COMMAND_LOG: a test surface counting round trips
    accepted = reach.probe(uri, timeout_ms / 1000)  # a refused port or unknown host fails now, not after the timeout
    try:
        client = pymongo.MongoClient(uri, appname="atomic-publish", tz_aware=True, **kwargs)
        clock.calibrate_client(client, f"the store at {redact_uri(uri)}")  # the ping, and the store's time
    except perr.PyMongoError as exc:  # one line for the result; the driver's details go to stderr
        raise reach.explain(exc, uri, timeout_ms / 1000, accepted) from None
    return client
