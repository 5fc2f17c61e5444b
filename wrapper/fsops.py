"""Windows-safe file operations: long paths, and renames and deletes that wait out files left
open elsewhere (antivirus, a viewer on the farm, an indexer) instead of failing the publish;
and ``fsync_dir``, which makes a rename or a new entry durable.

On Windows a rename or delete of a file another process holds open fails with a sharing
violation (winerror 32) or access denied (5); it usually clears in seconds. That is one
predicate of the single retry policy (``retry.py``): these helpers never loop themselves, so a
sharing violation is tried as many times as any other transient failure, not that many times
nested. POSIX has no such failure, so on Linux and macOS these helpers only add a cheap
attribute check.
"""
from __future__ import annotations

import errno
import ntpath
import os
import shutil
import sys
from typing import Callable

from .errors import TransientError

SHARING_WINERRORS = {5, 32, 33}  # access denied, sharing violation, lock violation
WIN_MAX_PATH = 248  # CreateDirectory's limit; files 260


def is_sharing_violation(exc: BaseException) -> bool:
    """True for a Windows sharing (or lock) violation: the file is open in another program."""
    return isinstance(exc, OSError) and getattr(exc, "winerror", None) in SHARING_WINERRORS


class FileInUse(TransientError):
    """A sharing violation that outlasted every try of the retry policy."""

    default_todo = ("close the program holding it open on this worker (viewer, antivirus scan); the farm "
                    "retries the task")


def long_path(path: str, windows: bool | None = None) -> str:
    """``\\\\?\\`` form of a long Windows path (over MAX_PATH), for file APIs that need it."""
    windows = os.name == "nt" if windows is None else windows
    if not windows or len(path) < WIN_MAX_PATH or path.startswith("\\\\?\\"):
        return path
    full = ntpath.abspath(path) if os.name == "nt" else ntpath.normpath(path)
    if full.startswith("\\\\"):  # \\server\share\... -> \\?\UNC\server\share\...
        return "\\\\?\\UNC\\" + full[2:]
    return "\\\\?\\" + full


def remove_tree(path: str, policy=None) -> None:
    """Delete a folder, waiting out files open elsewhere; missing is fine.

    A leaf operation with its own (single) retry layer: ``retry.call`` under ``policy`` (default
    ``RetryPolicy()``), sharing violations included. Never call it under another ``retry.call``."""
    from . import retry

    def rmtree() -> None:
        try:
            shutil.rmtree(long_path(path))
        except FileNotFoundError:
            pass

    retry.call(f"delete {path}", policy or retry.RetryPolicy(), rmtree)


def _platform_fsync() -> Callable[[int], None]:
    """The fsync that reaches stable storage here, chosen once at import (docs/performance.md,
    "Durability").

    On macOS ``fsync`` only hands the data to the drive, whose volatile cache may lose it on a
    power cut; ``fcntl(F_FULLFSYNC)`` also flushes that cache (atomicwrites' ``_proper_fsync``
    does the same). A filesystem that refuses it (some network mounts) gets a plain fsync.
    Elsewhere ``fsync`` already reaches stable storage: Linux sends a cache flush on ext4, XFS
    and Btrfs, and NFS and SMB clients send COMMIT or FLUSH, so the server syncs its disk."""
    if sys.platform == "darwin":
        import fcntl

        full = getattr(fcntl, "F_FULLFSYNC", None)
        if full is not None:
            def fullfsync(fd: int) -> None:
                try:
                    fcntl.fcntl(fd, full)
                except OSError as exc:
                    if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.ENOTTY):
                        raise
                    os.fsync(fd)
            return fullfsync
    return os.fsync


fsync: Callable[[int], None] = _platform_fsync()


def fsync_dir(path: str) -> None:
    """Make a rename or a new entry in ``path`` durable (no-op where directories cannot be opened,
    as on Windows, whose NTFS journal makes the rename itself durable)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


__all__ = ["FileInUse", "SHARING_WINERRORS", "fsync", "fsync_dir", "is_sharing_violation", "long_path", "remove_tree"]
