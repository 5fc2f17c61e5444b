"""One publish attempt: manifest -> reserve -> stage -> (integrate) -> commit, or roll back.

The lifecycle and its invariants are docs/design.md sections 3 and 5. Every write to the
record is fenced by this attempt's epoch; every step is idempotent, so any attempt can
resume or roll forward what an earlier one left.
"""
from __future__ import annotations

import itertools
import os
import shutil
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from ..idempotency import records as R
from ..idempotency.keys import KeyError_, deadline_key, fingerprint, openjd_key, short_hash
from ..idempotency.lease import LeaseKeeper
from ..idempotency.records import Identity, utcnow
from ..idempotency.store import Store, open_store
from . import failpoints, integrate, progress, retry
from .classify import classify, classify_oserror
from .commit import move_into_place, read_marker, write_marker
from .documents import parent_documents, resolve_rootless, rootless, version_documents
from .errors import (BUSY, PERMANENT, TRANSIENT, DestinationError, ManifestError, PublishError,
                     PublishRootUnavailable, RolledBack, SourceError, StagingTaken, StorageInvisible, Superseded,
                     VersionConflict)
from .escalation import Limits, error_type, escalate
from .fsops import remove_tree
from .guard import StopGuard
from .integrations.base import Integration
from .layout import check_inside_root, plan_files, version_dir
from .manifest import Manifest, canonical_json, load_manifest, read_json
from .outcome import CHANGED_NOTHING_MORE, EXIT_CODES, EXIT_OK, NOTHING_WRITTEN, ROLLED_BACK, Outcome
from .staging import allowed_source_roots, check_sources, file_id, fsync_dir, stage

ORDER = {s: i for i, s in enumerate(R.STATES)}
T = TypeVar("T")


@dataclass
class Policy:
    """Tunables of one attempt; the Deadline plugin fills them from the plugin info."""

    lease_seconds: float = 60.0
    threads: int = 8
    protect_published: bool = False  # make the version's files and folder read-only after the commit
    retry: retry.RetryPolicy = field(default_factory=retry.RetryPolicy)
    limits: Limits = field(default_factory=Limits)


@dataclass
class Request:
    manifest_path: str
    job_id: str
    task_id: str
    worker: str
    store_uri: str | None = None
    policy: Policy = field(default_factory=Policy)
    submitted_manifest_path: str | None = None  # before Deadline path mapping: the fingerprint's source
    openjd: dict[str, Any] | None = None  # {"job_id", "step", "task_parameters"}: the key of an OpenJD task
    store_id: str | None = None  # the store the job was submitted for (plugin info StoreId); None: unchecked


def run(req: Request, guard: StopGuard | None = None) -> Outcome:
    """Run one attempt and return its outcome; never raises for a classified failure."""
    guard = guard or StopGuard()
    try:
        manifest = load_manifest(req.manifest_path)
        try:
            if req.openjd is not None:
                key = openjd_key(req.openjd["job_id"], req.openjd["step"], req.openjd["task_parameters"])
            else:
                key = deadline_key(req.job_id, req.task_id)
        except KeyError_ as exc:
            raise ManifestError(exc.field, exc.problem, "fix the job submission") from None
        plan_files(manifest, 1)
        version_dir(manifest, 1)
        integrations = integrate.build(manifest)
        submitted = (read_json(req.submitted_manifest_path, "--submitted-manifest")
                     if req.submitted_manifest_path else manifest.raw)
        print_ = fingerprint(canonical_json(submitted))
    except PublishError as exc:
        return Outcome.from_error(exc, done=NOTHING_WRITTEN)
    try:  # not retried here: a task that cannot reach the store fails fast and the farm requeues it
        store = open_store(req.store_uri)
    except Exception as exc:
        return Outcome.from_error(classify(exc), key=key, done=NOTHING_WRITTEN)
    try:
        try:
            store.check_store_id(req.store_id)
        except PublishError as exc:  # the wrong store: write nothing into it
            return Outcome.from_error(exc, key=key, done=NOTHING_WRITTEN)
        return Attempt(store, manifest, key, print_, req, guard, integrations).run()
    finally:
        store.close()


def _make_read_only(folder: str) -> None:
    """Published files must never change: drop every write bit (idempotent, so a roll-forward repeats it).

    A hardlinked file shares its inode with the render, which becomes read-only too."""
    import stat as st

    for entry in os.scandir(folder):
        mode = entry.stat(follow_symlinks=False).st_mode
        if st.S_ISREG(mode) and mode & 0o222:
            os.chmod(entry.path, mode & ~0o222)
    mode = os.stat(folder).st_mode
    if mode & 0o222:
        os.chmod(folder, mode & ~0o222)


def _remove_empty_parents(folder: str, root: str) -> None:
    """After a rollback, remove the folders below the publish root left empty (subset, family...)."""
    root = os.path.normpath(root)
    folder = os.path.normpath(folder)
    while folder != root and os.path.commonpath([folder, root]) == root:
        try:
            os.rmdir(folder)
        except OSError:
            return  # not empty (other versions), or gone: stop here
        folder = os.path.dirname(folder)


class Attempt:
    def __init__(self, store: Store, manifest: Manifest, key: str, fingerprint_: str, req: Request,
                 guard: StopGuard, integrations: list[Integration] | None = None):
        self.store, self.manifest, self.key, self.req, self.guard = store, manifest, key, req, guard
        self.fingerprint = fingerprint_
        self.integrations = integrations or []
        self.runner = integrate.Runner(self.integrations, manifest, key, self._r, self._fenced)
        self.who = Identity(attempt=uuid.uuid4().hex, worker=req.worker)
        self.epoch = 0
        self.index = 0
        self.rec: dict[str, Any] = {}
        self.state = R.NEW
        self.keeper: LeaseKeeper | None = None
        self.source_stats: dict[str, os.stat_result] | None = None  # from the pre-flight, reused by staging

    def _r(self, operation: str, fn: Callable[..., T], *args: Any) -> T:
        """One leaf operation under the in-process retry policy."""
        return retry.call(operation, self.req.policy.retry, fn, *args, stop_event=self.guard.stopping)

    # -- entry -------------------------------------------------------------------------
    def run(self) -> Outcome:
        try:
            existing = self._r("read the record", self.store.records.get, self.key)
            if existing:
                R.check_fingerprint(existing, self.fingerprint)
            if existing and existing["state"] == R.PUBLISHED:
                return self._already(existing, deliver=True)
            if existing and existing["state"] == R.ROLLED_BACK:
                raise self._rolled_back(existing)
        except Exception as exc:
            return Outcome.from_error(classify(exc), key=self.key)
        try:
            if not existing or existing["state"] not in (R.COMMITTING, R.ROLLING_BACK):
                self._preflight()
            elif existing["state"] == R.COMMITTING:
                self._rollforward_preflight(existing)
        except PublishError as exc:
            return self._preflight_failed(exc, existing)
        try:
            self._acquire()
        except Exception as exc:
            return Outcome.from_error(classify(exc), key=self.key)
        if self.rec["state"] == R.PUBLISHED:
            return self._already(self.rec)
        if self.rec["state"] == R.ROLLED_BACK:
            return Outcome.from_error(self._rolled_back(self.rec), key=self.key)
        keeper = LeaseKeeper(self.store.records, self.key, self.epoch, self.req.policy.lease_seconds)
        self.keeper = keeper
        self.guard.extra_checks.append(keeper.check)
        with keeper:
            return self._work()

    def _acquire(self) -> None:
        m = self.manifest
        self.rec = self._r("take the lease", self.store.records.acquire, self.key, self.fingerprint, self.who,
                           self.req.policy.lease_seconds,
                           {"job_id": self.req.job_id, "task_id": str(self.req.task_id),
                            "subset": {"project": m.project_name, "asset": m.asset, "subset": m.subset},
                            "manifest_json": m.canonical()})
        self.epoch, self.state = self.rec["epoch"], self.rec["state"]
        self.index = len(self.rec["attempts"]) - 1

    def _work(self) -> Outcome:
        progress.status(f"publishing {self.key} (epoch {self.epoch}, worker {self.req.worker})")
        try:
            failpoints.hit("lease.acquired")
            if self.state == R.ROLLING_BACK:
                reason = (self.rec.get("error") or {}).get("message", "an earlier permanent failure")
                self._rollback(reason)
                raise RolledBack(f"finished the rollback an earlier attempt started ({reason})")
            if ORDER[self.state] < ORDER[R.COMMITTING]:
                self._reserve()
                self._stage()
                self._claim_final_folder(renumber=True)
                self._integrate()
                self._claim_final_folder(renumber=False)  # the last look before the point of no return
                self._set(R.COMMITTING, committed_at=utcnow(), **self.runner.outbox())
                failpoints.hit("commit.begin")
            stats = self._commit()
        except BaseException as raw:
            if isinstance(raw, (KeyboardInterrupt, SystemExit)):
                raise
            return self._fail(classify(raw))
        self._finish("published", None, None)
        progress.status(f"published v{self.rec['version']:0>3} at {self.rec['final_dir']}")
        pending = self._deliver(self.rec)
        note = f"; notifications pending: {', '.join(pending)} (retried later)" if pending else ""
        return Outcome("published", key=self.key, version=self.rec["version"], final_dir=self.rec["final_dir"],
                       message=f"published version {self.rec['version']} of {self.manifest.subset} at "
                               f"{self.rec['final_dir']} (epoch {self.epoch}){note}",
                       exit_code=EXIT_OK, extra={"epoch": self.epoch, "notifications_pending": pending, **stats})

    # -- pre-flight --------------------------------------------------------------------
    def _preflight(self) -> None:
        """Checks that need no store write: publish root and sources visible and usable here."""
        root = self.manifest.publish_root
        worker = self.req.worker
        try:
            if not os.path.isdir(root):
                raise FileNotFoundError(2, "missing", root)
            if not os.access(root, os.W_OK | os.X_OK):
                raise PermissionError(13, "denied", root)
        except OSError as exc:
            raise classify_oserror(exc, "publish-root", root, worker) from None
        real = os.path.realpath(root)
        if os.path.normcase(real) != os.path.normcase(os.path.normpath(root)):
            raise DestinationError(f"publish root {root} is a symlink to {real}; give the real path in the manifest "
                                   "(a symlinked root lets the version land outside the storage it names)")
        self.source_stats = check_sources(plan_files(self.manifest, 1), worker, allowed_source_roots())
        check_inside_root(version_dir(self.manifest, 1), root)
        if self.manifest.version is not None:  # a pinned number whose folder belongs to someone else
            final = version_dir(self.manifest, self.manifest.version)
            if os.path.lexists(final):
                marker = read_marker(final)
                if not marker or marker.get("key") != self.key:
                    owner = f"publish {marker['key']}" if marker else "nobody (no atomic-publish marker)"
                    raise VersionConflict(f"version {self.manifest.version} folder {final} belongs to {owner}; "
                                          "nothing was overwritten")
        for integration in self.integrations:
            integration.check_environment()

    def _rollforward_preflight(self, rec: dict[str, Any]) -> None:
        """A COMMITTING record only rolls forward (invariant 7). A worker that cannot see the
        storage (an empty mountpoint, a missing publish root) must say so as worker-local, so that
        the farm moves the task to a worker that can, and never as permanent."""
        root, worker = self.manifest.publish_root, self.req.worker
        if not os.path.isdir(root) or not os.access(root, os.W_OK | os.X_OK):
            raise PublishRootUnavailable(f"worker {worker} cannot use the publish root {root} to finish the commit "
                                         f"of v{rec['version']:0>3}")
        final, staging = self._local_final(rec), self._local_staging(rec)
        if not os.path.isdir(final) and not (staging and os.path.isdir(staging)):
            raise StorageInvisible(
                f"worker {worker} sees neither the staging folder {staging} nor the final folder {final} of "
                f"v{rec['version']:0>3}, which is committing (past the point of no return): an empty or missing "
                "mount on this worker; nothing was changed")

    def _preflight_failed(self, exc: PublishError, existing: dict[str, Any] | None) -> Outcome:
        """A permanent pre-flight failure leaves no trace (or rolls back an earlier partial
        attempt); another failure is written to the attempt history, for escalation."""
        if exc.failure_class == PERMANENT and not (existing and existing["state"] not in R.TERMINAL):
            return Outcome.from_error(exc, key=self.key, done=NOTHING_WRITTEN)
        try:
            self._acquire()
        except Exception:
            return Outcome.from_error(exc, key=self.key)  # someone else holds it; nothing recorded
        if self.state in R.TERMINAL:
            return Outcome.from_error(exc, key=self.key)
        return self._fail(exc)

    # -- steps ---------------------------------------------------------------------------
    def _reserve_number(self) -> int:
        """Reserve this key's version number (its own earlier reservation if it has one)."""
        m, cat = self.manifest, self.store.catalog

        def taken_by(number: int) -> str | None:
            final = version_dir(m, number)
            if os.path.lexists(final):
                marker = read_marker(final)
                if not marker or marker.get("key") != self.key:
                    owner = f"publish {marker['key']}" if marker else "nobody (no atomic-publish marker)"
                    if m.version is None:
                        progress.info(f"warning: version folder {final} exists and belongs to {owner}; "
                                      "skipping that number (run `atomic-publish audit`)")
                    return f"folder {final} belongs to {owner}"
            holder = cat.version_holder(m.project_name, m.asset, m.subset, number)
            if holder is not None and holder != self.key:
                return f"a version document made by {holder or 'a publish outside atomic-publish'}"
            return None

        def insert(doc: dict[str, Any]) -> None:  # fenced: a zombie reserves nothing (invariant 9)
            doc = {**doc, "epoch": self.epoch}
            self.store.records.fenced_write(self.key, self.epoch,
                                            lambda s: self.store.reservations.col.insert_one(doc, session=s),
                                            self.store.supports_transactions())

        def reserve() -> int:
            return self.store.reservations.reserve(
                self.key, m.project_name, m.asset, m.subset, m.version,
                cat.highest_version(m.project_name, m.asset, m.subset), taken_by, insert)

        return self._r("reserve a version number", reserve)

    def _reserve(self) -> None:
        m = self.manifest
        version = self._reserve_number()
        final_dir = version_dir(m, version)
        check_inside_root(final_dir, m.publish_root)
        staging_dir = os.path.join(os.path.dirname(final_dir),
                                   f".{os.path.basename(final_dir)}.staging-{short_hash(self.key)}-e{self.epoch}")
        staging_rootless = rootless(staging_dir, m)
        try:
            self._set(R.STAGING, version=version, final_dir=final_dir, staging_dir=staging_dir,
                      final_rootless=rootless(final_dir, m), staging_rootless=staging_rootless,
                      **{f"staging_dirs.{self.epoch}": staging_dir,
                         f"staging_rootless_dirs.{self.epoch}": staging_rootless})
        except Superseded:
            self._release_stray_reservation()
            raise
        self.rec.setdefault("staging_dirs", {})[str(self.epoch)] = staging_dir
        self.rec.setdefault("staging_rootless_dirs", {})[str(self.epoch)] = staging_rootless
        failpoints.hit("reserve.after")
        progress.status(f"reserved v{version:0>3} for {m.subset}")

    def _stage(self) -> None:
        m, rec = self.manifest, self.rec
        staging_dir = self._local_staging()
        for tries_left in (2, 1, 0):  # a concurrent rollback may remove an empty parent in between
            try:
                os.makedirs(os.path.dirname(staging_dir), exist_ok=True)
                os.mkdir(staging_dir)  # never exist_ok: staging writes only into a folder it created
                break
            except FileExistsError:
                raise StagingTaken(
                    f"staging folder {staging_dir} of epoch {self.epoch} already exists, so another store's "
                    "attempt of this publish (same job and task, same epoch number) or a stale copy owns it; "
                    "nothing in it was touched") from None
            except FileNotFoundError:
                if not tries_left:
                    raise classify_oserror(FileNotFoundError(2, "vanished"), "staging", staging_dir,
                                           self.req.worker) from None
            except OSError as exc:
                raise classify_oserror(exc, "staging", staging_dir, self.req.worker) from None
        check_inside_root(staging_dir, m.publish_root)
        self._verify_epoch()  # a zombie that woke up after a takeover must not start writing here
        # who owns this folder, from its first moment: gc leaves another store's folders alone
        write_marker(staging_dir, {"key": self.key, "epoch": self.epoch, "store_id": self._store_id()})
        failpoints.hit("stage.begin")
        plan = plan_files(m, rec["version"])

        batches = itertools.count()

        def checkpoint(batch: dict[str, dict[str, Any]]) -> None:
            seq = next(batches)  # outside the retried call: a retried save replaces itself
            self._r("save staging progress", self.store.records.fenced_write, self.key, self.epoch,
                    lambda s: self.store.staged.save(self.key, self.epoch, seq, batch, session=s),
                    self.store.supports_transactions())

        known = self._r("read staging progress", self.store.staged.of_key, self.key)
        self._check_sources_unchanged(plan, known)
        local_dirs = self._local_staging_dirs()
        old = {ep: d for ep, d in local_dirs.items() if ep != str(self.epoch)}

        def remove_old() -> None:  # what earlier epochs left once their verified files moved here
            for folder in old.values():
                remove_tree(folder)
        stats = stage(plan, staging_dir, self.epoch, known, local_dirs,
                      m.link_mode, m.verify, self.req.worker, checkpoint, self.guard.check,
                      threads=self.req.policy.threads, retry=self._r, tick=self.keeper.tick,
                      cleanup=remove_old if old else None, src_stats=self.source_stats)
        self.guard.check()
        write_marker(staging_dir, {"key": self.key, "job_id": self.req.job_id, "task_id": str(self.req.task_id),
                                   "version": rec["version"], "fingerprint": self.fingerprint,
                                   "epoch": self.epoch, "store_id": self._store_id(),
                                   "files": sorted(p.name for p in plan)})
        fsync_dir(staging_dir)
        unset = {f"{field}.{ep}": "" for ep in old for field in ("staging_dirs", "staging_rootless_dirs")}
        self._set(R.STAGED, _unset=unset, stage_stats={
            "copied_files": stats.copied_files, "copied_bytes": stats.copied_bytes,
            "reused_files": stats.reused_files, "reused_bytes": stats.reused_bytes,
            "linked_files": stats.linked_files})
        self.rec["files"] = {**known, **stats.entries}
        for ep in old:
            self.rec["staging_dirs"].pop(ep, None)
            (self.rec.get("staging_rootless_dirs") or {}).pop(ep, None)
        failpoints.hit("staged")
        progress.status(f"staged {len(plan)} files ({stats.copied_files} copied, {stats.reused_files} reused)")

    def _integrate(self) -> None:
        """Prepare every gate integration under the key (receipts saved), before the commit."""
        if not self.runner.gates():
            return
        self._set(R.INTEGRATING)
        self.runner.prepare_all(self.rec, plan_files(self.manifest, self.rec["version"]))

    def _deliver(self, rec: dict[str, Any]) -> list[str]:
        """Deliver pending notifications (after PUBLISHED); never fails the publish."""
        if not self.runner.notifiers():
            return []

        def mark(ident: str, entry: dict[str, Any]) -> bool:
            result = self.store.records.col.update_one(
                {"_id": self.key, f"outbox.{ident}.state": "pending"}, {"$set": {f"outbox.{ident}": entry}})
            return result.modified_count == 1

        if not rec.get("files"):
            rec = {**rec, "files": self._files()}
        light = retry.RetryPolicy(attempts=2, budget=10.0)  # a notification never holds the attempt long

        def quick(operation: str, fn, *args):
            return retry.call(operation, light, fn, *args, stop_event=self.guard.stopping)

        return integrate.deliver_pending(self.integrations, self.manifest, self.key, rec,
                                         plan_files(self.manifest, rec["version"]), quick, mark)

    def _commit(self) -> dict[str, Any]:
        """Roll forward from COMMITTING: rename, documents, PUBLISHED. Every step idempotent."""
        self.guard.check()
        rec = self._r("read the record", self.store.records.get, self.key)
        if rec is None or rec["epoch"] != self.epoch:
            raise Superseded(f"epoch {self.epoch} of {self.key} was superseded before the commit")
        rec["files"] = self._files()
        # this worker's paths to the recorded folders (another mount of the same storage, issue 16)
        rec["final_dir"], rec["staging_dir"] = self._local_final(rec), self._local_staging(rec)
        self.rec = rec
        m = self.manifest
        if not os.path.lexists(rec["final_dir"]) and not (rec["staging_dir"] and os.path.isdir(rec["staging_dir"])):
            raise StorageInvisible(f"worker {self.req.worker} sees neither the staging folder {rec['staging_dir']} "
                                   f"nor the final folder {rec['final_dir']} of v{rec['version']:0>3} (committing); "
                                   "nothing was changed")
        result = self._r("rename the staging folder into place", move_into_place,
                         rec["staging_dir"], rec["final_dir"], self.key)
        failpoints.hit("commit.rename")
        if self.req.policy.protect_published:
            _make_read_only(rec["final_dir"])
        # the storage's own clock at the commit: audit compares every published file's change time
        # with it (neither the publisher's nor the auditor's clock is involved)
        committed_ctime_ns = os.stat(rec["final_dir"]).st_ctime_ns if os.name == "posix" else None
        self.guard.check()
        plan = plan_files(m, rec["version"])
        cat = self.store.catalog

        def insert_documents() -> int:
            cat.ensure_project_index(m.project_name)  # for the next publishes' version lookups
            parents, subset_doc = parent_documents(m)
            asset_doc = cat.find_asset(m.project_name, m.asset)
            asset_id = asset_doc["_id"] if asset_doc else parents[1]["_id"]
            subset_doc = cat.find_subset(m.project_name, asset_id, m.subset) or {**subset_doc, "parent": asset_id}
            version_doc, reps = version_documents(m, self.key, rec, plan, rec["final_dir"], subset_doc["_id"])
            return cat.insert_publish(m.project_name, [] if asset_doc else parents, subset_doc, version_doc, reps)

        inserted = self._r("insert the documents", insert_documents)
        failpoints.hit("commit.documents")
        self.runner.commit_all(rec, plan)
        self._r("mark the reservation committed", self.store.reservations.mark_committed, self.key)
        self._set(R.PUBLISHED, published_at=utcnow(), committed_ctime_ns=committed_ctime_ns, staging_dir=None,
                  staging_dirs={}, staging_rootless_dirs={})
        failpoints.hit("commit.published")
        stats = dict(rec.get("stage_stats") or {})
        stats.update(rename=result, documents_inserted=inserted)
        return stats

    def _rollback(self, reason: str) -> None:
        """Undo everything before COMMITTING; idempotent, so a crash midway is finished later."""
        # never from COMMITTING on (invariant 7): the write itself refuses a record past the commit
        self._r(f"record state {R.ROLLING_BACK}", self.store.records.fenced, self.key, self.epoch,
                {"$set": {"state": R.ROLLING_BACK, "error": {"class": PERMANENT, "message": reason}}}, True)
        self.state = R.ROLLING_BACK
        self.rec.update(state=R.ROLLING_BACK)
        failpoints.hit("rollback.begin")
        rec = self._r("read the record", self.store.records.get, self.key) or self.rec
        rec["files"] = self._files()
        plan = plan_files(self.manifest, rec["version"]) if rec.get("version") is not None else None
        self.runner.compensate_all(rec, plan)
        for folder in self._local_staging_dirs(rec).values():
            remove_tree(folder)
        if rec.get("final_dir"):
            _remove_empty_parents(os.path.dirname(self._local_final(rec)), self.manifest.publish_root)
        failpoints.hit("rollback.staging")
        self._r("release the reservation", self.store.reservations.release, self.key)
        failpoints.hit("rollback.reservation")
        self._r("forget the staged files", self.store.staged.drop, self.key)
        self._set(R.ROLLED_BACK, rolled_back_at=utcnow(), staging_dirs={}, staging_rootless_dirs={},
                  staging_dir=None)

    # -- the version's folders, as this worker reaches them -------------------------------
    def _local(self, absolute: str | None, rootless_path: str | None) -> str | None:
        """A recorded folder on this worker: from its rootless form where the record has one
        (another worker may reach the same storage through another mount), else as recorded."""
        return resolve_rootless(rootless_path, self.manifest) if rootless_path else absolute

    def _local_final(self, rec: dict[str, Any] | None = None) -> str:
        rec = self.rec if rec is None else rec
        return self._local(rec.get("final_dir"), rec.get("final_rootless"))

    def _local_staging(self, rec: dict[str, Any] | None = None) -> str | None:
        rec = self.rec if rec is None else rec
        return self._local(rec.get("staging_dir"), rec.get("staging_rootless"))

    def _local_staging_dirs(self, rec: dict[str, Any] | None = None) -> dict[str, str]:
        rec = self.rec if rec is None else rec
        rootless_dirs = rec.get("staging_rootless_dirs") or {}
        return {ep: self._local(d, rootless_dirs.get(ep)) for ep, d in (rec.get("staging_dirs") or {}).items() if d}

    # -- checks on the way to the commit --------------------------------------------------
    def _check_sources_unchanged(self, plan: list, known: dict[str, dict[str, Any]]) -> None:
        """A frame re-rendered between two attempts must not give a version that mixes two renders
        silently: the staged entries say what an earlier attempt copied (issue 16)."""
        stats = self.source_stats or {}
        for item in plan:
            entry, st = known.get(file_id(item.name)), stats.get(item.source)
            if not entry or st is None or entry.get("src") != item.source:
                continue
            if (entry["size"], entry["src_mtime_ns"]) != (st.st_size, st.st_mtime_ns):
                raise SourceError(
                    f"source {item.source} changed between attempts of this publish (epoch {entry.get('epoch')} "
                    f"staged it at {entry['size']} bytes, it now has {st.st_size} bytes and a newer date): the "
                    "version would mix two renders",
                    "let the render finish writing, then submit a new publish job")

    def _folder_owner(self, final: str) -> str | None:
        """Who holds ``final`` on disk, when it is not free and not this key's."""
        if not os.path.lexists(final):
            return None
        marker = read_marker(final)
        if marker and marker.get("key") == self.key:
            return None
        return f"publish {marker['key']}" if marker else "nobody (no atomic-publish marker)"

    def _claim_final_folder(self, renumber: bool) -> None:
        """Before COMMITTING, the final folder must still be free on disk: a person or another tool
        may have created it since the reservation. Before the point of no return the reservation
        rules apply: a pinned number is a conflict; a free choice moves to the next free number
        (``renumber``), or, at the very last look, the attempt stops and the next one moves."""
        final = self._local_final()
        owner = self._folder_owner(final)
        if owner is None:
            return
        version = int(self.rec["version"])
        if self.manifest.version is not None:
            raise VersionConflict(f"version {version} folder {final} appeared while this publish staged and "
                                  f"belongs to {owner}; nothing was overwritten")
        if not renumber:
            from .errors import TransientError

            raise TransientError(f"version folder {final} appeared while the integrations prepared and belongs "
                                 f"to {owner}; nothing was overwritten",
                                 "nothing: the next attempt takes the next free number")
        self._renumber(final, owner)

    def _renumber(self, taken: str, owner: str) -> None:
        """Move a staged, uncommitted version to the next free number: release the reservation,
        reserve anew, rename the staged files (same folder: renames, no copies) and their entries."""
        m, old = self.manifest, int(self.rec["version"])
        self._r("release the reservation", self.store.records.fenced_write, self.key, self.epoch,
                lambda s: self.store.reservations.col.delete_many({"key": self.key, "state": "reserved"}, session=s),
                self.store.supports_transactions())
        version = self._reserve_number()
        old_plan, new_plan = plan_files(m, old), plan_files(m, version)
        staging = self._local_staging()
        entries = self._files()
        moved: dict[str, dict[str, Any]] = {}
        for before, after in zip(old_plan, new_plan):
            src, dst = os.path.join(staging, before.name), os.path.join(staging, after.name)
            if os.path.lexists(src) or not os.path.lexists(dst):  # a crash midway already renamed some
                os.rename(src, dst)
            entry = entries.get(file_id(before.name))
            if entry is not None:
                moved[file_id(after.name)] = {**entry, "name": after.name, "epoch": self.epoch}
        write_marker(staging, {"key": self.key, "job_id": self.req.job_id, "task_id": str(self.req.task_id),
                               "version": version, "fingerprint": self.fingerprint,
                               "files": sorted(p.name for p in new_plan)})
        fsync_dir(staging)
        self._r("save staging progress", self.store.records.fenced_write, self.key, self.epoch,
                lambda s: self.store.staged.save(self.key, self.epoch, 10 ** 6, moved, session=s),
                self.store.supports_transactions())
        final = version_dir(m, version)
        check_inside_root(final, m.publish_root)
        self._set(self.state, version=version, final_dir=final, final_rootless=rootless(final, m))
        self.rec["files"] = moved
        progress.info(f"warning: version folder {taken} was created by {owner} after v{old:0>3} was reserved; "
                      f"this publish takes v{version:0>3} instead (nothing was overwritten)")

    def _store_id(self) -> str | None:
        try:
            return self._r("read the store's id", self.store.store_id)
        except PublishError:
            return None  # only a hint for gc; never worth failing the publish

    def _release_stray_reservation(self) -> None:
        """Without transactions a zombie can still insert a reservation just after a rollback
        released its key's: take it back (Records.fenced_write)."""
        try:
            current = self.store.records.get(self.key) or {}
            if current.get("state") == R.ROLLED_BACK:
                self.store.reservations.release_stray(self.key, self.epoch)
        except Exception:
            pass  # gc releases reservations of rolled-back keys

    # -- endings -------------------------------------------------------------------------
    def _files(self) -> dict[str, dict[str, Any]]:
        """The verified staging entries of this key, by file id."""
        return self._r("read staging progress", self.store.staged.of_key, self.key)

    def _verify_epoch(self) -> None:
        rec = self._r("read the record", self.store.records.get, self.key)
        if rec is None or rec["epoch"] != self.epoch:
            raise Superseded(f"epoch {self.epoch} of {self.key} was superseded by a newer attempt; this attempt "
                             "stops without changing anything")

    def _drop_own_staging(self) -> None:
        """A superseded attempt removes the staging folder it created, unless the record still lists
        it (then the newer attempt reuses it, and removes it when done)."""
        folder = (self.rec.get("staging_dirs") or {}).get(str(self.epoch))
        if not folder or not os.path.isdir(folder):
            return
        try:
            current = self.store.records.get(self.key) or {}
        except Exception:
            return  # cannot tell: leave it to the next attempt or to gc
        if (current.get("staging_dirs") or {}).get(str(self.epoch)) != folder:
            shutil.rmtree(folder, ignore_errors=True)

    def _fail(self, exc: PublishError) -> Outcome:
        if isinstance(exc, Superseded):
            self._drop_own_staging()
            return Outcome.from_error(exc, key=self.key, done=CHANGED_NOTHING_MORE)
        before_commit = ORDER.get(self.state, 0) < ORDER[R.COMMITTING]
        if before_commit and exc.failure_class != BUSY:
            exc = escalate(exc, (self.rec.get("attempts") or [])[:self.index], self.req.worker,
                           self.req.policy.limits)
        if self.state == R.ROLLING_BACK:  # a rollback that did not finish: the next attempt finishes it
            return self._rollback_interrupted(exc, exc)
        done = None
        if exc.failure_class == PERMANENT and before_commit:
            try:
                self._rollback(exc.cause)
            except Superseded as lost:
                return Outcome.from_error(lost, key=self.key, done=CHANGED_NOTHING_MORE)
            except Exception as inner:  # the next attempt finishes the rollback: ask the farm for one
                return self._rollback_interrupted(exc, classify(inner))
            done = ROLLED_BACK
        elif exc.failure_class == PERMANENT and self.state == R.COMMITTING:
            done = "not rolled back: the commit had begun, and only a later attempt of this task rolls it forward"
        outcome = Outcome.from_error(exc, key=self.key, version=self.rec.get("version"),
                                     final_dir=self.rec.get("final_dir"), done=done)
        try:
            self._finish(exc.failure_class, exc.failure_class, outcome.message, error_type(exc))
        except Exception:
            pass  # the lease expires on its own; the outcome stands
        return outcome

    def _rollback_interrupted(self, exc: PublishError, interrupted: PublishError) -> Outcome:
        """Report a rollback that stopped midway as transient, so that the farm runs the attempt
        that finishes it (a rolled-back publish is only reported permanent once it is complete)."""
        if isinstance(interrupted, Superseded):
            return Outcome.from_error(interrupted, key=self.key, done=CHANGED_NOTHING_MORE)
        outcome = Outcome.from_error(exc, key=self.key, version=self.rec.get("version"),
                                     final_dir=self.rec.get("final_dir"),
                                     done=f"rollback interrupted ({interrupted.cause})",
                                     decision="a farm requeues the task so that the next attempt finishes "
                                              "the rollback")
        outcome.exit_code, outcome.outcome, outcome.failure_class = EXIT_CODES[TRANSIENT], TRANSIENT, TRANSIENT
        try:
            self._finish(TRANSIENT, TRANSIENT, outcome.message, error_type(interrupted))
        except Exception:
            pass  # the lease expires on its own
        return outcome

    def _finish(self, outcome: str, error_class: str | None, message: str | None,
                error_kind: str | None = None) -> None:
        """Close this attempt's history entry; a superseded attempt drops its staging folder."""
        try:
            self._finish_fenced(outcome, error_class, message, error_kind)
        except Superseded:
            self._drop_own_staging()
            raise

    def _finish_fenced(self, outcome: str, error_class: str | None, message: str | None,
                       error_kind: str | None) -> None:
        self._r("close the attempt", self.store.records.finish_attempt, self.key, self.epoch, self.index,
                outcome, error_class, message, error_kind)

    def _already(self, rec: dict[str, Any], deliver: bool = False) -> Outcome:
        pending = self._deliver(rec) if deliver else []
        note = f"; notifications still pending: {', '.join(pending)}" if pending else ""
        return Outcome("already-published", key=self.key, version=rec["version"], final_dir=rec["final_dir"],
                       message=f"version {rec['version']} was already published by an earlier attempt at "
                               f"{rec['final_dir']}; nothing changed{note}", exit_code=EXIT_OK,
                       extra={"notifications_pending": pending})

    def _rolled_back(self, rec: dict[str, Any]) -> RolledBack:
        reason = (rec.get("error") or {}).get("message", "a permanent failure")
        return RolledBack(f"this publish ({self.key}) was rolled back earlier: {reason}")

    # -- record writes -------------------------------------------------------------------
    def _fenced(self, update: dict[str, Any], operation: str = "update the record") -> None:
        self._r(operation, self.store.records.fenced, self.key, self.epoch, update)

    def _set(self, state: str, _unset: dict[str, str] | None = None, **fields: Any) -> None:
        update: dict[str, Any] = {"$set": {"state": state, **fields}}
        if _unset:
            update["$unset"] = _unset
        self._fenced(update, f"record state {state}")
        self.state = state
        self.rec.update({k: v for k, v in fields.items() if "." not in k}, state=state)

    # -- abandon (the farm gave up on the job) ---------------------------------------------
    def abandon(self, reason: str) -> Outcome:
        """Roll back this unfinished publish because its farm job was failed or deleted: the
        lease is taken as every attempt takes it (a live one is busy: nothing touched), then the
        permanent failure's rollback runs. From COMMITTING on nothing is undone (invariant 7).
        Used by `atomic-publish abandon`; outcome "rolled-back", or a failure class, or none
        when the record turned out to be COMMITTING, PUBLISHED or ROLLED_BACK (left as it is)."""
        try:
            self._acquire()
        except Exception as exc:
            return Outcome.from_error(classify(exc), key=self.key, decision="left as it is")
        if self.state in (R.COMMITTING, R.PUBLISHED, R.ROLLED_BACK):
            if self.state == R.COMMITTING:  # the lease was taken: give it back untouched
                self._finish("left-to-roll-forward", None, reason)
            return Outcome(self.state.lower(), key=self.key, message="left as it is", exit_code=EXIT_OK)
        if self.state == R.ROLLING_BACK:  # finish the rollback an attempt began, for its own reason
            reason = (self.rec.get("error") or {}).get("message") or reason
        self.keeper = LeaseKeeper(self.store.records, self.key, self.epoch, self.req.policy.lease_seconds)
        try:
            with self.keeper:
                self._rollback(reason)
            self._finish("abandoned", None, reason)
        except Exception as raw:
            exc = classify(raw)
            if not isinstance(exc, Superseded):
                try:
                    self._finish(exc.failure_class, exc.failure_class, exc.cause, error_type(exc))
                except Exception:
                    pass  # the lease expires on its own
            return Outcome.from_error(exc, key=self.key, decision="the rollback stopped midway; run "
                                      "`atomic-publish abandon` again to finish it")
        return Outcome("rolled-back", key=self.key, message=f"rolled back: {reason}", exit_code=EXIT_OK)
