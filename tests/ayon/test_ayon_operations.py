"""Operations batches through the real client, with the semantics the recorded server showed:
all or nothing with canFail=false, HTTP 200 with success=false, 409 on replayed ids, version
numbers unique among active versions only, default and unknown statuses."""
from __future__ import annotations

import uuid

import pytest
from ayon_api.exceptions import FailedOperations
from ayon_api.operations import (OperationsSession, new_folder_entity, new_product_entity,
                                 new_version_entity)

from conftest import PROJECT, SHOT


def eid(*names: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, "ops:" + "/".join(names)).hex


def dashed(hex_id: str) -> str:
    return str(uuid.UUID(hex_id))


@pytest.fixture
def product(con, ayon):
    """A render product under the seeded shot (created through OperationsSession)."""
    session = OperationsSession(con=con)
    entity = new_product_entity("renderMain", "render", ayon.ids["folders"][SHOT], entity_id=eid("product"))
    session.create_entity(PROJECT, "product", entity)
    session.commit()
    return entity["id"]


def create_version(number: int, product_id: str, key: str, active: bool | None = None, **extra) -> dict:
    data = new_version_entity(number, product_id, entity_id=eid(key), **extra)
    if active is not None:
        data["active"] = active
    return {"type": "create", "entityType": "version", "entityId": data["id"], "data": data}


def versions(con, product_id: str) -> list[tuple[int, bool]]:
    return [(v["version"], v["active"]) for v in con.get_versions(PROJECT, product_ids=[product_id], active=None)]


def test_commit_posts_to_background_and_polls(con, ayon, product):
    paths = [(r["method"], r["path"]) for r in ayon.requests()]
    post = ("POST", f"/api/projects/{PROJECT}/operations/background")
    assert post in paths
    poll = paths[paths.index(post) + 1]
    assert poll[0] == "GET" and poll[1].startswith(f"/api/projects/{PROJECT}/operations/background/")
    assert ayon.stats()["batches_committed"] == 1 and ayon.stats()["created_by_type"] == {"product": 1}


def test_replayed_ids_get_409_and_nothing_changes(con, ayon, product):
    folder = new_folder_entity("sh020", "Shot", parent_id=ayon.ids["folders"]["/sq01"], entity_id=eid("sh020"))
    batch = [{"type": "create", "entityType": "folder", "entityId": folder["id"], "data": folder},
             create_version(1, product, "v1")]
    first = con.send_batch_operations(PROJECT, batch)
    assert [r["status"] for r in first] == [201, 201]
    before = ayon.entities(PROJECT, "version")
    result = con.post(f"projects/{PROJECT}/operations", operations=batch, canFail=False)
    assert result.status_code == 200
    assert result.data["success"] is False
    [failed] = result.data["operations"]  # processing stopped at the first operation
    assert (failed["status"], failed["errorCode"]) == (409, "unique-violation")
    assert failed["detail"] == f"Folder with id '{dashed(folder['id'])}' already exists."
    assert ayon.entities(PROJECT, "version") == before
    session = OperationsSession(con=con)
    session.create_entity(PROJECT, "folder", folder)
    with pytest.raises(FailedOperations, match="already exists"):
        session.commit()


def test_can_fail_true_keeps_what_worked(con, ayon, product):
    con.send_batch_operations(PROJECT, [create_version(1, product, "v1")])
    answer = con.send_batch_operations(PROJECT, [create_version(1, product, "v1"), create_version(2, product, "v2")],
                                       can_fail=True, raise_on_fail=False)
    assert [(r["success"], r["status"]) for r in answer] == [(False, 409), (True, 201)]
    assert versions(con, product) == [(1, True), (2, True)]


def test_raise_on_error_turns_the_refusal_into_http_409(con, product):
    con.send_batch_operations(PROJECT, [create_version(1, product, "v1")])
    response = con.post(f"projects/{PROJECT}/operations", operations=[create_version(1, product, "v1")],
                        canFail=False, raiseOnError=True)
    assert response.status_code == 409
    assert response.data == {"code": 409, "detail": f"Version with id '{dashed(eid('v1'))}' already exists."}


def test_a_failure_rolls_back_the_whole_batch(con, ayon, product):
    created = ayon.stats()["created"]
    batch = [create_version(1, product, "a"), create_version(2, product, "b"),
             create_version(9, eid("no-such-product"), "c")]
    answer = con.send_batch_operations(PROJECT, batch, raise_on_fail=False)
    assert [r["success"] for r in answer] == [True, True, False]
    assert answer[2]["errorCode"] == "foreign-key-violation"
    assert answer[2]["detail"] == (f"product_id '{dashed(eid('no-such-product'))}' is not present "
                                   "in table \"products\".")
    assert versions(con, product) == []
    assert ayon.stats()["created"] == created and ayon.stats()["batches_failed"] == 1


def test_version_numbers_are_unique_among_active_versions(con, product):
    detail = f"Version with product_id, version '{dashed(product)}, 3' already exists."
    con.send_batch_operations(PROJECT, [create_version(3, product, "3a")])
    [second] = con.send_batch_operations(PROJECT, [create_version(3, product, "3b")], raise_on_fail=False)
    assert (second["status"], second["errorCode"], second["detail"]) == (409, "unique-violation", detail)
    # both in one batch: 409 and the first one rolled back too
    answer = con.send_batch_operations(PROJECT, [create_version(4, product, "4a"), create_version(4, product, "4b")],
                                       raise_on_fail=False)
    assert [r["success"] for r in answer] == [True, False]
    assert con.get_version_by_id(PROJECT, eid("4a")) is None
    # an inactive duplicate is accepted; activating it while the other is active is refused
    con.send_batch_operations(PROJECT, [create_version(3, product, "3c", active=False)])
    [activate] = con.send_batch_operations(PROJECT, [{"type": "update", "entityType": "version",
                                                      "entityId": eid("3c"), "data": {"active": True}}],
                                           raise_on_fail=False)
    assert (activate["status"], activate["detail"]) == (409, detail)
    # deactivating the other first, in the same batch, makes room
    con.send_batch_operations(PROJECT, [
        {"type": "update", "entityType": "version", "entityId": eid("3a"), "data": {"active": False}},
        {"type": "update", "entityType": "version", "entityId": eid("3c"), "data": {"active": True}}])
    assert sorted(versions(con, product)) == [(3, False), (3, True)]


def test_statuses_default_and_unknown(con, ayon, product):
    con.send_batch_operations(PROJECT, [create_version(1, product, "v1")])
    assert con.get_version_by_id(PROJECT, eid("v1"))["status"] == "Pending review"
    [bad] = con.send_batch_operations(PROJECT, [{"type": "update", "entityType": "version", "entityId": eid("v1"),
                                                 "data": {"status": "NoSuchStatus"}}], raise_on_fail=False)
    assert (bad["status"], bad["errorCode"]) == (409, "foreign-key-violation")
    assert bad["detail"] == "status 'NoSuchStatus' is not present in table \"statuses\"."
    session = OperationsSession(con=con)
    session.update_entity(PROJECT, "version", eid("v1"), {"status": "Approved", "attrib": {"comment": "ok"}})
    session.commit()
    version = con.get_version_by_id(PROJECT, eid("v1"))
    assert version["status"] == "Approved" and version["attrib"]["comment"] == "ok"
    assert version["updatedAt"] >= version["createdAt"]


def test_attributes_outside_the_scope_are_dropped_and_types_checked(con, product):
    [ok] = con.send_batch_operations(PROJECT, [create_version(1, product, "v1",
                                                              attribs={"comment": "c", "bogus": 1, "fps": 24})])
    assert con.get_version_by_id(PROJECT, eid("v1"))["attrib"] == {"comment": "c", "fps": 24}
    [bad] = con.send_batch_operations(PROJECT, [create_version(2, product, "v2", attribs={"frameStart": "x"})],
                                      raise_on_fail=False)
    assert (bad["status"], bad["errorCode"]) == (400, "invalid_data")
    assert "attrib.frameStart" in bad["detail"]


def test_delete_cascades_and_a_folder_with_products_stays(con, ayon, product):
    con.send_batch_operations(PROJECT, [create_version(1, product, "v1")])
    con.send_batch_operations(PROJECT, [{"type": "create", "entityType": "representation", "entityId": eid("r"),
                                         "data": {"name": "exr", "versionId": eid("v1"), "files": []}}])
    [refused] = con.send_batch_operations(PROJECT, [{"type": "delete", "entityType": "folder",
                                                     "entityId": ayon.ids["folders"][SHOT]}], raise_on_fail=False)
    assert (refused["status"], refused["detail"]) == (409, "Unable to delete a folder with products or tasks.")
    session = OperationsSession(con=con)
    session.delete_entity(PROJECT, "product", product)
    session.commit()
    assert ayon.entities(PROJECT, "version") == [] and ayon.entities(PROJECT, "representation") == []
    [missing] = con.send_batch_operations(PROJECT, [{"type": "update", "entityType": "version", "entityId": eid("v1"),
                                                     "data": {"active": False}}], raise_on_fail=False)
    assert (missing["status"], missing["errorCode"], missing["detail"]) == (404, "not-found", "Entity not found")


def test_product_names_are_unique_per_folder(con, ayon, product):
    other = new_product_entity("RENDERMAIN", "render", ayon.ids["folders"][SHOT], entity_id=eid("p2"))
    [dup] = con.send_batch_operations(PROJECT, [{"type": "create", "entityType": "product", "entityId": other["id"],
                                                 "data": other}], raise_on_fail=False)
    assert dup["errorCode"] == "unique-violation" and dup["detail"].startswith("Product with folder_id")


def test_a_malformed_request_is_refused_whole(con, ayon):
    response = con.post(f"projects/{PROJECT}/operations", operations=[{"type": "upsert", "entityType": "version"}])
    assert response.status_code == 400 and "operations[0].type" in response.data["detail"]
    response = con.post(f"projects/{PROJECT}/operations", operations=[
        {"type": "update", "entityType": "version", "entityId": eid("x"), "data": {}},
        {"type": "delete", "entityType": "version", "entityId": eid("x")}])
    assert response.status_code == 400 and response.data["detail"].startswith("Duplicate operation")
    response = con.post("projects/nope/operations", operations=[])
    assert (response.status_code, response.data["detail"]) == (404, "Project nope not found")
    assert ayon.stats()["batches"] == 0
