"""Hero versions on the ayon catalogue, through the real ayon-python-api client against the local
AYON server: real publishes of a 3-AOV metadata JSON (one hero per product), the hero version
entity with the negative number and its representations, SIGKILL in the hero steps, commits out
of order, audit (issue 14). The hero is turned on by the studio settings file here."""
from __future__ import annotations

import json
import os

import pytest

from helpers import last_json, run_cli
from test_ayon_audit import PROJECT, Studio

HERO_MARKER = ".atomic-publish-hero.json"


@pytest.fixture
def studio(tmp_path, env):
    s = Studio(tmp_path, env)
    settings = json.loads(s.render.settings.read_text())
    settings["hero"] = {"product_types": ["render"]}
    s.render.settings.write_text(json.dumps(settings))
    yield s
    s.close()


def _rerender(studio: Studio, tag: str) -> None:
    for p in studio.render.renders.glob("*.exr"):
        p.write_bytes(os.urandom(2048) + tag.encode())


def _run(studio: Studio, job: str, failpoints: str = "") -> tuple[int, dict | None]:
    env = {**studio.env, "ATOMIC_PUBLISH_FAILPOINTS": failpoints} if failpoints else studio.env
    proc = run_cli(["run", "--metadata", str(studio.render.write()), "--job-id", job, "--task-id", "0",
                    "--worker", "w1", "--json"], env)
    return proc.returncode, (last_json(proc) if proc.returncode >= 0 else None)


def _hero(studio: Studio, product: str) -> tuple[dict | None, list[dict]]:
    folder = studio.con.get_folder_by_path(PROJECT, "/shots/sq01/sh010")
    found = studio.con.get_product_by_name(PROJECT, product, folder["id"])
    hero = studio.con.get_hero_version_by_product_id(PROJECT, found["id"])
    reps = list(studio.con.get_representations(PROJECT, version_ids=[hero["id"]])) if hero else []
    return hero, reps


def assert_heroes_are(studio: Studio, number: int) -> None:
    for aov in ("beauty", "Z", "N"):
        product = f"renderMain_{aov}"
        hero, reps = _hero(studio, product)
        assert hero is not None and hero["version"] == -number, (product, hero and hero["version"])
        base = studio.render.publish_dir / "render" / product
        marker = json.loads((base / "hero" / HERO_MARKER).read_text())
        assert marker["version"] == number
        version_dir = base / f"v{number:0>3}"
        expected = {p.name.replace(f"_v{number:0>3}", "_hero"): p.read_bytes() for p in version_dir.iterdir()
                    if not p.name.startswith(".atomic")}
        on_disk = {p.name: p.read_bytes() for p in (base / "hero").iterdir() if p.name != HERO_MARKER}
        assert on_disk == expected
        [rep] = reps
        assert sorted(f["name"] for f in rep["files"]) == sorted(expected)
        assert all("/hero/" in f["path"] for f in rep["files"])
        assert rep["attrib"]["path"].startswith(str(base / "hero"))
        assert not [p for p in base.iterdir() if ".hero-swap-" in p.name or ".hero-aside-" in p.name]


def test_ayon_heroes_mirror_the_latest_of_three(studio):
    first_ids = None
    for n, job in enumerate(("j1", "j2", "j3"), 1):
        _rerender(studio, job)
        code, out = _run(studio, job)
        assert code == 0, out
        assert_heroes_are(studio, n)
        ids = [_hero(studio, f"renderMain_{a}")[0]["id"] for a in ("beauty", "Z", "N")]
        first_ids = first_ids or ids
        assert ids == first_ids and len(set(ids)) == 3  # one hero per product, updated in place
    code, report, text = studio.audit()
    assert (code, report["violations"]) == (0, []), text
    assert report["checked"]["heroes"] == 3


@pytest.mark.parametrize("point", [p for p in __import__("atomic_publish.wrapper.failpoints",
                                                           fromlist=["POINTS"]).POINTS if p.startswith("hero.")])
def test_ayon_sigkill_in_a_hero_step_then_retry(studio, point):
    # hero.emptied fires from the third move on (the one that empties the first hero's kept content)
    jobs = ["j1", "j2", "j3"] if point == "hero.emptied" else ["j1", "j2"]
    for job in jobs[:-1]:
        _rerender(studio, job)
        assert _run(studio, job)[0] == 0
    last = jobs[-1]
    _rerender(studio, last)
    code, _ = _run(studio, last, f"{point}=kill")
    assert code == -9
    code, out = _run(studio, last)
    assert code == 0, out
    assert_heroes_are(studio, len(jobs))
    code, report, text = studio.audit()
    assert (code, report["violations"]) == (0, []), text


def test_ayon_out_of_order_commits_keep_the_higher_hero(studio):
    _rerender(studio, "j1")
    assert _run(studio, "j1")[0] == 0
    _rerender(studio, "j2")
    assert _run(studio, "j2", "commit.begin=kill")[0] == -9  # v2 of every product: COMMITTING, no hero
    _rerender(studio, "j3")
    code, out = _run(studio, "j3")
    assert code == 0 and out["version"] == 3, out
    assert_heroes_are(studio, 3)
    code, out = _run(studio, "j2")  # rolls v2 forward after v3
    assert code == 0 and out["version"] == 2, out
    assert_heroes_are(studio, 3)
    code, report, text = studio.audit()
    assert (code, report["violations"]) == (0, []), text


def test_ayon_a_rolled_back_publish_leaves_the_heroes_where_they_were(studio):
    """v2 of every product staged, then its job abandoned (rolled back): every hero stays at v1 on
    disk and in AYON, and v2 is visible nowhere."""
    import time

    _rerender(studio, "j1")
    assert _run(studio, "j1")[0] == 0
    _rerender(studio, "j2")
    env = {**studio.env, "ATOMIC_PUBLISH_FAILPOINTS": "staged=kill"}
    proc = run_cli(["run", "--metadata", str(studio.render.write()), "--job-id", "j2", "--task-id", "0",
                    "--worker", "w1", "--lease-seconds", "2"], env)
    assert proc.returncode == -9
    time.sleep(2.5)
    proc = run_cli(["abandon", "--job-id", "j2", "--reason", "the farm job was deleted", "--json"], studio.env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_heroes_are(studio, 1)
    folder = studio.con.get_folder_by_path(PROJECT, "/shots/sq01/sh010")
    for aov in ("beauty", "Z", "N"):
        product = studio.con.get_product_by_name(PROJECT, f"renderMain_{aov}", folder["id"])
        numbers = sorted(v["version"] for v in studio.con.get_versions(PROJECT, product_ids=[product["id"]],
                                                                       active=None))
        assert numbers == [-1, 1], (aov, numbers)  # the hero (-1) and v001; nothing of v002
    code, report, text = studio.audit()
    assert (code, report["violations"]) == (0, []), text
