"""Hero versions under faults, with real processes: SIGKILL at every hero step then a retry,
two publishes committing out of order, a rollback, and audit's hero invariant (issue 14)."""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from atomic_publish.wrapper import failpoints
from helpers import CLI, publish, run_cli
from hero_helpers import hero_env, hero_folder, hero_state, publish_version, version_files

HERO_POINTS = [p for p in failpoints.POINTS if p.startswith("hero.")]


def audit(env: dict, render) -> dict:
    proc = run_cli(["audit", "--root", str(render.publish_root), "--json"], env)
    return json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])


def assert_hero_is(store, render, number: int) -> None:
    """Disk, catalogue and store agree on ``number``, and nothing is left beside the hero folder."""
    on_disk, files = hero_state(hero_folder(render))
    assert on_disk == number and files == version_files(render, number)
    hero = store.catalog.hero_of(_subject())
    assert hero is not None and hero.number == number
    assert sorted(f.rootless.rsplit("/", 1)[-1] for f in hero.files) == sorted(files)
    doc = store.heroes.get("demo", "sh010", "renderCompMain")
    assert (doc["version"], doc["holder"]) == (number, None)
    beside = [p for p in hero_folder(render).parent.iterdir() if ".hero-" in p.name]
    assert [p for p in beside if ".hero-previous-" not in p.name] == []  # nothing of an interrupted move
    assert len(beside) <= 1 and all(hero_state(p)[0] < number for p in beside)  # the previous hero, kept


def _subject():
    from atomic_publish.wrapper.catalogs.base import Subject

    return Subject("demo", "dm", "sh010", "shots/sq01", "renderCompMain", "render", "comp")


def test_every_hero_step_has_a_failpoint():
    assert HERO_POINTS == ["hero.claimed", "hero.staged", "hero.swapped", "hero.emptied", "hero.catalog",
                           "hero.done"]


# hero.emptied fires from the third move on (the second keeps the first hero as its previous
# content): its own tests below
@pytest.mark.parametrize("point", [p for p in HERO_POINTS if p != "hero.emptied"])
def test_sigkill_at_a_hero_step_then_retry_leaves_a_consistent_hero(env, store, render, point):
    env = hero_env(env)
    publish_version(render, env, "j1")
    for f in render.frames:
        f.write_bytes(os.urandom(4096))
    manifest = render.write_manifest("manifest-j2.json", comment="second")
    proc = run_cli(["run", "--manifest", str(manifest), "--job-id", "j2", "--task-id", "0", "--worker", "w1",
                    "--json"], {**env, "ATOMIC_PUBLISH_FAILPOINTS": f"{point}=kill"})
    assert proc.returncode == -9, proc.stdout + proc.stderr
    rec = store.records.get("deadline10:j2:0")
    assert rec["state"] == "COMMITTING"  # the hero step is inside the commit: the retry rolls it forward
    # what a reader sees meanwhile: the previous hero complete, or the new one complete
    number, files = hero_state(hero_folder(render))
    assert (number, files) in ((1, version_files(render, 1)), (2, version_files(render, 2)))
    retry, out = publish(manifest, env, "j2")
    assert retry.returncode == 0 and out["version"] == 2, retry.stdout + retry.stderr
    assert_hero_is(store, render, 2)
    report = audit(env, render)
    assert report["ok"], report["violations"]


def test_gc_finishes_what_a_killed_move_left_beside_the_hero(env, store, render):
    """A move killed after the build leaves a swap folder; once the publish is finished by another
    route (here: the retry is killed again, the hold expires) gc removes the leftover, never the hero."""
    env = hero_env(env)
    publish_version(render, env, "j1")
    manifest = render.write_manifest("manifest-j2.json", comment="second")
    killed = run_cli(["run", "--manifest", str(manifest), "--job-id", "j2", "--task-id", "0", "--worker", "w1",
                      "--lease-seconds", "2"], {**env, "ATOMIC_PUBLISH_FAILPOINTS": "hero.staged=kill"})
    assert killed.returncode == -9
    left = [p for p in hero_folder(render).parent.iterdir() if ".hero-swap-" in p.name]
    assert len(left) == 1
    time.sleep(2.5)  # the hold and the lease expired
    proc = run_cli(["gc", "--older-than", "0s"], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not [p for p in hero_folder(render).parent.iterdir() if ".hero-swap-" in p.name], proc.stdout
    assert hero_state(hero_folder(render))[0] == 1  # the hero in place is untouched
    retry, out = publish(manifest, env, "j2")
    assert retry.returncode == 0
    assert_hero_is(store, render, 2)


def test_gc_removes_the_kept_previous_hero_only_after_older_than(env, store, render):
    """A move keeps the previous hero's content beside the hero for the readers that resolved it
    just before; gc leaves it while the move is recent and removes it --older-than after, never the
    hero itself; audit stays clean (the unlinks are recorded)."""
    env = hero_env(env)
    publish_version(render, env, "j1")
    publish_version(render, env, "j2")
    previous = [p for p in hero_folder(render).parent.iterdir() if ".hero-previous-" in p.name]
    assert len(previous) == 1 and hero_state(previous[0])[0] == 1
    recent = run_cli(["gc", "--older-than", "1h"], env)
    assert recent.returncode == 0 and previous[0].exists(), recent.stdout
    proc = run_cli(["gc", "--older-than", "0s"], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not previous[0].exists() and "the previous content of the hero" in proc.stdout
    assert_hero_is(store, render, 2)
    report = audit(env, render)
    assert report["ok"], report["violations"]


def _previous_folders(render) -> list:
    return [p for p in hero_folder(render).parent.iterdir() if ".hero-previous-" in p.name]


def test_sigkill_while_a_move_removes_the_previous_before_it_keeps_audit_clean(env, store, render):
    """The third move empties the first hero's kept content (v001's hardlinks: their change time
    moves). Killed before the store records it, the folder keeps its marker under its gone name, so the
    retry knows whose links went, records them, and audit finds no modification of v001."""
    env = hero_env(env)
    publish_version(render, env, "j1")
    publish_version(render, env, "j2")
    assert [hero_state(p)[0] for p in _previous_folders(render)] == [1]
    manifest = render.write_manifest("manifest-j3.json", comment="third")
    proc = run_cli(["run", "--manifest", str(manifest), "--job-id", "j3", "--task-id", "0", "--worker", "w1"],
                   {**env, "ATOMIC_PUBLISH_FAILPOINTS": "hero.emptied=kill@1"})
    assert proc.returncode == -9, proc.stdout + proc.stderr
    [gone] = [p for p in hero_folder(render).parent.iterdir() if ".hero-gone-" in p.name]
    assert json.loads((gone / ".atomic-publish-hero.json").read_text())["version"] == 1
    assert os.listdir(gone) == [".atomic-publish-hero.json"]  # v001's links went, the marker stays
    retry, out = publish(manifest, env, "j3")
    assert retry.returncode == 0 and out["version"] == 3, retry.stdout + retry.stderr
    assert_hero_is(store, render, 3)
    assert not gone.exists()
    doc = store.heroes.get("demo", "sh010", "renderCompMain")
    v1 = os.stat(next(p for p in hero_folder(render).parent.glob("v001/*.exr")))
    assert v1.st_ctime_ns <= doc["touched"]["1"]  # the unlinks are recorded, in the storage's clock
    report = audit(env, render)
    assert report["ok"], report["violations"]


def test_sigkill_while_gc_removes_the_kept_previous_then_gc_again_keeps_audit_clean(env, store, render):
    env = hero_env(env)
    publish_version(render, env, "j1")
    publish_version(render, env, "j2")
    [previous] = _previous_folders(render)
    killed = run_cli(["gc", "--older-than", "0s"], {**env, "ATOMIC_PUBLISH_FAILPOINTS": "hero.emptied=kill@1"})
    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert not previous.exists()
    [gone] = [p for p in hero_folder(render).parent.iterdir() if ".hero-gone-" in p.name]
    report = audit(env, render)  # a removal cut short is reported, never taken for a modification
    assert not report["ok"] and all("interrupted move" in v["detail"] for v in report["violations"]), \
        report["violations"]
    proc = run_cli(["gc", "--older-than", "0s"], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not gone.exists()
    assert_hero_is(store, render, 2)
    report = audit(env, render)
    assert report["ok"], report["violations"]


def test_two_publishes_committing_out_of_order_end_with_the_higher_hero(env, store, render):
    env = hero_env(env)
    for job in ("j1", "j2", "j3"):
        publish_version(render, env, job)
    # v4 is reserved and staged first, and dies at the point of no return (COMMITTING, no hero yet)
    m4 = render.write_manifest("manifest-j4.json", comment="four")
    first = run_cli(["run", "--manifest", str(m4), "--job-id", "j4", "--task-id", "0", "--worker", "w1"],
                    {**env, "ATOMIC_PUBLISH_FAILPOINTS": "commit.begin=kill"})
    assert first.returncode == -9
    out5 = publish_version(render, env, "j5")
    assert out5["version"] == 5
    assert_hero_is(store, render, 5)
    retry, out4 = publish(m4, env, "j4")  # v4 commits after v5
    assert retry.returncode == 0 and out4["version"] == 4
    assert_hero_is(store, render, 5)
    rec = store.records.get("deadline10:j4:0")
    assert rec["hero"]["state"] == "newer" and rec["hero"]["hero_version"] == 5
    assert audit(env, render)["ok"]


def test_a_hold_of_a_lower_version_is_waited_for_then_the_higher_wins(env, store, render):
    """v2 hangs inside its hero move holding the product's hero; v3 waits for the hold (it expires
    with the hung attempt's lease) and becomes the hero; v2's retry leaves it at v3."""
    env = hero_env(env)
    publish_version(render, env, "a")
    m2 = render.write_manifest("manifest-b.json", comment="b")
    hung = subprocess.Popen([*CLI, "run", "--manifest", str(m2), "--job-id", "b", "--task-id", "0", "--worker", "w1",
                             "--lease-seconds", "3"], env={**env, "ATOMIC_PUBLISH_FAILPOINTS": "hero.staged=hang"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in hung.stdout:
            if "failpoint hero.staged: hang" in line:
                break
        doc = store.heroes.get("demo", "sh010", "renderCompMain")
        assert doc["holder"]["target"] == 2
        out3 = publish_version(render, env, "c")
        assert out3["version"] == 3
        assert_hero_is(store, render, 3)
    finally:
        hung.kill()
        hung.wait(timeout=30)
    time.sleep(3.5)
    retry, out2 = publish(m2, env, "b")
    assert retry.returncode == 0 and out2["version"] == 2
    assert_hero_is(store, render, 3)
    assert audit(env, render)["ok"]


def test_a_rolled_back_publish_leaves_the_hero_where_it_was(env, store, render):
    """v6 staged, then its job abandoned (rolled back): the hero stays at v5."""
    env = hero_env(env)
    for job in ("j1", "j2", "j3", "j4", "j5"):
        publish_version(render, env, job)
    m6 = render.write_manifest("manifest-j6.json", comment="six")
    staged = run_cli(["run", "--manifest", str(m6), "--job-id", "j6", "--task-id", "0", "--worker", "w1",
                      "--lease-seconds", "2"], {**env, "ATOMIC_PUBLISH_FAILPOINTS": "staged=kill"})
    assert staged.returncode == -9
    time.sleep(2.5)
    proc = run_cli(["abandon", "--job-id", "j6", "--reason", "the farm job was deleted", "--json"], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert store.records.get("deadline10:j6:0")["state"] == "ROLLED_BACK"
    assert_hero_is(store, render, 5)
    assert audit(env, render)["ok"]


def test_audit_reports_a_damaged_hero(env, store, render):
    env = hero_env(env)
    publish_version(render, env, "j1")
    publish_version(render, env, "j2")
    assert audit(env, render)["ok"]
    hero = hero_folder(render)
    victim = sorted(p for p in hero.iterdir() if p.suffix == ".exr")[0]
    victim.unlink()
    victim.write_bytes(b"not the published frame")  # same name, another file: a mix of two contents
    details = [v["detail"] for v in audit(env, render)["violations"] if v["invariant"] == 11]
    assert any("differs from v002" in d for d in details), details
    # the catalogue's entry pointing elsewhere than the folder
    store.catalog.project("demo").update_one({"type": "hero_version"}, {"$set": {"data.atomic_publish.version": 1}})
    details = [v["detail"] for v in audit(env, render)["violations"] if v["invariant"] == 11]
    assert any("points at v001" in d for d in details), details


@pytest.mark.parametrize("audit_mode", [(), ("--no-hash",)], ids=["hashes", "no-hash"])
def test_hero_links_are_no_modification_but_a_rewrite_after_them_is(env, store, render, audit_mode):
    """Hero moves link and unlink the published files (their change time moves): audit accepts
    that up to the storage time the store recorded for each move, and still finds a file
    rewritten in place with its size and dates put back after it, with or without hashes."""
    env = hero_env(env)
    for job in ("j1", "j2", "j3", "j4"):  # v1's hero links come (j1) and go (j3: the kept previous goes)
        publish_version(render, env, job)
    proc = run_cli(["audit", "--root", str(render.publish_root), "--json", *audit_mode], env)
    assert proc.returncode == 0, proc.stdout
    victim = sorted((hero_folder(render).parent / "v001").glob("*.exr"))[0]
    before = os.stat(victim)
    time.sleep(0.05)
    with open(victim, "r+b") as fh:
        fh.write(os.urandom(before.st_size))
    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))
    proc = run_cli(["audit", "--root", str(render.publish_root), "--json", *audit_mode], env)
    report = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])
    assert proc.returncode == 1
    assert any(v["invariant"] == 5 and str(victim) in v["detail"] for v in report["violations"]), report


def test_concurrent_publishes_serialise_their_hero_moves_and_the_highest_wins(env, store, render):
    """Four publishes of one product at the same moment (real processes): each reserves its own
    number, their hero moves take turns through the store, and the hero ends at the highest."""
    env = hero_env(env)
    publish_version(render, env, "j0")
    procs = []
    for job in ("c1", "c2", "c3", "c4"):
        manifest = render.write_manifest(f"manifest-{job}.json", comment=job)
        procs.append(subprocess.Popen([*CLI, "run", "--manifest", str(manifest), "--job-id", job, "--task-id", "0",
                                       "--worker", f"w-{job}", "--json"], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outs
    versions = sorted(json.loads(o.strip().splitlines()[-1])["version"] for o in outs)
    assert versions == [2, 3, 4, 5]
    assert_hero_is(store, render, 5)
    assert audit(env, render)["ok"]


def test_a_move_cut_short_and_overtaken_by_a_newer_hero_keeps_audit_clean(env, store, render):
    """v1's attempt links v1's files into the hero, swaps, and fails before recording the move; v2
    moves the hero on meanwhile; v1's retry finds a newer hero and stops there. The links changed
    v1's files' change time after its commit: the retry records it, so audit tells it from a
    modification (the soak's seeds 50009 and 50023 reported v1's files 'changed after the commit')."""
    env = hero_env(env)
    for f in render.frames:
        f.write_bytes(os.urandom(4096) + b"j1")
    first = render.write_manifest("manifest-j1.json", comment="j1")
    proc = run_cli(["run", "--manifest", str(first), "--job-id", "j1", "--task-id", "0", "--worker", "w1"],
                   {**env, "ATOMIC_PUBLISH_FAILPOINTS": "hero.swapped=raise"})
    assert proc.returncode == 75, proc.stdout + proc.stderr
    assert hero_state(hero_folder(render))[0] == 1
    publish_version(render, env, "j2")  # v2, the hero moves to it
    retry, out = publish(first, env, "j1")
    assert retry.returncode == 0 and out["version"] == 1, retry.stdout + retry.stderr
    assert "stays with v002" in retry.stdout
    assert_hero_is(store, render, 2)
    report = audit(env, render)
    assert report["ok"], report["violations"]
