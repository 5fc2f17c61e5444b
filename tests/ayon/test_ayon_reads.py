"""Reads through the real client: project and anatomy, folders, tasks, products, versions
(active filters, latest, hero), representations, REST GETs and GraphQL pagination."""
from __future__ import annotations

import uuid

import pytest
from ayon_api.exceptions import GraphQlQueryFailed
from ayon_api.operations import (OperationsSession, new_hero_version_entity, new_product_entity,
                                 new_representation_entity, new_version_entity)

from conftest import API_KEY, PROJECT, SHOT


def eid(*names: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, "test:" + "/".join(names)).hex


def publish(con, folder_id: str, product: str, versions: list[tuple[int, bool]], task_id=None) -> dict:
    """Create a product and its versions (number, active), one representation each, in one commit."""
    session = OperationsSession(con=con)
    product_entity = new_product_entity(product, "render", folder_id, entity_id=eid(product))
    session.create_entity(PROJECT, "product", product_entity)
    ids = {"product": product_entity["id"], "versions": {}, "representations": {}}
    for number, active in versions:
        version = new_version_entity(number, product_entity["id"], task_id=task_id,
                                     attribs={"comment": f"v{number}"},
                                     entity_id=eid(product, str(number), str(active)))
        version["active"] = active
        session.create_entity(PROJECT, "version", version)
        representation = new_representation_entity(
            "exr", version["id"], files=[{"id": eid(product, str(number), "f"), "name": f"f.{number}.exr",
                                          "path": f"{{root[work]}}/{product}/v{number:03d}/f.exr",
                                          "size": 1024 + number, "hash": f"h{number}"}],
            attribs={"path": f"{{root[work]}}/{product}/v{number:03d}/f.exr", "template": "{root[work]}/..."},
            entity_id=eid(product, str(number), str(active), "exr"))
        session.create_entity(PROJECT, "representation", representation)
        ids["versions"][(number, active)] = version["id"]
        ids["representations"][(number, active)] = representation["id"]
    session.commit()
    return ids


@pytest.fixture
def folder(con):
    return con.get_folder_by_path(PROJECT, SHOT)


def test_project_has_its_anatomy(con):
    project = con.get_project(PROJECT)
    assert [s["name"] for s in project["statuses"]][3] == "Pending review"
    assert project["config"]["roots"]["work"]["linux"] == "/mnt/share/projects"
    assert {"Shot", "Folder"} <= {t["name"] for t in project["folderTypes"]}
    assert project["attrib"]["fps"] == 25.0
    assert con.get_project(PROJECT, fields=["name", "productTypes"])["productTypes"] == []
    assert con.get_project("no_such_project") is None


def test_folders_and_tasks(con, ayon, folder):
    assert folder["id"] == ayon.ids["folders"][SHOT]
    assert folder["path"] == SHOT and folder["folderType"] == "Shot"
    assert con.get_folder_by_path(PROJECT, SHOT.lstrip("/"))["id"] == folder["id"]
    assert con.get_folder_by_path(PROJECT, "/sq01/nope") is None
    parent = con.get_folder_by_path(PROJECT, "/sq01")
    assert [f["name"] for f in con.get_folders(PROJECT, parent_ids=[parent["id"]])] == ["sh010"]
    assert [f["name"] for f in con.get_folders(PROJECT, parent_ids=[None])] == ["sq01"]
    assert folder["attrib"]["frameStart"] == 1001  # inherited from the project
    task = con.get_task_by_name(PROJECT, folder["id"], "comp")
    assert task["id"] == ayon.ids["tasks"][f"{SHOT}/comp"] and task["taskType"] == "Compositing"
    assert [t["name"] for t in con.get_tasks(PROJECT, folder_ids=[folder["id"]])] == ["comp"]
    assert con.get_task_by_name(PROJECT, folder["id"], "lighting") is None
    assert con.get_rest_folder(PROJECT, folder["id"])["path"] == SHOT


def test_products_versions_and_the_inactive_highest(con, folder):
    ids = publish(con, folder["id"], "renderMain", [(1, True), (2, False)])
    product = con.get_product_by_name(PROJECT, "renderMain", folder["id"])
    assert product["id"] == ids["product"] and product["productType"] == "render"
    # GraphQL lists the product types the project uses
    assert con.get_project(PROJECT, fields=["productTypes"])["productTypes"] == [{"name": "render"}]
    assert [p["name"] for p in con.get_products(PROJECT, folder_ids=[folder["id"]])] == ["renderMain"]
    numbers = lambda **kw: [v["version"] for v in con.get_versions(PROJECT, product_ids=[product["id"]], **kw)]
    assert numbers() == [1]                  # default active=True hides the inactive v002
    assert numbers(active=False) == [2]
    assert numbers(active=None) == [1, 2]
    v2 = ids["versions"][(2, False)]
    assert con.get_version_by_id(PROJECT, v2)["active"] is False
    assert con.get_version_by_name(PROJECT, 2, product["id"])["id"] == v2
    assert con.get_rest_version(PROJECT, v2)["active"] is False
    # The recorded server: while the highest version is inactive, the last version is None.
    assert con.get_last_version_by_product_id(PROJECT, product["id"]) is None
    assert con.get_last_versions(PROJECT, [product["id"]], active=None)[product["id"]]["id"] == v2
    version = con.get_version_by_id(PROJECT, ids["versions"][(1, True)])
    assert version["status"] == "Pending review" and version["author"] == "atomic-publish"
    assert version["attrib"] == {"comment": "v1"} and version["name"] == "v001"
    assert version["createdAt"] and version["updatedAt"] and version["tags"] == [] and version["data"] == {}


def test_hero_versions_have_negative_numbers(con, folder):
    ids = publish(con, folder["id"], "renderMain", [(1, True), (2, True)])
    session = OperationsSession(con=con)
    hero = new_hero_version_entity(2, ids["product"], entity_id=eid("hero"))
    session.create_entity(PROJECT, "version", hero)
    session.commit()
    found = con.get_hero_version_by_product_id(PROJECT, ids["product"])
    assert found["id"] == hero["id"] and found["version"] == -2 and found["name"] == "HERO"
    assert [v["version"] for v in con.get_versions(PROJECT, product_ids=[ids["product"]], hero=False)] == [1, 2]
    assert con.get_last_version_by_product_id(PROJECT, ids["product"])["version"] == 2


def test_representations_with_their_files(con, folder):
    ids = publish(con, folder["id"], "renderMain", [(1, True)])
    [repre] = con.get_representations(PROJECT, version_ids=[ids["versions"][(1, True)]])
    assert repre["name"] == "exr" and repre["status"] == "Omitted"  # the default anatomy's only one
    assert repre["attrib"]["path"].endswith("v001/f.exr")
    [file] = repre["files"]
    assert file["path"] == "{root[work]}/renderMain/v001/f.exr" and int(file["size"]) == 1025
    assert con.get_rest_representation(PROJECT, repre["id"])["files"][0]["hash"] == "h1"
    assert con.get_representation_by_id(PROJECT, eid("nope")) is None


def test_graphql_pages_through_more_than_300(con, folder):
    ids = publish(con, folder["id"], "renderMain", [(n, True) for n in range(1, 352)])
    versions = list(con.get_versions(PROJECT, product_ids=[ids["product"]]))
    assert [v["version"] for v in versions] == list(range(1, 352))


def test_an_undeclared_filter_fails_loudly(con):
    with pytest.raises(GraphQlQueryFailed):
        list(con.get_folders(PROJECT, filters={"conditions": []}))


def test_every_declared_route_is_served(ayon, con, folder):
    """ROUTES (checked against the recorded OpenAPI) is what the server really answers."""
    import requests
    from atomic_publish.testing.fake_ayon.server import ROUTES


    ids = publish(con, folder["id"], "renderMain", [(1, True)])
    task_post = con.post(f"projects/{PROJECT}/operations/background", operations=[])
    values = {"project_name": PROJECT, "folder_id": folder["id"], "product_id": ids["product"],
              "task_id": ayon.ids["tasks"][f"{SHOT}/comp"], "version_id": ids["versions"][(1, True)],
              "representation_id": ids["representations"][(1, True)]}
    for method, template in ROUTES:
        path = template.format(**values)
        if template.endswith("background/{task_id}"):
            path = template.format(**{**values, "task_id": task_post.data["id"]})
        body = {"query": "{ project(name: \"proj\") { name } }"} if template == "/graphql" else {"operations": []}
        response = requests.request(method, ayon.url + path, headers={"x-api-key": API_KEY},
                                    json=body if method == "POST" else None, timeout=5)
        assert response.status_code == 200, f"{method} {path}: {response.text}"


def test_representation_context_is_served_from_data_context(con, folder):
    """ayon-backend's GraphQL RepresentationNode.context is ``json_dumps(data.get("context", {}))``
    (graphql/nodes/representation.py, representation_from_record): the loader reads the
    context the integrator put into ``data.context``, not a top-level field."""
    context = {"root": {"work": "/mnt/work"}, "project": {"name": PROJECT, "code": "pj"},
               "folder": {"name": "sh010"}, "product": {"name": "renderCtx", "type": "render"},
               "version": 1, "representation": "exr", "ext": "exr", "frame": "1001"}
    session = OperationsSession(con=con)
    product = new_product_entity("renderCtx", "render", folder["id"], entity_id=eid("renderCtx"))
    version = new_version_entity(1, product["id"], entity_id=eid("renderCtx", "1"))
    with_context = new_representation_entity("exr", version["id"], files=[], attribs={},
                                             data={"context": context}, entity_id=eid("renderCtx", "exr"))
    without = new_representation_entity("mov", version["id"], files=[], attribs={}, data={},
                                         entity_id=eid("renderCtx", "mov"))
    for entity_type, entity in (("product", product), ("version", version), ("representation", with_context),
                                ("representation", without)):
        session.create_entity(PROJECT, entity_type, entity)
    session.commit()
    reps = {r["name"]: r for r in con.get_representations(PROJECT, version_ids=[version["id"]],
                                                          fields={"id", "name", "context", "data"})}
    assert reps["exr"]["context"] == context
    assert reps["mov"]["context"] == {}
    assert reps["exr"]["data"]["context"] == context
