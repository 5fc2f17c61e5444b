"""Windows-safe file operations: long paths, and renames and deletes that wait out files left
open elsewhere (antivirus, a viewer on the farm, an indexer) instead of failing the publish.

On Windows a rename or delete of a file another process holds open fails with a sharing
violation (winerror 32) or access denied (5); it usually clears in seconds. POSIX has no such
failure, so on Linux and macOS these helpers only add a cheap attribute check.
"""
from __future__ import annotations

import ntpath
import os
import shutil
from typing import Callable, TypeVar

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from . import progress
from .errors import TransientError

T = TypeVar("T")
SHARING_WINERRORS = {5, 32, 33}  # access denied, sharing violation, lock violation
WIN_MAX_PATH = 248  # CreateDirectory's limit; files 260


def is_sharing_violation(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and getattr(exc, "winerror", None) in SHARING_WINERRORS


class FileInUse(TransientError):
    default_todo = ("close the program holding it open on this worker (viewer, antivirus scan); the farm "
                    "retries the task")


def retry_sharing(operation: str, path: str, fn: Callable[..., T], *args, attempts: int = 6,
                  max_wait: float = 4.0) -> T:
    """Run ``fn``, retrying sharing violations with bounded backoff; then a clear FileInUse."""
    def log(state) -> None:
        progress.info(f"retry {operation}: {path} is open elsewhere (sharing violation); "
                      f"try {state.attempt_number}/{attempts}")

    try:
        for attempt in Retrying(retry=retry_if_exception(is_sharing_violation), stop=stop_after_attempt(attempts),
                                wait=wait_exponential(multiplier=0.25, max=max_wait), before_sleep=log,
                                reraise=True):
            with attempt:
                return fn(*args)
    except OSError as exc:
        if is_sharing_violation(exc):
            raise FileInUse(f"cannot {operation} {path}: it stayed open in another program after {attempts} "
                            "tries (Windows sharing violation)") from None
        raise
    raise AssertionError("unreachable")


def long_path(path: str, windows: bool | None = None) -> str:
    """``\\\\?\\`` form of a long Windows path (over MAX_PATH), for file APIs that need it."""
    windows = os.name == "nt" if windows is None else windows
    if not windows or len(path) < WIN_MAX_PATH or path.startswith("\\\\?\\"):
        return path
    full = ntpath.abspath(path) if os.name == "nt" else ntpath.normpath(path)
    if full.startswith("\\\\"):  # \\server\share\... -> \\?\UNC\server\share\...
        return "\\\\?\\UNC\\" + full[2:]
    return "\\\\?\\" + full


def remove_tree(path: str) -> None:
    """Delete a folder, waiting out files open elsewhere; missing is fine."""
    def rmtree() -> None:
        try:
            shutil.rmtree(long_path(path))
        except FileNotFoundError:
            pass

    retry_sharing("delete", path, rmtree)
