"""Folders compared as storage, not as strings (issue 16).

`gc --root` and `audit --root` may be given another path to the storage the records name: a
symlink, another mount point of the same export, a bind mount. A string comparison would take
the folders of live records for orphans, and `gc` would delete them. Here a folder is known when
its resolved path or its (device, inode) matches a recorded folder. What cannot be matched with
certainty is left alone and reported, never removed on doubt.
"""
from __future__ import annotations

import os
import re
from typing import Iterable

# .{final folder name}.staging-{short hash of the key}-e{epoch}
STAGING_RE = re.compile(r"^\.(?P<final>.+)\.staging-(?P<hash>[0-9a-f]{12})-e(?P<epoch>\d+)$")


def identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of an existing folder, or None where it cannot be seen from here."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino)


def resolved(path: str) -> str:
    return os.path.normcase(os.path.realpath(path))


class KnownFolders:
    """The folders records name, matched by resolved path or by (device, inode)."""

    def __init__(self, paths: Iterable[str] = ()):
        self._paths: set[str] = set()
        self._ids: set[tuple[int, int]] = set()
        for path in paths:
            self.add(path)

    def add(self, path: str | None) -> None:
        if not path:
            return
        self._paths.add(os.path.normcase(os.path.normpath(path)))
        self._paths.add(resolved(path))
        ident = identity(path)
        if ident is not None:
            self._ids.add(ident)

    def __contains__(self, path: str) -> bool:
        if os.path.normcase(os.path.normpath(path)) in self._paths or resolved(path) in self._paths:
            return True
        ident = identity(path)
        return ident is not None and ident in self._ids


def same_folder(a: str | None, b: str | None) -> bool:
    """True when ``a`` and ``b`` are the same folder (by path or by inode); False on doubt."""
    if not a or not b:
        return False
    if resolved(a) == resolved(b):
        return True
    ia, ib = identity(a), identity(b)
    return ia is not None and ia == ib


__all__ = ["STAGING_RE", "KnownFolders", "identity", "resolved", "same_folder"]
