"""`atomic-publish audit`: check every invariant of docs/design.md section 5, read only.

Runs against a production database: it never writes, it streams every cursor and walks
folders iteratively (bounded memory), and it names what to do about each violation.
"""
from __future__ import annotations

import argparse
import json
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from ..idempotency import records as R
from ..idempotency.keys import short_hash
from .audit_hero import check_heroes, hero_link_change
from . import audit_paths
from .commit import MARKER, read_marker
from .folders import STAGING_RE, KnownFolders, same_folder

VERSION_DIR_RE = re.compile(r"^v\d{3,}$")


@dataclass
class Violation:
    invariant: int
    key: str | None
    detail: str
    todo: str


@dataclass
class Report:
    violations: list[Violation] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=lambda: {"records": 0, "versions": 0, "files": 0,
                                                             "directories": 0, "reservations": 0})

    def add(self, invariant: int, key: str | None, detail: str, todo: str) -> None:
        self.violations.append(Violation(invariant, key, detail, todo))

    def as_json(self) -> str:
        return json.dumps({"violations": [asdict(v) for v in self.violations], "checked": self.checked,
                           "ok": not self.violations}, sort_keys=True, default=str)


def _hash(path: str) -> str:
    from .staging import _hash_file

    return _hash_file(path)


def _path_of(doc_path: str, roots: dict[str, Any]) -> str:
    """A rootless path resolved on this platform with the representation's ``context.root``."""
    from .manifest import ROOT_REF, current_platform

    m = ROOT_REF.match(doc_path)
    if not m:
        return doc_path
    root = roots.get(m["name"], "")
    if isinstance(root, dict):
        root = root.get(current_platform(), "")
    return root.rstrip("/\\") + m["rest"]


class Auditor:
    def __init__(self, store, roots: list[str], verify_hashes: bool = True, ftrack: bool = False):
        self.store, self.roots, self.verify_hashes, self.ftrack = store, roots, verify_hashes, ftrack
        self.report = Report()
        self.known_final = KnownFolders()
        self.known_staging = KnownFolders()
        self.epochs_by_hash: dict[str, set[str]] = {}  # key hash -> epochs its record lists
        self._linked: dict[str, set[str]] = {}  # key -> names of its hardlinked files
        # the catalogue `run` writes into (ATOMIC_PUBLISH_CATALOG, the studio settings): OpenPype's
        # documents are read as they always were; another catalogue (AYON) through the Catalog seam
        self.catalog = getattr(store, "catalog", None)
        self.generic = getattr(self.catalog, "name", "openpype") != "openpype"
        self._host_roots = audit_paths.settings_roots() if self.generic else {}  # this host's, path-mapped
        self._projects: set[str] = set()

    def run(self) -> Report:
        self.check_records()
        self.check_version_numbers()
        self.check_reservations()
        check_heroes(self)  # invariant 11: wrapper/audit_hero.py
        for root in self.roots:
            self.walk(root)
        return self.report

    # -- the records ---------------------------------------------------------------------
    def check_records(self) -> None:
        for rec in self.store.records.col.find({}, projection={"attempts": {"$slice": -1}}):
            self.report.checked["records"] += 1
            key, state = rec["_id"], rec.get("state")
            views = R.product_views(rec)  # one per product of the publish (invariant 10)
            self._projects.update((v.get("subset") or {}).get("project") for v in views
                                  if (v.get("subset") or {}).get("project"))
            self.epochs_by_hash.setdefault(short_hash(key), set())
            for view in views:
                for ep, folder in (view.get("staging_dirs") or {}).items():
                    if folder:
                        self.known_staging.add(folder)
                        self.epochs_by_hash[short_hash(key)].add(str(ep))
                if view.get("final_dir"):
                    self.known_final.add(view["final_dir"])
            if state == R.ROLLED_BACK:
                self.check_rolled_back(rec)
            for view in views:
                if state == R.COMMITTING:
                    self.check_committing(rec, view)
                elif state == R.PUBLISHED:
                    self.check_published(rec, view, len(views) > 1)
                elif state != R.ROLLED_BACK and view.get("final_dir") and os.path.isdir(view["final_dir"]):
                    marker = read_marker(view["final_dir"])
                    if marker and marker.get("key") == key:
                        self.report.add(4, key, f"final folder {view['final_dir']} exists but the record is {state}",
                                        "run the task again: it rolls forward or back; never edit the folder by hand")
            self.check_old_staging(rec)

    def _version_doc(self, rec: dict[str, Any]) -> dict[str, Any] | None:
        project = (rec.get("subset") or {}).get("project")
        if not project:
            return None
        return self.store.catalog.project(project).find_one({"type": "version", "data.atomic_publish.key": rec["_id"]})

    def check_published(self, rec: dict[str, Any], view: dict[str, Any] | None = None, several: bool = False) -> None:
        view = rec if view is None else view
        if self.generic:
            return self.check_published_in_catalog(rec, view)
        key, final = rec["_id"], view.get("final_dir")
        subject = view.get("subset") or rec.get("subset") or {}
        project = subject.get("project")
        query: dict[str, Any] = {"type": "version", "data.atomic_publish.key": key}
        if several:  # a publish of several products: one version document per product
            query["data.atomic_publish.product"] = subject.get("subset")
        docs = list(self.store.catalog.project(project).find(query, projection={"_id": 1, "name": 1}))
        if len(docs) != 1:
            what = f"product {subject.get('subset')} of the published key" if several else "published key"
            self.report.add(1 if len(docs) > 1 else 2, key,
                            f"{what} has {len(docs)} version documents in project {project}",
                            "restore the version document from the record (atomic-publish run of the task "
                            "rolls it forward only before PUBLISHED); investigate who deleted or duplicated it")
        if not final or not os.path.isdir(final):
            self.report.add(2, key, f"published version's final folder {final} is missing",
                            "restore it from backup; the documents point at it")
            return
        marker = read_marker(final)
        if not marker or marker.get("key") != key:
            self.report.add(2, key, f"final folder {final} has no marker of this key ({MARKER})",
                            "restore the marker or the folder from backup")
        # the storage's own clock at the commit (the final folder's change time then): a file changed
        # later has a later change time, whatever the clocks of the publisher and of this host say
        committed_ns = view.get("committed_ctime_ns")
        for doc in docs[:1]:
            reps = self.store.catalog.project(project).find({"type": "representation", "parent": doc["_id"]})
            for rep in reps:
                roots = (rep.get("context") or {}).get("root") or {}
                for f in rep.get("files") or []:
                    self.report.checked["files"] += 1
                    path = _path_of(f["path"], roots)
                    try:
                        st = os.stat(path)
                    except OSError:
                        self.report.add(2, key, f"published file {path} is missing",
                                        "restore it from backup (the representation lists it)")
                        continue
                    if st.st_size != f.get("size"):
                        self.report.add(5, key, f"published file {path} has {st.st_size} bytes, recorded "
                                                f"{f.get('size')}: modified after the commit",
                                        "restore it from backup; published files must never change")
                        continue
                    if self.verify_hashes and f.get("hash") and _hash(path) != f["hash"]:
                        self.report.add(5, key, f"published file {path} does not match its recorded hash",
                                        "restore it from backup; published files must never change")
                        continue
                    if committed_ns and max(st.st_mtime_ns, st.st_ctime_ns) > committed_ns \
                            and not self._render_unlinked(key, f, st, committed_ns) \
                            and not hero_link_change(self, view, f, st, committed_ns):
                        self.report.add(5, key, f"published file {path} was changed after the commit (its "
                                                "change time is later than the commit's, even if its size and "
                                                "modification date were kept)",
                                        "restore it from backup, or check who touched it; published files "
                                        "must never change")
        self.report.checked["versions"] += 1
        if self.ftrack:
            self.check_ftrack(rec, expect_published=True, view=view)

    # -- another catalogue (AYON), through the Catalog seam -------------------------------------
    @staticmethod
    def _subject(view: dict[str, Any]):
        """The product of one record view: ``subset`` names it, the manifest gives the rest."""
        from .catalogs.base import Subject

        ident = view.get("subset") or {}
        try:
            manifest = json.loads(view.get("manifest_json") or "{}")
        except ValueError:
            manifest = {}
        project = manifest.get("project") if isinstance(manifest.get("project"), dict) else {}
        return Subject(project_name=ident.get("project") or project.get("name") or "",
                       project_code=project.get("code") or "", asset=ident.get("asset") or manifest.get("asset", ""),
                       hierarchy=manifest.get("hierarchy") or "", subset=ident.get("subset") or "",
                       family=manifest.get("family") or "", task=manifest.get("task"))

    def _catalog_versions(self, rec: dict[str, Any], views: list[dict[str, Any]]) -> list[Any]:
        subjects = [self._subject(v) for v in views]
        return self.catalog.versions_of_key(rec["_id"], subjects)

    def check_published_in_catalog(self, rec: dict[str, Any], view: dict[str, Any]) -> None:
        """Invariants 1, 2, 5 for a catalogue read through the seam: one version of this product made
        by the key, each of its files present in the final folder with its size (and hash)."""
        key, final = rec["_id"], view.get("final_dir")
        subject = self._subject(view)
        versions = [v for v in self._catalog_versions(rec, [view]) if v.subject.subset == subject.subset]
        name = self.catalog.name
        if len(versions) != 1:
            self.report.add(1 if len(versions) > 1 else 2, key,
                            f"product {subject.describe()} of the published key has {len(versions)} versions in the "
                            f"{name} catalogue",
                            f"restore the version in {name} from the record (it names the version, its folder and "
                            "files); investigate who deleted or duplicated it")
        if not final or not os.path.isdir(final):
            self.report.add(2, key, f"published version's final folder {final} is missing",
                            f"restore it from backup; the {name} version points at it")
            return
        marker = read_marker(final)
        if not marker or marker.get("key") != key:
            self.report.add(2, key, f"final folder {final} has no marker of this key ({MARKER})",
                            "restore the marker or the folder from backup")
        for version in versions[:1]:
            if version.number != int(view.get("version") or 0):
                self.report.add(2, key, f"{subject.describe()}: the {name} version is v{version.number:03d}, the "
                                        f"record says v{int(view.get('version') or 0):03d}",
                                "investigate: the catalogue and the record disagree")
            here = audit_paths.version_folder(view, self._host_roots) or final  # as this host reaches it
            for f in version.files:
                self.report.checked["files"] += 1
                # where the catalogue's own rootless path leads on this host (what its loader opens), not
                # final_dir + name: a file listed elsewhere than the version's folder is caught
                path = audit_paths.resolve(f.rootless, view, self._host_roots)
                if path is None:
                    self.report.add(2, key, f"{subject.describe()}: the {name} catalogue lists {f.rootless}, whose "
                                            "root is declared neither in this host's studio settings nor in the "
                                            "record", "declare the root in the studio settings "
                                            "($ATOMIC_PUBLISH_SETTINGS), or fix the path in the catalogue")
                    continue
                if not audit_paths.inside(path, here):
                    self.report.add(2, key, f"{subject.describe()}: the {name} catalogue lists {f.rootless}, which "
                                            f"is {path}, outside the version's folder {here}",
                                    f"point the {name} representation back at the file in {here} (the record names "
                                    "the folder and every file); investigate who changed it")
                    continue
                try:
                    st = os.stat(path)
                except OSError:
                    self.report.add(2, key, f"published file {path} is missing ({name} lists {f.rootless})",
                                    f"restore it from backup (the {name} representation lists it)")
                    continue
                if st.st_size != f.size:
                    self.report.add(5, key, f"published file {path} has {st.st_size} bytes, recorded {f.size}: "
                                            "modified after the commit",
                                    "restore it from backup; published files must never change")
                    continue
                if self.verify_hashes and f.hash and f.hash_type == "xxh3_128" and _hash(path) != f.hash:
                    self.report.add(5, key, f"published file {path} does not match its recorded hash",
                                    "restore it from backup; published files must never change")
        self.report.checked["versions"] += 1
        if self.ftrack:
            self.check_ftrack(rec, expect_published=True, view=view)

    def _render_unlinked(self, key: str, doc_file: dict[str, Any], st: os.stat_result, committed_ns: int) -> bool:
        """A hardlinked published file whose only later change is that the render's own name was
        deleted (its link count fell to 1, its data and dates untouched): not a modification."""
        if st.st_mtime_ns > committed_ns or st.st_nlink != 1:
            return False
        if key not in self._linked:
            self._linked[key] = {e.get("name") for e in self.store.staged.of_key(key).values() if e.get("linked")}
        name = doc_file.get("path", "").replace("\\", "/").rsplit("/", 1)[-1]
        return name in self._linked[key]

    def check_committing(self, rec: dict[str, Any], view: dict[str, Any] | None = None) -> None:
        """Invariant 7: a COMMITTING record's files are in its staging folder or its final folder."""
        view = rec if view is None else view
        final, staging = view.get("final_dir"), view.get("staging_dir")
        parent = os.path.dirname(final or staging or "")
        if not parent or not os.path.isdir(parent):
            return  # this host cannot see that storage: nothing can be said from here
        if not (final and os.path.isdir(final)) and not (staging and os.path.isdir(staging)):
            self.report.add(7, rec["_id"], f"committing version v{view.get('version')} has lost its files: neither "
                                           f"its staging folder {staging} nor its final folder {final} exists",
                            "restore the staging folder from backup (the record names it), then run the task "
                            "again: it rolls forward; investigate what removed it")

    def check_rolled_back(self, rec: dict[str, Any]) -> None:
        key = rec["_id"]
        if self.generic:
            for version in self._catalog_versions(rec, R.product_views(rec)):
                self.report.add(3, key, f"rolled-back key has version v{version.number:03d} of "
                                        f"{version.subject.describe()} in the {self.catalog.name} catalogue "
                                        f"(id {version.id})",
                                f"delete that version and its representations in {self.catalog.name} (or "
                                "`atomic-publish abandon` the key again)")
        elif self._version_doc(rec) is not None:
            self.report.add(3, key, "rolled-back key has a version document",
                            "delete that version document and its representations")
        for view in R.product_views(rec):
            final = view.get("final_dir")
            if final and os.path.lexists(final):
                marker = read_marker(final)
                if marker and marker.get("key") == key:
                    self.report.add(3, key, f"rolled-back key left its final folder {final}", "delete the folder")
        for folder in (f for v in R.product_views(rec) for f in (v.get("staging_dirs") or {}).values()):
            if folder and os.path.lexists(folder):
                self.report.add(3, key, f"rolled-back key left staging folder {folder}",
                                "run `atomic-publish gc`")
        if self.store.reservations.col.find_one({"key": key}) is not None:
            self.report.add(3, key, "rolled-back key still holds a version reservation", "run `atomic-publish gc`")
        if self.ftrack:
            self.check_ftrack(rec, expect_published=False)

    def check_old_staging(self, rec: dict[str, Any]) -> None:
        """Invariant 6: after an attempt that ended (not a crash), no older epoch's staging folder."""
        last = (rec.get("attempts") or [{}])[-1]
        if not last.get("end"):
            return  # running, or crashed: the next attempt cleans up
        if rec.get("state") == R.COMMITTING:
            return  # its staging folder (of whichever epoch) holds the version's files (invariant 7)
        for ep, folder in ((ep, f) for v in R.product_views(rec) for ep, f in (v.get("staging_dirs") or {}).items()):
            if folder and int(ep) < int(rec.get("epoch", 0)) and os.path.isdir(folder):
                self.report.add(6, rec["_id"], f"staging folder {folder} of epoch {ep} remains after epoch "
                                               f"{rec['epoch']} ended", "run `atomic-publish gc`")

    def check_ftrack(self, rec: dict[str, Any], expect_published: bool, view: dict[str, Any] | None = None) -> None:
        """The ftrack AssetVersion of one product (``view``; every product when None): published
        after PUBLISHED, never published after a rollback. Read from the product's own receipt."""
        views = R.product_views(rec) if view is None else [view]
        receipts = [(v, e) for v in views for e in (v.get("receipts") or {}).values() if e.get("name") == "ftrack"]
        if not receipts:
            return
        try:
            from .integrations.ftrack import FtrackIntegration, deterministic_id

            session = FtrackIntegration("ftrack", "gate", {})._session()
        except Exception as exc:
            self.report.add(2, rec["_id"], f"cannot check ftrack: {exc}", "set FTRACK_SERVER/USER/API_KEY")
            return
        several = len(R.product_views(rec)) > 1
        try:
            for v, entry in receipts:
                product = (v.get("subset") or {}).get("subset") or ""
                av_id = (entry.get("receipt") or {}).get("asset_version_id") or deterministic_id(
                    "AssetVersion", *((rec["_id"], product) if several else (rec["_id"],)))
                av = session.query(f'AssetVersion where id is "{av_id}"').first()
                published = bool(av and av["is_published"])
                what = f"product {product} of the " if several else ""
                if expect_published and not published:
                    self.report.add(2, rec["_id"], f"{what}published version's ftrack AssetVersion {av_id} is "
                                                   "missing or unpublished",
                                    "run `atomic-publish run` for the task again is not enough after PUBLISHED: "
                                    "publish the AssetVersion in ftrack")
                if not expect_published and published:
                    self.report.add(3, rec["_id"], f"{what}rolled-back key has a published ftrack AssetVersion "
                                                   f"{av_id}", "delete or unpublish it in ftrack")
        finally:
            session.close()

    # -- the catalogue -------------------------------------------------------------------
    def check_version_numbers(self) -> None:
        """Invariant 1: never two version documents with the same number under one subset."""
        if self.generic:  # the projects atomic-publish published into (AYON lists no projects by data)
            for dup in self.catalog.duplicate_numbers(sorted(self._projects)) if self._projects else []:
                self.report.add(1, None, f"{dup.subject.describe()}: {len(dup.version_ids)} active versions with "
                                         f"number {dup.number} in the {self.catalog.name} catalogue "
                                         f"(ids {', '.join(dup.version_ids)})",
                                "keep the one whose folder and record match, deactivate or delete the others")
            return
        for project in self.store.catalog.db.list_collection_names():
            pipeline = [{"$match": {"type": "version"}},
                        {"$group": {"_id": {"parent": "$parent", "name": "$name"}, "n": {"$sum": 1},
                                    "keys": {"$push": "$data.atomic_publish.key"}}},
                        {"$match": {"n": {"$gt": 1}}}]
            for dup in self.store.catalog.project(project).aggregate(pipeline):
                self.report.add(1, None, f"project {project}: {dup['n']} version documents with number "
                                         f"{dup['_id']['name']} under subset {dup['_id']['parent']} "
                                         f"(keys {dup['keys']})",
                                "keep the one whose folder and record match, delete the others")

    def check_reservations(self) -> None:
        for index in self.store.missing_indexes():  # the unique one is what keeps numbers exactly-once
            self.report.add(1, None, f"index {index} of the state store is missing (dropped by hand, or a restore "
                            "that skipped indexes); publishes do not recreate it",
                            "recreate it: `atomic-publish store reindex` (it writes nothing else)")
        for res in self.store.reservations.col.find({}):
            self.report.checked["reservations"] += 1
            rec = self.store.records.col.find_one({"_id": res["key"]}, projection={"state": 1})
            if rec is None:
                self.report.add(3, res["key"], f"reservation of version {res['version']} has no record",
                                "run `atomic-publish gc`")

    # -- the publish roots ---------------------------------------------------------------
    def walk(self, root: str) -> None:
        stack = [root]
        while stack:
            folder = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                self.report.checked["directories"] += 1
                m = STAGING_RE.match(entry.name)
                if m:
                    self.check_staging_dir(entry.path, m)
                    continue
                marker = read_marker(entry.path) if os.path.isfile(os.path.join(entry.path, MARKER)) else None
                if marker:
                    self.check_final_dir(entry.path, marker)
                    continue
                if VERSION_DIR_RE.match(entry.name) and entry.path not in self.known_final:  # path or inode
                    self.report.add(4, None, f"version folder {entry.path} belongs to no publish (no marker, "
                                             "no record)", "archive or delete it after checking who wrote it")
                    continue
                stack.append(entry.path)

    def check_final_dir(self, path: str, marker: dict[str, Any]) -> None:
        rec = self.store.records.col.find_one({"_id": marker.get("key")}, projection={"state": 1, "final_dir": 1})
        if rec is None or rec.get("state") not in (R.COMMITTING, R.PUBLISHED):
            state = rec.get("state") if rec else "no record"
            self.report.add(4, marker.get("key"), f"final folder {path} exists but its key is {state}",
                            "run the task again (it rolls forward or back); if there is no record, archive the folder")
        elif path not in self.known_final and os.path.isdir(rec.get("final_dir") or "") \
                and not same_folder(rec["final_dir"], path):
            # only when the recorded folder is visible here and is another folder: a root reached
            # through another path (symlink, mount) is the same storage, not a moved folder
            self.report.add(4, marker.get("key"), f"final folder {path} is not where the record says "
                                                  f"({rec.get('final_dir')})", "investigate: a folder was moved")

    def check_staging_dir(self, path: str, m: re.Match) -> None:
        if path in self.known_staging:
            return  # checked from its record (invariants 3 and 6)
        epochs = self.epochs_by_hash.get(m["hash"])
        if epochs is not None and m["epoch"] in epochs:
            return  # its record names that epoch under another path to the same storage
        owner = "no record" if epochs is None else "a record that no longer lists that epoch"
        self.report.add(6, None, f"staging folder {path} belongs to {owner} (hash {m['hash']}, epoch "
                                 f"{m['epoch']})", "run `atomic-publish gc`")


def configure_parser(p: argparse.ArgumentParser) -> None:
    from .cliutil import add_store_options

    add_store_options(p, "the store to check (never started by this command)")
    p.add_argument("--root", action="append", default=[], metavar="DIR",
                   help="publish root to scan for orphan and stale folders (repeatable; default: none, the "
                        "store only)")
    p.add_argument("--no-hash", action="store_true", help="check sizes and dates only (no full read of every file)")
    p.add_argument("--ftrack", action="store_true",
                   help="also check ftrack (needs FTRACK_SERVER, FTRACK_API_USER and FTRACK_API_KEY)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")


FTRACK_SETTINGS = ("FTRACK_SERVER", "FTRACK_API_USER", "FTRACK_API_KEY")


def ftrack_setup_problem() -> str | None:
    """Why ``--ftrack`` cannot run here (a configuration error, not an invariant violation), or None."""
    missing = [name for name in FTRACK_SETTINGS if not os.environ.get(name)]
    if missing:
        return (f"--ftrack needs {', '.join(missing)} in the environment (the ftrack server URL, API user and "
                "API key); set them, or run the audit without --ftrack")
    try:
        import ftrack_api  # noqa: F401
    except ImportError:
        return "--ftrack needs the ftrack client: pip install 'atomic-publish[ftrack]', or run without --ftrack"
    return None


def main(args: argparse.Namespace) -> int:
    import sys

    from .cliutil import open_store_for

    problem = ftrack_setup_problem() if args.ftrack else None
    if problem:
        print(f"atomic-publish audit: {problem}", file=sys.stderr)
        return 2
    store = open_store_for("audit", args.store, chosen_catalog=True)  # the catalogue `run` publishes into
    if store is None:
        return 2
    from .errors import PublishError
    from ..idempotency.redact import scrub

    try:
        report = Auditor(store, [os.path.abspath(r) for r in args.root], not args.no_hash, args.ftrack).run()
    except PublishError as exc:  # the catalogue (AYON) unreachable or refusing: no verdict, said in one line
        print(f"atomic-publish audit: {scrub(str(exc))}; {exc.todo}", file=sys.stderr)
        return 2
    finally:
        store.close()
        close = getattr(store.catalog, "close", None)
        if callable(close) and getattr(store.catalog, "name", "openpype") != "openpype":
            close()
    for v in report.violations:
        print(f"invariant {v.invariant}: {v.key or '-'}: {v.detail}; {v.todo}")
    c = report.checked
    print(f"checked {c['records']} records, {c['versions']} published versions, {c['files']} files, "
          f"{c['directories']} folders, {c['reservations']} reservations: {len(report.violations)} violation(s)")
    if args.json:
        print(report.as_json())
    return 1 if report.violations else 0


__all__ = ["Auditor", "Report", "Violation", "configure_parser", "main"]
