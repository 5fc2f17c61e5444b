"""Mixed Windows, Linux and macOS farms: named roots, Deadline path mapping, Windows-safe files.

What cannot run on Linux (a real Windows sharing violation, a real drive letter) is covered
by the path logic with ntpath, and by injecting the failure Windows would raise.
"""
from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from helpers import submit_and_farm

from atomic_publish.wrapper import commit, fsops, retry
from atomic_publish.wrapper.audit import _path_of
from atomic_publish.wrapper.documents import context_roots, rootless
from atomic_publish.wrapper.errors import ManifestError, WorkerLocalError
from atomic_publish.wrapper.layout import plan_files, version_dir
from atomic_publish.wrapper.manifest import parse_manifest, platform_roots

ROOTS = {"work": {"windows": "P:/", "linux": "/mnt/projects", "darwin": "/Volumes/projects"}}
BASE = {"project": {"name": "demo", "code": "dm"}, "asset": "sh010", "hierarchy": "shots/sq01",
        "subset": "renderCompMain", "family": "render", "roots": ROOTS, "publish_root": "{root[work]}",
        "template": "{root[work]}/{project[name]}/{hierarchy}/{asset}/publish/{family}/{subset}/v{version:0>3}",
        "representations": [{"name": "exr", "files": ["{root[work]}/renders/sh010/comp.1001.exr",
                                                      "{root[work]}\\renders\\sh010\\comp.1002.exr"]}]}


def test_roots_resolve_for_each_platform():
    assert platform_roots(ROOTS, "windows") == {"work": "P:"}
    assert platform_roots(ROOTS, "darwin") == {"work": "/Volumes/projects"}
    m = parse_manifest(BASE)  # on this (Linux) worker
    assert m.publish_root == "/mnt/projects"
    assert m.representations[0].files == ("/mnt/projects/renders/sh010/comp.1001.exr",
                                          "/mnt/projects/renders/sh010/comp.1002.exr")
    assert version_dir(m, 3) == "/mnt/projects/demo/shots/sq01/sh010/publish/render/renderCompMain/v003"


def test_unknown_or_missing_root_is_refused():
    with pytest.raises(ManifestError, match=r"names root 'pub', which the manifest's roots do not declare"):
        parse_manifest({**BASE, "publish_root": "{root[pub]}"})
    with pytest.raises(WorkerLocalError, match="root 'work' has no path for platform linux"):
        parse_manifest({**BASE, "roots": {"work": {"windows": "P:/"}}})


def test_documents_store_rootless_paths_that_resolve_on_every_platform():
    m = parse_manifest(BASE)
    final = version_dir(m, 1)
    path = rootless(f"{final}/dm_sh010_renderCompMain_v001.1001.exr", m)
    assert path == "{root[work]}/demo/shots/sq01/sh010/publish/render/renderCompMain/v001/dm_sh010_renderCompMain_v001.1001.exr"
    roots = context_roots(m)
    assert roots == ROOTS
    assert _path_of(path, roots) == "/mnt/projects/demo/shots/sq01/sh010/publish/render/renderCompMain/v001/" \
                                    "dm_sh010_renderCompMain_v001.1001.exr"
    for platform, expected in (("windows", "P:/demo/"), ("darwin", "/Volumes/projects/demo/")):
        resolved = path.replace("{root[work]}", platform_roots(roots, platform)["work"], 1)
        assert resolved.startswith(expected)


def test_names_colliding_on_case_insensitive_filesystems_are_refused_before_copying():
    with pytest.raises(ManifestError, match="'exr2' duplicates representation 'Exr2' .names are case-insensitive"):
        parse_manifest({**BASE, "representations": [
            {"name": "Exr2", "files": ["/r/a.exr"]}, {"name": "exr2", "files": ["/r/b.exr"]}]})
    # published names are compared case-insensitively too (a second line of defence in layout)
    names = [p.name.lower() for p in plan_files(parse_manifest({**BASE, "representations": [
        {"name": "exr", "files": ["/r/a.1001.exr", "/r/b.1002.EXR"]}]}), 1)]
    assert len(set(names)) == len(names)


FAST = retry.RetryPolicy(attempts=5, initial=0.01, max_wait=0.02)


class SharingViolation(PermissionError):
    winerror = 32  # what Windows raises for a file open in another program


def test_rename_waits_out_a_sharing_violation(tmp_path, monkeypatch):
    staging, final = tmp_path / ".v001.staging-e1", tmp_path / "v001"
    staging.mkdir()
    commit.write_marker(str(staging), {"key": "k"})
    real = commit.rename_noreplace
    failures = []

    def flaky(src, dst):
        if len(failures) < 2:
            failures.append(src)
            raise SharingViolation(errno.EACCES, "The process cannot access the file", src)
        return real(src, dst)

    monkeypatch.setattr(commit, "rename_noreplace", flaky)
    # waited out by the one retry policy the publish runs the rename under (issue 16: no inner loop)
    assert retry.call("rename", FAST, commit.move_into_place, str(staging), str(final), "k") == "renamed"
    assert len(failures) == 2 and (final / commit.MARKER).exists()


def test_a_sharing_violation_that_persists_is_a_clear_transient_error(tmp_path, monkeypatch):
    staging = tmp_path / ".v001.staging-e1"
    staging.mkdir()

    def always(src, dst):
        raise SharingViolation(errno.EACCES, "in use", src)

    monkeypatch.setattr(commit, "rename_noreplace", always)
    with pytest.raises(fsops.FileInUse, match="stayed open in another program after 5 tries"):
        retry.call("rename", FAST, commit.move_into_place, str(staging), str(tmp_path / "v001"), "k")
    assert staging.exists()


def test_windows_long_paths():
    short = "P:\\projects\\demo\\v001"
    assert fsops.long_path(short, windows=True) == short
    long = "P:\\projects\\" + "\\".join(["folder%03d" % i for i in range(30)])
    assert fsops.long_path(long, windows=True) == "\\\\?\\" + long
    unc = "\\\\fileserver\\share\\" + "\\".join(["folder%03d" % i for i in range(30)])
    assert fsops.long_path(unc, windows=True) == "\\\\?\\UNC\\fileserver\\share\\" + unc[len("\\\\fileserver\\share\\"):]
    assert fsops.long_path("/mnt/" + "x" * 300, windows=False) == "/mnt/" + "x" * 300


def test_windows_paths_publish_on_a_linux_worker_through_deadline_path_mapping(tmp_path, env, store):
    """The manifest is written on a Windows workstation (P:\\...); every worker maps P:/ to its mount."""
    mount = tmp_path / "mnt" / "projects"
    (mount / "renders" / "sh010").mkdir(parents=True)
    (mount / "publish").mkdir()
    for i in range(3):
        (mount / "renders" / "sh010" / f"comp.{1001 + i}.exr").write_bytes(bytes([i]) * 4096)
    manifest = tmp_path / "from-windows.json"
    manifest.write_text(json.dumps({
        "project": {"name": "demo", "code": "dm"}, "asset": "sh010", "hierarchy": "shots/sq01",
        "subset": "renderCompMain", "family": "render", "publish_root": "P:\\publish",
        "representations": [{"name": "exr", "files": [f"P:\\renders\\sh010\\comp.{1001 + i}.exr" for i in range(3)]}]}))
    mapping = f"P:/=>{mount}/"
    args = []
    for w in ("worker-1", "worker-2", "worker-3"):
        args += ["--worker-env", f"{w}:ATOMIC_PUBLISH_FARM_PATH_MAPPING={mapping}"]
    from helpers import run_cli

    job = tmp_path / "job"
    # submit validates on the submitter's machine; a Linux submitter cannot read P:\, so write the files directly
    job.mkdir()
    (job / "job_info.job").write_text("Plugin=AtomicPublish\nName=from windows\nFrames=0\n")
    (job / "plugin_info.job").write_text(f"Manifest={manifest}\n")
    proc = run_cli(["farm", str(job / "job_info.job"), str(job / "plugin_info.job"), "--json", "--dir",
                    str(job / "farm"), *args], env, timeout=240)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["job_status"] == "Completed", proc.stdout
    final = mount / "publish" / "demo/shots/sq01/sh010/publish/render/renderCompMain/v001"
    assert sorted(p.name for p in final.iterdir() if not p.name.startswith(".")) == [
        f"dm_sh010_renderCompMain_v001.{1001 + i}.exr" for i in range(3)]
    rep = store.catalog.project("demo").find_one({"type": "representation"})
    assert rep["files"][0]["path"].startswith("{root[publish]}/demo/shots/")
    # the fingerprint is the submitted (Windows) manifest's: a retry on any platform agrees
    rec = store.records.get(f"deadline10:{out['job_id']}:0")
    from atomic_publish.idempotency.keys import fingerprint
    from atomic_publish.wrapper.manifest import canonical_json, read_json

    assert rec["fingerprint"] == fingerprint(canonical_json(read_json(manifest)))


def test_named_roots_on_the_farm_store_rootless_paths(tmp_path, env, store):
    root = tmp_path / "projects"
    (root / "renders").mkdir(parents=True)
    for i in range(2):
        (root / "renders" / f"comp.{1001 + i}.exr").write_bytes(b"x" * 1000)
    manifest = tmp_path / "roots.json"
    manifest.write_text(json.dumps({**BASE, "roots": {"work": {"windows": "P:/", "linux": str(root),
                                                               "darwin": "/Volumes/projects"}},
                                    "representations": [{"name": "exr", "files": [
                                        "{root[work]}/renders/comp.1001.exr", "{root[work]}/renders/comp.1002.exr"]}]}))
    proc, out = submit_and_farm(manifest, tmp_path / "job", env)
    assert out["job_status"] == "Completed", proc.stdout
    rep = store.catalog.project("demo").find_one({"type": "representation"})
    assert [f["path"] for f in rep["files"]] == [
        f"{{root[work]}}/demo/shots/sq01/sh010/publish/render/renderCompMain/v001/dm_sh010_renderCompMain_v001.{n}.exr"
        for n in (1001, 1002)]
    assert rep["context"]["root"]["work"]["windows"] == "P:/"
    assert Path(_path_of(rep["files"][0]["path"], rep["context"]["root"])).is_file()
