"""Hero versions on the openpype catalogue: v1, v2, v3 published as real processes, the hero
folder and the hero_version document mirror the highest; out-of-order commits and a rollback
never move it back (issue 14)."""
from __future__ import annotations

from hero_helpers import hero_env, hero_folder, hero_state, publish_version, version_files


def _hero_doc(store):
    col = store.catalog.project("demo")
    hero = col.find_one({"type": "hero_version"})
    reps = list(col.find({"type": "representation", "parent": hero["_id"]})) if hero else []
    return hero, reps


def test_hero_mirrors_the_latest_of_three(env, store, render):
    env = hero_env(env)
    for n, job in enumerate(("j1", "j2", "j3"), 1):
        out = publish_version(render, env, job)
        assert out["version"] == n
        number, files = hero_state(hero_folder(render))
        assert number == n and files == version_files(render, n)
    hero, reps = _hero_doc(store)
    v3 = store.catalog.project("demo").find_one({"type": "version", "name": 3})
    assert hero["version_id"] == v3["_id"]
    assert hero["data"]["atomic_publish"]["version"] == 3
    paths = sorted(f["path"].rsplit("/", 1)[-1] for rep in reps for f in rep["files"])
    assert paths == sorted(version_files(render, 3))
    assert all("/hero/" in f["path"] for rep in reps for f in rep["files"])
    assert store.catalog.project("demo").count_documents({"type": "hero_version"}) == 1
    # beside the hero folder only the previous hero (v2, kept for readers until the next move),
    # and the store says v3 with nobody holding it
    names = sorted(p.name for p in hero_folder(render).parent.iterdir())
    assert names[1:] == ["hero", "v001", "v002", "v003"] and ".hero.hero-previous-" in names[0]
    assert hero_state(hero_folder(render).parent / names[0])[0] == 2
    doc = store.heroes.get("demo", "sh010", "renderCompMain")
    assert (doc["version"], doc["holder"]) == (3, None)
    # the hero files are hardlinks of v003's (same filesystem)
    v3_dir = hero_folder(render).parent / "v003"
    for p in v3_dir.iterdir():
        if not p.name.startswith(".atomic"):
            assert (hero_folder(render) / p.name.replace("_v003", "_hero")).stat().st_ino == p.stat().st_ino


def test_hero_off_by_default(env, store, render):
    publish_version(render, env, "j1")
    assert not hero_folder(render).exists()
    assert store.catalog.project("demo").count_documents({"type": "hero_version"}) == 0


def test_audit_is_clean_after_heroes_moved(env, store, render):
    import json

    from helpers import run_cli

    env = hero_env(env)
    for job in ("j1", "j2", "j3"):
        publish_version(render, env, job)
    proc = run_cli(["audit", "--root", str(render.publish_root), "--json"], env)
    report = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])
    assert proc.returncode == 0 and report["ok"], report


def test_openpypes_own_hero_document_is_reused_in_place(env, store, render):
    """A studio moving from IntegrateHeroVersion: the subset's existing hero_version document keeps
    its id, its old representations are replaced by the hero folder's."""
    from bson import ObjectId

    env = hero_env(env)
    publish_version(render, env, "j1", )
    col = store.catalog.project("demo")
    col.delete_many({"type": "hero_version"})
    col.delete_many({"type": "representation", "files.path": {"$regex": "/hero/"}})
    subset = col.find_one({"type": "subset"})
    theirs, old_rep = ObjectId(), ObjectId()
    col.insert_one({"_id": theirs, "type": "hero_version", "schema": "openpype:hero_version-1.0",
                    "parent": subset["_id"], "version_id": col.find_one({"type": "version"})["_id"]})
    col.insert_one({"_id": old_rep, "type": "representation", "parent": theirs, "name": "exr", "files": []})
    publish_version(render, env, "j2")
    assert [d["_id"] for d in col.find({"type": "hero_version"})] == [theirs]
    hero = col.find_one({"_id": theirs})
    assert hero["version_id"] == col.find_one({"type": "version", "name": 2})["_id"]
    reps = list(col.find({"type": "representation", "parent": theirs}))
    assert old_rep not in [r["_id"] for r in reps] and {r["name"] for r in reps} == {"exr", "mov"}


def test_a_hero_folder_another_tool_made_is_never_replaced(env, store, render):
    """AYON's own integrator made the hero folder (no atomic-publish marker): the publish commits its
    version, refuses to replace that folder (permanent, named), and once an admin archived it the
    requeued task rolls forward and makes the hero."""
    import shutil

    from helpers import publish

    env = hero_env(env)
    theirs = hero_folder(render)
    theirs.mkdir(parents=True)
    (theirs / "dm_sh010_renderCompMain_hero.1001.exr").write_bytes(b"made by IntegrateHeroVersion")
    manifest = render.write_manifest("manifest-j1.json")
    proc, out = publish(manifest, env, "j1")
    assert proc.returncode != 0 and "without an atomic-publish hero marker" in out["message"], out
    assert store.records.get("deadline10:j1:0")["state"] == "COMMITTING"  # the version itself is committed
    assert (theirs / "dm_sh010_renderCompMain_hero.1001.exr").read_bytes() == b"made by IntegrateHeroVersion"
    shutil.move(str(theirs), str(render.root / "archived-hero"))
    proc, out = publish(manifest, env, "j1")
    assert proc.returncode == 0 and out["outcome"] == "published", out
    assert hero_state(hero_folder(render)) == (1, version_files(render, 1))


def test_a_studio_hero_template_elsewhere_is_created_and_used(env, store, render, tmp_path):
    import json

    settings = tmp_path / "studio.json"
    settings.write_text(json.dumps({"roots": {"work": {"linux": str(render.publish_root)}},
                                    "publish_template": "{root[work]}/{project[name]}/{product[name]}/{@version}",
                                    "hero": {"product_types": ["render"],
                                             "template": "{root[work]}/{project[name]}/latest/{product[name]}"}}))
    env = {**env, "ATOMIC_PUBLISH_SETTINGS": str(settings)}
    roots = {"work": {"linux": str(render.publish_root), "darwin": str(render.publish_root)}}
    publish_version(render, env, "j1", roots=roots)
    publish_version(render, env, "j2", roots=roots)
    folder = render.publish_root / "demo" / "latest" / "renderCompMain"
    number, files = hero_state(folder)
    assert number == 2 and files == version_files(render, 2)
    hero = store.catalog.project("demo").find_one({"type": "hero_version"})
    reps = list(store.catalog.project("demo").find({"type": "representation", "parent": hero["_id"]}))
    assert reps and all(f["path"].startswith("{root[work]}/demo/latest/renderCompMain/")
                        for rep in reps for f in rep["files"])
