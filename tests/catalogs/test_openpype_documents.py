"""The openpype backend writes, for a one-product publish, byte for byte the documents the code
before the catalogue seam wrote (recorded in data/openpype_one_product.json, see golden.py)."""
from __future__ import annotations

import json

import bson
import pymongo
import pytest

import golden
from atomic_publish.idempotency.keys import object_id
from atomic_publish.wrapper.catalogs.entries import entry_from_manifest, subject_of
from atomic_publish.wrapper.catalogs.openpype import OpenPypeCatalog, parent_documents_of, version_documents_of
from atomic_publish.wrapper.documents import parent_documents, version_documents


@pytest.fixture
def recorded():
    return json.loads(golden.DATA.read_text())


def test_the_documents_functions_write_the_recorded_bytes(recorded):
    manifest, record, plan = golden.inputs()
    parents, subset_doc = parent_documents(manifest)
    version_doc, reps = version_documents(manifest, golden.KEY, record, plan, golden.FINAL_DIR, subset_doc["_id"])
    assert golden.encode_all(parents, subset_doc, version_doc, reps) == recorded


def test_the_entry_path_writes_the_recorded_bytes(recorded):
    manifest, record, plan = golden.inputs()
    entry = entry_from_manifest(manifest, golden.KEY, record, plan, golden.FINAL_DIR)
    assert entry.id_parts == (golden.KEY,)
    parents, subset_doc = parent_documents_of(subject_of(manifest))
    version_doc, reps = version_documents_of(entry, subset_doc["_id"])
    assert golden.encode_all(parents, subset_doc, version_doc, reps) == recorded
    # the id integrations receive is today's keys.object_id("version", key)
    catalog = OpenPypeCatalog(pymongo.MongoClient(connect=False), "unused")
    assert catalog.version_id((golden.KEY,)) == str(object_id("version", golden.KEY)) == str(version_doc["_id"])


def test_publish_stores_the_recorded_documents(recorded, mongo_uri):
    manifest, record, plan = golden.inputs()
    entry = entry_from_manifest(manifest, golden.KEY, record, plan, golden.FINAL_DIR)
    client = pymongo.MongoClient(mongo_uri, tz_aware=True)
    catalog = OpenPypeCatalog(client, "avalon_golden_" + golden.KEY.split(":")[1][:8])
    try:
        catalog.client.drop_database(catalog.db.name)
        assert catalog.publish([entry]) == 6  # project, asset, subset, version, 2 representations
        col = catalog.project("demo")
        stored = {d["type"]: d for d in col.find({"type": {"$in": ["project", "asset", "subset", "version"]}})}
        reps = list(col.find({"type": "representation"}).sort("name", 1))
        assert bson.encode(stored["version"]).hex() == recorded["version"]
        assert bson.encode(stored["subset"]).hex() == recorded["subset"]
        assert [bson.encode(stored[t]).hex() for t in ("project", "asset")] == recorded["parents"]
        assert sorted(bson.encode(r).hex() for r in reps) == sorted(recorded["representations"])
        assert catalog.publish([entry]) == 0
        assert col.count_documents({}) == 6
    finally:
        client.drop_database(catalog.db.name)
        client.close()


def test_a_second_product_of_one_publish_gets_its_own_ids():
    manifest, record, plan = golden.inputs()
    one = entry_from_manifest(manifest, golden.KEY, record, plan, golden.FINAL_DIR)
    two = entry_from_manifest(manifest, golden.KEY, record, plan, golden.FINAL_DIR, id_parts=(golden.KEY, "renderMain"))
    v1, r1 = version_documents_of(one, "subset")
    v2, r2 = version_documents_of(two, "subset")
    assert v1["_id"] != v2["_id"] and {r["_id"] for r in r1}.isdisjoint(r["_id"] for r in r2)
    assert v2["_id"] == object_id("version", golden.KEY, "renderMain")
    assert v2["data"]["atomic_publish"] == {**v1["data"]["atomic_publish"], "product": "renderMain"}


def test_a_subset_removed_after_the_reservation_is_made_again(mongo_uri):
    """The parents found at reservation time are remembered (issue 18: fewer round trips); the
    insert's single query also checks that the subset is still there, and a subset removed since
    (the rollback of the publish that created it) is created again, never left missing under the
    new version."""
    manifest, record, plan = golden.inputs()
    entry = entry_from_manifest(manifest, golden.KEY, record, plan, golden.FINAL_DIR)
    client = pymongo.MongoClient(mongo_uri, tz_aware=True)
    setup = OpenPypeCatalog(client, "avalon_removed_" + golden.KEY.split(":")[1][:8])
    try:
        client.drop_database(setup.db.name)
        _, subset_doc = parent_documents_of(entry.subject)
        parents, _ = parent_documents_of(entry.subject)
        setup.project("demo").insert_many([*parents, subset_doc])
        catalog = OpenPypeCatalog(client, setup.db.name)
        assert catalog.highest_version(entry.subject) == 0  # the reservation: asset and subset found
        setup.project("demo").delete_one({"_id": subset_doc["_id"]})
        assert catalog.publish([entry]) == 4  # the subset again, the version, 2 representations
        col = setup.project("demo")
        version = col.find_one({"type": "version"})
        assert col.find_one({"_id": version["parent"], "type": "subset"}) is not None
    finally:
        client.drop_database(setup.db.name)


def test_a_transaction_left_open_by_a_stopped_attempt_is_waited_out_and_said(mongo_uri, capsys):
    """An attempt stopped or killed inside the documents transaction leaves it open, holding its
    documents until the server aborts it (60 s by default). The roll-forward's transaction meets
    write conflicts meanwhile: pymongo retries them, and the log says why the commit waits (here
    the open transaction is aborted after 2 s instead of 60)."""
    import threading
    import time

    manifest, record, plan = golden.inputs()
    entry = entry_from_manifest(manifest, golden.KEY, record, plan, golden.FINAL_DIR)
    client = pymongo.MongoClient(mongo_uri, tz_aware=True)
    catalog = OpenPypeCatalog(client, "avalon_open_txn_" + golden.KEY.split(":")[1][:8])
    client.drop_database(catalog.db.name)
    parents, subset_doc = parent_documents_of(entry.subject)
    catalog.project("demo").insert_many([*parents, subset_doc])
    version_doc, _ = version_documents_of(entry, subset_doc["_id"])
    zombie = client.start_session()
    zombie.start_transaction()
    catalog.project("demo").insert_one(version_doc, session=zombie)  # the stopped attempt's, uncommitted
    threading.Timer(2.0, zombie.abort_transaction).start()
    try:
        started = time.monotonic()
        assert catalog.publish([entry]) == 3  # the version and its 2 representations, once
        assert time.monotonic() - started >= 1.5
        assert catalog.project("demo").count_documents({"type": "version"}) == 1
        out = capsys.readouterr().out
        assert "reports a write conflict while trying to insert the documents" in out
        assert "transactionLifetimeLimitSeconds" in out
    finally:
        zombie.end_session()
        client.drop_database(catalog.db.name)
