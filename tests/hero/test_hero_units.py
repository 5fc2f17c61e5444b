"""The parts of hero versions on their own: the store's claims (forward only, one holder, takeover
by the same key, fencing) against SecantusDB, the settings and the hero folder, and the swap
functions on real folders (issue 14)."""
from __future__ import annotations

import json
import os

import pytest

from atomic_publish.idempotency import heroes as H
from atomic_publish.idempotency.records import Identity
from atomic_publish.wrapper import hero_swap as hs
from atomic_publish.wrapper.errors import ManifestError, Superseded
from atomic_publish.wrapper.hero_settings import hero_dir, hero_file_name, hero_settings
from atomic_publish.wrapper.layout import plan_files
from atomic_publish.wrapper.manifest import load_manifest

P = ("demo", "sh010", "renderMain")


def who(name: str, pid: int | None = None) -> Identity:
    return Identity(attempt=name, worker=name, pid=pid or os.getpid())


def test_claims_only_move_forward_and_one_holder_at_a_time(store):
    heroes = store.heroes
    a = heroes.claim(P, "k4", 1, 4, who("a"), 30, "/h")
    assert a.state == H.CLAIMED
    # another key for a higher number waits while the live hold lasts; a lower one has nothing to do
    assert heroes.claim(P, "k5", 1, 5, who("b"), 30, "/h").state == H.BUSY
    assert heroes.claim(P, "k3", 1, 3, who("c"), 30, "/h").state == H.NEWER
    heroes.finish(P, "k4", 4, who("a"))
    heroes.finish(P, "k4", 4, who("a"))  # a lost answer retried: done already
    assert heroes.claim(P, "k4", 2, 4, who("a2"), 30, "/h").state == H.DONE
    b = heroes.claim(P, "k5", 1, 5, who("b"), 30, "/h")
    assert b.state == H.CLAIMED
    heroes.release(P, who("b"))  # stopped midway: v5 still owns the target
    assert heroes.claim(P, "k4", 3, 4, who("a3"), 30, "/h").state == H.DONE  # v4 is the hero: nothing to do
    assert heroes.claim(P, "k45", 1, 4, who("d"), 30, "/h").state == H.NEWER
    doc = heroes.get(*P)
    assert (doc["version"], doc["target"], doc["target_key"], doc["holder"]) == (4, 5, "k5", None)


def test_a_newer_epoch_of_the_holder_takes_over_and_fences_the_old_one(store):
    heroes = store.heroes
    assert heroes.claim(P, "k1", 1, 1, who("old"), 30, "/h").state == H.CLAIMED
    assert heroes.claim(P, "k1", 2, 1, who("new"), 30, "/h").state == H.CLAIMED  # same key: at once
    with pytest.raises(Superseded):
        heroes.confirm(P, who("old"), 30)
    with pytest.raises(Superseded):
        heroes.finish(P, "k1", 1, who("old"))
    with pytest.raises(Superseded):  # the old epoch cannot take it back
        heroes.claim(P, "k1", 1, 1, who("old"), 30, "/h")
    heroes.confirm(P, who("new"), 30)
    heroes.finish(P, "k1", 1, who("new"))
    assert heroes.get(*P)["version"] == 1


def test_an_expired_hold_of_another_key_is_taken_over(store):
    heroes = store.heroes
    assert heroes.claim(P, "k1", 1, 1, who("dead"), 0.2, "/h").state == H.CLAIMED
    import time

    time.sleep(0.4)
    assert heroes.claim(P, "k2", 1, 2, who("b"), 30, "/h").state == H.CLAIMED
    with pytest.raises(Superseded):
        heroes.confirm(P, who("dead"), 30)


def test_settings_environment_wins_over_the_studio_file_and_the_hero_folder(tmp_path, render):
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"roots": {"work": {"linux": str(render.publish_root)}},
                                    "publish_template": "{root[work]}/{project[name]}/{product[name]}/{@version}",
                                    "hero": {"product_types": ["comp"], "link_mode": "copy",
                                             "template": "{root[work]}/{project[name]}/{product[name]}/latest"}}))
    env = {"ATOMIC_PUBLISH_SETTINGS": str(settings)}
    s = hero_settings(env)
    assert s.product_types == {"comp"} and s.link_mode == "copy" and s.keep_previous
    m = load_manifest(str(render.write_manifest(roots={"work": {"linux": str(render.publish_root),
                                                                "darwin": str(render.publish_root)}})))  # render
    assert not s.wants(m)
    s2 = hero_settings({**env, "ATOMIC_PUBLISH_HERO": "render,plate"})
    assert s2.wants(m) and s2.template == s.template and "ATOMIC_PUBLISH_HERO" in s2.source
    assert not hero_settings({**env, "ATOMIC_PUBLISH_HERO": "none"}).wants(m)
    assert hero_settings({}).product_types == frozenset()  # off by default
    assert hero_dir(m, s) == os.path.join(str(render.publish_root), "demo", "renderCompMain", "latest")
    assert hero_dir(m, hero_settings({})) == os.path.join(os.path.dirname(
        str(render.publish_root / "demo/shots/sq01/sh010/publish/render/renderCompMain/v001")), "hero")
    [first, *_] = plan_files(m, 7)
    assert hero_file_name(m, first, 7) == first.name.replace("_v007", "_hero")


def test_a_hero_template_with_a_version_is_refused(tmp_path):
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"roots": {"work": {"linux": str(tmp_path)}},
                                    "publish_template": "{root[work]}/{product[name]}/{@version}",
                                    "hero": {"template": "{root[work]}/{product[name]}/{@version}"}}))
    with pytest.raises(ManifestError, match="hero.template"):
        hero_settings({"ATOMIC_PUBLISH_SETTINGS": str(settings)})


def _content(tmp_path, hero, version: int) -> str:
    src = tmp_path / f"src{version}"
    src.mkdir()
    (src / "a.exr").write_bytes(b"v%d" % version)
    new = hs.swap_name(str(hero), "1" * 12, version)
    hs.build_content(new, [hs.HeroFile(str(src / "a.exr"), "a_hero.exr", 2)], {"version": version}, link=False)
    return new


def test_first_hero_renames_then_exchanges_and_the_old_content_is_kept_once(tmp_path):
    hero = tmp_path / "hero"
    assert hs.swap_into_place(_content(tmp_path, hero, 1), str(hero), "unused") == "renamed"
    for version in (2, 3):
        new = _content(tmp_path, hero, version)
        how = hs.swap_into_place(new, str(hero), hs.aside_name(str(hero), "1" * 12, version))
        assert how == ("exchanged" if hs.choose_swap() is not hs.swap_two_renames else "two-renames")
        assert hs.read_hero_marker(new)["version"] == version - 1  # the old content, at the swap name
        failed, emptied = hs.retire(str(hero), version, True, hs.previous_name(str(hero), "1" * 12, version))
        assert failed == []
        # the previous before it is emptied, its marker kept until the caller recorded the unlinks
        assert [v for _, v in emptied] == ([1] if version == 3 else [])
        for gone, _ in emptied:
            assert os.listdir(gone) == [hs.HERO_MARKER]
            hs.drop_emptied(gone)
    assert (hero / "a_hero.exr").read_bytes() == b"v3"
    [previous] = hs.leftovers(str(hero), ("previous",))
    assert hs.read_hero_marker(previous)["version"] == 2 and hs.leftovers(str(hero)) == []


def test_a_crash_between_two_renames_is_finished_with_the_new_content(tmp_path):
    hero = tmp_path / "hero"
    hs.swap_into_place(_content(tmp_path, hero, 1), str(hero), "unused")
    new = _content(tmp_path, hero, 2)
    os.rename(hero, hs.aside_name(str(hero), "1" * 12, 2))  # the first rename, then the crash
    assert not hero.exists()
    assert hs.finish_two_renames(str(hero), hs.leftovers(str(hero))) is True
    assert hs.read_hero_marker(str(hero))["version"] == 2 and not os.path.exists(new)


def test_a_filesystem_that_refuses_the_exchange_falls_back_to_two_renames(tmp_path, monkeypatch):
    """renameat2 answering EINVAL (NFS, SMB, FUSE): the swap is two renames, the result the same."""
    import ctypes
    import errno

    if hs._renameat2_fn is None:
        pytest.skip("no renameat2 here")

    def refusing(*_args):
        ctypes.set_errno(errno.EINVAL)
        return -1

    monkeypatch.setattr(hs, "_renameat2_fn", refusing)
    hero = tmp_path / "hero"
    hs.swap_into_place(_content(tmp_path, hero, 1), str(hero), "unused")
    new = _content(tmp_path, hero, 2)
    assert hs.swap_exchange_linux(new, str(hero), hs.aside_name(str(hero), "1" * 12, 2)) == "two-renames"
    assert (hero / "a_hero.exr").read_bytes() == b"v2" and hs.read_hero_marker(new)["version"] == 1
    assert not os.path.exists(hs.aside_name(str(hero), "1" * 12, 2))
