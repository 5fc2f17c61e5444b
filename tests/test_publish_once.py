"""The exactly-once core, end to end through the CLI, real files and a real wire-protocol store."""
from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from helpers import CLI, Render, publish, run_killed_at

from atomic_publish.wrapper.progress_journal import read_journal

FINAL = Path("demo/shots/sq01/sh010/publish/render/renderCompMain")


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_publish_then_retry_changes_nothing(render, env, store):
    manifest = render.write_manifest()
    proc, out = publish(manifest, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out["outcome"] == "published" and out["version"] == 1
    final = render.publish_root / FINAL / "v001"
    assert out["final_dir"] == str(final)
    names = sorted(p.name for p in final.iterdir())
    assert names == [".atomic-publish.json", "dm_sh010_renderCompMain_v001.1001.exr",
                     "dm_sh010_renderCompMain_v001.1002.exr", "dm_sh010_renderCompMain_v001.1003.exr",
                     "dm_sh010_renderCompMain_v001.mov"]
    for i, src in enumerate(render.frames):
        assert (final / f"dm_sh010_renderCompMain_v001.{1001 + i}.exr").read_bytes() == src.read_bytes()
    assert json.loads((final / ".atomic-publish.json").read_text())["key"] == "deadline10:job1:0"

    before_files = snapshot(render.publish_root)
    before_record = store.records.get("deadline10:job1:0")
    started = time.monotonic()
    proc, out = publish(manifest, env)
    assert proc.returncode == 0
    assert out["outcome"] == "already-published" and out["version"] == 1
    assert "nothing changed" in out["message"]
    assert time.monotonic() - started < 10
    assert snapshot(render.publish_root) == before_files
    assert store.records.get("deadline10:job1:0") == before_record

    project = store.catalog.project("demo")
    assert project.count_documents({"type": "version"}) == 1
    assert project.count_documents({"type": "subset"}) == 1
    reps = list(project.find({"type": "representation"}))
    assert sorted(r["name"] for r in reps) == ["exr", "mov"]
    exr = next(r for r in reps if r["name"] == "exr")
    assert [f["size"] for f in exr["files"]] == [64 * 1024] * 3
    assert all(f["path"].startswith("{root[publish]}/demo/shots/sq01/sh010/") for f in exr["files"])
    assert all(len(f["hash"]) == 32 and f["hash_type"] == "xxh3_128" for f in exr["files"])


def test_sigkill_during_staging_resumes_without_copying_again(tmp_path, env, store):
    render = Render(tmp_path, frames=600, size=4096, movie=False)
    manifest = render.write_manifest()
    assert run_killed_at(manifest, env, "jobk", "stage.checkpoint=kill@1").returncode == -signal.SIGKILL
    rec = store.records.get("deadline10:jobk:0")
    staging = Path(rec["staging_dir"])
    assert staging.is_dir() and store.staged.of_key("deadline10:jobk:0") == {}  # the store: once staging is done
    # the first checkpoint, in the staging folder's journal: 512 files, or fewer when half a second passed first
    staged = len(read_journal(str(staging)))
    assert rec["state"] == "STAGING" and 0 < staged <= 512

    proc, out = publish(manifest, env, "jobk", "0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out["outcome"] == "published" and out["version"] == 1 and out["epoch"] == 2
    # the saved files, and the copies the killed attempt finished but never saved (verified by hash)
    adopted = out["adopted_files"]
    assert out["reused_files"] == staged + adopted and out["reused_bytes"] == (staged + adopted) * 4096
    assert out["copied_files"] == 600 - staged - adopted and out["copied_bytes"] == (600 - staged - adopted) * 4096
    assert not staging.exists()
    siblings = sorted(p.name for p in (render.publish_root / FINAL).iterdir())
    assert siblings == ["v001"]
    final = render.publish_root / FINAL / "v001"
    assert len(list(final.glob("*.exr"))) == 600
    assert store.catalog.project("demo").count_documents({"type": "version"}) == 1


def test_same_task_other_manifest_is_refused(render, env, store):
    publish(render.write_manifest(), env)
    before = snapshot(render.publish_root)
    record = store.records.get("deadline10:job1:0")
    other = render.write_manifest("other.json", comment="changed")
    proc, out = publish(other, env)
    assert proc.returncode == 78
    assert out["outcome"] == "permanent"
    assert "another manifest" in out["message"] and "nothing was changed" in out["message"]
    assert snapshot(render.publish_root) == before
    assert store.records.get("deadline10:job1:0") == record


def test_eight_concurrent_publishers_get_distinct_versions(render, env, store):
    manifest = render.write_manifest()
    procs = [subprocess.Popen([*CLI, "run", "--manifest", str(manifest), "--job-id", f"job{i}", "--task-id", "0",
                               "--worker", f"w{i}", "--json"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(8)]
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=180)
        assert p.returncode == 0, stdout + stderr
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    versions = sorted(o["version"] for o in outs)
    assert versions == list(range(1, 9))
    for o in outs:
        final = Path(o["final_dir"])
        marker = json.loads((final / ".atomic-publish.json").read_text())
        assert marker["key"] == o["key"]
        v = o["version"]
        assert sorted(p.name for p in final.iterdir() if p.name != ".atomic-publish.json") == sorted(
            [f"dm_sh010_renderCompMain_v{v:03}.{1001 + i}.exr" for i in range(3)] + [f"dm_sh010_renderCompMain_v{v:03}.mov"])
    assert sorted(p.name for p in (render.publish_root / FINAL).iterdir()) == [f"v{v:03}" for v in range(1, 9)]
    names = [d["name"] for d in store.catalog.project("demo").find({"type": "version"})]
    assert sorted(names) == list(range(1, 9))


def test_pinned_version_held_by_another_key_conflicts(render, env, store):
    proc, first = publish(render.write_manifest(version=5), env, "jobA")
    assert proc.returncode == 0 and first["version"] == 5
    before = snapshot(render.publish_root)
    proc, out = publish(render.write_manifest("b.json", version=5, comment="other"), env, "jobB")
    assert proc.returncode == 78
    assert out["outcome"] == "permanent" and "belongs to publish deadline10:jobA:0" in out["message"]
    assert snapshot(render.publish_root) == before
    assert store.reservations.of_key("deadline10:jobB:0") is None
    assert store.records.get("deadline10:jobB:0") is None  # refused before anything was written
    assert store.catalog.project("demo").count_documents({"type": "version"}) == 1


def test_next_free_number_follows_existing_versions(render, env, store):
    publish(render.write_manifest(version=3), env, "jobA")
    proc, out = publish(render.write_manifest("b.json", comment="next"), env, "jobB")
    assert proc.returncode == 0 and out["version"] == 4


def test_status_shows_the_record(render, env):
    from helpers import run_cli

    publish(render.write_manifest(), env)
    proc = run_cli(["status", "--key", "deadline10:job1:0", "--json"], env, check=True)
    view = json.loads(proc.stdout)
    assert view["state"] == "PUBLISHED" and view["version"] == 1 and view["epoch"] == 1
    assert view["lease"] is None and view["files"]["count"] == 4
    assert view["attempts"][0]["outcome"] == "published" and view["attempts"][0]["worker"] == "test-worker"
    human = run_cli(["status", "--job-id", "job1"], env, check=True).stdout
    assert "PUBLISHED" in human and "test-worker" in human
