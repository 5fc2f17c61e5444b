"""Make a staged version visible: one directory rename, never onto an existing folder.

A rename onto an *empty* directory silently replaces it on POSIX, so the final folder is
never pre-created, and the rename is the platform's no-replace rename, chosen once at import
(``rename_noreplace``: Linux ``renameat2(RENAME_NOREPLACE)``, macOS ``renamex_np(RENAME_EXCL)``,
Windows ``os.rename``; elsewhere, and where the filesystem refuses the flag, check then rename,
whose window its docstring states). A marker file in the version folder records the key, so a
published version is recognisable on disk.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import sys
from typing import Any, Callable

from .errors import DestinationError
from .fsops import fsync_dir, long_path
from .progress_journal import drop_journal

MARKER = ".atomic-publish.json"


# -- rename without replacing: one function per platform, chosen once at import ---------------
# Each refuses an existing ``dst`` with FileExistsError. They differ in how strongly: the
# kernel's atomic no-replace (Linux, macOS, Windows) or a check just before the rename (the
# generic fallback, whose window is stated in its docstring). None of them retries: a Windows
# sharing violation propagates to the caller's single retry policy (retry.py).

_RENAME_NOREPLACE = 1      # linux/fs.h
_RENAME_EXCL = 0x00000004  # macOS sys/stdio.h
_AT_FDCWD = -100
_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, getattr(errno, "EOPNOTSUPP", errno.ENOTSUP))


def _libc_function(name: str, argtypes: list[Any]):
    """``name`` from the C library with ``argtypes``, or None where the library lacks it."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = getattr(libc, name)
    except (OSError, AttributeError):
        return None
    fn.argtypes = argtypes
    fn.restype = ctypes.c_int
    return fn


_renameat2_fn = (_libc_function("renameat2", [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                                              ctypes.c_uint]) if sys.platform.startswith("linux") else None)
_renamex_np_fn = (_libc_function("renamex_np", [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint])
                  if sys.platform == "darwin" else None)


def _raise_errno(err: int, src: str, dst: str) -> None:
    if err in (errno.EEXIST, errno.ENOTEMPTY):
        raise FileExistsError(err, os.strerror(err), dst)
    raise OSError(err, os.strerror(err), src, None, dst)


def rename_check_then_rename(src: str, dst: str) -> None:
    """Generic fallback, any platform: refuse an existing ``dst``, then ``os.rename``.

    Guarantee: FileExistsError if ``dst`` exists when checked. Window: between the check and
    the rename (microseconds, one more system call), a folder created at ``dst`` by someone else
    is *replaced* on POSIX if it is empty (a non-empty one makes the rename fail with ENOTEMPTY,
    reported as FileExistsError); nothing of ours is lost either way, but an empty folder another
    tool made there vanishes. Two things keep that window small in practice: only the holder of
    the version's reservation renames onto this final folder, and the final folder is never
    pre-created (staging happens in a hidden sibling), so nothing of atomic-publish ever races it.
    Used where the kernel offers no no-replace rename (other POSIX systems) and where the
    filesystem refuses it (some network filesystems: EINVAL, ENOSYS, ENOTSUP).
    """
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "exists", dst)
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(exc.errno, exc.strerror, dst) from None
        raise


def rename_renameat2(src: str, dst: str) -> None:
    """Linux: ``renameat2(RENAME_NOREPLACE)`` (kernel 3.15+, glibc 2.28+).

    Guarantee: atomic; the kernel refuses an existing ``dst`` (file, folder, empty or not) with
    EEXIST, with no window. Where the filesystem refuses the flag (EINVAL, ENOSYS, ENOTSUP: some
    NFS servers, FUSE and older filesystems) it falls back to ``rename_check_then_rename`` for
    that call, with that function's window. NotImplementedError where libc has no renameat2.
    """
    if _renameat2_fn is None:
        raise NotImplementedError("renameat2 is not available on this system")
    if _renameat2_fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
        return
    err = ctypes.get_errno()
    if err in _UNSUPPORTED:
        return rename_check_then_rename(src, dst)
    _raise_errno(err, src, dst)


def rename_renamex_np(src: str, dst: str) -> None:
    """macOS: ``renamex_np(RENAME_EXCL)`` (macOS 10.12+).

    Guarantee: atomic; the kernel refuses an existing ``dst`` with EEXIST, with no window.
    Where the filesystem refuses the flag (ENOTSUP, EINVAL: some SMB and NFS mounts) it falls
    back to ``rename_check_then_rename`` for that call, with that function's window.
    NotImplementedError off macOS.
    """
    if _renamex_np_fn is None:
        raise NotImplementedError("renamex_np is only available on macOS")
    if _renamex_np_fn(os.fsencode(src), os.fsencode(dst), _RENAME_EXCL) == 0:
        return
    err = ctypes.get_errno()
    if err in _UNSUPPORTED:
        return rename_check_then_rename(src, dst)
    _raise_errno(err, src, dst)


def rename_windows(src: str, dst: str) -> None:
    """Windows: ``os.rename`` (MoveFileExW without MOVEFILE_REPLACE_EXISTING).

    Guarantee: atomic on one volume; Windows refuses an existing ``dst`` (file or folder, empty
    or not) with FileExistsError (winerror 183), with no window. A sharing violation (winerror
    32: a file inside is open elsewhere) propagates to the caller's retry policy.
    NotImplementedError off Windows, where ``os.rename`` replaces an empty folder.
    """
    if os.name != "nt":
        raise NotImplementedError("os.rename refuses an existing target only on Windows")
    os.rename(src, dst)


def choose_rename(platform: str | None = None) -> Callable[[str, str], None]:
    """The strongest no-replace rename ``platform`` (default: this one) offers."""
    platform = platform or sys.platform
    if platform.startswith("linux") and _renameat2_fn is not None:
        return rename_renameat2
    if platform == "darwin" and _renamex_np_fn is not None:
        return rename_renamex_np
    if platform in ("win32", "cygwin") and os.name == "nt":
        return rename_windows
    return rename_check_then_rename


#: Rename ``src`` to ``dst``; FileExistsError if ``dst`` exists. Chosen once, at import: see the
#: chosen function's docstring for its guarantee (``rename_noreplace.__name__`` names it).
rename_noreplace: Callable[[str, str], None] = choose_rename()


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
    drop_journal(staging_dir)  # staging progress: the store holds every entry by now
    try:  # one try: the caller's retry policy waits out a sharing violation (one retry layer)
        rename_noreplace(long_path(staging_dir), long_path(final_dir))
    except FileExistsError:
        return move_into_place(staging_dir, final_dir, key)
    fsync_dir(os.path.dirname(final_dir))
    return "renamed"
