"""A rename that never replaces (issue 16 item 10): one function per platform, chosen once, and
one retry layer around it.

Real folders on the test machine's filesystem; the Linux function runs for real, the generic
fallback is forced, and a Windows sharing violation is injected as the exception Windows raises.
"""
from __future__ import annotations

import errno
import os
import sys

import pytest

from atomic_publish.wrapper import commit, fsops, retry, staging

FAST = retry.RetryPolicy(attempts=5, budget=30.0, initial=0.01, max_wait=0.02)


def _folders(tmp_path, target: str | None):
    """A staging folder with one file; ``target``: None (absent), "empty" or "full"."""
    src, dst = tmp_path / ".v001.staging-e1", tmp_path / "v001"
    src.mkdir()
    (src / "comp.1001.exr").write_bytes(b"ours")
    if target:
        dst.mkdir()
        if target == "full":
            (dst / "theirs.exr").write_bytes(b"theirs")
    return src, dst


FUNCTIONS = [commit.rename_check_then_rename]
if commit._renameat2_fn is not None:
    FUNCTIONS.append(commit.rename_renameat2)


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
def test_renames_onto_a_free_name(tmp_path, fn):
    src, dst = _folders(tmp_path, None)
    fn(str(src), str(dst))
    assert not src.exists() and (dst / "comp.1001.exr").read_bytes() == b"ours"


@pytest.mark.parametrize("target", ["empty", "full"])
@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
def test_refuses_an_existing_folder_empty_or_not(tmp_path, fn, target):
    src, dst = _folders(tmp_path, target)
    with pytest.raises(FileExistsError):
        fn(str(src), str(dst))
    assert (src / "comp.1001.exr").read_bytes() == b"ours"  # nothing moved
    assert dst.is_dir() and sorted(os.listdir(dst)) == ([] if target == "empty" else ["theirs.exr"])


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
def test_refuses_an_existing_file(tmp_path, fn):
    src, dst = _folders(tmp_path, None)
    dst.write_bytes(b"a file where the version folder goes")
    with pytest.raises(FileExistsError):
        fn(str(src), str(dst))
    assert dst.read_bytes() == b"a file where the version folder goes" and src.is_dir()


@pytest.mark.skipif(commit._renameat2_fn is None, reason="libc without renameat2")
def test_renameat2_is_atomic_no_replace_in_the_kernel(tmp_path, monkeypatch):
    """The check-then-rename fallback is never consulted when the kernel accepts the flag: an
    empty folder that appears after any user-space check is still refused."""
    src, dst = _folders(tmp_path, "empty")
    monkeypatch.setattr(os.path, "lexists", lambda p: False)  # a check would see nothing
    with pytest.raises(FileExistsError):
        commit.rename_renameat2(str(src), str(dst))
    assert dst.is_dir() and not os.listdir(dst) and src.is_dir()


@pytest.mark.skipif(commit._renameat2_fn is None, reason="libc without renameat2")
@pytest.mark.parametrize("err", [errno.EINVAL, errno.ENOSYS, errno.ENOTSUP])
def test_renameat2_falls_back_where_the_filesystem_refuses_the_flag(tmp_path, monkeypatch, err):
    src, dst = _folders(tmp_path, None)
    calls = []

    def refused(*args):
        calls.append(args)
        import ctypes
        ctypes.set_errno(err)
        return -1

    monkeypatch.setattr(commit, "_renameat2_fn", refused)
    commit.rename_renameat2(str(src), str(dst))
    assert calls and (dst / "comp.1001.exr").read_bytes() == b"ours"
    (tmp_path / "again").mkdir()
    src2, _ = _folders(tmp_path / "again", None)
    with pytest.raises(FileExistsError):  # and the fallback still refuses an existing target
        commit.rename_renameat2(str(src2), str(dst))


def test_the_generic_fallback_window_is_the_one_its_docstring_states(tmp_path, monkeypatch):
    """The window, shown: an empty folder created between the check and the rename is replaced
    on POSIX (why the final folder is never pre-created); a non-empty one is refused."""
    if os.name == "nt":
        pytest.skip("os.rename refuses an existing target on Windows")
    for content, replaced in ((None, True), ("x", False)):
        (tmp_path / str(replaced)).mkdir()
        src, dst = _folders(tmp_path / str(replaced), None)
        real = os.path.lexists

        def racing_check(path, content=content, dst=dst):
            answer = real(path)
            if str(path) == str(dst):  # someone creates the folder right after our check
                dst.mkdir()
                if content:
                    (dst / "theirs").write_text(content)
            return answer

        monkeypatch.setattr(os.path, "lexists", racing_check)
        if replaced:
            commit.rename_check_then_rename(str(src), str(dst))
            assert (dst / "comp.1001.exr").exists()
        else:
            with pytest.raises(FileExistsError):
                commit.rename_check_then_rename(str(src), str(dst))
            assert (dst / "theirs").read_text() == "x" and src.is_dir()
        monkeypatch.setattr(os.path, "lexists", real)
    assert "empty" in commit.rename_check_then_rename.__doc__ and "window" in commit.rename_check_then_rename.__doc__


def test_each_platform_gets_its_function_chosen_once(monkeypatch):
    assert commit.rename_noreplace is commit.choose_rename()
    if sys.platform.startswith("linux") and commit._renameat2_fn is not None:
        assert commit.rename_noreplace is commit.rename_renameat2
    monkeypatch.setattr(commit, "_renameat2_fn", lambda *a: 0)
    monkeypatch.setattr(commit, "_renamex_np_fn", lambda *a: 0)
    assert commit.choose_rename("linux") is commit.rename_renameat2
    assert commit.choose_rename("darwin") is commit.rename_renamex_np
    assert commit.choose_rename("freebsd13") is commit.rename_check_then_rename
    monkeypatch.setattr(commit.os, "name", "nt")
    assert commit.choose_rename("win32") is commit.rename_windows
    monkeypatch.setattr(commit.os, "name", "posix")
    assert commit.choose_rename("win32") is commit.rename_check_then_rename  # never os.rename on POSIX
    monkeypatch.setattr(commit, "_renameat2_fn", None)  # an old glibc: the generic fallback
    monkeypatch.setattr(commit, "_renamex_np_fn", None)
    assert commit.choose_rename("linux") is commit.rename_check_then_rename
    assert commit.choose_rename("darwin") is commit.rename_check_then_rename


def test_platform_functions_refuse_to_run_on_the_wrong_platform(tmp_path, monkeypatch):
    src, dst = _folders(tmp_path, "empty")
    if os.name != "nt":  # here os.rename would replace the empty folder: the Windows function refuses to run
        with pytest.raises(NotImplementedError):
            commit.rename_windows(str(src), str(dst))
    if sys.platform != "darwin":
        with pytest.raises(NotImplementedError):
            commit.rename_renamex_np(str(src), str(dst))
    monkeypatch.setattr(commit, "_renameat2_fn", None)
    with pytest.raises(NotImplementedError):
        commit.rename_renameat2(str(src), str(dst))
    assert dst.is_dir() and not os.listdir(dst)


def test_every_function_states_its_guarantee():
    for fn in (commit.rename_renameat2, commit.rename_renamex_np, commit.rename_windows,
               commit.rename_check_then_rename):
        assert "Guarantee:" in fn.__doc__, fn.__name__


def test_fsync_dir_lives_in_fsops_and_staging_re_exports_it(tmp_path):
    assert staging.fsync_dir is fsops.fsync_dir
    fsops.fsync_dir(str(tmp_path))
    fsops.fsync_dir(str(tmp_path / "missing"))  # no-op, no error


class SharingViolation(PermissionError):
    winerror = 32  # what Windows raises for a file open in another program


def test_a_sharing_violation_is_tried_as_often_as_the_single_policy_says(tmp_path, monkeypatch):
    """One retry layer: the rename runs under the publish's retry policy only, so a file that stays
    open is tried ``attempts`` times (5), not 6 x 5 as with the nested loop before issue 16."""
    src, dst = _folders(tmp_path, None)
    tries = []

    def in_use(a, b):
        tries.append(a)
        raise SharingViolation(errno.EACCES, "The process cannot access the file", a)

    monkeypatch.setattr(commit, "rename_noreplace", in_use)
    with pytest.raises(fsops.FileInUse, match="after 5 tries"):
        retry.call("rename the staging folder into place", FAST, commit.move_into_place, str(src), str(dst), "k")
    assert len(tries) == FAST.attempts == 5
    assert src.is_dir() and not dst.exists()


def test_a_sharing_violation_that_clears_costs_only_its_tries(tmp_path, monkeypatch):
    src, dst = _folders(tmp_path, None)
    commit.write_marker(str(src), {"key": "k"})
    tries = []
    real = commit.rename_noreplace

    def clears(a, b):
        tries.append(a)
        if len(tries) < 3:
            raise SharingViolation(errno.EACCES, "in use", a)
        return real(a, b)

    monkeypatch.setattr(commit, "rename_noreplace", clears)
    assert retry.call("rename", FAST, commit.move_into_place, str(src), str(dst), "k") == "renamed"
    assert len(tries) == 3 and (dst / commit.MARKER).exists()


def test_move_into_place_alone_does_not_retry(tmp_path, monkeypatch):
    src, dst = _folders(tmp_path, None)
    tries = []

    def in_use(a, b):
        tries.append(a)
        raise SharingViolation(errno.EACCES, "in use", a)

    monkeypatch.setattr(commit, "rename_noreplace", in_use)
    with pytest.raises(SharingViolation):
        commit.move_into_place(str(src), str(dst), "k")
    assert len(tries) == 1
    assert not hasattr(fsops, "retry_sharing")  # no second retry layer left to call


def test_remove_tree_waits_out_a_sharing_violation_in_one_layer(tmp_path, monkeypatch):
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "f").write_text("x")
    tries = []
    real = fsops.shutil.rmtree

    def rmtree(path):
        tries.append(path)
        if len(tries) < 2:
            raise SharingViolation(errno.EACCES, "in use", path)
        real(path)

    monkeypatch.setattr(fsops.shutil, "rmtree", rmtree)
    fsops.remove_tree(str(folder), FAST)
    assert len(tries) == 2 and not folder.exists()
