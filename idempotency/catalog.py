"""The studio's publish catalogue: OpenPype/Avalon documents in one collection per project.

Documents carry deterministic ids derived from the key, so a replay after a crash
finds them already there and inserts nothing twice.
"""
from __future__ import annotations

import time
from typing import Any

from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, DuplicateKeyError


TRANSACTION_TOPOLOGIES = ("ReplicaSetWithPrimary", "Sharded", "LoadBalanced")
FRESH_SECONDS = 1.0  # how long a highest-version lookup stands in for a lookup of a higher number


class Catalog:
    """Lookups of one attempt. Asset and subset documents found are remembered (found ones only:
    one that is missing is looked up again, since a concurrent publish may create it): the reserve
    step and the commit look up the same two documents, four round trips otherwise."""

    def __init__(self, client: MongoClient, database: str):
        self.client = client
        self.db = client[database]
        self._found: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._highest: dict[tuple[str, str, str], tuple[int, float]] = {}  # (highest version seen, when)
        self._indexed: set[str] = set()  # projects known to have the lookup index

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
        doc = None if subset_id is None else self.project(project).find_one(
            {"type": "version", "parent": subset_id}, sort=[("name", -1)],
            projection={"name": 1, "data.atomic_publish.key": 1})
        highest = int(doc["name"]) if doc else 0
        self._highest[(project, asset, subset)] = (highest, time.monotonic())
        if doc and (doc.get("data") or {}).get("atomic_publish", {}).get("key"):
            # an atomic-publish commit made this version, after ensure_project_index: the index is there
            self._indexed.add(project)
        return highest

    def version_holder(self, project: str, asset: str, subset: str, number: int) -> str | None:
        """The key that published version ``number`` ("" for a version made outside atomic-publish).

        A number above the highest version document read in the last second has none: no lookup
        (a document made since is the same race as one made right after the lookup)."""
        seen, when = self._highest.get((project, asset, subset), (number, 0.0))
        if number > seen and time.monotonic() - when < FRESH_SECONDS:
            return None
        subset_id = self._subset_id(project, asset, subset)
        if subset_id is None:
            return None
        doc = self.project(project).find_one({"type": "version", "parent": subset_id, "name": number},
                                             projection={"data.atomic_publish.key": 1})
        if doc is None:
            return None
        return (doc.get("data") or {}).get("atomic_publish", {}).get("key", "")

    def ensure_project_index(self, project: str) -> None:
        """(type, parent, name): the lookups above, on a project collection that grows with every publish.
        Not again where a version made by an earlier commit (which made the index first) was read."""
        if project in self._indexed:
            return
        self.project(project).create_index([("type", 1), ("parent", 1), ("name", 1)], name="atomic_publish_lookup")
        self._indexed.add(project)

    def insert_publish(self, project: str, parents: list[dict[str, Any]], subset_doc: dict[str, Any],
                       version_doc: dict[str, Any], representation_docs: list[dict[str, Any]],
                       subset_found: bool = False, first_try: bool = False) -> int:
        """Insert what is missing of project/asset/subset/version/representations; returns how many.

        Parents (project, asset) and the subset are matched by name first, so an existing
        OpenPype hierarchy is reused (``subset_found``: the subset document was read from the
        store, no need to look again). Runs in one transaction where the server supports it.
        ``first_try``: nothing of this version can be there yet (the first commit of the attempt
        that staged it), so the version and representations are inserted without looking first;
        should any be there after all, the insert fails and the careful path runs instead.
        """
        col = self.project(project)

        def work(session=None, look_first: bool = True) -> int:
            missing = []  # parents and subset not there by name
            for doc in [*parents, *([] if subset_found else [subset_doc])]:
                query = {"type": doc["type"], "name": doc["name"]}
                if doc["type"] == "subset":
                    query["parent"] = doc["parent"]
                if col.find_one(query, session=session, projection={"_id": 1}) is None:
                    missing.append(doc)
            if not look_first:  # nothing of this version can be there: one insert for all of it
                return _insert_missing(col, [*missing, version_doc, *representation_docs], session, False)
            inserted = _insert_missing(col, missing, session) if missing else 0
            return inserted + _insert_missing(col, [version_doc, *representation_docs], session)

        def run(look_first: bool) -> int:
            if self.supports_transactions():
                with self.client.start_session() as session:
                    return session.with_transaction(lambda s: work(s, look_first))
            return work(None, look_first)

        if first_try:
            try:
                return run(look_first=False)
            except (BulkWriteError, DuplicateKeyError):
                pass  # some were there (a replay after all): insert what is missing, looking first
        return run(look_first=True)


def _insert_missing(col: Collection, docs: list[dict[str, Any]], session, look_first: bool = True) -> int:
    """Insert the documents not there yet: one find and one insert command, whatever their number
    (only the insert when not ``look_first``: then a document already there raises)."""
    if not look_first:
        col.insert_many(docs, ordered=True, session=session)
        return len(docs)
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

