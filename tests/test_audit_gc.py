"""audit finds each kind of damage precisely; gc removes only what abandoned attempts left."""
from __future__ import annotations

import json
import os
from pathlib import Path

from helpers import CLI, Render, publish, run_cli

SUBSET_DIR = Path("demo/shots/sq01/sh010/publish/render/renderCompMain")


def audit(env, render) -> tuple[int, dict]:
    proc = run_cli(["audit", "--root", str(render.publish_root), "--json"], env)
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


def test_clean_after_publishes_and_rollbacks(render, env, store):
    publish(render.write_manifest(), env, "jobA")
    publish(render.write_manifest("b.json", comment="b"), env, "jobB")
    publish(render.write_manifest("c.json", version=1, comment="conflict"), env, "jobC")  # rolled back
    code, out = audit(env, render)
    assert code == 0, out
    assert out["violations"] == [] and out["checked"]["records"] == 2 and out["checked"]["versions"] == 2  # jobC: refused before writing
    assert out["checked"]["files"] == 8


def test_each_damage_is_reported_precisely(render, env, store):
    _, first = publish(render.write_manifest(), env, "jobA")
    _, second = publish(render.write_manifest("b.json", comment="b"), env, "jobB")
    v1, v2 = Path(first["final_dir"]), Path(second["final_dir"])
    missing = v1 / "dm_sh010_renderCompMain_v001.1002.exr"
    missing.unlink()                                                             # a missing published file
    modified = v2 / "dm_sh010_renderCompMain_v002.mov"
    modified.write_bytes(b"x" * modified.stat().st_size)                         # modified after commit
    project = store.catalog.project("demo")
    doc = project.find_one({"type": "version", "name": 2})
    doc.pop("_id")
    doc["data"]["atomic_publish"] = {"key": "manual"}
    project.insert_one({**doc, "name": 1})                                      # a duplicate version number
    orphan = render.publish_root / SUBSET_DIR / "v007"
    orphan.mkdir()
    (orphan / "x.exr").write_bytes(b"1")                                         # an orphan final folder
    stale = render.publish_root / SUBSET_DIR / ".v003.staging-0123456789ab-e1"
    stale.mkdir()                                                                # a stale staging folder

    code, out = audit(env, render)
    assert code == 1
    found = {(v["invariant"], v["key"], v["detail"]) for v in out["violations"]}
    assert (2, first["key"], f"published file {missing} is missing") in found
    assert any(i == 5 and k == second["key"] and str(modified) in d and "does not match its recorded hash" in d
               for i, k, d in found)
    assert any(i == 1 and "2 version documents with number 1" in d for i, k, d in found)
    assert (4, None, f"version folder {orphan} belongs to no publish (no marker, no record)") in found
    assert any(i == 6 and str(stale) in d and "belongs to no record" in d for i, k, d in found)
    assert len(out["violations"]) == 5, out["violations"]
    human = run_cli(["audit", "--root", str(render.publish_root)], env).stdout
    assert "run `atomic-publish gc`" in human and "5 violation(s)" in human


def test_audit_is_read_only(render, env, store, mongo_uri):
    publish(render.write_manifest(), env)
    import pymongo

    client = pymongo.MongoClient(mongo_uri)
    names = lambda: sorted(client[env["ATOMIC_PUBLISH_STATE_DATABASE"]].list_collection_names())  # noqa: E731
    before_state = list(store.records.col.find())
    before = names()
    run_cli(["audit", "--root", str(render.publish_root)], env, check=True)
    assert names() == before and list(store.records.col.find()) == before_state


def test_gc_removes_dead_epochs_but_never_live_or_committed(tmp_path, env, store):
    import subprocess

    render = Render(tmp_path, frames=600, size=4096, movie=False)
    manifest = render.write_manifest()
    # Attempt 1 is killed mid-staging, attempt 2 is killed too: epoch 1's folder is moved into epoch 2's.
    for _ in range(2):
        env_k = dict(env, ATOMIC_PUBLISH_FAILPOINTS="stage.checkpoint=kill@1")
        subprocess.run([*CLI, "run", "--manifest", str(manifest), "--job-id", "jobg", "--task-id", "0"],
                       env=env_k, capture_output=True, timeout=120)
    rec = store.records.get("deadline10:jobg:0")
    assert rec["epoch"] == 2
    current = Path(rec["staging_dirs"]["2"])
    dead = Path(rec["staging_dirs"]["1"])
    dead.mkdir(exist_ok=True)  # what a zombie of epoch 1 could leave
    unknown = render.publish_root / SUBSET_DIR / ".v009.staging-0123456789ab-e4"
    unknown.mkdir()
    out = run_cli(["gc", "--older-than", "0s", "--root", str(render.publish_root), "--dry-run"], env, check=True).stdout
    assert "would remove" in out and dead.exists() and unknown.exists()
    run_cli(["gc", "--older-than", "0s", "--root", str(render.publish_root)], env, check=True)
    assert not dead.exists() and not unknown.exists()
    assert current.is_dir(), "the current epoch's staging folder is kept for the resume"
    proc, out = publish(manifest, env, "jobg", "0")
    assert proc.returncode == 0 and out["reused_files"] > 0
    final_files = sorted(os.listdir(out["final_dir"]))
    run_cli(["gc", "--older-than", "0s", "--root", str(render.publish_root)], env, check=True)
    assert sorted(os.listdir(out["final_dir"])) == final_files
    code, report = audit(env, render)
    assert code == 0, report


def test_gc_releases_reservations_of_rolled_back_keys(render, env, store):
    publish(render.write_manifest(), env, "jobA")
    store.reservations.col.insert_one({"project": "demo", "asset": "sh010", "subset": "renderCompMain",
                                       "version": 9, "key": "deadline10:ghost:0", "state": "reserved"})
    code, out = audit(env, render)
    assert any(v["key"] == "deadline10:ghost:0" and v["invariant"] == 3 for v in out["violations"])
    run_cli(["gc", "--older-than", "0s"], env, check=True)
    assert store.reservations.col.find_one({"key": "deadline10:ghost:0"}) is None
    assert store.reservations.col.find_one({"key": "deadline10:jobA:0"})["state"] == "committed"


def test_a_dropped_unique_index_is_reported_and_reindex_makes_it(render, env, store):
    """Publishes read the indexes' generation from the store's meta document instead of listing
    them (issue 18), so an index dropped by hand is not recreated by a publish: audit names it and
    `atomic-publish store reindex` makes it again."""
    publish(render.write_manifest(), env, "jobA")
    assert store.meta.find_one({"_id": "store"})["indexes"] >= 1
    store.reservations.col.drop_index("one_key_per_version")
    publish(render.write_manifest("b.json", comment="b"), env, "jobB")
    assert "one_key_per_version" not in {i["name"] for i in store.reservations.col.list_indexes()}
    code, out = audit(env, render)
    assert code == 1
    assert [(v["invariant"], v["key"]) for v in out["violations"]] == [(1, None)]
    assert "index reservations.one_key_per_version of the state store is missing" in out["violations"][0]["detail"]
    assert "atomic-publish store reindex" in out["violations"][0]["todo"]
    proc = run_cli(["store", "reindex"], env, check=True)
    assert "none missing" in proc.stdout
    code, out = audit(env, render)
    assert (code, out["violations"]) == (0, [])


def test_a_store_made_by_an_older_version_gets_its_indexes_once(render, env, store):
    """A meta document without the indexes' generation (a store made before it existed): the
    next publish creates every index and notes the generation, keeping the store's id."""
    store.meta.insert_one({"_id": "store", "store_id": "older-store-id"})
    publish(render.write_manifest(), env, "jobA")
    doc = store.meta.find_one({"_id": "store"})
    assert doc["store_id"] == "older-store-id" and doc["indexes"] >= 1
    assert "one_key_per_version" in {i["name"] for i in store.reservations.col.list_indexes()}
