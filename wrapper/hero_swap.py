"""The hero folder on disk: build the new content beside it, then swap it in with one rename.

A reader of the hero folder must see the previous hero's complete files or the new one's, never
a mix and never a half-built folder. So the new content is built in a hidden sibling (hardlinks
to the published version's files where the filesystem allows, copies otherwise), made durable,
and then exchanged with the hero folder in one step where the platform offers one. The swap is
chosen once, at import (``swap_into_place.__name__`` names it), one function per platform:

* Linux: ``renameat2(RENAME_EXCHANGE)`` (kernel 3.15+, glibc 2.28+; ext4, XFS, Btrfs, tmpfs):
  atomic, no window: a path lookup resolves to the old folder or to the new one.
* macOS: ``renamex_np(RENAME_SWAP)`` (10.12+, APFS): atomic, no window.
* Elsewhere, and where the filesystem refuses the flag (EINVAL, ENOSYS, ENOTSUP: NFS, SMB/CIFS,
  FUSE, overlayfs before 5.x): two renames, the hero folder aside then the new one in. Between
  the two the hero path does not exist: one rename system call (measured on a local Linux
  filesystem by tests/hero/test_hero_reader.py; on NFS one server round trip). Windows is
  always on this path (MoveFileEx has no exchange) and its renames also fail with a sharing
  violation while a reader holds a file open: the caller's retry policy waits that out.

What is left after a crash is named so that the next holder of the hero (or ``gc``) recognises
it: ``.{hero}.hero-swap-{keyhash}-e{epoch}`` (new content being built, or the old content
after the exchange), ``.{hero}.hero-aside-...`` (the old content during the two renames) and
``.{hero}.hero-gone-...`` (content being removed: ``empty_content``).
The previous hero's content is kept as ``.{hero}.hero-previous-...`` until the next move, so
that a reader that resolved the hero folder just before a swap (a scene loading a sequence)
keeps a complete folder for a whole hero period instead of losing its remaining files at once.
Every content folder carries ``.atomic-publish-hero.json``, naming the version it mirrors,
from the moment it is created (``"complete": false`` until its last file is durable): whoever
removes a content folder, even one a killed attempt left half built or half removed, knows whose
hardlinks go, and the marker goes last, after the store recorded them (a hardlink coming or
going changes the published file's change time, which audit must tell from a modification). A
hero folder without a marker is never swapped out or removed.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from typing import Callable, Iterable

from ..idempotency.keys import short_hash
from . import failpoints
from .commit import _AT_FDCWD, _UNSUPPORTED, _renameat2_fn, _renamex_np_fn
from .fsops import fsync, fsync_dir, long_path

__all__ = ["HERO_MARKER", "LEFTOVER_RE", "HeroFile", "build_content", "leftovers", "read_hero_marker",
           "swap_into_place", "swap_name", "aside_name", "swap_exchange_linux", "swap_exchange_macos",
           "swap_two_renames", "finish_two_renames", "choose_swap", "previous_name", "retire", "is_complete",
           "empty_content", "drop_emptied", "marker_version"]

HERO_MARKER = ".atomic-publish-hero.json"
LEFTOVER_RE = re.compile(r"^\.(?P<hero>.+)\.hero-(?P<kind>swap|aside|previous|gone)-(?P<hash>[0-9a-f]{12})-e(?P<epoch>\d+)$")
LINK_FALLBACK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES,
                 getattr(errno, "EOPNOTSUPP", errno.ENOTSUP)}
_RENAME_EXCHANGE = 2        # linux/fs.h
_RENAME_SWAP = 0x00000002   # macOS sys/stdio.h


@dataclass(frozen=True)
class HeroFile:
    """One file of the hero: the published file it mirrors and its name in the hero folder."""

    source: str
    name: str
    size: int


def swap_name(hero_dir: str, key_hash: str, epoch: int) -> str:
    return os.path.join(os.path.dirname(hero_dir), f".{os.path.basename(hero_dir)}.hero-swap-{key_hash}-e{epoch}")


def aside_name(hero_dir: str, key_hash: str, epoch: int) -> str:
    return os.path.join(os.path.dirname(hero_dir), f".{os.path.basename(hero_dir)}.hero-aside-{key_hash}-e{epoch}")


def previous_name(hero_dir: str, key_hash: str, epoch: int) -> str:
    return os.path.join(os.path.dirname(hero_dir), f".{os.path.basename(hero_dir)}.hero-previous-{key_hash}-e{epoch}")


def gone_name(path: str) -> str:
    """Where ``empty_content`` moves a content folder beside the hero before removing its files:
    a name no folder has yet (one still being removed keeps its marker, so it is never reused)."""
    m = LEFTOVER_RE.match(os.path.basename(path))
    hero = m["hero"] if m else os.path.basename(path).lstrip(".")
    n = 0
    while True:
        gone = os.path.join(os.path.dirname(path), f".{hero}.hero-gone-{short_hash(os.path.basename(path))}-e{n}")
        if not os.path.lexists(gone):
            return gone
        n += 1


def leftovers(hero_dir: str, kinds: tuple[str, ...] = ("swap", "aside", "gone")) -> list[str]:
    """Every folder of ``kinds`` beside ``hero_dir`` (any publish, any epoch), never the hero
    itself. By default what interrupted moves left; ``("previous",)``: the previous hero's
    content, kept for the readers that resolved it until the next move."""
    parent, name = os.path.dirname(hero_dir), os.path.basename(hero_dir)
    try:
        entries = os.listdir(parent)
    except FileNotFoundError:
        return []
    out = []
    for entry in entries:
        m = LEFTOVER_RE.match(entry)
        if m and m["hero"] == name and m["kind"] in kinds:
            out.append(os.path.join(parent, entry))
    return sorted(out)


def read_hero_marker(folder: str) -> dict | None:
    try:
        with open(os.path.join(folder, HERO_MARKER), encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def is_complete(marker: dict | None) -> bool:
    """A content folder whose every file is in place (markers older than the ``complete`` field
    were written last, so theirs are)."""
    return bool(marker) and marker.get("complete", True) is True


def marker_version(folder: str) -> int:
    """The version a content folder's marker names; 0 without one."""
    try:
        return int((read_hero_marker(folder) or {}).get("version") or 0)
    except (TypeError, ValueError):
        return 0


def _write_marker(folder: str, marker: dict) -> None:
    """The marker, replaced in one rename (a reader sees the old one or the new one), durable."""
    path = os.path.join(folder, HERO_MARKER)
    tmp = path + ".tmp"
    with open(long_path(tmp), "w", encoding="utf-8") as fh:
        json.dump(marker, fh, indent=1, sort_keys=True)
        fh.flush()
        fsync(fh.fileno())
    os.replace(long_path(tmp), long_path(path))


def _link_or_copy(src: str, dst: str, link: bool) -> bool:
    """Hardlink ``src`` at ``dst`` where allowed, else copy it durably; True when linked."""
    if link:
        try:
            os.link(long_path(src), long_path(dst))
            return True
        except OSError as exc:
            if exc.errno not in LINK_FALLBACK:
                raise
    shutil.copyfile(long_path(src), long_path(dst))
    fd = os.open(long_path(dst), os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        fsync(fd)
    finally:
        os.close(fd)
    return False


def build_content(folder: str, files: Iterable[HeroFile], marker: dict, link: bool,
                  check: Callable[[], None] = lambda: None) -> tuple[int, int]:
    """Create ``folder`` (never an existing one) with ``files`` and the hero marker, durable.

    Returns (linked, copied). Every file is checked against its recorded size: a hero never
    mirrors a published file that changed. ``check`` runs between files (the stop guard). The
    marker is there before the first link (``complete`` false) and says complete after the last."""
    os.mkdir(long_path(folder))
    _write_marker(folder, {**marker, "complete": False})
    linked = copied = 0
    for f in files:
        check()
        dst = os.path.join(folder, f.name)
        if _link_or_copy(f.source, dst, link):
            linked += 1
        else:
            copied += 1
        size = os.stat(long_path(dst)).st_size
        if size != f.size:
            raise OSError(errno.EIO, f"hero file {dst} has {size} bytes where the published file has {f.size}", dst)
    fsync_dir(folder)  # the links, before the marker says complete
    _write_marker(folder, {**marker, "complete": True})
    fsync_dir(folder)
    return linked, copied


def _refused(err: int) -> bool:
    return err in _UNSUPPORTED


def swap_two_renames(new: str, hero_dir: str, aside: str) -> str:
    """Any platform: the hero folder aside, then ``new`` in its place; the old content ends in ``new``.

    Window: between the two renames the hero path does not exist (one rename system call). A
    crash in it leaves the old content at ``aside`` and the new at ``new``: the next holder puts
    the new content in place first (``finish_two_renames``), so the window never outlives it."""
    if os.path.lexists(hero_dir):
        os.rename(long_path(hero_dir), long_path(aside))
    os.rename(long_path(new), long_path(hero_dir))
    os.rename(long_path(aside), long_path(new))  # the old content where the caller removes it
    fsync_dir(os.path.dirname(hero_dir))
    return "two-renames"


def swap_exchange_linux(new: str, hero_dir: str, aside: str) -> str:
    """Linux: ``renameat2(RENAME_EXCHANGE)``; atomic, no window. The old content ends in ``new``.

    Falls back to ``swap_two_renames`` (its window) where the filesystem refuses the flag."""
    if _renameat2_fn is None:
        raise NotImplementedError("renameat2 is not available on this system")
    rc = _renameat2_fn(_AT_FDCWD, os.fsencode(new), _AT_FDCWD, os.fsencode(hero_dir), _RENAME_EXCHANGE)
    return _after_exchange(rc, new, hero_dir, aside)


def swap_exchange_macos(new: str, hero_dir: str, aside: str) -> str:
    """macOS: ``renamex_np(RENAME_SWAP)`` (APFS); atomic, no window. The old content ends in ``new``.

    Falls back to ``swap_two_renames`` (its window) where the filesystem refuses the flag (HFS+,
    SMB and NFS mounts)."""
    if _renamex_np_fn is None:
        raise NotImplementedError("renamex_np is only available on macOS")
    return _after_exchange(_renamex_np_fn(os.fsencode(new), os.fsencode(hero_dir), _RENAME_SWAP), new, hero_dir,
                           aside)


def _after_exchange(rc: int, new: str, hero_dir: str, aside: str) -> str:
    """What an exchange call's return code means, on either platform: done (made durable), refused
    by the filesystem (two renames instead), or an error."""
    if rc == 0:
        fsync_dir(os.path.dirname(hero_dir))
        return "exchanged"
    err = ctypes.get_errno()
    if _refused(err):
        return swap_two_renames(new, hero_dir, aside)
    raise OSError(err, os.strerror(err), new, None, hero_dir)


def choose_swap(platform: str | None = None) -> Callable[[str, str, str], str]:
    """The strongest exchange ``platform`` (default: this one) offers."""
    platform = platform or sys.platform
    if platform.startswith("linux") and _renameat2_fn is not None:
        return swap_exchange_linux
    if platform == "darwin" and _renamex_np_fn is not None:
        return swap_exchange_macos
    return swap_two_renames


_swap = choose_swap()


def swap_into_place(new: str, hero_dir: str, aside: str) -> str:
    """Put the complete folder ``new`` at ``hero_dir``; the previous hero's content (if any) ends
    at ``new``, for the caller to remove. Returns "renamed" (first hero), "exchanged" or
    "two-renames". A first hero is a plain no-replace rename; ``aside`` is used only by the
    two-renames fallback."""
    if not os.path.lexists(hero_dir):
        from .commit import rename_noreplace

        try:
            rename_noreplace(long_path(new), long_path(hero_dir))
            fsync_dir(os.path.dirname(hero_dir))
            return "renamed"
        except FileExistsError:
            pass  # another hero appeared since the look: exchange with it
    return _swap(new, hero_dir, aside)


def finish_two_renames(hero_dir: str, leftover: list[str]) -> bool:
    """After a crash inside ``swap_two_renames`` the hero path may be missing, with the old
    content aside and the new complete in a swap folder: put the new content in place at once
    (one rename), so that the hero path is missing only as long as the crash lasted. Returns True
    when it did."""
    if os.path.lexists(hero_dir):
        return False
    complete = [p for p in leftover if LEFTOVER_RE.match(os.path.basename(p))["kind"] == "swap"
                and is_complete(read_hero_marker(p))]
    if not complete:
        return False
    best = max(complete, key=lambda p: int((read_hero_marker(p) or {}).get("version", 0)))
    os.rename(long_path(best), long_path(hero_dir))
    fsync_dir(os.path.dirname(hero_dir))
    return True


def retire(hero_dir: str, number: int, keep_previous: bool,
           previous: str) -> tuple[list[tuple[str, BaseException]], list[tuple[str, int]]]:
    """After hero ``number`` is in place: the newest complete older content beside it (the
    previous hero, under its swap name after the exchange) becomes ``previous`` (the one kept
    before it goes), every other leftover is emptied (``empty_content``). Returns what could not
    be emptied, with why, and what was: (gone folder, version) for the caller to record and then
    ``drop_emptied``."""
    markers = {p: read_hero_marker(p) for p in leftovers(hero_dir, ("swap", "aside"))}
    complete = sorted((int(m.get("version") or 0), p) for p, m in markers.items() if is_complete(m))
    keep = next((p for v, p in reversed(complete) if 0 < v < number), None) if keep_previous else None
    doomed = [p for p in leftovers(hero_dir) if p != keep]
    if keep is not None or not keep_previous:
        doomed += leftovers(hero_dir, ("previous",))
    failed: list[tuple[str, BaseException]] = []
    emptied: list[tuple[str, int]] = []
    for old in doomed:
        try:
            emptied.append(empty_content(old))
        except OSError as exc:
            failed.append((old, exc))
    if keep is not None:
        os.rename(long_path(keep), long_path(previous))
    return failed, emptied


def empty_content(path: str) -> tuple[str, int]:
    """The first half of removing a content folder beside the hero: renamed to its ``gone`` name
    (never again the kept previous one, nor a swap to finish), then every file but the marker
    unlinked. Returns (gone folder, version its marker names). The caller records that version's
    hardlinks went (the store's ``touched``, stamped by the gone folder's change time) before
    ``drop_emptied``: cut short anywhere, the marker is still there for the next remover."""
    from . import retry

    gone = path
    if LEFTOVER_RE.match(os.path.basename(path))["kind"] != "gone":
        gone = gone_name(path)
        try:
            os.rename(long_path(path), long_path(gone))
        except FileNotFoundError:
            return gone, 0
    version = marker_version(gone)

    def unlink_all() -> None:
        try:
            entries = list(os.scandir(long_path(gone)))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name == HERO_MARKER:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    pass

    _as_oserror(retry.call, f"empty {gone}", retry.RetryPolicy(), unlink_all)
    failpoints.hit("hero.emptied")
    return gone, version


def drop_emptied(gone: str) -> None:
    """The second half: the marker and the folder, once the store recorded the unlinks."""
    from .fsops import remove_tree

    _as_oserror(remove_tree, gone)


def _as_oserror(fn: Callable[..., None], *args: object) -> None:
    """``fn(*args)`` under its retry policy; a retry that gave up (a PublishError) is reported as
    the OSError the callers collect ("could not be removed yet"), never raised past them."""
    try:
        fn(*args)
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise OSError(str(exc)) from exc
