"""The ayon backend against the local AYON server through the real client: what AYON's loader and
other clients see, refusals named, the key never shown, faults, and version numbers against
everyone else."""
from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from atomic_publish.wrapper.catalogs import registry
from atomic_publish.wrapper.catalogs.ayon import AyonCatalog, entity_id
from atomic_publish.wrapper.errors import (ArgumentError, CatalogAuthRefused, CatalogAuthRefusedHere,
                                           CatalogNumberTaken, CatalogRefused, CatalogUnavailable,
                                           PermanentError)
from catalog_harness import API_KEY, PROJECT, AyonHarness, entry, subject

KEY = "deadline10:64f0a1b2c3d4e5f6a7b8c9d0:0"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def h(tmp_path):
    made = AyonHarness(tmp_path)
    yield made
    made.close()


def test_the_loader_resolves_what_was_published(h):
    s = subject()
    e = entry(KEY, s, 1, h.root, write_files=True)
    h.catalog.publish([e])
    version = h.con.get_version_by_id(PROJECT, h.catalog.version_id((KEY,)))
    [rep] = h.con.get_representations(PROJECT, version_ids=[version["id"]])
    rest = h.con.get_rest_representation(PROJECT, rep["id"])
    first = e.representations[0].files[0]
    assert rep["attrib"]["path"] == first.path and os.path.isfile(rep["attrib"]["path"])
    # ayon-core's get_representation_path: attrib.template formatted with the context and the
    # project's roots (the real server serves data.context as the representation's context)
    roots = {name: paths["linux"] for name, paths in h.con.get_project(PROJECT)["config"]["roots"].items()}
    context = {**rest["data"]["context"], "root": roots}
    assert rep["attrib"]["template"].format(**context) == first.path
    assert context["folder"] == {"name": "sh010", "path": "/sq01/sh010"}
    assert context["product"] == {"name": "renderMain", "type": "render"} and context["version"] == 1
    assert context["frame"] == "1001" and context["representation"] == "exr" and context["task"] == {"name": "comp"}
    assert rest["data"]["colorspaceData"] == {"colorspace": "ACES - ACEScg"}
    files = {f["name"]: f for f in rep["files"]}
    assert set(files) == {f.name for f in e.representations[0].files}
    assert files[first.name]["path"] == first.rootless and int(files[first.name]["size"]) == first.size
    # the server's hashType enum has no xxh3: the hash is kept in the representation's data
    assert rest["data"]["atomic_publish"]["hashes"][first.name] == {"hash": first.hash, "hash_type": "xxh3_128"}
    assert [v.files[0].hash for v in h.catalog.versions_of_key(KEY, [s])] == [first.hash]


def test_the_version_carries_what_ayons_integrator_writes(h):
    s = subject()
    h.catalog.publish([entry(KEY, s, 3, h.root)])
    v = h.con.get_version_by_id(PROJECT, h.catalog.version_id((KEY,)))
    assert v["version"] == 3 and v["author"] == "alice" and v["status"] == "Pending review"
    assert v["taskId"] == h.ids["tasks"]["/sq01/sh010/comp"]
    assert v["attrib"]["families"] == ["render"] and v["attrib"]["fps"] == 24.0
    assert v["attrib"]["frameStart"] == 1001 and v["attrib"]["frameEnd"] == 1002
    assert v["attrib"]["resolutionWidth"] == 2048 and v["attrib"]["comment"] == "comp v1"
    assert v["attrib"]["source"] == "{root[work]}/proj/work/comp.nk" and v["attrib"]["machine"] == "render-07"
    assert v["data"]["host_name"] == "nuke" and v["data"]["time"] == "20261201T071017Z"
    assert v["data"]["atomic_publish"]["key"] == KEY and v["data"]["atomic_publish"]["id_parts"] == [KEY]
    product = h.con.get_product_by_name(PROJECT, "renderMain", h.ids["folders"]["/sq01/sh010"])
    assert product["productType"] == "render"
    assert product["id"] == entity_id("product", PROJECT, h.ids["folders"]["/sq01/sh010"], "rendermain")
    # ids: 32 hex characters, what the server's id regex and ayon_api accept
    assert len(v["id"]) == 32 and int(v["id"], 16) >= 0


def test_everything_goes_in_one_batch_and_a_replay_sends_none(h):
    beauty, diffuse = subject(subset="beauty"), subject(subset="diffuse")
    entries = [entry(KEY, beauty, 1, h.root, id_parts=(KEY, "beauty")),
               entry(KEY, diffuse, 1, h.root, id_parts=(KEY, "diffuse"))]
    before = h.server.stats()["batches"]
    assert h.catalog.publish(entries) == 6
    stats = h.server.stats()
    assert stats["batches"] - before == 1 and stats["batches_failed"] == 0
    assert h.catalog.publish(entries) == 0
    assert h.server.stats()["batches"] == stats["batches"]  # recognised by reading: nothing sent


def test_a_missing_folder_of_the_second_product_leaves_nothing_of_the_first(h):
    ok, missing = subject(asset="sh010"), subject(asset="sh999")
    before = h.entities()
    with pytest.raises(CatalogRefused) as caught:
        h.catalog.publish([entry(KEY, ok, 1, h.root, id_parts=(KEY, "a")),
                           entry(KEY, missing, 1, h.root, id_parts=(KEY, "b"))])
    assert "/sq01/sh999" in str(caught.value) and "'proj'" in str(caught.value)
    assert caught.value.failure_class == "permanent"
    assert h.entities() == before and h.versions(ok) == []


def test_a_missing_task_or_an_unknown_status_is_refused_and_named(h, tmp_path):
    with pytest.raises(CatalogRefused, match=r"task 'lighting' does not exist in folder /sq01/sh010 of project 'proj'"):
        h.catalog.publish([entry(KEY, subject(task="lighting"), 1, h.root)])
    strict = AyonCatalog(h.server.url, API_KEY, version_status="Nope", timeout=5)
    with pytest.raises(CatalogRefused, match=r"no version status 'Nope'.*Approved"):
        strict.check_environment([PROJECT])
    approved = AyonCatalog(h.server.url, API_KEY, version_status="Approved", timeout=5)
    approved.publish([entry(KEY, subject(), 1, h.root)])
    assert h.con.get_version_by_id(PROJECT, approved.version_id((KEY,)))["status"] == "Approved"
    with pytest.raises(CatalogRefused, match="no project 'other'"):
        h.catalog.check_environment(["other"])
    assert h.entities() == 3
    strict.close()
    approved.close()


def test_inactive_versions_count_and_reading_creates_nothing(h):
    """Other clients' inactive versions are taken numbers; reserving reads only (nothing is held on
    the server, so get_last_version_by_product_id keeps answering for AYON's own integrator)."""
    s = subject()
    h.foreign(s, 1)
    h.foreign(s, 2, active=False)
    batches = h.server.stats()["batches"]
    assert h.catalog.highest_version(s) == 2
    assert h.catalog.version_holder(s, 2) == "" and h.catalog.version_holder(s, 3) is None
    assert h.server.stats()["batches"] == batches
    with pytest.raises(CatalogNumberTaken) as caught:
        h.catalog.publish([entry(KEY, s, 2, h.root)])
    assert caught.value.number == 2
    h.catalog.publish([entry(KEY, s, 3, h.root)])
    product = h.con.get_product_by_name(PROJECT, "renderMain", h.ids["folders"]["/sq01/sh010"])
    assert h.con.get_last_version_by_product_id(PROJECT, product["id"])["version"] == 3


def test_a_number_taken_between_the_read_and_the_batch(h, monkeypatch):
    """Another client creates v1 after the catalogue read the product: the server's unique index
    refuses the batch (409), the backend says CatalogNumberTaken, nothing of the batch is kept."""
    s = subject()
    h.foreign(s, 5)  # the product exists, made by another client
    plan = AyonCatalog._plan

    def racing(self, entries):
        planned = plan(self, entries)
        h.foreign(s, 6)
        return planned

    monkeypatch.setattr(AyonCatalog, "_plan", racing)
    with pytest.raises(CatalogNumberTaken) as caught:
        h.catalog.publish([entry(KEY, s, 6, h.root)])
    assert caught.value.number == 6 and caught.value.product == "renderMain"
    assert "version 6 of proj /sq01/sh010 renderMain" in str(caught.value) and "already exists" in str(caught.value)
    assert h.versions(s) == [(5, ""), (6, "")]
    assert h.server.stats()["batches_failed"] == 1


def test_a_connection_dropped_after_the_commit_publishes_once(h):
    h.server.set_faults([{"kind": "drop_after_commit"}])
    s = subject()
    try:
        h.catalog.publish([entry(KEY, s, 1, h.root)])
    except CatalogUnavailable:
        pass  # the answer was lost: the next attempt reads what is there
    assert h.catalog.publish([entry(KEY, s, 1, h.root)]) == 0
    assert h.versions(s) == [(1, KEY)]
    assert h.server.stats()["created_by_type"]["version"] == 1


def test_server_errors_are_transient_and_publish_nothing(h):
    s = subject()
    h.server.set_faults([{"kind": "http_error", "status": 500}])
    with pytest.raises(CatalogUnavailable, match="HTTP 500"):
        h.catalog.publish([entry(KEY, s, 1, h.root)])
    assert h.versions(s) == []
    h.server.set_faults([{"kind": "http_error", "status": 503}])  # the client retries a 503 itself
    assert h.catalog.publish([entry(KEY, s, 1, h.root)]) == 3
    assert h.versions(s) == [(1, KEY)]


def test_a_refused_key_is_permanent_from_the_farm_and_worker_local_from_the_worker(h, tmp_path, capfd):
    wrong = "ak-wrong-" + "9" * 40
    secrets = tmp_path / "secrets"
    secrets.write_text(f"AYON_API_KEY={wrong}\n")
    os.chmod(secrets, 0o600)
    farm = registry.from_environment("ayon", environ={"AYON_SERVER_URL": h.server.url,
                                                      "ATOMIC_PUBLISH_SECRETS_FILE": str(secrets)})
    with pytest.raises(CatalogAuthRefused) as caught:
        farm.check_environment([PROJECT])
    assert caught.value.failure_class == "permanent" and "AyonApiKey" in caught.value.todo
    here = registry.from_environment("ayon", environ={"AYON_SERVER_URL": h.server.url, "AYON_API_KEY": wrong})
    with pytest.raises(CatalogAuthRefusedHere) as caught_here:
        here.highest_version(subject())
    assert caught_here.value.failure_class == "worker-local"
    for error in (caught.value, caught_here.value):
        assert wrong not in f"{error} {error.todo}" and API_KEY not in f"{error} {error.todo}"
    assert wrong not in repr(farm) and wrong not in "".join(capfd.readouterr())
    # the environment's key wins over the secrets file's, and a good key in the file works
    secrets.write_text(f"AYON_API_KEY={API_KEY}\n")
    good = registry.from_environment("ayon", environ={"AYON_SERVER_URL": h.server.url,
                                                      "ATOMIC_PUBLISH_SECRETS_FILE": str(secrets)})
    good.check_environment([PROJECT])
    good.close()


def test_the_registry(h, tmp_path):
    assert set(registry.available()) >= {"openpype", "ayon"}
    assert registry.chosen_name(environ={}) == ("openpype", "the default")
    assert registry.chosen_name(environ={"ATOMIC_PUBLISH_CATALOG": "ayon"}) == ("ayon", "ATOMIC_PUBLISH_CATALOG")
    assert registry.chosen_name("openpype", environ={"ATOMIC_PUBLISH_CATALOG": "ayon"})[0] == "openpype"
    with pytest.raises(PermanentError, match="^ATOMIC_PUBLISH_CATALOG: unknown catalogue 'shotgun'; available: ayon"):
        registry.chosen_name(environ={"ATOMIC_PUBLISH_CATALOG": "shotgun"})
    with pytest.raises(ArgumentError, match="^argument --catalog: unknown catalogue 'x'"):
        registry.chosen_name("x", environ={})
    with pytest.raises(CatalogRefused, match="no server URL"):
        registry.from_environment("ayon", environ={"AYON_API_KEY": API_KEY})
    with pytest.raises(CatalogAuthRefused, match="no API key"):
        registry.from_environment("ayon", environ={"AYON_SERVER_URL": h.server.url}).check_environment([PROJECT])
    with pytest.raises(ValueError, match="MongoClient"):
        registry.from_environment(environ={})


def test_only_the_ayon_backend_imports_ayon_api():
    importers = []
    for folder in ("wrapper", "idempotency", "deadline_plugin"):
        for path in (REPO / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                if any(n.split(".")[0] == "ayon_api" for n in names):
                    importers.append(str(path.relative_to(REPO)))
    # the backend, and the demo, which reads back what AYON holds (lazily, only with --catalog ayon)
    assert sorted(set(importers)) == ["wrapper/catalogs/ayon.py", "wrapper/demo.py"]
