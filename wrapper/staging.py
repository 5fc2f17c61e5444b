"""Stage a version's files into its epoch's staging folder, resuming what earlier epochs did.

A file already staged and verified by an earlier epoch (same source size and mtime,
staged copy untouched) is moved into this epoch's folder, not copied again. Progress is
saved to the record in batches, never one database round trip per file.
"""
from __future__ import annotations

import errno
import hashlib
import os
import stat
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable

import xxhash

from . import failpoints
from .classify import classify_oserror
from .errors import PublishError, SourceError, SourceUnreachable
from .layout import PlannedFile
from .progress import Progress

CHUNK = 4 * 1024 * 1024
HASH_TYPE = "xxh3_128"
LINK_FALLBACK_ERRNOS = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES}
CHECKPOINT_SECONDS = 0.5  # at most half a second of copying is lost to a kill
CHECKPOINT_FILES = 512


def file_id(name: str) -> str:
    """Record field name of a published file (file names hold dots, which MongoDB paths cannot)."""
    return hashlib.blake2b(name.encode("utf-8"), digest_size=8).hexdigest()


@dataclass
class StageStats:
    copied_files: int = 0
    copied_bytes: int = 0
    reused_files: int = 0
    reused_bytes: int = 0
    linked_files: int = 0
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)


def _source_stat(path: str, worker: str) -> os.stat_result:
    try:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            # NFS caches negative lookups: list the folder to revalidate it, then look again.
            try:
                os.listdir(os.path.dirname(path))
            except OSError:
                pass
            st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT and not os.path.isdir(os.path.dirname(path)):
            raise SourceUnreachable(f"worker {worker} cannot see the source folder "
                                    f"{os.path.dirname(path)} of {path}") from None
        raise classify_oserror(exc, "source", path, worker) from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (FIFO, socket or device)"
        raise SourceError(f"source {path} is {kind}")
    return st


def allowed_source_roots() -> list[str]:
    """``ATOMIC_PUBLISH_SOURCE_ROOTS`` (os.pathsep-separated): where sources may resolve to.

    A worker setting (the Deadline plugin's SourceRoots configuration), not a manifest field:
    whoever submits the job must not be able to widen it."""
    value = os.environ.get("ATOMIC_PUBLISH_SOURCE_ROOTS", "")
    return [os.path.realpath(r) for r in value.split(os.pathsep) if r.strip()]


def _check_allowed(path: str, roots: list[str]) -> None:
    real = os.path.realpath(path)
    if not any(os.path.commonpath([real, r]) == r for r in roots):
        raise SourceError(f"source {path} resolves to {real}, which is outside the allowed source roots "
                          f"({os.pathsep.join(roots)})", "publish only render outputs from the allowed storage")


def check_sources(plan: list[PlannedFile], worker: str, roots: list[str] | None = None) -> dict[str, os.stat_result]:
    """Pre-flight: every source exists, is a regular file, is readable here and, when the worker
    restricts them, resolves inside the allowed source roots (symlinks followed)."""
    stats: dict[str, os.stat_result] = {}
    roots = allowed_source_roots() if roots is None else roots
    for item in plan:
        st = _source_stat(item.source, worker)
        if roots:
            _check_allowed(item.source, roots)
        if not os.access(item.source, os.R_OK):
            raise classify_oserror(PermissionError(errno.EACCES, "denied"), "source", item.source, worker)
        stats[item.source] = st
    return stats


def _hash_file(path: str) -> str:
    h = xxhash.xxh3_128()
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while n := fh.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _no_tick() -> None:
    pass


def _link(src: str, dst: str, worker: str) -> bool:
    """Hard-link ``src`` at ``dst`` (replacing a leftover of a killed attempt); False where links are impossible."""
    try:
        try:
            os.link(src, dst)
        except FileExistsError:
            os.unlink(dst)
            os.link(src, dst)
        return True
    except OSError as exc:
        if exc.errno not in LINK_FALLBACK_ERRNOS:
            raise classify_oserror(exc, "staging", dst, worker) from None
        return False


def copy_file(src: str, dst: str, mode: str, verify: str, worker: str,
              tick: Callable[[], None] = _no_tick, src_st: os.stat_result | None = None) -> dict[str, Any]:
    """Copy (or hardlink) ``src`` to ``dst``, fsync it, and return its verified entry.

    ``tick()`` is called for every chunk: the lease stays alive while bytes move. ``src_st`` is
    the pre-flight stat of the source: each file is stat'ed once before and once after (on NFS
    every stat is a round trip), and a change in between fails the copy."""
    st0 = src_st or _source_stat(src, worker)
    roots = allowed_source_roots()
    if roots:
        _check_allowed(src, roots)
    linked = mode == "hardlink" and _link(src, dst, worker)
    if linked:  # the published file is the render's own inode: read it only when asked to
        digest, total = (_hash_file(src) if verify == "hash" else ""), st0.st_size
    else:
        h = xxhash.xxh3_128()
        total = 0
        try:
            fin = open(src, "rb", buffering=0)
        except OSError as exc:
            raise classify_oserror(exc, "source", src, worker) from None
        with fin:
            try:
                fout = open(dst, "wb", buffering=0)
            except OSError as exc:
                raise classify_oserror(exc, "staging", dst, worker) from None
            with fout:
                buf = bytearray(CHUNK)
                view = memoryview(buf)
                while True:
                    try:
                        n = fin.readinto(buf)
                    except OSError as exc:
                        raise classify_oserror(exc, "source", src, worker) from None
                    if not n:
                        break
                    h.update(view[:n])
                    tick()
                    try:
                        fout.write(view[:n])
                    except OSError as exc:
                        raise classify_oserror(exc, "staging", dst, worker) from None
                    total += n
                try:
                    os.fsync(fout.fileno())
                except OSError as exc:
                    raise classify_oserror(exc, "staging", dst, worker) from None
        digest = h.hexdigest()
    st1 = _source_stat(src, worker)
    if (st1.st_size, st1.st_mtime_ns) != (st0.st_size, st0.st_mtime_ns) or total != st0.st_size:
        raise SourceError(f"source {src} changed while it was published ({st0.st_size} -> {st1.st_size} bytes "
                          "since the pre-flight check)",
                          "make sure the render has finished writing before the publish runs, then resubmit")
    # a link is the source's own inode; a copy is stat'ed after close (Windows may set its mtime then)
    dst_st = st1 if linked else os.stat(dst)
    if dst_st.st_size != total:
        raise SourceError(f"staged copy {dst} has {dst_st.st_size} bytes, expected {total}")
    if verify == "hash" and not linked and _hash_file(dst) != digest:
        raise SourceError(f"staged copy {dst} does not match its source {src} (hash differs)")
    return {"src": src, "size": total, "src_mtime_ns": st0.st_mtime_ns, "hash": digest,
            "hash_type": HASH_TYPE, "staged_mtime_ns": dst_st.st_mtime_ns, "linked": linked}


def _reusable(entry: dict[str, Any] | None, item: PlannedFile, src_st: os.stat_result,
              staging_dirs: dict[str, str]) -> str | None:
    """Where a verified copy of ``item`` from an earlier epoch lies, if it can be reused."""
    if not entry or entry.get("src") != item.source:
        return None
    if (entry["size"], entry["src_mtime_ns"]) != (src_st.st_size, src_st.st_mtime_ns):
        return None
    folder = staging_dirs.get(str(entry.get("epoch")))
    if not folder:
        return None
    path = os.path.join(folder, item.name)
    try:
        st = os.stat(path)
    except OSError:
        return None
    if st.st_size != entry["size"] or st.st_mtime_ns != entry["staged_mtime_ns"]:
        return None
    return path


def stage(plan: list[PlannedFile], staging_dir: str, epoch: int, known: dict[str, dict[str, Any]],
          staging_dirs: dict[str, str], mode: str, verify: str, worker: str,
          checkpoint: Callable[[dict[str, dict[str, Any]]], None], guard: Callable[[], None],
          threads: int = 4, retry: Callable[..., Any] | None = None,
          tick: Callable[[], None] = _no_tick, cleanup: Callable[[], None] | None = None,
          src_stats: dict[str, os.stat_result] | None = None) -> StageStats:
    """Stage every planned file into ``staging_dir``; returns the verified entries by file id.

    ``retry(operation, fn, *args)`` runs one file copy under the in-process retry policy.
    ``src_stats`` are the pre-flight's ``check_sources`` results, so no source is checked twice.
    ``cleanup()`` (removing what earlier epochs left) runs in the background once their reusable
    files have been moved here, alongside the copies: deleting a killed attempt's leftovers costs
    about 5 ms per 4 MiB file on ext4 with online discard. It has finished when stage returns.
    """
    retry = retry or (lambda _op, fn, *a: fn(*a))

    def copy_one(item: PlannedFile) -> dict[str, Any]:
        return retry(f"copy {item.name}", copy_file, item.source, os.path.join(staging_dir, item.name),
                     mode, verify, worker, tick, src_stats[item.source])
    stats = StageStats()
    if src_stats is None:
        src_stats = check_sources(plan, worker)
    progress = Progress(len(plan), sum(s.st_size for s in src_stats.values()))
    pending: dict[str, dict[str, Any]] = {}
    last_flush = time.monotonic()
    flusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
    inflight = None  # one checkpoint at a time, in the background: the copies never wait on the store

    def record(item: PlannedFile, entry: dict[str, Any]) -> None:
        nonlocal last_flush, inflight
        entry = {**entry, "name": item.name, "representation": item.representation, "epoch": epoch}
        fid = file_id(item.name)
        stats.entries[fid] = entry
        pending[fid] = entry
        progress.advance(entry["size"])
        failpoints.hit("stage.file")
        due = len(pending) >= CHECKPOINT_FILES or time.monotonic() - last_flush >= CHECKPOINT_SECONDS
        if due and (inflight is None or inflight.done()):
            if inflight is not None:
                inflight.result()  # a failed checkpoint surfaces here (Superseded, store down)
                failpoints.hit("stage.checkpoint")
            inflight = flusher.submit(checkpoint, dict(pending))
            pending.clear()
            last_flush = time.monotonic()

    to_copy: list[PlannedFile] = []
    for item in plan:
        fid = file_id(item.name)
        old = _reusable(known.get(fid), item, src_stats[item.source], staging_dirs)
        target = os.path.join(staging_dir, item.name)
        if old is None:
            to_copy.append(item)
            continue
        if old != target:
            try:
                os.replace(old, target)  # same filesystem: a rename, not a copy
            except OSError as exc:
                raise classify_oserror(exc, "staging", target, worker) from None
        stats.reused_files += 1
        stats.reused_bytes += known[fid]["size"]
        record(item, {k: v for k, v in known[fid].items() if k not in ("name", "representation", "epoch")})
    guard()

    def copied(item: PlannedFile, entry: dict[str, Any]) -> None:
        stats.copied_files += 1
        stats.copied_bytes += entry["size"]
        stats.linked_files += entry["linked"]
        record(item, entry)
        guard()

    cleaner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cleanup") if cleanup else None
    try:
        cleaned = cleaner.submit(cleanup) if cleaner else None
        _copy_all(to_copy, copy_one, copied, mode, threads)
        if cleaned is not None:
            cleaned.result()  # an error removing the leftovers surfaces here, as it did inline
    finally:
        if cleaner:
            cleaner.shutdown(wait=True)

    try:
        if inflight is not None:
            inflight.result()
            failpoints.hit("stage.checkpoint")
        if pending:
            checkpoint(dict(pending))
            failpoints.hit("stage.checkpoint")
    finally:
        flusher.shutdown(wait=True)
    return stats


def _copy_all(to_copy: list[PlannedFile], copy_one: Callable[[PlannedFile], dict[str, Any]],
              copied: Callable[[PlannedFile, dict[str, Any]], None], mode: str, threads: int) -> None:
    """Copy (or link) every file of ``to_copy``, handing each verified entry to ``copied``."""
    if mode == "hardlink":  # a link costs microseconds: threads would only add overhead
        for item in to_copy:
            copied(item, copy_one(item))
        return
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="stage") as pool:
        queue = iter(to_copy)
        running = {}
        for item in queue:
            running[pool.submit(copy_one, item)] = item
            if len(running) >= threads * 2:
                break
        try:
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    copied(running.pop(fut), fut.result())
                    nxt = next(queue, None)
                    if nxt is not None:
                        running[pool.submit(copy_one, nxt)] = nxt
        except BaseException:
            for fut in running:
                fut.cancel()
            raise


from .fsops import fsync_dir  # noqa: E402  (moved to fsops; re-exported for existing importers)


__all__ = ["stage", "copy_file", "check_sources", "file_id", "fsync_dir", "StageStats", "PublishError"]
