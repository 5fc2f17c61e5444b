"""copy_file on real files: one stat of the source before and one after, links over leftovers."""
from __future__ import annotations

import os
import shutil

import pytest

from atomic_publish.wrapper.errors import SourceError
from atomic_publish.wrapper.staging import copy_file


def test_a_link_replaces_the_leftover_of_a_killed_attempt(tmp_path):
    src = tmp_path / "render.1001.exr"
    src.write_bytes(b"pixels" * 100)
    dst = tmp_path / "staged.1001.exr"
    dst.write_bytes(b"half a copy")  # what a killed attempt left under this name
    entry = copy_file(str(src), str(dst), "hardlink", "size", "w1")
    assert entry["linked"] and entry["size"] == 600 and entry["hash"] == ""
    assert os.path.samefile(src, dst)
    assert entry["staged_mtime_ns"] == os.stat(dst).st_mtime_ns == entry["src_mtime_ns"]


@pytest.mark.parametrize("mode", ["copy", "hardlink"])
def test_a_source_changed_after_the_preflight_stat_fails_the_copy(tmp_path, mode):
    src = tmp_path / "render.1001.exr"
    src.write_bytes(b"a" * 4096)
    preflight = os.stat(src)
    src.write_bytes(b"b" * 8192)  # the render wrote again between the pre-flight and the copy
    with pytest.raises(SourceError, match="changed while it was published"):
        copy_file(str(src), str(tmp_path / "staged.exr"), mode, "size", "w1", src_st=preflight)


def test_a_copy_records_the_staged_files_own_mtime_and_hash(tmp_path):
    src = tmp_path / "render.1001.exr"
    src.write_bytes(os.urandom(10000))
    dst = tmp_path / "staged.exr"
    entry = copy_file(str(src), str(dst), "copy", "hash", "w1", src_st=os.stat(src))
    assert not entry["linked"] and dst.read_bytes() == src.read_bytes()
    assert entry["staged_mtime_ns"] == os.stat(dst).st_mtime_ns and len(entry["hash"]) == 32


def _plan(tmp_path, count: int) -> list:
    from atomic_publish.wrapper.layout import PlannedFile

    plan = []
    for i in range(count):
        src = tmp_path / f"render.{1001 + i}.exr"
        src.write_bytes(os.urandom(1000))
        plan.append(PlannedFile("exr", str(src), f"sh010_v001.{1001 + i}.exr", str(1001 + i), "exr"))
    return plan


def test_stage_removes_earlier_leftovers_alongside_the_copies(tmp_path):
    from atomic_publish.wrapper.staging import stage

    leftover = tmp_path / ".v001.epoch1"
    leftover.mkdir()
    (leftover / "half.exr").write_bytes(b"x" * 10)
    staging = tmp_path / ".v001.epoch2"
    staging.mkdir()
    batches: list[dict] = []
    stats = stage(_plan(tmp_path, 5), str(staging), 2, {}, {}, "copy", "size", "w1", batches.append,
                  lambda: None, cleanup=lambda: shutil.rmtree(leftover))
    assert stats.copied_files == 5 and len(list(staging.iterdir())) == 5
    assert not leftover.exists()  # finished before stage returned
    assert sum(len(b) for b in batches) == 5


def test_a_failed_cleanup_fails_the_stage_as_it_would_inline(tmp_path):
    from atomic_publish.wrapper.staging import stage

    staging = tmp_path / "staging"
    staging.mkdir()

    def cleanup() -> None:
        raise PermissionError(13, "denied", str(tmp_path / ".v001.epoch1"))
    with pytest.raises(PermissionError):
        stage(_plan(tmp_path, 3), str(staging), 2, {}, {}, "copy", "size", "w1", lambda b: None,
              lambda: None, cleanup=cleanup)


@pytest.mark.parametrize("size", [0, 1, 4096, 4 * 1024 * 1024 + 7])
def test_in_kernel_and_buffered_copies_give_the_same_bytes_and_hash(tmp_path, size):
    import xxhash

    from atomic_publish.wrapper import staging

    src = tmp_path / "render.exr"
    data = os.urandom(size)
    src.write_bytes(data)
    out = {}
    for how in ("kernel", "buffered"):
        dst = tmp_path / f"staged-{how}.exr"
        fin, fout = os.open(src, os.O_RDONLY), os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            n = (staging._copy_kernel(fin, fout, lambda: None, size) if how == "kernel"
                 else staging._copy_buffered(fin, fout, lambda: None))
            if n < 0:  # no in-kernel copy on this platform: the buffered copy is the path taken
                n = staging._copy_buffered(fin, fout, lambda: None)
            out[how] = staging._hash_fd(fin)
        finally:
            os.close(fin)
            os.close(fout)
        assert n == size and dst.read_bytes() == data
    assert out["kernel"] == out["buffered"] == xxhash.xxh3_128(data).hexdigest()


def test_a_copy_entry_carries_the_hash_of_the_source(tmp_path):
    import xxhash

    src = tmp_path / "render.1001.exr"
    data = os.urandom(3 * 1024 * 1024 + 11)
    src.write_bytes(data)
    entry = copy_file(str(src), str(tmp_path / "staged.exr"), "copy", "size", "w1", src_st=os.stat(src))
    assert entry["hash"] == xxhash.xxh3_128(data).hexdigest() and entry["size"] == len(data)
    assert (tmp_path / "staged.exr").read_bytes() == data


def test_the_batch_sync_is_syncfs_on_linux_local_filesystems_and_fsync_elsewhere(tmp_path, monkeypatch):
    import sys

    from atomic_publish.wrapper import durable

    sync = durable.BatchSync(str(tmp_path))
    try:
        local = durable.filesystem_type(str(tmp_path)) in durable.SYNCFS_FILESYSTEMS
        expect_syncfs = sys.platform.startswith("linux") and local and durable._kernel_at_least(5, 8)
        assert sync.per_file is (not expect_syncfs)
        sync.sync()  # no error: nothing lost on this filesystem since the descriptor was opened
    finally:
        sync.close()
    monkeypatch.setenv("ATOMIC_PUBLISH_DURABILITY", "fsync")
    forced = durable.BatchSync(str(tmp_path))
    assert forced.per_file and forced.scheme == "fsync per file"
    forced.close()


@pytest.mark.parametrize("scheme", ["", "fsync"])
def test_every_saved_batch_was_synced_first_and_holds_complete_copies(tmp_path, monkeypatch, scheme):
    from atomic_publish.wrapper.staging import stage

    monkeypatch.setenv("ATOMIC_PUBLISH_DURABILITY", scheme)
    staging = tmp_path / "staging"
    staging.mkdir()
    plan = _plan(tmp_path, 40)
    seen: list[int] = []

    def checkpoint(batch: dict) -> None:  # what a batch claims must already be complete on disk
        for entry in batch.values():
            assert os.path.getsize(staging / entry["name"]) == entry["size"] == 1000
        seen.append(len(batch))
    stats = stage(plan, str(staging), 1, {}, {}, "copy", "size", "w1", checkpoint, lambda: None, threads=4)
    assert stats.copied_files == 40 and sum(seen) == 40 and stats.linked_files == 0
    assert all((staging / p.name).read_bytes() == open(p.source, "rb").read() for p in plan)


def test_linked_files_are_not_also_counted_as_copied(tmp_path, env):
    from helpers import Render, publish

    render = Render(tmp_path, frames=4, size=4096, movie=False)
    proc, out = publish(render.write_manifest(link_mode="hardlink"), env, "joblink")
    assert out["outcome"] == "published", proc.stdout + proc.stderr
    assert (out["linked_files"], out["copied_files"], out["copied_bytes"]) == (4, 0, 0)
    assert "status staged 4 files (0 copied, 0 reused, 4 linked)" in proc.stdout
