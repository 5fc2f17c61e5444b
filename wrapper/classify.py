"""Turn any exception into a classified PublishError, in one table-driven place.

Extend by adding rows: ``OS_ERRORS`` for filesystem errors by where they happened,
``EXCEPTION_TYPES`` for library exceptions (matched by class name through the MRO, so
optional libraries need not be imported).
"""
from __future__ import annotations

import errno
import os
import socket
import ssl

from . import errors as E

# (where, errno) -> (error class, cause template); where is "source", "publish-root" or "staging"
OS_ERRORS: dict[tuple[str, int], tuple[type[E.PublishError], str]] = {
    ("source", errno.ENOENT): (E.SourceError, "source file {path} does not exist"),
    ("source", errno.EACCES): (E.SourceUnreachable, "worker {worker} cannot read source {path}: permission denied"),
    ("source", errno.EPERM): (E.SourceUnreachable, "worker {worker} cannot read source {path}: operation not permitted"),
    ("source", errno.EISDIR): (E.SourceError, "source {path} is a directory, not a file"),
    ("source", errno.ENOTDIR): (E.SourceError, "source {path} has a file where a folder is expected"),
    ("source", errno.ELOOP): (E.SourceError, "source {path} is a symlink loop"),
    ("source", errno.ENAMETOOLONG): (E.SourceError, "source path {path} is too long"),
    ("publish-root", errno.ENOENT): (E.PublishRootUnavailable, "worker {worker} cannot see the publish root {path}: no such directory"),
    ("publish-root", errno.EACCES): (E.PublishRootUnavailable, "worker {worker} cannot write {path}: permission denied"),
    ("publish-root", errno.EPERM): (E.PublishRootUnavailable, "worker {worker} cannot write {path}: operation not permitted"),
    ("publish-root", errno.EROFS): (E.PublishRootUnavailable, "worker {worker} has {path} mounted read-only"),
    ("publish-root", errno.ENOTDIR): (E.DestinationError, "publish root {path} is not a directory"),
    ("staging", errno.EACCES): (E.PublishRootUnavailable, "worker {worker} cannot write {path}: permission denied"),
    ("staging", errno.EPERM): (E.PublishRootUnavailable, "worker {worker} cannot write {path}: operation not permitted"),
    ("staging", errno.EROFS): (E.PublishRootUnavailable, "worker {worker} has {path} mounted read-only"),
    ("staging", errno.ENOSPC): (E.StorageFull, "no space left on the publish storage writing {path}"),
    ("staging", errno.EDQUOT): (E.StorageFull, "disk quota exceeded on the publish storage writing {path}"),
    ("staging", errno.ENAMETOOLONG): (E.DestinationError, "published path {path} is too long for the filesystem"),
}
TRANSIENT_ERRNOS = {errno.EIO, errno.ETIMEDOUT, errno.ESTALE, errno.EAGAIN, errno.EINTR, errno.EBUSY,
                    errno.ECONNRESET, errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH}

# exception class name -> (error class, cause prefix)
EXCEPTION_TYPES: dict[str, tuple[type[E.PublishError], str]] = {
    # pymongo
    "AutoReconnect": (E.StoreUnavailable, "the store connection dropped"),
    "NetworkTimeout": (E.StoreUnavailable, "the store timed out"),
    "ServerSelectionTimeoutError": (E.StoreUnavailable, "no store server answered"),
    "NotPrimaryError": (E.StoreUnavailable, "the store server is not primary"),
    "ConnectionFailure": (E.StoreUnavailable, "cannot connect to the store"),
    "WTimeoutError": (E.StoreUnavailable, "the store's write concern timed out"),
    "ExecutionTimeout": (E.StoreUnavailable, "a store operation exceeded its time limit"),
    "ConfigurationError": (E.StoreConfigError, "the store is misconfigured"),
    "InvalidURI": (E.StoreConfigError, "the store URI is invalid"),
    # ssl and HTTP clients
    "SSLError": (E.TransientError, "an SSL error"),
    "ConnectionError": (E.TransientError, "a connection error"),
    "Timeout": (E.TransientError, "a timeout"),
    "TimeoutError": (E.TransientError, "a timeout"),
}
AUTH_CODES = {13, 18}  # Unauthorized, AuthenticationFailed


def classify_oserror(exc: OSError, where: str, path: str, worker: str) -> E.PublishError:
    """Classify a filesystem error by errno and by where it happened."""
    row = OS_ERRORS.get((where, exc.errno or 0))
    if row:
        cls, template = row
        return cls(template.format(path=path, worker=worker))
    if exc.errno in TRANSIENT_ERRNOS:
        return E.TransientError(f"I/O error on {path} ({where}): {exc.strerror or exc}")
    return E.TransientError(f"unexpected error on {path} ({where}): {exc.strerror or exc} "
                            f"[errno {exc.errno}]", "the farm retries once more; if it repeats, report it")


def classify(exc: BaseException) -> E.PublishError:
    """Any exception -> a PublishError. Unknown ones are transient (escalation bounds them)."""
    if isinstance(exc, E.PublishError):
        return exc
    names = [c.__name__ for c in type(exc).__mro__]
    if "OperationFailure" in names and getattr(exc, "code", None) in AUTH_CODES:
        return E.StoreConfigError(f"the store refused the credentials: {exc}")
    for name in names:
        if name in EXCEPTION_TYPES:
            cls, prefix = EXCEPTION_TYPES[name]
            return cls(f"{prefix}: {str(exc)[:300]}")
    if isinstance(exc, ssl.SSLError):
        return E.TransientError(f"an SSL error: {exc}")
    if isinstance(exc, OSError):
        # a write or fsync error names no file (os.write, os.fsync): say so rather than print "?"
        path = getattr(exc, "filename", None) or "a file (the system did not name it)"
        return classify_oserror(exc, "staging", path, os.environ.get("ATOMIC_PUBLISH_WORKER") or socket.gethostname())
    return E.TransientError(f"unexpected {type(exc).__name__}: {str(exc)[:300]}",
                            "the farm retries; if it repeats, report it with the task log")
