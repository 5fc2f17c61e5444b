"""Hero versions on the local farm (issue 14): the AtomicPublish plugin's HeroProductTypes entry
turns them on; three jobs publish v1, v2, v3 through the plugin lifecycle and the wrapper, and the
hero mirrors v3 on disk and in the catalogue."""
from __future__ import annotations

import os

from helpers import submit_and_farm
from hero_helpers import hero_folder, hero_state, version_files


def test_the_plugin_entry_turns_heroes_on_and_three_farm_jobs_end_with_v3(env, store, render, tmp_path):
    env = {k: v for k, v in env.items() if k != "ATOMIC_PUBLISH_HERO"}
    for n in (1, 2, 3):
        for f in render.frames:
            f.write_bytes(os.urandom(4096) + b"job%d" % n)
        manifest = render.write_manifest(f"manifest-{n}.json", comment=f"take {n}")
        proc, out = submit_and_farm(manifest, tmp_path / f"job{n}", env, "--workers", "1",
                                    "--config", "HeroProductTypes=render")
        assert out["job_status"] == "Completed", proc.stdout + proc.stderr
        assert hero_state(hero_folder(render)) == (n, version_files(render, n))
    hero = store.catalog.project("demo").find_one({"type": "hero_version"})
    assert hero["version_id"] == store.catalog.project("demo").find_one({"type": "version", "name": 3})["_id"]
