"""The catalogue contract, the same scenarios on every backend: memory, openpype (SecantusDB) and
ayon (the local AYON server through the real ayon-python-api client)."""
from __future__ import annotations

import pytest

from atomic_publish.wrapper.errors import CatalogNumberTaken, CatalogUnavailable, PublishError
from catalog_harness import entry, harness, subject

BACKENDS = ["memory", "openpype", "ayon"]
KEY = "deadline10:64f0a1b2c3d4e5f6a7b8c9d0:0"
OTHER = "deadline10:64f0a1b2c3d4e5f6a7b8c9d1:0"


@pytest.fixture(params=BACKENDS)
def h(request, tmp_path):
    mongo = request.getfixturevalue("mongo_uri") if request.param == "openpype" else None
    made = harness(request.param, tmp_path, mongo)
    yield made
    made.close()


def test_publish_then_replay_creates_nothing_twice(h):
    s = subject()
    e = entry(KEY, s, 1, h.root)
    h.catalog.check_environment(["proj"])
    created = h.catalog.publish([e])
    assert created >= 3  # version + representation (+ the product / subset it created)
    assert h.versions(s) == [(1, KEY)]
    before = h.entities()
    assert h.catalog.publish([e]) == 0
    assert h.catalog.publish([e]) == 0
    assert h.entities() == before and h.versions(s) == [(1, KEY)]
    assert h.catalog.version_holder(s, 1) == KEY and h.catalog.highest_version(s) == 1


def test_two_products_become_visible_in_one_call(h):
    beauty, diffuse = subject(subset="renderMainBeauty"), subject(subset="renderMainDiffuse")
    entries = [entry(KEY, beauty, 1, h.root, id_parts=(KEY, beauty.subset)),
               entry(KEY, diffuse, 1, h.root, id_parts=(KEY, diffuse.subset))]
    assert h.catalog.publish(entries) >= 4
    assert h.versions(beauty) == [(1, KEY)] and h.versions(diffuse) == [(1, KEY)]
    assert [v.subject.subset for v in h.catalog.versions_of_key(KEY, [beauty, diffuse])] == \
        ["renderMainBeauty", "renderMainDiffuse"]
    assert h.catalog.publish(entries) == 0


def test_none_is_visible_when_one_product_is_refused(h):
    """The second product's number was taken by another client: nothing of the first is visible either."""
    beauty, diffuse = subject(subset="renderMainBeauty"), subject(subset="renderMainDiffuse")
    h.foreign(diffuse, 1)
    before = h.entities()
    entries = [entry(KEY, beauty, 1, h.root, id_parts=(KEY, beauty.subset)),
               entry(KEY, diffuse, 1, h.root, id_parts=(KEY, diffuse.subset))]
    with pytest.raises(CatalogNumberTaken) as caught:
        h.catalog.publish(entries)
    assert caught.value.number == 1 and caught.value.failure_class == "transient"
    assert h.versions(beauty) == [] and h.versions(diffuse) == [(1, "")]
    assert h.entities() == before
    # the core moves that product to the next free number: then both become visible, once
    entries[1] = entry(KEY, diffuse, 2, h.root, id_parts=(KEY, diffuse.subset))
    assert h.catalog.publish(entries) > 0
    assert h.versions(beauty) == [(1, KEY)] and h.versions(diffuse) == [(1, ""), (2, KEY)]


def test_versions_made_outside_count_as_taken(h):
    s = subject()
    assert h.catalog.highest_version(s) == 0 and h.catalog.version_holder(s, 1) is None
    h.foreign(s, 1)
    h.foreign(s, 4)
    assert h.catalog.highest_version(s) == 4
    assert h.catalog.version_holder(s, 1) == "" and h.catalog.version_holder(s, 4) == ""
    assert h.catalog.version_holder(s, 2) is None
    h.catalog.publish([entry(KEY, s, 5, h.root)])
    assert h.catalog.version_holder(s, 5) == KEY and h.catalog.highest_version(s) == 5


def test_unpublish_removes_only_what_it_created(h):
    s, other = subject(), subject(subset="renderOther")
    h.foreign(s, 1)
    mine = entry(KEY, s, 2, h.root)
    theirs = entry(OTHER, s, 3, h.root)
    h.catalog.publish([mine])
    h.catalog.publish([theirs])
    h.catalog.publish([entry(KEY, other, 1, h.root, id_parts=(KEY, other.subset))])
    # another key's entry, asked in the name of KEY: not touched
    assert h.catalog.unpublish(KEY, [(OTHER,)], ["proj"]) == 0
    removed = h.catalog.unpublish(KEY, [(KEY,), (KEY, other.subset)], ["proj"])
    assert removed >= 4
    assert h.versions(s) == [(1, ""), (3, OTHER)]
    assert h.versions(other) == []  # its product was ours alone: gone with it
    assert h.catalog.unpublish(KEY, [(KEY,), (KEY, other.subset)], ["proj"]) == 0  # idempotent


def test_ids_are_deterministic(h):
    one = h.catalog.version_id((KEY,))
    assert one == h.catalog.version_id((KEY,))
    assert one != h.catalog.version_id((KEY, "renderMain")) != h.catalog.version_id((OTHER,))
    assert isinstance(one, str)
    h.catalog.publish([entry(KEY, subject(), 1, h.root)])
    assert [v.id for v in h.catalog.versions_of_key(KEY, [subject()])] == [one]
    with pytest.raises(ValueError):
        h.catalog.version_id(())


def test_a_server_that_is_down_is_unavailable(h):
    down = h.down()
    s = subject()
    for call in (lambda: down.check_environment(["proj"]), lambda: down.highest_version(s),
                 lambda: down.version_holder(s, 1), lambda: down.publish([entry(KEY, s, 1, h.root)])):
        with pytest.raises(CatalogUnavailable) as caught:
            call()
        assert caught.value.failure_class == "transient"
        assert isinstance(caught.value, PublishError) and "\n" not in str(caught.value)
    down.close()


def _hero_of(e, root):
    """The hero entry of ``e``: its files under the product's hero folder, with the hero names."""
    from dataclasses import replace

    from atomic_publish.wrapper.catalogs.base import HeroEntry

    folder = root / "proj" / "hero"
    reps = []
    for rep in e.representations:
        files = tuple(replace(f, name=f.name.replace(f"_v{e.number:03d}", "_hero"),
                              path=str(folder / f.name.replace(f"_v{e.number:03d}", "_hero")),
                              rootless="{root[work]}/proj/hero/" + f.name.replace(f"_v{e.number:03d}", "_hero"))
                      for f in rep.files)
        reps.append(replace(rep, files=files, data_path=files[0].path))
    return HeroEntry(version=e, hero_dir=str(folder), representations=tuple(reps))


def test_the_hero_moves_forward_only_and_in_place(h):
    """Hero versions (issue 14): one hero per product, pointing at the version it mirrors with the
    hero folder's files; it moves to a higher number, never back; writing it again changes nothing."""
    s = subject()
    assert h.catalog.supports_hero and h.catalog.hero_of(s) is None
    entries = {n: entry(f"{KEY[:-1]}{n}", s, n, h.root) for n in (1, 2, 3)}
    for n in (1, 2, 3):
        h.catalog.publish([entries[n]])
    assert h.catalog.write_hero(_hero_of(entries[2], h.root)) is True
    hero = h.catalog.hero_of(s)
    assert (hero.number, hero.key, hero.version_id) == (2, entries[2].key, h.catalog.version_id(entries[2].id_parts))
    assert sorted(f.rootless for f in hero.files) == ["{root[work]}/proj/hero/pj_sh010_renderMain_hero.1001.exr",
                                                       "{root[work]}/proj/hero/pj_sh010_renderMain_hero.1002.exr"]
    assert h.catalog.write_hero(_hero_of(entries[3], h.root)) is True
    moved = h.catalog.hero_of(s)
    assert moved.number == 3 and moved.id == hero.id  # updated in place: the same hero entry
    assert h.catalog.write_hero(_hero_of(entries[1], h.root)) is False  # a late v1: never back
    assert h.catalog.hero_of(s).number == 3
    before = h.entities()
    assert h.catalog.write_hero(_hero_of(entries[3], h.root)) is True  # a replay
    assert h.entities() == before and h.catalog.hero_of(s).number == 3
    # the hero is no numbered version: numbering and duplicates ignore it (AYON lists it as -3)
    assert h.catalog.highest_version(s) == 3 and h.catalog.duplicate_numbers(["proj"]) == []
    assert [v for v in h.versions(s) if v[0] > 0] == [(1, entries[1].key), (2, entries[2].key), (3, entries[3].key)]
