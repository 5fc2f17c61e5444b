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
