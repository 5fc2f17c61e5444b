"""Nothing committed is ever lost (issue 16): gc, audit and roll-forward under real farm conditions.

Each test reproduces one way the guarantees broke when tried as an adversary would, with real
processes, real mounts (tmpfs, bind mounts: skipped where this machine refuses them), real
skewed clocks (libfaketime) and real stores.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pymongo
import pytest

from helpers import CLI, publish, run_cli, staged_so_far

KEY = "deadline10:{job}:0"


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def mounts():
    """Mounts made by a test, undone after it; skips where this machine refuses mounts."""
    made: list[Path] = []

    def mount(target: Path, *args: str) -> None:
        if not _mount(*args, str(target)):
            pytest.skip("mount is not permitted here (needs root); the fault suite skips this class too")
        made.append(target)

    yield mount
    for target in reversed(made):
        _umount(target)


def audit(env, *roots: Path) -> dict:
    args = ["audit", "--json"] + [a for r in roots for a in ("--root", str(r))]
    proc = run_cli(args, env)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def stopped(manifest: Path, env: dict, job: str, failpoint: str) -> subprocess.CompletedProcess:
    """An attempt that a failpoint stops midway (it prints no result)."""
    return run_cli(["run", "--manifest", str(manifest), "--job-id", job, "--task-id", "0", "--worker", "w1"],
                   {**env, "ATOMIC_PUBLISH_FAILPOINTS": failpoint})


def committing(render, env, store, job: str) -> dict:
    """A publish stopped right after COMMITTING (the point of no return)."""
    proc = stopped(render.write_manifest(), env, job, "commit.begin=exit")
    rec = store.records.get(KEY.format(job=job))
    assert rec["state"] == "COMMITTING", (proc.stdout, proc.stderr)
    return rec


# -- 1. the point of no return holds on disk ----------------------------------------------------
def test_an_empty_mount_is_worker_local_and_gc_never_removes_a_committing_version(render, env, store, mounts):
    rec = committing(render, env, store, "jobC")
    staging = Path(rec["staging_dir"])
    assert staging.is_dir()
    mounts(render.publish_root, "-t", "tmpfs", "-o", "size=1m", "tmpfs")  # this worker's mount is empty
    proc, out = publish(render.root / "manifest.json", env, "jobC")
    assert proc.returncode == 77 and out["failure_class"] == "worker-local", out     # another worker must finish it
    assert "sees neither the staging folder" in out["message"]
    _umount(render.publish_root)
    assert staging.is_dir()
    gc = run_cli(["gc", "--older-than", "0s", "--root", str(render.publish_root)], env)
    assert gc.returncode == 0 and staging.is_dir(), gc.stdout              # invariant 7: never removed
    assert audit(env, render.publish_root)["violations"] == []
    proc, out = publish(render.root / "manifest.json", env, "jobC")
    assert proc.returncode == 0 and out["outcome"] == "published", out
    assert audit(env, render.publish_root)["violations"] == []


def test_audit_reports_a_committing_version_that_lost_its_files(render, env, store):
    rec = committing(render, env, store, "jobL")
    shutil.rmtree(rec["staging_dir"])                                         # what the old gc did
    found = audit(env, render.publish_root)["violations"]
    assert [v["invariant"] for v in found] == [7], found
    assert "has lost its files" in found[0]["detail"]


def test_a_final_folder_taken_before_the_commit_moves_the_publish_to_the_next_number(render, env, store):
    manifest = render.write_manifest()
    stopped(manifest, env, "jobT", "staged=exit")
    rec = store.records.get(KEY.format(job="jobT"))
    taken = Path(rec["final_dir"])
    taken.mkdir()
    (taken / "by-hand.txt").write_text("someone else's")                     # made by a person meanwhile
    proc, out = publish(manifest, env, "jobT")
    assert proc.returncode == 0 and out["version"] == 2, (out, proc.stdout)
    assert "this publish takes v002 instead (nothing was overwritten)" in proc.stdout
    assert sorted(p.name for p in taken.iterdir()) == ["by-hand.txt"]
    assert len(list(Path(out["final_dir"]).glob("*.exr"))) == 3
    assert store.reservations.col.count_documents({"key": KEY.format(job="jobT")}) == 1
    assert store.catalog.project("demo").count_documents({"type": "version"}) == 1


def test_a_pinned_final_folder_taken_before_the_commit_is_a_conflict_rolled_back(render, env, store):
    manifest = render.write_manifest(version=5)
    stopped(manifest, env, "jobP", "staged=exit")
    taken = Path(store.records.get(KEY.format(job="jobP"))["final_dir"])
    taken.mkdir()
    proc, out = publish(manifest, env, "jobP")
    assert proc.returncode == 78 and "nothing was overwritten" in out["message"], out
    assert store.records.get(KEY.format(job="jobP"))["state"] == "ROLLED_BACK"
    assert taken.is_dir() and not list(taken.iterdir())


# -- 2. paths compared as storage ------------------------------------------------------------------
def test_gc_and_audit_through_a_symlink_to_the_root_keep_a_resumable_staging_folder(render, env, store):
    manifest = render.write_manifest()
    stopped(manifest, env, "jobA", "stage.checkpoint=exit@1")
    rec = store.records.get(KEY.format(job="jobA"))
    staging = Path(rec["staging_dir"])
    assert rec["state"] == "STAGING" and any(staging.iterdir())
    alias = render.root / "alias"
    alias.symlink_to(render.publish_root)
    assert audit(env, alias)["violations"] == []
    gc = run_cli(["gc", "--older-than", "0s", "--root", str(alias)], env)
    assert staging.is_dir(), gc.stdout
    proc, out = publish(manifest, env, "jobA")
    assert out["outcome"] == "published" and out["reused_files"] >= 1, out
    assert audit(env, alias)["violations"] == [] and audit(env, render.publish_root)["violations"] == []


def test_gc_through_a_bind_mount_leaves_what_it_cannot_match(render, env, store, mounts):
    stopped(render.write_manifest(), env, "jobB", "stage.checkpoint=exit@1")
    staging = Path(store.records.get(KEY.format(job="jobB"))["staging_dir"])
    other = render.root / "other-mount"
    other.mkdir()
    mounts(other, "--bind", str(render.publish_root))
    gc = run_cli(["gc", "--older-than", "0s", "--root", str(other)], env)
    assert gc.returncode == 0 and staging.is_dir(), gc.stdout
    assert audit(env, other)["violations"] == []


# -- 3. gc races ------------------------------------------------------------------------------------
def test_a_publish_that_starts_between_gcs_scan_and_its_walk_keeps_its_staging_folder(render, env, store):
    from atomic_publish.wrapper.gc import Collector

    manifest = render.write_manifest()

    class Racing(Collector):
        def orphan_reservations(self) -> None:  # after the records were scanned, before the disk walk
            super().orphan_reservations()
            stopped(manifest, env, "jobR", "stage.checkpoint=exit@1")

    said: list[str] = []
    Racing(store, 0.0, False, said.append).run([str(render.publish_root)])
    staging = Path(store.records.get(KEY.format(job="jobR"))["staging_dir"])
    assert staging.is_dir() and any(staging.iterdir()), said
    assert any("leaving" in line and str(staging) in line for line in said), said


# -- 4. one clock: the store's ----------------------------------------------------------------------
def _skewed(offset: str) -> list[str]:
    if not shutil.which("faketime"):
        pytest.skip("libfaketime is not installed (apt-get install faketime); the fault suite's "
                    "ATOMIC_PUBLISH_FAULT_CLOCK_SKEW covers the logic")
    return ["faketime", "-f", offset]


def test_a_fast_worker_does_not_steal_a_live_lease_and_a_fast_gc_does_not_release_it(render, env, store):
    manifest = render.write_manifest()
    holder = subprocess.Popen([*CLI, "run", "--manifest", str(manifest), "--job-id", "jobK", "--task-id", "0",
                               "--worker", "slow-and-steady", "--lease-seconds", "120", "--json"],
                              env={**env, "ATOMIC_PUBLISH_FAILPOINTS": "lease.acquired=hang"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (store.records.get(KEY.format(job="jobK")) or {}).get("lease"):
            assert time.monotonic() < deadline and holder.poll() is None
            time.sleep(0.1)
        fast = {**env, "ATOMIC_PUBLISH_WORKER": "fast"}
        proc = subprocess.run([*_skewed("+10m"), *CLI, "run", "--manifest", str(manifest), "--job-id", "jobK",
                               "--task-id", "0", "--worker", "fast", "--json"], env=fast, capture_output=True,
                              text=True, timeout=120)
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert proc.returncode == 76 and out["failure_class"] == "busy", out              # not stolen
        assert "clock is 600 s ahead of the clock of the store" in proc.stderr, proc.stderr
        gc = subprocess.run([*_skewed("+10m"), *CLI, "gc", "--older-than", "0s"], env=env, capture_output=True,
                            text=True, timeout=120)
        assert "expired lease" not in gc.stdout.replace("0 expired lease(s)", ""), gc.stdout
        rec = store.records.get(KEY.format(job="jobK"))
        assert rec["lease"]["worker"] == "slow-and-steady" and rec["epoch"] == 1
    finally:
        holder.kill()
        holder.wait()


def test_a_slow_worker_writes_leases_by_the_stores_clock(render, env, store):
    manifest = render.write_manifest()
    proc = subprocess.run([*_skewed("-10m"), *CLI, "run", "--manifest", str(manifest), "--job-id", "jobS",
                           "--task-id", "0", "--worker", "slow", "--lease-seconds", "120", "--json"],
                          env={**env, "ATOMIC_PUBLISH_FAILPOINTS": "stage.begin=exit"}, capture_output=True,
                          text=True, timeout=120)
    rec = store.records.get(KEY.format(job="jobS"))
    expires = rec["lease"]["expires_at"]
    expires = expires if expires.tzinfo else expires.replace(tzinfo=__import__("datetime").timezone.utc)
    left = (expires - __import__("datetime").datetime.now(__import__("datetime").timezone.utc)).total_seconds()
    assert 60 < left <= 121, (left, proc.stderr)   # not already expired by ten minutes


# -- 5. full disks are transient ---------------------------------------------------------------------
def test_a_full_disk_is_transient_never_rolled_back_and_resumes_once_space_is_freed(render, env, store, mounts):
    mounts(render.publish_root, "-t", "tmpfs", "-o", "size=256k", "tmpfs")
    manifest = render.write_manifest()                     # 3 frames + a movie of 64 KiB: 256 KiB
    for attempt in range(8):                               # more than MaxKeyAttempts (6): never escalated
        proc, out = publish(manifest, env, "jobF")
        assert proc.returncode == 75 and out["failure_class"] == "transient", out
        assert "no space left on the publish storage" in out["message"], out
    rec = store.records.get(KEY.format(job="jobF"))
    assert rec["state"] in ("STAGING", "RESERVED"), rec["state"]
    _umount(render.publish_root)                            # space freed (the real root has room)
    proc, out = publish(manifest, env, "jobF")
    assert proc.returncode == 0 and out["outcome"] == "published", out
    assert audit(env, render.publish_root)["violations"] == []


# -- 6. one farm, one store ----------------------------------------------------------------------------
def _other_store(env: dict) -> dict:
    return {**env, "ATOMIC_PUBLISH_STATE_DATABASE": f"ap_other_{uuid.uuid4().hex[:8]}",
            "ATOMIC_PUBLISH_DATABASE": f"avalon_other_{uuid.uuid4().hex[:8]}"}


def test_a_worker_on_another_store_refuses_and_writes_nothing(render, env, store):
    store_id = run_cli(["store", "id"], env, check=True).stdout.strip()
    other = _other_store(env)
    proc, out = publish(render.write_manifest(), other, "jobW", "0", "--store-id", store_id)
    assert proc.returncode == 77 and "StoreUri" in out["message"], out
    client = pymongo.MongoClient(env["ATOMIC_PUBLISH_STORE"])
    try:
        assert client[other["ATOMIC_PUBLISH_STATE_DATABASE"]]["records"].count_documents({}) == 0
    finally:
        client.drop_database(other["ATOMIC_PUBLISH_STATE_DATABASE"])
        client.close()
    assert render.tree() == []
    proc, out = publish(render.root / "manifest.json", env, "jobW", "0", "--store-id", store_id)
    assert proc.returncode == 0, out


def test_staging_never_writes_into_another_stores_folder(render, env, store):
    manifest = render.write_manifest()
    stopped(manifest, env, "jobX", "stage.checkpoint=exit@1")
    staging = Path(store.records.get(KEY.format(job="jobX"))["staging_dir"])
    before = {p.name: p.stat().st_mtime_ns for p in staging.iterdir()}
    other = _other_store(env)                               # the same job and task, epoch 1, another store
    proc, out = publish(manifest, other, "jobX")
    pymongo.MongoClient(env["ATOMIC_PUBLISH_STORE"]).drop_database(other["ATOMIC_PUBLISH_STATE_DATABASE"])
    assert proc.returncode == 77 and "already exists" in out["message"], out
    assert {p.name: p.stat().st_mtime_ns for p in staging.iterdir()} == before
    proc, out = publish(manifest, env, "jobX")
    assert out["outcome"] == "published", out


# -- 7. every write of an attempt is fenced --------------------------------------------------------------
def test_a_zombie_that_wakes_after_a_rollback_reserves_nothing(render, env, store):
    from atomic_publish.idempotency.keys import deadline_key, fingerprint
    from atomic_publish.wrapper.errors import Superseded
    from atomic_publish.wrapper.guard import StopGuard
    from atomic_publish.wrapper.manifest import canonical_json, load_manifest
    from atomic_publish.wrapper.publish import Attempt, Request

    path = render.write_manifest()
    manifest = load_manifest(str(path))
    key = deadline_key("jobZ", "0")
    req = Request(manifest_path=str(path), job_id="jobZ", task_id="0", worker="zombie")
    zombie = Attempt(store, manifest, key, fingerprint(canonical_json(manifest.raw)), req, StopGuard())
    zombie._acquire()                                       # epoch 1 ... then it sleeps
    store.records.col.update_one({"_id": key}, {"$set": {"epoch": 2, "state": "ROLLED_BACK", "lease": None}})
    with pytest.raises(Superseded):                         # ... and wakes after a rollback by epoch 2
        zombie._reserve()
    assert store.reservations.col.count_documents({"key": key}) == 0


# -- 8. a roll-forward through another mount writes the same documents ---------------------------------
def test_a_roll_forward_through_another_mount_writes_the_same_rootless_paths(render, env, store, mounts):
    manifest = render.write_manifest()
    committing(render, env, store, "jobM")
    other = render.root / "mnt-projects"
    other.mkdir()
    mounts(other, "--bind", str(render.publish_root))
    mapped = render.write_manifest("mapped.json", publish_root=str(other))
    proc, out = publish(mapped, env, "jobM", "0", "--submitted-manifest", str(manifest))
    assert proc.returncode == 0 and out["outcome"] == "published", out
    reps = list(store.catalog.project("demo").find({"type": "representation"}))
    paths = [f["path"] for r in reps for f in r["files"]]
    assert paths and all(p.startswith("{root[publish]}/demo/") and ".." not in p for p in paths), paths
    assert audit(env, render.publish_root)["violations"] == []


# -- 9. sources that change between attempts ----------------------------------------------------------------
def test_a_frame_re_rendered_between_attempts_is_not_mixed_into_the_version(render, env, store):
    manifest = render.write_manifest()
    stopped(manifest, env, "jobR2", "stage.checkpoint=exit@1")
    staged = [e["src"] for e in staged_so_far(store, KEY.format(job="jobR2")).values()]
    assert staged
    time.sleep(0.01)
    Path(staged[0]).write_bytes(os.urandom(70 * 1024))      # re-rendered, another size and date
    proc, out = publish(manifest, env, "jobR2")
    assert proc.returncode == 78 and "changed between attempts" in out["message"], out
    assert store.records.get(KEY.format(job="jobR2"))["state"] == "ROLLED_BACK"
    assert store.catalog.project("demo").count_documents({"type": "version"}) == 0


def test_audit_reports_a_hardlinked_file_rewritten_with_its_size_and_dates_kept(render, env, store):
    proc, out = publish(render.write_manifest(link_mode="hardlink", verify="size"), env, "jobH")
    assert out["outcome"] == "published", out
    assert audit(env, render.publish_root)["violations"] == []
    frame = render.frames[0]
    st = frame.stat()
    time.sleep(0.02)
    with open(frame, "r+b") as fh:                          # a re-render written in place ...
        fh.write(os.urandom(1024))
    os.utime(frame, ns=(st.st_atime_ns, st.st_mtime_ns))    # ... keeping size and modification date
    found = audit(env, render.publish_root)["violations"]
    assert [v["invariant"] for v in found] == [5], found
    assert "changed after the commit" in found[0]["detail"]


def test_deleting_the_render_of_a_hardlinked_version_is_not_a_modification(render, env, store):
    publish(render.write_manifest(link_mode="hardlink", verify="size"), env, "jobD")
    for f in render.frames:
        f.unlink()                                          # the render folder cleaned after the publish
    assert audit(env, render.publish_root)["violations"] == []


def test_gc_dry_run_lists_exactly_what_the_real_run_removes(render, env, store):
    manifest = render.write_manifest()
    for _ in range(2):                                      # epoch 1 and epoch 2 stopped mid-staging
        stopped(manifest, env, "jobY", "stage.checkpoint=exit@1")
    rec = store.records.get(KEY.format(job="jobY"))
    Path(rec["staging_dirs"]["1"]).mkdir(exist_ok=True)     # a dead epoch's folder (a zombie's leftover)
    orphan = Path(rec["final_dir"]).parent / ".v009.staging-0123456789ab-e3"
    orphan.mkdir()                                          # no record knows it
    args = ["gc", "--older-than", "0s", "--root", str(render.publish_root)]
    dry = run_cli([*args, "--dry-run"], env, check=True).stdout
    wet = run_cli(args, env, check=True).stdout
    would = sorted(line.split(" (")[0].replace("would remove ", "") for line in dry.splitlines()
                   if line.startswith("would remove /"))
    removed = sorted(line.split(" (")[0].replace("removing ", "") for line in wet.splitlines()
                     if line.startswith("removing /"))
    assert would == removed == sorted([rec["staging_dirs"]["1"], str(orphan)]), (dry, wet)
    assert Path(rec["staging_dirs"]["2"]).is_dir()          # the current epoch's folder stays
