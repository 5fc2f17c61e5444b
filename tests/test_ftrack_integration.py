"""ftrack two-phase integration: the real ftrack_api client against the local fake server."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import publish, run_cli

pytest.importorskip("ftrack_api")
from atomic_publish.testing.fake_ftrack import FakeFtrackServer  # noqa: E402

SUBSET_DIR = Path("demo/shots/sq01/sh010/publish/render/renderCompMain")


@pytest.fixture
def ftrack(tmp_path, env):
    with FakeFtrackServer(tmp_path / "ftrack-state", api_user="publisher", api_key="ftrack-secret-key") as server:
        server.seed_context("demo", "sh010", "comp")
        env.update(FTRACK_SERVER=server.url, FTRACK_API_USER="publisher", FTRACK_API_KEY="ftrack-secret-key")
        yield server


def manifest(render):
    return render.write_manifest(integrations=[{"name": "ftrack", "settings": {"asset_type": "render"}}])


def versions(server) -> list[dict]:
    return server.entities("AssetVersion")


def test_publish_creates_one_published_asset_version(render, env, store, ftrack):
    proc, out = publish(manifest(render), env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [av] = versions(ftrack)
    assert av["is_published"] is True and av["version"] == 1
    [asset] = ftrack.entities("Asset")
    assert asset["name"] == "renderCompMain"
    components = ftrack.entities("Component")
    assert sorted(c["name"] for c in components) == ["exr", "mov"]
    assert [m for m in ftrack.entities("Metadata") if m["key"] == "atomic_publish_key"][0]["value"] == out["key"]
    rec = store.records.get(out["key"])
    assert rec["receipts"]["ftrack"]["state"] == "committed"
    assert rec["receipts"]["ftrack"]["receipt"]["asset_version_id"] == av["id"]
    assert "ftrack-secret-key" not in proc.stdout + proc.stderr
    # a retry changes nothing in ftrack
    before = ftrack.stats()["applied"]
    proc, out = publish(manifest(render), env)
    assert out["outcome"] == "already-published" and ftrack.stats()["applied"] == before


def test_ftrack_transient_failure_after_staging_then_next_attempt_completes(render, env, store, ftrack):
    ftrack.set_faults({"kind": "http_error", "status": 503, "count": 1, "action": "create",
                       "entity_type": "AssetVersion"})
    proc, out = publish(manifest(render), env, "job1", "0", "--retry-attempts", "1")
    assert proc.returncode == 75, proc.stdout
    assert "ftrack failed to create the version" in out["message"] and "HTTP 503" in out["message"]
    rec = store.records.get("deadline10:job1:0")
    assert rec["state"] == "INTEGRATING" and len(store.staged.of_key("deadline10:job1:0")) == 4
    assert versions(ftrack) == []

    proc, out = publish(manifest(render), env)
    assert proc.returncode == 0, proc.stdout
    assert out["reused_files"] == 4 and out["copied_files"] == 0
    [av] = versions(ftrack)
    assert av["is_published"] is True
    assert store.catalog.project("demo").count_documents({"type": "version"}) == 1


def test_ftrack_permanent_failure_rolls_back_everything(render, env, store, ftrack):
    ftrack.set_faults({"kind": "exception", "exception": "ValidationError", "content": "task is locked",
                       "count": None, "action": "update", "entity_type": "AssetVersion"})
    proc, out = publish(manifest(render), env)
    assert proc.returncode == 78, proc.stdout
    assert "ftrack refused" in out["message"] and "rolled back" in out["message"]
    assert [v for v in versions(ftrack) if v["is_published"]] == []
    assert versions(ftrack) == []  # compensated: deleted
    assert store.catalog.db.list_collection_names() == []
    assert not (render.publish_root / SUBSET_DIR / "v001").exists()
    assert [p for p in render.tree() if ".staging" in p] == []
    assert store.records.get("deadline10:job1:0")["receipts"]["ftrack"]["state"] == "compensated"


def test_lost_response_on_create_makes_no_duplicate(render, env, store, ftrack):
    ftrack.set_faults({"kind": "drop_after_apply", "count": 1, "action": "create", "entity_type": "AssetVersion"})
    proc, out = publish(manifest(render), env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ftrack.stats()["faults_fired"] == {"drop_after_apply": 1}
    [av] = versions(ftrack)
    assert av["is_published"] is True


def test_crash_after_ftrack_commit_before_published_finishes_without_duplicates(render, env, store, ftrack):
    crash = dict(env, ATOMIC_PUBLISH_FAILPOINTS="integrate.commit=kill")
    proc = run_cli(["run", "--manifest", str(manifest(render)), "--job-id", "job1", "--task-id", "0"], crash)
    assert proc.returncode == -9
    rec = store.records.get("deadline10:job1:0")
    assert rec["state"] == "COMMITTING" and rec["receipts"]["ftrack"]["state"] == "committed"
    creates = ftrack.stats()["applied"].get("create", 0)

    proc, out = publish(manifest(render), env)
    assert proc.returncode == 0, proc.stdout
    assert ftrack.stats()["applied"].get("create", 0) == creates  # nothing created twice
    [av] = versions(ftrack)
    assert av["is_published"] is True
    assert store.catalog.project("demo").count_documents({"type": "version"}) == 1
    assert store.records.get("deadline10:job1:0")["state"] == "PUBLISHED"


def test_missing_credentials_are_worker_local(render, env, store, ftrack):
    env.pop("FTRACK_API_KEY")
    proc, out = publish(manifest(render), env)
    assert proc.returncode == 77 and "FTRACK_API_KEY not set on this worker" in out["message"]
    assert render.tree() == []


def test_a_version_renumbered_after_its_prepare_gets_its_new_number_in_ftrack(render, env, store, ftrack):
    """An earlier attempt prepared ftrack at v001; before the next attempt commits, v001's folder was
    taken by someone else, so the publish moves to v002. ftrack must not keep v001: the prepare at
    the old number is undone and made again at the new one (one AssetVersion, version 2)."""
    m = manifest(render)
    proc = run_cli(["run", "--manifest", str(m), "--job-id", "job1", "--task-id", "0"],
                   dict(env, ATOMIC_PUBLISH_FAILPOINTS="integrate.prepare=exit"))
    assert proc.returncode != 0
    [av] = versions(ftrack)
    assert (av["version"], av["is_published"]) == (1, False)
    taken = render.publish_root / SUBSET_DIR / "v001"
    taken.mkdir(parents=True)  # another tool's folder, no atomic-publish marker
    proc, out = publish(m, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out["version"] == 2 and "renumbered" in proc.stdout
    published = [v for v in versions(ftrack) if v["is_published"]]
    assert [(v["version"], v["is_published"]) for v in versions(ftrack)] == [(2, True)], versions(ftrack)
    assert store.records.get(out["key"])["receipts"]["ftrack"]["receipt"]["asset_version_id"] == published[0]["id"]
