"""The ``openpype`` catalogue: OpenPype 3 / Avalon documents in one MongoDB collection per project.

Documents carry ids derived from the key (``keys.object_id``), so a replay finds them already
there and inserts nothing twice. Parents (project, asset, subset) are matched by name first, so
an existing OpenPype hierarchy is reused, and created where missing (what atomic-publish has
always done). Every entry of one ``publish`` call goes in one multi-document transaction where
the server has them (replica sets, sharded clusters, SecantusDB); on a standalone ``mongod``
the representations go first and every version last in one ``insert_many``, so a version is
never visible without its representations, and a replay completes whatever a crash left.

The documents of a one-product publish are byte-identical to those of the code before the seam
(``tests/catalogs/test_openpype_documents.py`` compares them with a record).
"""
from __future__ import annotations

import functools
import os
import time
from typing import Any, Callable, ClassVar, Mapping, TypeVar

from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, OperationFailure, PyMongoError

from ...idempotency.catalog import TRANSACTION_TOPOLOGIES
from ...idempotency.keys import object_id
from .. import progress
from ..errors import CatalogAuthRefused, CatalogNumberTaken, CatalogRefused, CatalogUnavailable, PublishError
from .base import Catalog, CatalogVersion, DuplicateNumber, PublishedFile, Subject, VersionEntry

T = TypeVar("T")
AUTH_CODES = {13, 18}  # Unauthorized, AuthenticationFailed
TRANSIENT_CODES = {6, 7, 89, 91, 112, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436}
DEFAULT_DATABASE = "avalon"


def _mapped(step: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """pymongo's exceptions -> the catalogue's classes, in this backend (P4), never in classify's table."""
    def wrap(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def run(self: "OpenPypeCatalog", *args: Any, **kwargs: Any) -> T:
            try:
                return fn(self, *args, **kwargs)
            except PublishError:
                raise
            except OperationFailure as exc:
                if exc.code in AUTH_CODES:
                    raise CatalogAuthRefused(f"the OpenPype database refused the store's credentials while trying to "
                                             f"{step}", "fix the credentials of StoreUri (or ATOMIC_PUBLISH_STORE)") from None
                if exc.code in TRANSIENT_CODES or exc.has_error_label("TransientTransactionError"):
                    raise CatalogUnavailable(f"the OpenPype database failed to {step} (code {exc.code}); "
                                             "nothing of it is visible") from None
                raise CatalogRefused(f"the OpenPype database refused to {step}: {str(exc)[:200]}") from None
            except PyMongoError as exc:
                raise CatalogUnavailable(f"the OpenPype database is unreachable while trying to {step}: "
                                         f"{type(exc).__name__}") from None
        return run
    return wrap


# -- the OpenPype schema -----------------------------------------------------------------------

def parent_documents_of(subject: Subject) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Project and asset documents, and the subset document, used only where none exists yet."""
    project, asset = subject.project_name, subject.asset
    project_id = object_id("project", project)
    asset_id = object_id("asset", project, asset)
    parents = [
        {"_id": project_id, "type": "project", "name": project, "schema": "openpype:project-3.0",
         "data": {"code": subject.project_code}},
        {"_id": asset_id, "type": "asset", "name": asset, "schema": "openpype:asset-3.0",
         "parent": project_id,
         "data": {"parents": [p for p in subject.hierarchy.split("/") if p], "visualParent": None}},
    ]
    subset_doc = {"_id": object_id("subset", project, asset, subject.subset), "type": "subset",
                  "schema": "openpype:subset-3.0", "name": subject.subset, "parent": asset_id,
                  "data": {"family": subject.family, "families": [subject.family]}}
    return parents, subset_doc


def version_documents_of(entry: VersionEntry, subset_id: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The version document and one representation document per representation of ``entry``."""
    parts, committed_at = entry.id_parts, entry.committed_at
    version_id = object_id("version", *parts)
    data: dict[str, Any] = {
        "families": entry.all_families(), "time": committed_at.strftime("%Y%m%dT%H%M%SZ"),
        "author": entry.author, "source": entry.source, "comment": entry.comment, "machine": entry.machine,
        "frameStart": entry.frame_start, "frameEnd": entry.frame_end,
    }
    data.update({k: v for k, v in entry.data.items() if k not in data and k != "atomic_publish"})
    marker = entry.marker()
    if len(parts) > 1:
        marker["product"] = entry.subject.subset
    data["atomic_publish"] = marker
    version_doc = {"_id": version_id, "type": "version", "schema": "openpype:version-3.0", "name": entry.number,
                   "parent": subset_id, "data": data}
    reps = []
    sites = [{"name": "studio", "created_dt": committed_at}]  # the same for every file: one object, not 50,000
    for rep in entry.representations:
        files = [{"_id": object_id("file", *parts, f.name), "path": f.rootless, "size": f.size, "hash": f.hash,
                  "hash_type": f.hash_type, "sites": sites}
                 for f in rep.files]
        rep_data: dict[str, Any] = {"path": rep.data_path, "template": rep.template}
        rep_data.update({k: v for k, v in rep.data.items() if k not in rep_data})
        reps.append({"_id": object_id("representation", *parts, rep.name), "type": "representation",
                     "schema": "openpype:representation-2.0", "parent": version_id, "name": rep.name,
                     "data": rep_data, "context": _plain(rep.context), "files": files})
    return version_doc, reps


def _plain(value: Any) -> Any:
    """A deep copy as plain dicts and lists (what BSON encodes), whatever Mapping the entry holds."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def parent_documents(manifest) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``documents.parent_documents`` before the seam: the parents of a manifest's product."""
    from .entries import subject_of

    return parent_documents_of(subject_of(manifest))


def version_documents(manifest, key: str, record: dict[str, Any], plan, final_dir: str,
                      subset_id: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``documents.version_documents`` before the seam (ids from ``key`` alone)."""
    from .entries import entry_from_manifest

    return version_documents_of(entry_from_manifest(manifest, key, record, plan, final_dir), subset_id)


# -- the backend -------------------------------------------------------------------------------

class OpenPypeCatalog(Catalog):
    """OpenPype's MongoDB, reached through the state store's own client (passed in, never built here).

    ``database`` holds the project collections (``avalon`` by default, or ``$ATOMIC_PUBLISH_DATABASE``)."""

    name: ClassVar[str] = "openpype"
    # a legacy OpenPype integrator (an artist's local publish) writes version documents directly
    others_create_versions: ClassVar[bool] = True

    def __init__(self, client, database: str | None = None):
        self.client = client
        self.db = client[database or os.environ.get("ATOMIC_PUBLISH_DATABASE", DEFAULT_DATABASE)]
        self._indexed: set[str] = set()
        # (project, asset, subset) -> (asset, subset) documents found: the parents of a product do not
        # change during a publish, so the reservation and the re-check before COMMITTING look them up
        # once. Only found ones are kept; the transaction that inserts reads them again.
        self._found: dict[tuple[str, str, str], tuple[dict, dict]] = {}

    @classmethod
    def from_environment(cls, *, client=None, database: str | None = None,
                         environ: Mapping[str, str] | None = None) -> "OpenPypeCatalog":
        if client is None:
            raise ValueError("the openpype catalogue needs the state store's MongoClient (client=...)")
        env = os.environ if environ is None else environ
        return cls(client, database or env.get("ATOMIC_PUBLISH_DATABASE") or DEFAULT_DATABASE)

    def project(self, name: str) -> Collection:
        """One project's collection (tests and ``audit`` read documents through it)."""
        return self.db[name]

    def supports_transactions(self) -> bool:
        return self.client.topology_description.topology_type_name in TRANSACTION_TOPOLOGIES

    def ensure_project_index(self, project: str) -> None:
        """(type, parent, name): the version lookups, on a collection that grows with every publish."""
        if project not in self._indexed:
            self.project(project).create_index([("type", 1), ("parent", 1), ("name", 1)], name="atomic_publish_lookup")
            self._indexed.add(project)

    # -- primitives ----------------------------------------------------------------------------

    @_mapped("reach the OpenPype database")
    def _check_environment(self, projects: tuple[str, ...]) -> None:
        """A ping only where the client has not reached the server yet: in a publish the catalogue
        shares the state store's client, which has answered by then (its hello, the record read),
        with the same credentials, and its monitor keeps checking it. A missing project is no
        error: its documents are created with the first publish, as atomic-publish always did."""
        if not self.client.topology_description.has_readable_server():
            self.client.admin.command("ping")

    def _parents(self, subject: Subject, session=None) -> tuple[dict | None, dict | None]:
        """The asset and subset documents, matched by name (None where missing). Outside a
        transaction a found pair is remembered for the rest of the publish."""
        ident = _ident(subject)
        if session is None and ident in self._found:
            return self._found[ident]
        col = self.project(subject.project_name)
        asset = col.find_one({"type": "asset", "name": subject.asset}, session=session)
        subset = col.find_one({"type": "subset", "name": subject.subset, "parent": asset["_id"]},
                              session=session) if asset else None
        if asset is not None and subset is not None:
            self._found[ident] = (asset, subset)
        return asset, subset

    @_mapped("look up a subset")
    def _find_subject(self, subject: Subject) -> Any | None:
        subset = self._parents(subject)[1]
        return subset["_id"] if subset else None

    @_mapped("look up a version")
    def _find_version(self, subject: Subject, number: int) -> CatalogVersion | None:
        subset_id = self._find_subject(subject)
        if subset_id is None:
            return None
        doc = self.project(subject.project_name).find_one({"type": "version", "parent": subset_id, "name": number},
                                                          projection={"name": 1, "data.atomic_publish": 1})
        return self._version(doc, subject, ()) if doc else None

    @_mapped("find the highest version")
    def _highest_number(self, subject: Subject) -> int:
        subset_id = self._find_subject(subject)
        if subset_id is None:
            return 0
        doc = self.project(subject.project_name).find_one({"type": "version", "parent": subset_id},
                                                          sort=[("name", -1)], projection={"name": 1})
        return int(doc["name"]) if doc else 0

    @staticmethod
    def _version(doc: dict, subject: Subject, files: tuple[PublishedFile, ...]) -> CatalogVersion:
        key = ((doc.get("data") or {}).get("atomic_publish") or {}).get("key", "")
        return CatalogVersion(id=str(doc["_id"]), number=int(doc["name"]), subject=subject, key=key, files=files)

    @_mapped("read a key's versions")
    def _find_by_key(self, key: str, subjects: tuple[Subject, ...]) -> list[CatalogVersion]:
        found = []
        projects = sorted({s.project_name for s in subjects}) or self.db.list_collection_names()
        for project in projects:
            col = self.project(project)
            for doc in col.find({"type": "version", "data.atomic_publish.key": key}):
                files = tuple(PublishedFile(name=os.path.basename(f["path"]), path="", rootless=f["path"],
                                            size=f.get("size", 0), hash=f.get("hash", ""),
                                            hash_type=f.get("hash_type", ""))
                              for rep in col.find({"type": "representation", "parent": doc["_id"]})
                              for f in rep.get("files") or [])
                found.append(self._version(doc, self._subject_of(col, project, doc), files))
        return found

    @staticmethod
    def _subject_of(col: Collection, project: str, version_doc: dict) -> Subject:
        subset = col.find_one({"_id": version_doc.get("parent")}) or {}
        asset = col.find_one({"_id": subset.get("parent")}) or {} if subset else {}
        project_doc = col.find_one({"type": "project"}) or {}
        data = asset.get("data") or {}
        return Subject(project_name=project, project_code=(project_doc.get("data") or {}).get("code", ""),
                       asset=asset.get("name", ""), hierarchy="/".join(data.get("parents") or []),
                       subset=subset.get("name", ""), family=(subset.get("data") or {}).get("family", ""))

    @_mapped("find duplicate version numbers")
    def _duplicates(self, projects: tuple[str, ...]) -> list[DuplicateNumber]:
        out = []
        for project in projects or tuple(self.db.list_collection_names()):
            col = self.project(project)
            pipeline = [{"$match": {"type": "version"}},
                        {"$group": {"_id": {"parent": "$parent", "name": "$name"}, "ids": {"$push": "$_id"},
                                    "n": {"$sum": 1}}},
                        {"$match": {"n": {"$gt": 1}}}]
            for dup in col.aggregate(pipeline):
                subject = self._subject_of(col, project, {"parent": dup["_id"]["parent"]})
                out.append(DuplicateNumber(subject, int(dup["_id"]["name"]), tuple(str(i) for i in dup["ids"])))
        return out

    def _version_id(self, id_parts: tuple[str, ...]) -> str:
        return str(object_id("version", *id_parts))

    @_mapped("insert the documents")
    def _write(self, entries: list[VersionEntry]) -> int:
        for project in {e.subject.project_name for e in entries if _ident(e.subject) not in self._found}:
            # a product whose subset was not found when it reserved: atomic-publish may create parents
            # in this project, and its version lookups need the index from now on (outside the
            # transaction: index builds are not transactional). An existing subset's project has it
            # since atomic-publish's first subset there, or OpenPype's own lookups by name serve.
            self.ensure_project_index(project)
        if self.supports_transactions():
            return self._transaction("insert the documents", lambda s: self._insert(entries, s))
        return self._insert(entries, None)

    def _transaction(self, step: str, work: Callable[[Any], T]) -> T:
        """``work`` in one transaction, with pymongo's retries of a write conflict; said in the log
        once they last, since the usual cause is slow to clear: the open transaction of an attempt
        that was stopped or killed inside it, which the server aborts only after its
        ``transactionLifetimeLimitSeconds`` (60 s by default, mongod and SecantusDB alike)."""
        started, runs = time.monotonic(), [0]

        def run(session) -> T:
            runs[0] += 1
            if runs[0] == 2 or (runs[0] > 2 and runs[0] % 50 == 0):
                progress.info(f"the OpenPype database reports a write conflict while trying to {step} "
                              f"({time.monotonic() - started:.0f} s, try {runs[0]}): another transaction holds "
                              "these documents, usually one of an attempt stopped or killed inside it, which the "
                              "server aborts after transactionLifetimeLimitSeconds (60 s by default); retrying "
                              "until then, nothing to do")
            return work(session)

        with self.client.start_session() as session:
            return session.with_transaction(run)

    def _insert(self, entries: list[VersionEntry], session) -> int:
        """Parents by name, then every representation, then every version (the last, visible step)."""
        inserted = 0
        versions: dict[str, list[dict]] = {}
        representations: dict[str, list[dict]] = {}
        for entry in entries:
            s = entry.subject
            col = self.project(s.project_name)
            known = self._found.get(_ident(s)) if session is not None else None
            if known is not None:  # found when it reserved: the number check also sees that it is still there
                subset = known[1]
                version_doc, reps = version_documents_of(entry, subset["_id"])
                mine, still = self._check_number(col, entry, version_doc, session, subset["_id"])
                if not still:  # removed since (the rollback of the publish that created it): make it again
                    self._found.pop(_ident(s), None)
                    known = None
            if known is None:
                subset, made = self._parents_or_create(col, s, session)
                inserted += made
                version_doc, reps = version_documents_of(entry, subset["_id"])
                mine, _ = self._check_number(col, entry, version_doc, session)
            if mine and session is not None:
                continue  # in a transaction our version came with all its representations: a replay
            versions.setdefault(s.project_name, []).append(version_doc)
            representations.setdefault(s.project_name, []).extend(reps)
        if session is not None:
            # None of these exist (each version was checked above, and a transaction inserted every
            # document of it or none): one insert per project, representations before their version.
            for project in {**representations, **versions}:
                docs = representations.get(project, []) + versions.get(project, [])
                self.project(project).insert_many(docs, ordered=True, session=session)
                inserted += len(docs)
            return inserted
        for project, docs in representations.items():
            inserted += _insert_missing(self.project(project), docs, session)
        for project, docs in versions.items():
            inserted += _insert_missing(self.project(project), docs, session)
        return inserted

    def _parents_or_create(self, col: Collection, s: Subject, session) -> tuple[dict, int]:
        """The subset document (read in the transaction), with its project and asset created where
        missing; and how many documents that created."""
        inserted = 0
        parents, subset_doc = parent_documents_of(s)
        asset, subset = self._parents(s, session)
        if asset is None:
            for doc in parents:
                if col.find_one({"type": doc["type"], "name": doc["name"]}, session=session,
                                projection={"_id": 1}) is None:
                    inserted += _insert_missing(col, [doc], session)
            asset = parents[1]
        if subset is None:
            subset = {**subset_doc, "parent": asset["_id"]}
            inserted += _insert_missing(col, [subset], session)
        return subset, inserted

    @staticmethod
    def _check_number(col: Collection, entry: VersionEntry, version_doc: dict, session,
                      subset_id: Any = None) -> tuple[bool, bool]:
        """(our own version is there already, the subset ``subset_id`` still exists): one query. Raises
        when another client's version holds our number, or ours differs from what it must be."""
        vid = version_doc["_id"]
        wanted = [{"_id": vid}, {"type": "version", "parent": version_doc["parent"], "name": entry.number}]
        if subset_id is not None:
            wanted.append({"_id": subset_id})
        found = list(col.find({"$or": wanted}, session=session, projection={"name": 1, "parent": 1}))
        still = subset_id is None or any(d["_id"] == subset_id for d in found)
        found = [d for d in found if subset_id is None or d["_id"] != subset_id]
        mine = next((d for d in found if d["_id"] == vid), None)
        if mine is not None and (mine.get("name"), mine.get("parent")) != (version_doc["name"], version_doc["parent"]):
            raise CatalogRefused(f"version document {vid} of {entry.key} exists as version "
                                 f"{mine.get('name')} of another subset or number than v{entry.number:0>3} of "
                                 f"{entry.subject.describe()}; nothing was inserted",
                                 "report it: the documents of one publish never change")
        if mine is None and found:  # (a replay keeps what it made, even beside a duplicate made since)
            raise CatalogNumberTaken(f"version {entry.number} of {entry.subject.describe()} was created by another "
                                     "client since the reservation; nothing was inserted", entry.number,
                                     entry.subject.subset)
        return mine is not None, still

    @_mapped("remove the documents")
    def _remove(self, key: str, id_parts_list: list[tuple[str, ...]], projects: tuple[str, ...]) -> int:
        def work(session=None) -> int:
            removed = 0
            for project in projects or self.db.list_collection_names(session=session):
                col = self.project(project)
                for parts in id_parts_list:
                    doc = col.find_one({"_id": object_id("version", *parts), "data.atomic_publish.key": key},
                                       session=session, projection={"parent": 1})
                    if doc is None:
                        continue
                    removed += col.delete_many({"type": "representation", "parent": doc["_id"]},
                                               session=session).deleted_count
                    removed += col.delete_one({"_id": doc["_id"]}, session=session).deleted_count
                    removed += self._remove_own_subset(col, doc["parent"], session)
            return removed

        if self.supports_transactions():
            return self._transaction("remove the documents", work)
        return work()

    # -- the hero version (wrapper/catalogs/openpype_hero.py) ---------------------------------

    supports_hero: ClassVar[bool] = True

    @_mapped("write the hero version")
    def _write_hero(self, hero) -> bool:
        from .openpype_hero import write_hero

        subject = hero.version.subject
        col = self.project(subject.project_name)
        subset_id = self._find_subject(subject)
        if subset_id is None:
            raise CatalogRefused(f"subset {subject.describe()} has no document, so v{hero.number:0>3} it should "
                                 "mirror is not visible; nothing was written",
                                 "run `atomic-publish audit`: the version's documents are missing")
        if self.supports_transactions():
            return self._transaction("write the hero version", lambda s: write_hero(col, hero, subset_id, s))
        return write_hero(col, hero, subset_id, None)

    @_mapped("read the hero version")
    def _find_hero(self, subject: Subject):
        from .openpype_hero import find_hero

        subset_id = self._find_subject(subject)
        if subset_id is None:
            return None
        return find_hero(self.project(subject.project_name), subject, subset_id)

    @staticmethod
    def _remove_own_subset(col: Collection, subset_id: Any, session) -> int:
        """A subset atomic-publish created (its name-derived id) and no version uses any more."""
        subset = col.find_one({"_id": subset_id, "type": "subset"}, session=session)
        if subset is None or col.find_one({"type": "version", "parent": subset_id}, session=session) is not None:
            return 0
        asset = col.find_one({"_id": subset.get("parent")}, session=session) or {}
        if subset_id != object_id("subset", col.name, asset.get("name", ""), subset["name"]):
            return 0  # made by OpenPype itself: never ours to remove
        return col.delete_one({"_id": subset_id}, session=session).deleted_count


def _ident(subject: Subject) -> tuple[str, str, str]:
    return subject.project_name, subject.asset, subject.subset


def _insert_missing(col: Collection, docs: list[dict[str, Any]], session) -> int:
    """Insert the documents not there yet: one find and one insert command, whatever their number.

    A duplicate id (a concurrent replay inserted the same deterministic document) counts as done."""
    if not docs:
        return 0
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
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != 11000 for e in errors) or exc.details.get("writeConcernErrors"):
            raise
        return len(missing) - len(errors)
    return len(missing)
