"""Stage a version's files into its epoch's staging folder, resuming what earlier epochs did.

A file already staged and verified by an earlier epoch (same source size and mtime,
staged copy untouched) is moved into this epoch's folder, not copied again. Progress is
saved in batches through ``checkpoint`` (the staging folder's journal, progress_journal.py: no
store round trip at all), never one write per file. A file an earlier
epoch copied but never saved (it was killed before the batch was durable) is moved here too
and adopted only if its bytes hash equal to the source's, then made durable with the batch
like a fresh copy; otherwise it is copied again.
"""
from __future__ import annotations

import errno
import hashlib
import os
import stat
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from queue import SimpleQueue
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import xxhash

from . import failpoints
from .classify import classify_oserror
from .durable import BatchSync, fsync
from .errors import PublishError, SourceError, SourceUnreachable, TransientError
from .layout import PlannedFile
from .progress import Progress

CHUNK = 4 * 1024 * 1024      # hash reads and the read/write fallback
COPY_CHUNK = 64 * 1024 * 1024  # one in-kernel copy call: the lease is ticked between calls
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
    adopted_files: int = 0  # of the reused: copied by a killed epoch, never saved, verified by hash
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


def _readable_by_mode(worker_ids: tuple[int, set[int]] | None) -> Callable[[os.stat_result], bool]:
    """Whether this process may read a file, from the stat already made: the owner, group and other
    read bits against the effective uid and groups, as access(2) checks them. No access() call:
    on NFS and SMB that is one more round trip per file. An ACL or a server-side rule (root
    squash) that denies what the bits allow is caught by the open of the copy, which fails with
    the same "cannot read source" error (classified alike; the attempt then rolls back)."""
    if worker_ids is None:  # Windows: the mode bits say nothing about ACLs; the open decides
        return lambda st: True
    uid, groups = worker_ids
    if uid == 0:
        return lambda st: True

    def readable(st: os.stat_result) -> bool:
        if st.st_uid == uid:
            return bool(st.st_mode & stat.S_IRUSR)
        if st.st_gid in groups:
            return bool(st.st_mode & stat.S_IRGRP)
        return bool(st.st_mode & stat.S_IROTH)
    return readable


def _worker_ids() -> tuple[int, set[int]] | None:
    if not hasattr(os, "geteuid"):
        return None
    return os.geteuid(), {os.getegid(), *os.getgroups()}


class SourceStat(NamedTuple):
    """What the pre-flight stat of a source is kept for: the "before" of its copy. An os.stat_result
    holds 15 values, about 0.6 KB per file; 50,000 sources kept 30 MB alive for the whole publish."""

    st_size: int
    st_mtime_ns: int


def check_sources(plan: list[PlannedFile], worker: str, roots: list[str] | None = None) -> dict[str, SourceStat]:
    """Pre-flight: every source exists, is a regular file, is readable here and, when the worker
    restricts them, resolves inside the allowed source roots (symlinks followed).

    One stat per source (reused by the copy as its "before" stat) and nothing else: readability
    is judged from that stat's mode bits (see _readable_by_mode)."""
    stats: dict[str, SourceStat] = {}
    roots = allowed_source_roots() if roots is None else roots
    readable = _readable_by_mode(_worker_ids())
    for item in plan:
        st = _source_stat(item.source, worker)
        if roots:
            _check_allowed(item.source, roots)
        if not readable(st):
            raise classify_oserror(PermissionError(errno.EACCES, "denied"), "source", item.source, worker)
        stats[item.source] = SourceStat(st.st_size, st.st_mtime_ns)
    return stats


_local = threading.local()


def _buffer() -> memoryview:
    """This thread's reusable read buffer: a fresh 4 MiB bytearray per file is an mmap, zeroed
    pages and an munmap, which dominated the cost of small files."""
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = memoryview(bytearray(CHUNK))
    return buf


def _hash_fd(fd: int, size: int = -1) -> str:
    """xxh3-128 of an open file from offset 0, read with pread (from the page cache when the file
    was just copied), up to ``size`` bytes when known (no extra read to find the end: the stat
    after the copy catches a file that grew). Not mmap: a render truncating its file would raise
    SIGBUS, not an error."""
    h = xxhash.xxh3_128()
    view = _buffer()
    if hasattr(os, "preadv"):
        pos = 0
        while (size < 0 or pos < size) and (n := os.preadv(fd, [view], pos)):
            h.update(view[:n])
            pos += n
    else:  # Windows
        os.lseek(fd, 0, os.SEEK_SET)
        with open(fd, "rb", buffering=0, closefd=False) as fh:
            while n := fh.readinto(view):
                h.update(view[:n])
    return h.hexdigest()


def _hash_file(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        return _hash_fd(fd)
    finally:
        os.close(fd)


# an in-kernel copy is impossible for this pair of files (across filesystems on older kernels, a
# filesystem without support, a seccomp filter): copy through a buffer instead
_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EBADF,
                   errno.EPERM}


def _copy_kernel(fin: int, fout: int, tick: Callable[[], None], expected: int) -> int:
    """Copy ``fin`` to ``fout`` inside the kernel; returns the bytes copied, or -1 when this pair
    of files cannot (then nothing was written and the caller copies through a buffer).

    ``copy_file_range`` (Linux 4.5+; a reflink on XFS and Btrfs, a server-side copy on NFS 4.2
    and SMB3) moves the data without passing it through Python: one memory copy instead of two,
    and on network storage the bytes cross the network once instead of twice. ``sendfile`` is the
    older in-kernel path (Linux 2.6.33+ between files). Some filesystems answer 0 bytes instead of
    an error (FUSE, older kernels across filesystems): that too falls back."""
    total = 0
    for name in ("copy_file_range", "sendfile"):
        fn = getattr(os, name, None)
        if fn is None or (name == "sendfile" and not sys.platform.startswith("linux")):
            continue
        try:
            while total < expected or expected < 0:  # known size: no extra call to find the end
                n = fn(fin, fout, COPY_CHUNK) if name == "copy_file_range" else fn(fout, fin, None, COPY_CHUNK)
                if not n:
                    if total == 0 and expected > 0:
                        break  # nothing copied although the file has data: not supported here
                    return total
                total += n
                tick()
            return total
        except OSError as exc:
            if total or exc.errno not in _NO_KERNEL_COPY:
                raise
    return -1


def _copy_buffered(fin: int, fout: int, tick: Callable[[], None]) -> int:
    view = _buffer()
    total = 0
    with open(fin, "rb", buffering=0, closefd=False) as fh:
        while n := fh.readinto(view):
            total += n
            done = 0
            while done < n:
                done += os.write(fout, view[done:n])
            tick()
    return total


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


def _copy_data(src: str, dst: str, size: int, worker: str, tick: Callable[[], None],
               durable: bool = True) -> tuple[str, int]:
    """Copy the bytes of ``src`` to ``dst`` (and fsync them when ``durable``); returns (source
    hash, bytes). Not durable: the caller syncs the whole batch (durable.BatchSync).

    Two opens and no stat: ``os.open`` where ``open()`` would add an ``fstat`` per file (each
    one a round trip on NFS). The hash is of the source, read back after the copy (from the page
    cache: the in-kernel copy just read it); the stat after the copy proves it did not change."""
    flags = getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fin = os.open(src, os.O_RDONLY | flags)
    except OSError as exc:
        raise classify_oserror(exc, "source", src, worker) from None
    try:
        try:
            fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | flags, 0o666)
        except OSError as exc:
            raise classify_oserror(exc, "staging", dst, worker) from None
        try:
            where = "staging"
            try:
                total = _copy_kernel(fin, fout, tick, size)
                if total < 0:
                    total = _copy_buffered(fin, fout, tick)
                where = "source"
                digest = _hash_fd(fin, total)
                where = "staging"
                if durable:
                    fsync(fout)
            except OSError as exc:
                raise classify_oserror(exc, where, dst if where == "staging" else src, worker) from None
        finally:
            os.close(fout)
    finally:
        os.close(fin)
    return digest, total


def _changed_while_published(src: str, before: "os.stat_result | SourceStat", after: os.stat_result) -> SourceError:
    return SourceError(f"source {src} changed while it was published ({before.st_size} -> {after.st_size} bytes "
                       "since the pre-flight check)",
                       "make sure the render has finished writing before the publish runs, then resubmit")


def copy_file(src: str, dst: str, mode: str, verify: str, worker: str,
              tick: Callable[[], None] = _no_tick, src_st: "os.stat_result | SourceStat | None" = None,
              durable: bool = True) -> dict[str, Any]:
    """Copy (or hardlink) ``src`` to ``dst``, fsync it (unless ``durable`` is False: the caller
    then syncs the batch before saving it), and return its verified entry.

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
        digest, total = _copy_data(src, dst, st0.st_size, worker, tick, durable)
    st1 = _source_stat(src, worker)
    if (st1.st_size, st1.st_mtime_ns) != (st0.st_size, st0.st_mtime_ns) or total != st0.st_size:
        raise _changed_while_published(src, st0, st1)
    # a link is the source's own inode; a copy is stat'ed after close (Windows may set its mtime then)
    dst_st = st1 if linked else os.stat(dst)
    if dst_st.st_size != total:  # the storage kept other bytes than were written: not the source's fault
        raise TransientError(f"staged copy {dst} has {dst_st.st_size} bytes on the publish storage, {total} were "
                             "written", "check the publish storage (space, quota, errors); the next attempt "
                             "copies the file again")
    if verify == "hash" and not linked and _hash_file(dst) != digest:
        raise TransientError(f"staged copy {dst} reads back other bytes than its source {src} (hash differs)",
                             "check the publish storage for errors; the next attempt copies the file again")
    return {"src": src, "size": total, "src_mtime_ns": st0.st_mtime_ns, "hash": digest,
            "hash_type": HASH_TYPE, "staged_mtime_ns": dst_st.st_mtime_ns, "linked": linked}


def _reusable(entry: dict[str, Any] | None, item: PlannedFile, src_st: "os.stat_result | SourceStat",
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


def _unsaved_copy(item: PlannedFile, target: str, src_st: "os.stat_result | SourceStat",
                  staging_dirs: dict[str, str]) -> bool:
    """Move a copy of ``item`` that an earlier epoch made but never saved (killed before its batch
    was durable) to ``target``, when one of the source's size lies in an earlier staging folder.
    Its bytes are not trusted yet: ``adopt_copy`` hashes them before anything records them."""
    for _, folder in sorted(staging_dirs.items(), key=lambda kv: -int(kv[0])):  # the newest epoch first
        path = os.path.join(folder, item.name)
        try:
            if os.stat(path).st_size != src_st.st_size:
                continue
            os.replace(path, target)
            return True
        except OSError:
            continue
    return False


def adopt_copy(src: str, dst: str, worker: str, src_st: "os.stat_result | SourceStat",
               durable: bool = True) -> dict[str, Any] | None:
    """The verified entry of the copy at ``dst`` if its bytes are the source's (both hashed, the
    source checked unchanged), made durable when ``durable``; None when it is not (the caller
    copies the file again, over it). A killed copy is never completed later: the process that
    wrote it writes nothing more into that inode once its size is whole."""
    try:
        staged = _hash_file(dst)
        dst_st = os.stat(dst)
    except OSError:
        return None
    try:
        digest = _hash_file(src)
    except OSError as exc:
        raise classify_oserror(exc, "source", src, worker) from None
    st1 = _source_stat(src, worker)
    if (st1.st_size, st1.st_mtime_ns) != (src_st.st_size, src_st.st_mtime_ns):
        raise _changed_while_published(src, src_st, st1)
    if staged != digest or dst_st.st_size != src_st.st_size:
        return None
    if durable:
        try:
            fd = os.open(dst, os.O_RDWR | getattr(os, "O_BINARY", 0))
            try:
                fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise classify_oserror(exc, "staging", dst, worker) from None
    return {"src": src, "size": src_st.st_size, "src_mtime_ns": src_st.st_mtime_ns, "hash": digest,
            "hash_type": HASH_TYPE, "staged_mtime_ns": dst_st.st_mtime_ns, "linked": False, "adopted": True}


def stage(plan: list[PlannedFile], staging_dir: str, epoch: int, known: dict[str, dict[str, Any]],
          staging_dirs: dict[str, str], mode: str, verify: str, worker: str,
          checkpoint: Callable[[dict[str, dict[str, Any]]], None], guard: Callable[[], None],
          threads: int = 4, retry: Callable[..., Any] | None = None,
          tick: Callable[[], None] = _no_tick, cleanup: Callable[[], None] | None = None,
          src_stats: "dict[str, SourceStat] | None" = None) -> StageStats:
    """Stage every planned file into ``staging_dir``; returns the verified entries by file id.

    ``retry(operation, fn, *args)`` runs one file copy under the in-process retry policy.
    ``src_stats`` are the pre-flight's ``check_sources`` results, so no source is checked twice.
    ``cleanup()`` (removing what earlier epochs left) runs in the background once their reusable
    files have been moved here, alongside the copies: deleting a killed attempt's leftovers costs
    about 5 ms per 4 MiB file on ext4 with online discard. It has finished when stage returns.

    ``checkpoint(batch)`` saves a batch of verified entries durably (the publish passes its
    staging folder's ``ProgressJournal.append``).

    A batch is made durable before it is saved (durable.BatchSync: one syncfs per batch on
    Linux local filesystems, else an fsync per file in its copy thread). A stop (SIGTERM at a
    safe point) or a transient failure saves every file verified so far before it propagates,
    and at most one batch of verified files is ever unsaved beyond the one being saved, so a
    SIGKILL costs at most that much copying again.
    """
    retry = retry or (lambda _op, fn, *a: fn(*a))
    syncer = BatchSync(staging_dir)

    unsaved: set[str] = set()  # names whose earlier, never saved copy was moved here to be verified

    def copy_one(item: PlannedFile) -> dict[str, Any]:
        dst = os.path.join(staging_dir, item.name)
        if item.name in unsaved:
            entry = retry(f"verify {item.name}", adopt_copy, item.source, dst, worker, src_stats[item.source],
                          syncer.per_file)
            if entry is not None:
                return entry
        return retry(f"copy {item.name}", copy_file, item.source, dst,
                     mode, verify, worker, tick, src_stats[item.source], syncer.per_file)
    stats = StageStats()
    if src_stats is None:
        src_stats = check_sources(plan, worker)
    progress = Progress(len(plan), sum(s.st_size for s in src_stats.values()))
    pending: dict[str, dict[str, Any]] = {}
    unsynced = False  # a copy in ``pending`` still needs the batch sync
    last_flush = time.monotonic()
    flusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
    inflight = None  # one checkpoint at a time, in the background: the copies never wait on its syncs

    def save(batch: dict[str, dict[str, Any]], sync: bool) -> None:
        try:
            if sync:
                syncer.sync()
            checkpoint(batch)
        except OSError as exc:  # a full disk, a lost write: classified like the copies' errors
            raise classify_oserror(exc, "staging", staging_dir, worker) from None

    inflight_size = 0

    def submit() -> None:
        nonlocal last_flush, inflight, unsynced, inflight_size
        inflight_size = len(pending)
        inflight = flusher.submit(save, dict(pending), unsynced)
        pending.clear()
        unsynced = False
        last_flush = time.monotonic()

    def record(item: PlannedFile, entry: dict[str, Any], copied: bool = False) -> None:
        nonlocal inflight, unsynced, inflight_size
        entry = {**entry, "name": item.name, "representation": item.representation, "epoch": epoch}
        fid = file_id(item.name)
        stats.entries[fid] = entry
        pending[fid] = entry
        unsynced = unsynced or (copied and not syncer.per_file and not entry["linked"])
        progress.advance(entry["size"])
        failpoints.hit("stage.file")
        due = len(pending) >= CHECKPOINT_FILES or time.monotonic() - last_flush >= CHECKPOINT_SECONDS
        # verified but unsaved (in flight + pending) never exceeds one batch: a SIGKILL costs at most that
        full = len(pending) + inflight_size >= CHECKPOINT_FILES
        if inflight is not None and ((due and inflight.done()) or full):
            inflight.result()  # a failed checkpoint surfaces here (a full disk); a full batch waits
            inflight, inflight_size = None, 0
            failpoints.hit("stage.checkpoint")
        if due and inflight is None:
            submit()

    def save_verified() -> None:
        """On the way out: wait for the checkpoint in flight, then save what is still pending."""
        nonlocal inflight
        if inflight is not None:
            done, inflight = inflight, None
            done.result()
            failpoints.hit("stage.checkpoint")
        if pending:
            save(dict(pending), unsynced)
            pending.clear()
            failpoints.hit("stage.checkpoint")

    to_copy: list[PlannedFile] = []
    # earlier epochs' folders, where a killed attempt may have left copies it never saved (none on
    # a first attempt: no stat per file then)
    earlier = {} if mode == "hardlink" else {ep: d for ep, d in staging_dirs.items()
                                             if d and os.path.normpath(d) != os.path.normpath(staging_dir)}
    for item in plan:
        fid = file_id(item.name)
        old = _reusable(known.get(fid), item, src_stats[item.source], staging_dirs)
        target = os.path.join(staging_dir, item.name)
        if old is None:
            if earlier and _unsaved_copy(item, target, src_stats[item.source], earlier):
                unsaved.add(item.name)
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

    def counted(item: PlannedFile, entry: dict[str, Any]) -> None:
        if entry.pop("adopted", False):  # not copied again: reused, and made durable with the batch
            stats.reused_files += 1
            stats.adopted_files += 1
            stats.reused_bytes += entry["size"]
        elif entry["linked"]:  # a link is counted as linked, not as copied
            stats.linked_files += 1
        else:
            stats.copied_files += 1
            stats.copied_bytes += entry["size"]
        record(item, entry, copied=True)

    def copied(item: PlannedFile, entry: dict[str, Any]) -> None:
        counted(item, entry)
        guard()

    cleaner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cleanup") if cleanup else None
    try:
        try:
            cleaned = cleaner.submit(cleanup) if cleaner else None
            _copy_all(to_copy, copy_one, copied, counted, mode, threads)
            if cleaned is not None:
                cleaned.result()  # an error removing the leftovers surfaces here, as it did inline
        finally:
            if cleaner:
                cleaner.shutdown(wait=True)
        save_verified()
    except BaseException as exc:
        if _worth_saving(exc):
            try:
                save_verified()  # a stop or a transient failure keeps every verified file for the retry
            except Exception:  # noqa: BLE001 - the original failure is what the attempt reports
                pass
        raise
    finally:
        flusher.shutdown(wait=True)
        syncer.close()
    return stats


def _worth_saving(exc: BaseException) -> bool:
    """A stop or a failure the next attempt recovers from. A store outage counts too: the
    checkpoint is the staging folder's journal, on the storage, not in the store."""
    from .errors import TransientError, WorkerLocalError

    return isinstance(exc, (TransientError, WorkerLocalError))


def _copy_all(to_copy: list[PlannedFile], copy_one: Callable[[PlannedFile], dict[str, Any]],
              copied: Callable[[PlannedFile, dict[str, Any]], None],
              salvage: Callable[[PlannedFile, dict[str, Any]], None], mode: str, threads: int) -> None:
    """Copy (or link) every file of ``to_copy``, handing each verified entry to ``copied``.

    When it stops early (a stop request raised by ``copied``, a failed copy), the copies already
    running finish and each one that verified goes to ``salvage``: nothing verified is dropped."""
    if mode == "hardlink":  # a link costs microseconds: threads would only add overhead
        for item in to_copy:
            copied(item, copy_one(item))
        return
    # Worker threads pull from one shared iterator (next() on a list iterator is atomic under the
    # GIL) and hand results back on a SimpleQueue: no Future, waiter or lock per file, which cost
    # about 0.1 ms per small file with a ThreadPoolExecutor.
    # At most 2 x threads copies finished ahead of the main thread's bookkeeping: when a checkpoint
    # holds the main thread back, the copies wait too, so verified-but-unsaved stays bounded.
    queue = iter(to_copy)
    results: SimpleQueue = SimpleQueue()
    stop = threading.Event()
    ahead = threading.Semaphore(2 * max(1, threads))

    def work() -> None:
        while True:
            ahead.acquire()
            if stop.is_set():
                break
            item = next(queue, None)
            if item is None:
                break
            try:
                results.put((item, copy_one(item), None))
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                results.put((item, None, exc))
                break

    workers = [threading.Thread(target=work, name=f"stage-{i}", daemon=True)
               for i in range(max(1, min(threads, len(to_copy))))]
    for w in workers:
        w.start()
    try:
        for _ in range(len(to_copy)):
            item, entry, exc = results.get()
            if exc is not None:
                raise exc
            copied(item, entry)
            ahead.release()
    except BaseException:
        stop.set()
        for _ in workers:
            ahead.release()  # wake the workers waiting for a slot: they see the stop
        for w in workers:
            w.join()
        while not results.empty():  # copies that finished while it stopped: keep the verified ones
            item, entry, exc = results.get()
            if exc is None:
                try:
                    salvage(item, entry)
                except BaseException:  # noqa: BLE001 - the first failure is the one reported
                    pass
        raise
    for w in workers:
        w.join()


from .fsops import fsync_dir  # noqa: E402  (moved to fsops; re-exported for existing importers)


__all__ = ["stage", "copy_file", "check_sources", "file_id", "fsync", "fsync_dir", "StageStats", "PublishError"]
