"""One publish attempt: manifest -> reserve -> stage -> (integrate) -> commit, or roll back.

The lifecycle and its invariants are docs/design.md sections 3 and 5. Every write to the
record is fenced by this attempt's epoch; every step is idempotent, so any attempt can
resume or roll forward what an earlier one left.
"""
from __future__ import annotations

import os
import shutil
import time
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
from .catalogs.entries import entry_from_manifest, subject_of
from .documents import resolve_rootless, rootless
from .errors import (BUSY, PERMANENT, TRANSIENT, DestinationError, ManifestError, PublishError,
                     PublishRootUnavailable, RolledBack, SourceError, StagingTaken, StorageInvisible, Superseded,
                     CatalogNumberTaken, NumberTakenAtCommit, TransientError, VersionConflict)
from .escalation import Limits, error_type, escalate
from .fsops import remove_tree
from .guard import StopGuard
from .integrations.base import Integration
from .hero import check_heroes, commit_heroes
from .layout import check_inside_root, plan_files, version_dir
from .manifest import Manifest, canonical_json, load_manifest, read_json
from .outcome import CHANGED_NOTHING_MORE, EXIT_CODES, EXIT_OK, NOTHING_WRITTEN, ROLLED_BACK, Outcome
from .progress_journal import ProgressJournal, merge_journals
from .staging import allowed_source_roots, check_sources, file_id, fsync_dir, stage

ORDER = {s: i for i, s in enumerate(R.STATES)}
FENCE_FRESH_SECONDS = 1.0  # far below any lease: a fenced write this recent proves the epoch
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
    metadata_path: str | None = None  # an AYON / OpenPype publish metadata JSON instead of a manifest
    submitted_metadata_path: str | None = None  # the metadata as submitted (the fingerprint's source)


def run(req: Request, guard: StopGuard | None = None) -> Outcome:
    """Run one attempt and return its outcome; never raises for a classified failure."""
    guard = guard or StopGuard()
    try:
        products, submitted = _load_products(req)
        manifest = products[0]
        try:
            if req.openjd is not None:
                key = openjd_key(req.openjd["job_id"], req.openjd["step"], req.openjd["task_parameters"])
            else:
                key = deadline_key(req.job_id, req.task_id)
        except KeyError_ as exc:
            raise ManifestError(exc.field, exc.problem, "fix the job submission") from None
        for product in products:
            plan_files(product, 1)
            version_dir(product, 1)
        integrations = integrate.build(manifest)  # every product of a metadata JSON has the settings' list
        print_ = fingerprint(canonical_json(submitted))
        del submitted  # the parsed JSON as submitted: megabytes for a big sequence, not needed past here
    except PublishError as exc:
        return Outcome.from_error(exc, done=NOTHING_WRITTEN)
    try:  # not retried here: a task that cannot reach the store fails fast and the farm requeues it
        store = open_store(req.store_uri, ensure_indexes=False,  # made before the first write (Attempt.run)
                           catalog=_chosen_catalog)
    except Exception as exc:
        return Outcome.from_error(classify(exc), key=key, done=NOTHING_WRITTEN)
    try:
        try:
            store.check_store_id(req.store_id)
        except PublishError as exc:  # the wrong store: write nothing into it
            return Outcome.from_error(exc, key=key, done=NOTHING_WRITTEN)
        return Attempt(store, manifest, key, print_, req, guard, integrations, products).run()
    finally:
        store.close()


def _requeue_not_resubmit(todo: str) -> str:
    """The advice for a permanent failure past the point of no return: the same task must run
    again once the cause is fixed (it rolls forward); a new job would be a new key, a new version."""
    if "requeue" in todo:  # the error already sends the reader back to this task
        return todo
    for tail in (", then resubmit it", ", then resubmit", " and resubmit the job", " and resubmit it", " and resubmit"):
        if todo.endswith(tail):
            todo = todo[:-len(tail)]
            break
    return f"{todo}, then requeue this task (not a new job: that would publish another version): it rolls " \
           "forward and finishes this commit"


def _chosen_catalog(client: Any) -> Any:
    """Where versions become visible: the worker's setting (ATOMIC_PUBLISH_CATALOG, the plugin's
    Catalog), never the manifest's; OpenPype's documents on the store's own client by default."""
    from .catalogs import registry

    return registry.from_environment(client=client, database=os.environ.get("ATOMIC_PUBLISH_DATABASE") or None)


def _load_products(req: Request) -> tuple[list[Manifest], Any]:
    """The products of this publish (one for a manifest, one per instance for an AYON or OpenPype
    metadata JSON) and what the fingerprint is taken from: the job's file as submitted."""
    if req.metadata_path:
        from .metadata import load_publish

        publish = load_publish(req.metadata_path)
        submitted = (read_json(req.submitted_metadata_path, "--submitted-metadata")
                     if req.submitted_metadata_path else publish.raw)
        return list(publish.products), submitted
    manifest = load_manifest(req.manifest_path)
    submitted = (read_json(req.submitted_manifest_path, "--submitted-manifest")
                 if req.submitted_manifest_path else manifest.raw)
    return [manifest], submitted


def _mirror(rec: dict[str, Any], path: str, value: Any, remove: bool = False) -> None:
    """Apply one ``$set`` (or ``$unset``) of a dotted field to the record held in memory."""
    *parents, last = path.split(".")
    node: Any = rec
    for part in parents:
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                return
            node = node[int(part)]
        else:
            node = node.setdefault(part, {}) if not remove else node.get(part)
            if node is None:
                return
    if isinstance(node, list):
        if last.isdigit() and int(last) < len(node) and not remove:
            node[int(last)] = value
    elif remove:
        node.pop(last, None)
    else:
        node[last] = value


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


@dataclass
class StageTotals:
    """What staging did, summed over the products of a publish (the record's ``stage_stats``)."""

    files: int = 0
    copied_files: int = 0
    copied_bytes: int = 0
    reused_files: int = 0
    reused_bytes: int = 0
    linked_files: int = 0
    adopted_files: int = 0

    FIELDS = ("copied_files", "copied_bytes", "reused_files", "reused_bytes", "linked_files", "adopted_files")

    def add(self, files: int, stats: Any) -> None:
        self.files += files
        for name in self.FIELDS:
            setattr(self, name, getattr(self, name) + getattr(stats, name))

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.FIELDS}


class Attempt:
    """One attempt at one publish (one key), of one product or of several products published
    together (a metadata JSON with several instances): all their versions become visible in the
    same commit, or none (invariant 10).

    A publish of one product keeps its fields at the top of the record; a publish of several
    keeps product 0 there and products 1..n under ``extra_products.{i}``, so that every tool that
    reads one-product records (status, gc, audit) reads the first product unchanged and
    ``R.product_views`` gives all of them."""

    def __init__(self, store: Store, manifest: Manifest, key: str, fingerprint_: str, req: Request,
                 guard: StopGuard, integrations: list[Integration] | None = None,
                 products: list[Manifest] | None = None):
        self.store, self.manifest, self.key, self.req, self.guard = store, manifest, key, req, guard
        self.products: list[Manifest] = list(products) if products else [manifest]
        self.fingerprint = fingerprint_
        self.integrations = integrations or []
        self.runner = integrate.Runner(self.integrations, self.products, key, self._r, self._fenced,
                                       lambda parts: self.store.catalog.version_id(parts))
        self.who = Identity(attempt=uuid.uuid4().hex, worker=req.worker)
        self.epoch = 0
        self.index = 0
        self.rec: dict[str, Any] = {}
        self.state = R.NEW
        self.keeper: LeaseKeeper | None = None
        self.source_stats: dict[str, os.stat_result] | None = None  # from the pre-flight, reused by staging
        self._fenced_at = float("-inf")  # when a fenced write last proved the epoch ours
        self._closed = False  # the attempt's history entry was closed with the PUBLISHED write
        self._staging_with_reserve = False  # the reservation's transaction also writes STAGING
        self._staging_written: dict[str, Any] | None = None
        self._reserve_tried: set[int] = set()  # products whose reservation was tried in this attempt

    def _r(self, operation: str, fn: Callable[..., T], *args: Any) -> T:
        """One leaf operation under the in-process retry policy."""
        return retry.call(operation, self.req.policy.retry, fn, *args, stop_event=self.guard.stopping)

    # -- the products of this publish, in the record ------------------------------------------
    def _view(self, i: int, rec: dict[str, Any] | None = None) -> dict[str, Any]:
        """Product ``i``'s fields in ``rec`` (the record itself for product 0)."""
        rec = self.rec if rec is None else rec
        if i == 0:
            return rec
        return rec.setdefault("extra_products", {}).setdefault(str(i), {})

    @staticmethod
    def _field(i: int, name: str) -> str:
        return name if i == 0 else f"extra_products.{i}.{name}"

    def _fields(self, i: int, **fields: Any) -> dict[str, Any]:
        return {self._field(i, k): v for k, v in fields.items()}

    def _label(self, i: int) -> str:
        return self.products[i].subset

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
        try:  # not before: "already published" is answered without it (issue 18: <= 3 commands)
            self.store.ensure_indexes()
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
        fields: dict[str, Any] = {"job_id": self.req.job_id, "task_id": str(self.req.task_id),
                                  "subset": {"project": m.project_name, "asset": m.asset, "subset": m.subset},
                                  "manifest_json": m.canonical()}
        if len(self.products) > 1:
            fields["extra_products"] = {str(i): {"subset": {"project": p.project_name, "asset": p.asset,
                                                            "subset": p.subset}, "manifest_json": p.canonical()}
                                        for i, p in enumerate(self.products) if i}
        self.rec = self._r("take the lease", self.store.records.acquire, self.key, self.fingerprint, self.who,
                           self.req.policy.lease_seconds, fields)
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
                self._claim_final_folders(renumber=True)  # the last look before the point of no return ...
                if self.runner.gates():
                    self._integrate()
                    self._claim_final_folders(renumber=False)  # ... or after the integrations prepared
                self._set(R.COMMITTING, committed_at=utcnow(), **self.runner.outbox())
                failpoints.hit("commit.begin")
                stats = self._commit(fresh=not self.runner.gates())
            else:
                stats = self._commit()
        except BaseException as raw:
            if isinstance(raw, (KeyboardInterrupt, SystemExit)):
                raise
            return self._fail(classify(raw))
        if not self._closed:
            self._finish("published", None, None)
        published = [(self._label(i), self._view(i)["version"], self._view(i)["final_dir"])
                     for i in range(len(self.products))]
        for label, number, folder in published:
            progress.status(f"published v{number:0>3} of {label} at {folder}")
        pending = self._deliver(self.rec)
        note = f"; notifications pending: {', '.join(pending)} (retried later)" if pending else ""
        what = ", ".join(f"version {n} of {label} at {folder}" for label, n, folder in published)
        extra: dict[str, Any] = {"epoch": self.epoch, "notifications_pending": pending, **stats}
        if len(published) > 1:
            extra["products"] = [{"product": label, "version": n, "final_dir": folder} for label, n, folder in published]
        return Outcome("published", key=self.key, version=self.rec["version"], final_dir=self.rec["final_dir"],
                       message=f"published {what} (epoch {self.epoch}){note}", exit_code=EXIT_OK, extra=extra)

    # -- pre-flight --------------------------------------------------------------------
    def _preflight(self) -> None:
        """Checks that need no store write: publish root and sources visible and usable here."""
        worker = self.req.worker
        stats: dict[str, os.stat_result] = {}
        for m in self.products:
            root = m.publish_root
            try:
                if not os.path.isdir(root):
                    raise FileNotFoundError(2, "missing", root)
                if not os.access(root, os.W_OK | os.X_OK):
                    raise PermissionError(13, "denied", root)
            except OSError as exc:
                raise classify_oserror(exc, "publish-root", root, worker) from None
            real = os.path.realpath(root)
            if os.path.normcase(real) != os.path.normcase(os.path.normpath(root)):
                raise DestinationError(f"publish root {root} is a symlink to {real}; give the real path in the "
                                       "manifest (a symlinked root lets the version land outside the storage it names)")
            stats.update(check_sources(plan_files(m, 1), worker, allowed_source_roots()))
            check_inside_root(version_dir(m, 1), root)
            if m.version is not None:  # a pinned number whose folder belongs to someone else
                final = version_dir(m, m.version)
                owner = self._folder_owner(final)
                if owner is not None:
                    raise VersionConflict(f"version {m.version} of {m.subset}: folder {final} belongs to {owner}; "
                                          "nothing was overwritten")
        self.source_stats = stats
        catalog = self.store.catalog
        catalog.check_environment(sorted({m.project_name for m in self.products}))
        catalog.check_subjects([subject_of(m) for m in self.products])
        check_heroes(self.products, catalog)  # the hero template resolves, the catalogue has heroes
        for integration in self.integrations:
            integration.check_environment()

    def _rollforward_preflight(self, rec: dict[str, Any]) -> None:
        """A COMMITTING record only rolls forward (invariant 7). A worker that cannot see the
        storage (an empty mountpoint, a missing publish root) must say so as worker-local, so that
        the farm moves the task to a worker that can, and never as permanent."""
        worker = self.req.worker
        for i, m in enumerate(self.products):
            view = self._view(i, rec)
            root = m.publish_root
            if not os.path.isdir(root) or not os.access(root, os.W_OK | os.X_OK):
                raise PublishRootUnavailable(f"worker {worker} cannot use the publish root {root} to finish the "
                                             f"commit of v{view['version']:0>3} of {m.subset}")
            final, staging = self._local_final(i, rec), self._local_staging(i, rec)
            if not os.path.isdir(final) and not (staging and os.path.isdir(staging)):
                raise StorageInvisible(
                    f"worker {worker} sees neither the staging folder {staging} nor the final folder {final} of "
                    f"v{view['version']:0>3} of {m.subset}, which is committing (past the point of no return): an "
                    "empty or missing mount on this worker; nothing was changed")

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
    def _reserve_number(self, i: int = 0) -> int:
        """Reserve product ``i``'s version number (its own earlier reservation if it has one)."""
        m, cat = self.products[i], self.store.catalog
        floor: list[int] = []  # the catalogue's highest number, read by this reservation

        def taken_by(number: int) -> str | None:
            final = version_dir(m, number)
            owner = self._folder_owner(final)
            if owner is not None:
                if m.version is None:
                    progress.info(f"warning: version folder {final} exists and belongs to {owner}; "
                                  "skipping that number (run `atomic-publish audit`)")
                return f"folder {final} belongs to {owner}"
            if floor and number > floor[0]:
                # above the highest the catalogue had a moment ago: no version holds it (one round trip
                # less; one created since is caught by the re-check before COMMITTING)
                return None
            holder = cat.version_holder(subject_of(m), number)
            if holder is not None and holder != self.key:
                return f"a version document made by {holder or 'a publish outside atomic-publish'}"
            return None

        def insert(doc: dict[str, Any]) -> None:  # fenced: a zombie reserves nothing (invariant 9)
            doc = {**doc, "epoch": self.epoch}
            fence = None
            if self._staging_with_reserve:
                # one product: STAGING (and where it stages) is the reservation's fence: one write less
                fields = self._fields(i, **self._staging_fields(i, doc["version"]))
                fence = {"$set": {"state": R.STAGING, **fields}}
            self.store.records.fenced_write(self.key, self.epoch,
                                            lambda s: self.store.reservations.col.insert_one(doc, session=s),
                                            self.store.supports_transactions(), fence)
            if fence is not None:
                self._fenced_at = time.monotonic()
                self._staging_written = fence["$set"]

        def reserve() -> int:
            # epoch 1, first try of the attempt: this key has never reserved anything (a retry, or a
            # renumbering, looks: the first try may have reserved before its answer was lost)
            known_absent = self.epoch == 1 and i not in self._reserve_tried
            self._reserve_tried.add(i)
            floor[:] = [cat.highest_version(subject_of(m))]
            return self.store.reservations.reserve(
                self.key, m.project_name, m.asset, m.subset, m.version,
                floor[0], taken_by, insert, known_absent)

        return self._r("reserve a version number", reserve)

    def _staging_fields(self, i: int, version: int) -> dict[str, Any]:
        """Where product ``i`` stages and lands as ``version``: the STAGING fields of the record."""
        m = self.products[i]
        final_dir = version_dir(m, version)
        check_inside_root(final_dir, m.publish_root)
        staging_dir = os.path.join(os.path.dirname(final_dir),
                                   f".{os.path.basename(final_dir)}.staging-{short_hash(self.key)}-e{self.epoch}")
        staging_rootless = rootless(staging_dir, m)
        return {"version": version, "final_dir": final_dir, "staging_dir": staging_dir,
                "final_rootless": rootless(final_dir, m), "staging_rootless": staging_rootless,
                f"staging_dirs.{self.epoch}": staging_dir, f"staging_rootless_dirs.{self.epoch}": staging_rootless}

    def _reserve(self) -> None:
        fields: dict[str, Any] = {}
        self._staging_written = None
        self._staging_with_reserve = len(self.products) == 1  # issue 18: one write less per publish
        try:
            for i in range(len(self.products)):
                fields.update(self._fields(i, **self._staging_fields(i, self._reserve_number(i))))
        finally:
            self._staging_with_reserve = False
        if self._staging_written == {"state": R.STAGING, **fields}:  # written with the reservation
            self.state = R.STAGING
            self.rec.update({k: v for k, v in fields.items() if "." not in k}, state=R.STAGING)
        else:
            try:
                self._set(R.STAGING, **fields)
            except Superseded:
                self._release_stray_reservation()
                raise
        for i in range(len(self.products)):
            view = self._view(i)
            for name in ("version", "final_dir", "staging_dir", "final_rootless", "staging_rootless"):
                view[name] = fields[self._field(i, name)]
            view.setdefault("staging_dirs", {})[str(self.epoch)] = view["staging_dir"]
            view.setdefault("staging_rootless_dirs", {})[str(self.epoch)] = view["staging_rootless"]
        failpoints.hit("reserve.after")
        for i in range(len(self.products)):
            progress.status(f"reserved v{self._view(i)['version']:0>3} for {self._label(i)}")

    def _stage(self) -> None:
        """Stage every product; then save every verified entry to the store in one fenced write,
        and only then STAGED. The checkpoints during the copies go to each staging folder's own
        journal (progress_journal.py), so they cost no store round trip."""
        # epoch 1 is the first attempt of this key: nothing was staged before it, no read needed
        known = {} if self.epoch == 1 else self._known_progress()
        unset: dict[str, str] = {}
        totals = StageTotals()
        entries: dict[str, dict[str, Any]] = {}
        for i in range(len(self.products)):
            unset.update(self._stage_product(i, known, totals, entries))
        self.source_stats = None  # one per source: not needed past staging, freed before the commit's peak
        self._r("save the staged files", self.store.records.fenced_write, self.key, self.epoch,
                lambda s: self.store.staged.save(self.key, self.epoch, 0, entries, session=s),
                self.store.supports_transactions())
        self._set(R.STAGED, _unset=unset, stage_stats=totals.as_dict())
        failpoints.hit("staged")
        linked = f", {totals.linked_files} linked" if totals.linked_files else ""  # linked: not counted as copied
        adopted = (f", of them {totals.adopted_files} left unsaved by an earlier attempt and verified by hash"
                   if totals.adopted_files else "")
        progress.status(f"staged {totals.files} files ({totals.copied_files} copied, {totals.reused_files} reused"
                        f"{adopted}{linked})")

    def _known_progress(self) -> dict[str, dict[str, Any]]:
        """What earlier epochs verified: the entries saved in the store (an epoch that finished
        staging), and the journals in the staging folders the record lists, newest epoch first."""
        known = self._r("read staging progress", self.store.staged.of_key, self.key)
        for i in range(len(self.products)):
            merge_journals(known, self._local_staging_dirs(i), skip_epoch=str(self.epoch))
        return known

    def _stage_product(self, i: int, known: dict[str, dict[str, Any]], totals: "StageTotals",
                       entries: dict[str, dict[str, Any]]) -> dict[str, str]:
        """Stage product ``i`` into this epoch's folder, adding its verified entries to ``entries``;
        returns the record fields to unset (the earlier epochs' folders, whose verified files moved
        here)."""
        m, view = self.products[i], self._view(i)
        staging_dir = self._local_staging(i)
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
        plan = plan_files(m, view["version"])
        self._check_sources_unchanged(plan, known)
        local_dirs = self._local_staging_dirs(i)
        old = {ep: d for ep, d in local_dirs.items() if ep != str(self.epoch)}

        def remove_old() -> None:  # what earlier epochs left once their verified files moved here
            for folder in old.values():
                remove_tree(folder)
        journal = ProgressJournal(staging_dir)
        try:
            stats = stage(plan, staging_dir, self.epoch, known, local_dirs,
                          m.link_mode, m.verify, self.req.worker, journal.append, self.guard.check,
                          threads=self.req.policy.threads, retry=self._r, tick=self.keeper.tick,
                          cleanup=remove_old if old else None, src_stats=self.source_stats)
        finally:
            journal.close()
        entries.update(stats.entries)
        self.guard.check()
        write_marker(staging_dir, {"key": self.key, "job_id": self.req.job_id, "task_id": str(self.req.task_id),
                                   "version": view["version"], "fingerprint": self.fingerprint,
                                   "epoch": self.epoch, "store_id": self._store_id(),
                                   "files": sorted(p.name for p in plan)})
        fsync_dir(staging_dir)
        totals.add(len(plan), stats)
        self.rec["files"] = {**self.rec.get("files", known), **stats.entries}
        for ep in old:
            view["staging_dirs"].pop(ep, None)
            (view.get("staging_rootless_dirs") or {}).pop(ep, None)
        return {self._field(i, f"{name}.{ep}"): "" for ep in old for name in ("staging_dirs", "staging_rootless_dirs")}

    def _integrate(self) -> None:
        """Prepare every gate integration of every product under the key (receipts saved), before the
        commit."""
        if not self.runner.gates():
            return
        self._set(R.INTEGRATING)
        self.runner.prepare_all(self.rec)

    def _deliver(self, rec: dict[str, Any]) -> list[str]:
        """Deliver pending notifications (after PUBLISHED); never fails the publish."""
        if not self.runner.notifiers():
            return []

        def mark(where: str, entry: dict[str, Any]) -> bool:  # where: outbox.{id} of product 0, or product i's
            result = self.store.records.col.update_one(
                {"_id": self.key, f"{where}.state": "pending"}, {"$set": {where: entry}})
            return result.modified_count == 1

        if not rec.get("files"):
            rec = {**rec, "files": self._files()}
        light = retry.RetryPolicy(attempts=2, budget=10.0)  # a notification never holds the attempt long

        def quick(operation: str, fn, *args):
            return retry.call(operation, light, fn, *args, stop_event=self.guard.stopping)

        return integrate.deliver_pending(self.integrations, self.products, self.key, rec, quick, mark,
                                         lambda parts: self.store.catalog.version_id(parts))

    def _commit(self, fresh: bool = False) -> dict[str, Any]:
        """Roll forward from COMMITTING: renames, documents, PUBLISHED. Every step idempotent.

        ``fresh``: this attempt staged the files and has just written COMMITTING (fenced): the
        record and the staged entries it holds in memory are the stored ones, so they are not
        read again (two round trips). A roll-forward reads both."""
        self.guard.check()
        if fresh:
            rec = dict(self.rec)
        else:
            rec = self._r("read the record", self.store.records.get, self.key)
            if rec is None or rec["epoch"] != self.epoch:
                raise Superseded(f"epoch {self.epoch} of {self.key} was superseded before the commit")
            rec["files"] = self._files()
        self.rec = rec
        products = range(len(self.products))
        for i in products:  # this worker's paths to the recorded folders (another mount of the same storage)
            view = self._view(i)
            view["final_dir"], view["staging_dir"] = self._local_final(i), self._local_staging(i)
            if not os.path.lexists(view["final_dir"]) and not (view["staging_dir"] and os.path.isdir(view["staging_dir"])):
                raise StorageInvisible(f"worker {self.req.worker} sees neither the staging folder "
                                       f"{view['staging_dir']} nor the final folder {view['final_dir']} of "
                                       f"v{view['version']:0>3} of {self._label(i)} (committing); nothing was changed")
        renamed = [self._r("rename the staging folder into place", move_into_place,
                           self._view(i)["staging_dir"], self._view(i)["final_dir"], self.key) for i in products]
        failpoints.hit("commit.rename")
        published: dict[str, Any] = {}
        for i in products:
            final = self._view(i)["final_dir"]
            if self.req.policy.protect_published:
                _make_read_only(final)
            # the storage's own clock at the commit: audit compares every published file's change
            # time with it (neither the publisher's nor the auditor's clock is involved)
            published.update(self._fields(i, committed_ctime_ns=os.stat(final).st_ctime_ns if os.name == "posix"
                                          else None, staging_dir=None, staging_dirs={}, staging_rootless_dirs={}))
        self.guard.check()
        inserted = self._r("insert the documents", self._insert_documents)
        failpoints.hit("commit.documents")
        self.runner.commit_all(rec)  # every product's gates, now that all versions are visible
        self._r("mark the reservation committed", self.store.reservations.mark_committed, self.key)
        published.update(commit_heroes(self))  # wrapper/hero.py: N becomes the hero (forward only)
        # one write: PUBLISHED, and this attempt's history entry closed with the lease released
        self._set(R.PUBLISHED, published_at=utcnow(), **published, **self._closing("published"))
        self._closed = True
        failpoints.hit("commit.published")
        stats = dict(rec.get("stage_stats") or {})
        stats.update(rename=renamed[0] if len(renamed) == 1 else renamed, documents_inserted=inserted)
        return stats

    def _entries(self) -> list[Any]:
        """What the catalogue makes visible: one entry per product, built from the manifest and the
        record only (the commit time too), so a roll-forward on any worker builds the same."""
        several = len(self.products) > 1
        entries = []
        for i, m in enumerate(self.products):
            view = {**self.rec, **self._view(i), "files": self.rec.get("files") or {}} if i else self.rec
            data = dict(getattr(m, "version_data", None) or {})
            entries.append(entry_from_manifest(m, self.key, view, plan_files(m, view["version"]), view["final_dir"],
                                               id_parts=(self.key, m.subset) if several else (self.key,), data=data,
                                               families=tuple(data.get("families") or ())))
        return entries

    def _insert_documents(self) -> int:
        """Every product's catalogue entries in one call: all visible together, or none (invariant
        10); deterministic ids, so a replay creates nothing twice."""
        try:
            return self.store.catalog.publish(self._entries())
        except CatalogNumberTaken as exc:  # in the moment after the last look: only a person can settle it
            raise NumberTakenAtCommit(
                f"{exc.cause}, after this publish's last look and past its point of no return: its files are in "
                "place but none of its versions is visible",
                f"remove or renumber the other client's version {exc.number} of {exc.product or 'the product'}, "
                "then requeue the task: it rolls forward and publishes") from None

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
        self.runner.compensate_all(rec)  # every product's, last first
        for i, m in enumerate(self.products):
            for folder in self._local_staging_dirs(i, rec).values():
                remove_tree(folder)
            if self._view(i, rec).get("final_dir"):
                _remove_empty_parents(os.path.dirname(self._local_final(i, rec)), m.publish_root)
        failpoints.hit("rollback.staging")
        self._r("release the reservation", self.store.reservations.release, self.key)
        failpoints.hit("rollback.reservation")
        self._r("forget the staged files", self.store.staged.drop, self.key)
        cleared: dict[str, Any] = {}
        for i in range(len(self.products)):
            cleared.update(self._fields(i, staging_dirs={}, staging_rootless_dirs={}, staging_dir=None))
        self._set(R.ROLLED_BACK, rolled_back_at=utcnow(), **cleared)

    # -- the version's folders, as this worker reaches them -------------------------------
    def _local(self, i: int, absolute: str | None, rootless_path: str | None) -> str | None:
        """A recorded folder on this worker: from its rootless form where the record has one
        (another worker may reach the same storage through another mount), else as recorded."""
        return resolve_rootless(rootless_path, self.products[i]) if rootless_path else absolute

    def _local_final(self, i: int = 0, rec: dict[str, Any] | None = None) -> str:
        view = self._view(i, rec)
        return self._local(i, view.get("final_dir"), view.get("final_rootless"))

    def _local_staging(self, i: int = 0, rec: dict[str, Any] | None = None) -> str | None:
        view = self._view(i, rec)
        return self._local(i, view.get("staging_dir"), view.get("staging_rootless"))

    def _local_staging_dirs(self, i: int = 0, rec: dict[str, Any] | None = None) -> dict[str, str]:
        view = self._view(i, rec)
        rootless_dirs = view.get("staging_rootless_dirs") or {}
        return {ep: self._local(i, d, rootless_dirs.get(ep)) for ep, d in (view.get("staging_dirs") or {}).items() if d}

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

    def _claim_final_folders(self, renumber: bool) -> None:
        """Before COMMITTING, every final folder must still be free on disk: a person or another
        tool may have created one since the reservation. Before the point of no return the
        reservation rules apply: a pinned number is a conflict; a free choice moves to the next free
        number (``renumber``), or, at the very last look, the attempt stops and the next one moves."""
        for i, m in enumerate(self.products):
            final = self._local_final(i)
            owner = self._folder_owner(final)
            catalog = self.store.catalog
            if owner is None and catalog.others_create_versions:  # an artist's publish may have taken it
                holder = catalog.version_holder(subject_of(m), int(self._view(i)["version"]))
                if holder is not None and holder != self.key:
                    owner = f"a version made by {holder or 'another client'} in the {catalog.name} catalogue"
            if owner is None:
                continue
            version = int(self._view(i)["version"])
            if m.version is not None:
                raise VersionConflict(f"version {version} of {m.subset}: folder {final} appeared while this publish "
                                      f"staged and belongs to {owner}; nothing was overwritten")
            if not renumber:
                raise TransientError(f"version folder {final} appeared while the integrations prepared and belongs "
                                     f"to {owner}; nothing was overwritten",
                                     "nothing: the next attempt takes the next free number")
            self._renumber(i, final, owner)

    def _renumber(self, i: int, taken: str, owner: str) -> None:
        """Move product ``i``, staged and uncommitted, to the next free number: release its
        reservation, reserve anew, rename the staged files (same folder: renames, no copies) and
        their entries."""
        m, old = self.products[i], int(self._view(i)["version"])
        ident = {"project": m.project_name, "asset": m.asset, "subset": m.subset}
        self.runner.unprepare(i, self.rec)  # gates an earlier attempt prepared at the old number
        self._r("release the reservation", self.store.records.fenced_write, self.key, self.epoch,
                lambda s: self.store.reservations.col.delete_many({"key": self.key, **ident, "state": "reserved"},
                                                                  session=s),
                self.store.supports_transactions())
        version = self._reserve_number(i)
        old_plan, new_plan = plan_files(m, old), plan_files(m, version)
        staging = self._local_staging(i)
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
                               "version": version, "fingerprint": self.fingerprint, "epoch": self.epoch,
                               "store_id": self._store_id(), "files": sorted(p.name for p in new_plan)})
        fsync_dir(staging)
        self._r("save staging progress", self.store.records.fenced_write, self.key, self.epoch,
                lambda s: self.store.staged.save(self.key, self.epoch, 10 ** 6 + i, moved, session=s),
                self.store.supports_transactions())
        final = version_dir(m, version)
        check_inside_root(final, m.publish_root)
        self._set(self.state, **self._fields(i, version=version, final_dir=final, final_rootless=rootless(final, m)))
        self.rec["files"] = {**(self.rec.get("files") or {}), **moved}
        progress.info(f"warning: v{old:0>3} of {m.subset} was taken after it was reserved ({owner}; its folder "
                      f"{taken}); this publish takes v{version:0>3} instead (nothing was overwritten)")

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
        """Still ours? A fenced write that succeeded less than a second ago (monotonic clock, which
        a paused process does not escape) answers that as well as a read would."""
        if time.monotonic() - self._fenced_at < FENCE_FRESH_SECONDS:
            return
        rec = self._r("read the record", self.store.records.get, self.key)
        if rec is None or rec["epoch"] != self.epoch:
            raise Superseded(f"epoch {self.epoch} of {self.key} was superseded by a newer attempt; this attempt "
                             "stops without changing anything")

    def _drop_own_staging(self) -> None:
        """A superseded attempt removes the staging folders it created, unless the record still lists
        them (then the newer attempt reuses them, and removes them when done)."""
        mine = [(i, (self._view(i).get("staging_dirs") or {}).get(str(self.epoch))) for i in range(len(self.products))]
        mine = [(i, folder) for i, folder in mine if folder and os.path.isdir(folder)]
        if not mine:
            return
        try:
            current = self.store.records.get(self.key) or {}
        except Exception:
            return  # cannot tell: leave it to the next attempt or to gc
        for i, folder in mine:
            if (self._view(i, current).get("staging_dirs") or {}).get(str(self.epoch)) != folder:
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
            exc.todo = _requeue_not_resubmit(exc.todo)
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

    def _closing(self, outcome: str) -> dict[str, Any]:
        """The fields Records.finish_attempt sets for a successful attempt, to go with another write."""
        prefix = f"attempts.{self.index}"
        return {f"{prefix}.end": utcnow(), f"{prefix}.outcome": outcome, f"{prefix}.error_class": None,
                f"{prefix}.message": None, f"{prefix}.error_type": None, "lease": None}

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
        self._fenced_at = time.monotonic()

    def _set(self, state: str, _unset: dict[str, str] | None = None, **fields: Any) -> None:
        update: dict[str, Any] = {"$set": {"state": state, **fields}}
        if _unset:
            update["$unset"] = _unset
        self._fenced(update, f"record state {state}")
        self.state = state
        self.rec["state"] = state
        for name, value in fields.items():  # the record this attempt holds stays the stored one
            _mirror(self.rec, name, value)
        for name in _unset or {}:
            _mirror(self.rec, name, None, remove=True)

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
