"""Make a staged version visible: one directory rename, never onto an existing folder.

A rename onto an *empty* directory silently replaces it on POSIX, so the final folder
is never pre-created, and on Linux the rename uses ``renameat2(RENAME_NOREPLACE)`` where
the filesystem supports it. A marker file in the version folder records the key, so a
published version is recognisable on disk.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import sys
from typing import Any

from .errors import DestinationError
from .fsops import long_path, retry_sharing
from .staging import fsync_dir

MARKER = ".atomic-publish.json"
_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def _renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _renameat2()


def rename_noreplace(src: str, dst: str) -> None:
    """Rename ``src`` to ``dst``; FileExistsError if ``dst`` exists, whatever the platform."""
    if _RENAMEAT2 is not None:
        if _RENAMEAT2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(err, os.strerror(err), dst)
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):  # unsupported here: fall back
            raise OSError(err, os.strerror(err), src)
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "exists", dst)
    os.rename(src, dst)  # Windows refuses an existing target; POSIX checked just above


def read_marker(folder: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(folder, MARKER), encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def write_marker(folder: str, data: dict[str, Any]) -> None:
    path = os.path.join(folder, MARKER)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())


def move_into_place(staging_dir: str, final_dir: str, key: str) -> str:
    """Rename the staging folder to the final one; idempotent for the same key.

    Returns "renamed" or "already-in-place"; raises DestinationError when the final folder
    belongs to someone else or the staging folder vanished without a published copy.
    """
    existing = read_marker(final_dir) if os.path.lexists(final_dir) else None
    if os.path.lexists(final_dir):
        if existing and existing.get("key") == key:
            return "already-in-place"
        raise DestinationError(f"final folder {final_dir} already exists and belongs to "
                               f"{'publish ' + existing['key'] if existing else 'nobody (no atomic-publish marker)'}",
                               "run `atomic-publish audit` and remove or archive that folder, then resubmit")
    if not os.path.isdir(staging_dir):
        raise DestinationError(f"staging folder {staging_dir} is gone and {final_dir} does not exist")
    try:
        retry_sharing("rename", staging_dir, rename_noreplace, long_path(staging_dir), long_path(final_dir))
    except FileExistsError:
        return move_into_place(staging_dir, final_dir, key)
    fsync_dir(os.path.dirname(final_dir))
    return "renamed"
