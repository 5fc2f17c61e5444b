"""Retry and blacklist policy: blips survived in-process, escalation, rollback, SIGTERM."""
from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from urllib.parse import urlparse

from helpers import CLI, Render, publish, staged_so_far, submit_and_farm

from atomic_publish.testing.tcp_proxy import TcpProxy


def test_source_no_worker_can_read_fails_the_job_after_max_failing_workers(render, env, store, tmp_path):
    mapping = f"{render.renders}=>{tmp_path / 'unmounted' / 'renders'}"
    args = []
    for w in ("worker-1", "worker-2", "worker-3"):
        args += ["--worker-env", f"{w}:ATOMIC_PUBLISH_FARM_PATH_MAPPING={mapping}"]
    proc, out = submit_and_farm(render.write_manifest(), tmp_path / "job", env, *args)
    assert out["job_status"] == "Failed", proc.stdout
    reports = out["error_reports"]
    rec = store.records.get(f"deadline10:{out['job_id']}:0")
    assert len(reports) == 3 and len({r["worker"] for r in reports}) == 3, \
        (reports, rec and rec.get("attempts"), proc.stdout)
    assert all("cannot see the source folder" in r["message"] for r in reports)
    assert sorted(out["deny_list"]) == sorted(r["worker"] for r in reports[:2])
    last = reports[-1]["message"]
    assert "3 workers" in last and "not local to one worker" in last and "job" in last and "failed" in last
    assert rec["state"] == "ROLLED_BACK"
    assert [a["outcome"] for a in rec["attempts"]] == ["worker-local", "worker-local", "permanent"]
    assert store.reservations.col.count_documents({}) == 0
    assert render.tree() == []


def test_store_outage_during_staging_is_survived_inside_one_attempt(tmp_path, env, store):
    render = Render(tmp_path, frames=300, size=512 * 1024, movie=False)
    target = urlparse(env["ATOMIC_PUBLISH_STORE"])
    with TcpProxy(target.hostname, target.port) as proxy:
        proxied = dict(env, ATOMIC_PUBLISH_STORE=f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true")
        subset = render.publish_root / "demo/shots/sq01/sh010/publish/render/renderCompMain"

        def cut_when_staging_starts() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if subset.exists() and any(p.name.startswith(".v001.staging") for p in subset.iterdir()):
                    proxy.outage(8.0)  # longer than pymongo's own 5 s server selection
                    return
                time.sleep(0.02)

        cutter = threading.Thread(target=cut_when_staging_starts)
        cutter.start()
        proc, out = submit_and_farm(render.write_manifest(), tmp_path / "job", proxied)
        cutter.join()
    assert proxy.outages == 1
    assert out["job_status"] == "Completed", proc.stdout
    assert out["error_reports"] == []
    [task] = out["tasks"]
    assert task["errors"] == 0
    assert proxy.cut_connections >= 1, "the outage must have cut the wrapper's connections"
    assert store.catalog.project("demo").count_documents({"type": "version"}) == 1


def test_sigterm_during_staging_releases_the_lease_and_the_next_attempt_resumes_at_once(tmp_path, env, store):
    frames = 1600  # 100 MB in 64 KiB files, an fsync each: staging lasts well past its first checkpoint
    render = Render(tmp_path, frames=frames, size=64 * 1024, movie=False)
    manifest = render.write_manifest()
    proc = subprocess.Popen([*CLI, "run", "--manifest", str(manifest), "--job-id", "jobt", "--task-id", "0",
                             "--worker", "w1", "--threads", "1", "--json", "--lease-seconds", "300"],
                            # an fsync per file keeps the copy slow enough to be stopped midway (with one
                            # syncfs per batch it can all be staged before the first checkpoint)
                            env=dict(env, ATOMIC_PUBLISH_DURABILITY="fsync"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rec = store.records.get("deadline10:jobt:0")
        if rec and staged_so_far(store, "deadline10:jobt:0"):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 75, stdout + stderr
    out = json.loads(stdout.strip().splitlines()[-1])
    assert "SIGTERM received" in out["message"] and "released the lease" in out["message"]
    rec = store.records.get("deadline10:jobt:0")
    assert rec["lease"] is None
    assert rec["attempts"][-1]["outcome"] == "transient" and rec["attempts"][-1]["end"] is not None
    staged_before = len(staged_so_far(store, "deadline10:jobt:0"))
    assert 0 < staged_before < frames

    started = time.monotonic()
    proc2, out2 = publish(manifest, env, "jobt", "0")
    assert proc2.returncode == 0, proc2.stdout + proc2.stderr
    assert time.monotonic() - started < 60  # the 300 s lease did not have to expire
    assert out2["epoch"] == 2 and out2["reused_files"] >= staged_before - 1
    assert out2["reused_files"] + out2["copied_files"] == frames
