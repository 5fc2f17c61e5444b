"""The studio's publish catalogue: OpenPype/Avalon documents in one collection per project.

Documents carry deterministic ids derived from the key, so a replay after a crash
finds them already there and inserts nothing twice.
"""
from __future__ import annotations

from typing import Any

from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError


TRANSACTION_TOPOLOGIES = ("ReplicaSetWithPrimary", "Sharded", "LoadBalanced")


class Catalog:
    """Lookups of one attempt. Asset and subset documents found are remembered (found ones only:
    one that is missing is looked up again, since a concurrent publish may create it): the reserve
    step and the commit look up the same two documents, four round trips otherwise."""

    def __init__(self, client: MongoClient, database: str):
        self.client = client
        self.db = client[database]
        self._found: dict[tuple[Any, ...], dict[str, Any]] = {}

    def project(self, name: str) -> Collection:
        return self.db[name]

    def supports_transactions(self) -> bool:
        return self.client.topology_description.topology_type_name in TRANSACTION_TOPOLOGIES

    def find_asset(self, project: str, asset: str) -> dict[str, Any] | None:
        return self._find(("asset", project, asset), project, {"type": "asset", "name": asset})

    def find_subset(self, project: str, asset_id: Any, subset: str) -> dict[str, Any] | None:
        return self._find(("subset", project, asset_id, subset), project,
                          {"type": "subset", "name": subset, "parent": asset_id})

    def _find(self, cache_key: tuple[Any, ...], project: str, query: dict[str, Any]) -> dict[str, Any] | None:
        doc = self._found.get(cache_key)
        if doc is None:
            doc = self.project(project).find_one(query)
            if doc is not None:
                self._found[cache_key] = doc
        return doc

    def _subset_id(self, project: str, asset: str, subset: str) -> Any | None:
        asset_doc = self.find_asset(project, asset)
        subset_doc = self.find_subset(project, asset_doc["_id"], subset) if asset_doc else None
        return subset_doc["_id"] if subset_doc else None

    def highest_version(self, project: str, asset: str, subset: str) -> int:
        subset_id = self._subset_id(project, asset, subset)
        if subset_id is None:
            return 0
        doc = self.project(project).find_one({"type": "version", "parent": subset_id}, sort=[("name", -1)],
                                             projection={"name": 1})
        return int(doc["name"]) if doc else 0

    def version_holder(self, project: str, asset: str, subset: str, number: int) -> str | None:
        """The key that published version ``number`` ("" for a version made outside atomic-publish)."""
        subset_id = self._subset_id(project, asset, subset)
        if subset_id is None:
            return None
        doc = self.project(project).find_one({"type": "version", "parent": subset_id, "name": number},
                                             projection={"data.atomic_publish.key": 1})
        if doc is None:
            return None
        return (doc.get("data") or {}).get("atomic_publish", {}).get("key", "")

    def ensure_project_index(self, project: str) -> None:
        """(type, parent, name): the lookups above, on a project collection that grows with every publish."""
        self.project(project).create_index([("type", 1), ("parent", 1), ("name", 1)], name="atomic_publish_lookup")

    def insert_publish(self, project: str, parents: list[dict[str, Any]], subset_doc: dict[str, Any],
                       version_doc: dict[str, Any], representation_docs: list[dict[str, Any]]) -> int:
        """Insert what is missing of project/asset/subset/version/representations; returns how many.

        Parents (project, asset) and the subset are matched by name first, so an existing
        OpenPype hierarchy is reused. Runs in one transaction where the server supports it.
        """
        col = self.project(project)

        def work(session=None) -> int:
            inserted = 0
            for doc in [*parents, subset_doc]:
                query = {"type": doc["type"], "name": doc["name"]}
                if doc["type"] == "subset":
                    query["parent"] = doc["parent"]
                if col.find_one(query, session=session, projection={"_id": 1}) is None:
                    inserted += _insert_missing(col, [doc], session)
            inserted += _insert_missing(col, [version_doc, *representation_docs], session)
            return inserted

        if self.supports_transactions():
            with self.client.start_session() as session:
                return session.with_transaction(lambda s: work(s))
        return work()


def _insert_missing(col: Collection, docs: list[dict[str, Any]], session) -> int:
    """Insert the documents not there yet: one find and one insert command, whatever their number."""
    ids = [d["_id"] for d in docs]
    present = {d["_id"] for d in col.find({"_id": {"$in": ids}}, projection={"_id": 1}, session=session)}
    missing = [d for d in docs if d["_id"] not in present]
    if not missing:
        return 0
    if session is not None:  # in a transaction a duplicate aborts it anyway: one command, the error propagates
        col.insert_many(missing, ordered=False, session=session)
        return len(missing)
    try:
        col.insert_many(missing, ordered=False)
    except BulkWriteError as exc:
        if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])) or \
                exc.details.get("writeConcernErrors"):
            raise
        # a concurrent replay inserted some of the same deterministic documents: the rest are in
    return len(missing)

