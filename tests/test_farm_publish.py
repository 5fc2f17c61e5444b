"""The real wrapper on the local farm: what Deadline would see, with a real store and real files."""
from __future__ import annotations

import json
from pathlib import Path

from helpers import delayed, submit_and_farm

SUBSET_DIR = Path("demo/shots/sq01/sh010/publish/render/renderCompMain")


def versions_on_disk(render) -> list[str]:
    folder = render.publish_root / SUBSET_DIR
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_worker_without_publish_root_is_deny_listed(render, env, store, tmp_path):
    mapping = f"{render.publish_root}=>{tmp_path / 'offline' / 'projects'}"
    proc, out = submit_and_farm(render.write_manifest(), tmp_path / "job", env,
                                "--worker-env", f"worker-1:ATOMIC_PUBLISH_FARM_PATH_MAPPING={mapping}",
                                *delayed("worker-2", "worker-3"))
    assert out["job_status"] == "Completed", proc.stdout
    assert out["deny_list"] == ["worker-1"]
    [report] = out["error_reports"]
    assert report["worker"] == "worker-1"
    assert "worker worker-1 cannot see the publish root" in report["message"]
    assert "deny-listed for job" in report["message"]
    assert versions_on_disk(render) == ["v001"]
    assert store.catalog.project("demo").count_documents({"type": "version"}) == 1
    final = render.publish_root / SUBSET_DIR / "v001"  # submit turns ProtectPublished on
    assert all(p.stat().st_mode & 0o222 == 0 for p in [final, *final.iterdir()])
    [task] = out["tasks"]
    assert task["status"] == "Completed" and task["errors"] == 1
    # the farm's summary says what it published, like the demo's
    [published] = out["published"]
    assert (published["version"], published["final_dir"]) == (1, str(final)), published
    assert f"v001 at {final} (published, {task['worker']})" in proc.stdout, proc.stdout


def test_transient_fault_on_first_attempt_then_completed(render, env, store, tmp_path):
    proc, out = submit_and_farm(render.write_manifest(), tmp_path / "job", env,
                                "--worker-env", "worker-1:ATOMIC_PUBLISH_FAILPOINTS=stage.file=raise@2",
                                *delayed("worker-2", "worker-3"))
    assert out["job_status"] == "Completed", proc.stdout
    assert out["deny_list"] == []
    assert out["error_reports"], "the first attempt must have failed"
    for report in out["error_reports"]:
        assert report["worker"] == "worker-1" and "transient" in report["message"]
        assert "failpoint stage.file fired" in report["message"]
    assert versions_on_disk(render) == ["v001"]
    assert store.catalog.project("demo").count_documents({"type": "version"}) == 1
    rec = store.records.get(f"deadline10:{out['job_id']}:0")
    assert rec["state"] == "PUBLISHED"


def test_invalid_manifest_fails_the_job_on_first_attempt_without_trace(render, env, store, tmp_path):
    job = tmp_path / "job"
    manifest = render.write_manifest()
    from helpers import run_cli

    run_cli(["submit", str(manifest), "--out", str(job)], env, check=True)
    copy = job / "manifest.json"
    data = json.loads(copy.read_text())
    data["representations"] = []  # broken after submission: the farm must fail fast
    copy.write_text(json.dumps(data))
    proc = run_cli(["farm", str(job / "job_info.job"), str(job / "plugin_info.job"), "--json",
                    "--dir", str(job / "farm")], env, timeout=240)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["job_status"] == "Failed", proc.stdout
    [report] = out["error_reports"]
    assert "manifest field representations" in report["message"] and "job" in report["message"]
    assert render.tree() == []
    assert store.records.col.count_documents({}) == 0
    assert store.reservations.col.count_documents({}) == 0
