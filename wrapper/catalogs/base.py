"""The catalogue seam: where a publish's versions become visible, split from the state store.

Records, leases and reservations stay in MongoDB (the state store); the catalogue is where a
studio's tools find versions: OpenPype's MongoDB documents, or the AYON server. The split is
Powertools' persistence layer: the public methods of :class:`Catalog` are concrete and hold the
invariants (read before writing, all entries or none, never touch what atomic-publish did not
make), and a backend implements a few protected primitives.

Only frozen values cross the seam (:class:`Subject`, :class:`VersionEntry` ...): no Mongo
document, no ObjectId, no AYON entity dict goes either way, so that the lifecycle in
``publish.py`` is the same whatever the backend.

Vocabulary: the values use the manifest's names (asset, subset, family). The AYON backend maps
them to folder, product and product type in one place (``ayon.py``, ``folder_path``).
"""
from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

from ..errors import CatalogRefused


@dataclass(frozen=True)
class Subject:
    """What a version is a version of: one product of one folder of one project."""

    project_name: str
    project_code: str
    asset: str               # OpenPype: the asset's name; AYON: the folder's name (last part of its path)
    hierarchy: str           # the folder's parents, "/"-joined ("shots/sq01"; "" at the top)
    subset: str              # AYON: the product's name
    family: str              # AYON: the product's type
    task: str | None = None  # a task of the folder, or None

    @property
    def folder_path(self) -> str:
        """AYON's folder path: ``/shots/sq01/sh010``."""
        parts = [p for p in self.hierarchy.split("/") if p] + [self.asset]
        return "/" + "/".join(parts)

    def describe(self) -> str:
        """``proj /shots/sq01/sh010 renderMain``: for messages."""
        return f"{self.project_name} {self.folder_path} {self.subset}"


@dataclass(frozen=True, slots=True)  # slots: one per published file, 50,000 in a big publish
class PublishedFile:
    """One published file of a representation, as it is after the rename into the version folder."""

    name: str
    path: str           # absolute path on this worker
    rootless: str       # ``{root[work]}/...``: what the catalogue stores
    size: int
    hash: str
    hash_type: str = "xxh3_128"
    frame: str | None = None


@dataclass(frozen=True)
class Representation:
    """One representation of a version: its files, the template and the context tools resolve."""

    name: str
    ext: str
    files: tuple[PublishedFile, ...]
    template: str                                  # the manifest's template (OpenPype's data.template)
    context: Mapping[str, Any]                     # the context dict OpenPype writes (root, project, asset...)
    data_path: str                                 # absolute path of the first file (data.path / attrib.path)
    data: Mapping[str, Any] = field(default_factory=dict)  # extra representation data (colorspaceData)


@dataclass(frozen=True)
class VersionEntry:
    """One version a publish makes visible: built once from the manifest and the record, identical
    on every attempt of the key (the commit time comes from the record), so that a roll-forward
    writes what the first attempt would have written.

    ``id_parts`` is what every deterministic id of this entry derives from: ``(key,)`` for a
    one-product publish (the ids today's code writes), ``(key, subset)`` for one product of a
    multi-product publish."""

    key: str
    id_parts: tuple[str, ...]
    subject: Subject
    number: int
    job_id: str | None
    task_id: str | None
    fingerprint: str
    author: str
    comment: str
    source: str
    committed_at: dt.datetime
    frame_start: int | None
    frame_end: int | None
    roots: Mapping[str, Any]        # context.root: every named root on every platform
    final_dir: str
    representations: tuple[Representation, ...]
    machine: str = ""
    families: tuple[str, ...] = ()  # () -> (subject.family,)
    data: Mapping[str, Any] = field(default_factory=dict)  # fps, resolutionWidth/Height, pixelAspect,
    #                                 handleStart/End, step, intent, colorspace, host_name ...

    def all_families(self) -> list[str]:
        return list(self.families) or [self.subject.family]

    def marker(self) -> dict[str, Any]:
        """``data.atomic_publish``: how a catalogue entry names the publish that made it."""
        return {"key": self.key, "job_id": self.job_id, "task_id": self.task_id, "fingerprint": self.fingerprint}


@dataclass(frozen=True)
class CatalogVersion:
    """A version found in the catalogue (what ``audit`` reads)."""

    id: str
    number: int
    subject: Subject
    key: str                        # "" for a version atomic-publish did not make
    files: tuple[PublishedFile, ...]
    active: bool = True


@dataclass(frozen=True)
class DuplicateNumber:
    """Two or more (active) versions of one product share a number."""

    subject: Subject
    number: int
    version_ids: tuple[str, ...]


@dataclass(frozen=True)
class HeroEntry:
    """The hero of a product: it mirrors ``version`` (number and ids), its files are the hero
    folder's (``representations`` as the version's, with the hero paths). Built from the
    version's entry, so a roll-forward on any worker writes the same."""

    version: VersionEntry
    hero_dir: str
    representations: tuple[Representation, ...]

    @property
    def number(self) -> int:
        return self.version.number


@dataclass(frozen=True)
class CatalogHero:
    """A product's hero found in the catalogue (what ``audit`` reads): the number and id of the
    version it points at, and its files."""

    id: str
    number: int
    version_id: str
    key: str                        # "" for a hero atomic-publish did not make
    files: tuple[PublishedFile, ...]


class Catalog(ABC):
    """Where versions become visible. Every public method is idempotent: it may run again after a
    crash, on another worker, after an earlier attempt did all or part of it.

    Backends set ``name`` and implement the protected primitives below; the public methods hold
    the invariants and are not overridden:

    * a replay creates nothing twice: ``publish`` reads what exists (by deterministic ids) and
      creates only what is missing;
    * all entries of a call become visible together, or none (one transaction or one batch);
    * ``unpublish`` removes only what atomic-publish created for those entries;
    * failures are :class:`~atomic_publish.wrapper.errors.PublishError` classes the backend maps
      itself (``CatalogUnavailable`` transient, ``CatalogRefused`` permanent,
      ``CatalogAuthRefused``/``CatalogAuthRefusedHere``, ``CatalogNumberTaken``), never a client
      library's exception.
    """

    name: ClassVar[str] = ""
    #: Do other clients create versions directly in this catalogue (an artist's AYON publish)? Then
    #: the number is looked up again just before the point of no return, not only when reserved.
    others_create_versions: ClassVar[bool] = False

    @classmethod
    def from_environment(cls, *, client: Any = None, database: str | None = None,
                         environ: Mapping[str, str] | None = None) -> "Catalog":
        """Build the backend from the worker's settings (``registry.from_environment`` calls it).

        ``client`` is the state store's MongoClient, ``database`` the OpenPype database name; a
        backend that needs neither ignores them. Secrets come from the environment or the
        plugin's private file, never from arguments that reach a log. Raises PublishError
        classes for missing or invalid settings."""
        return cls()

    # -- public methods: the invariants ------------------------------------------------------

    def check_environment(self, projects: Sequence[str] = ()) -> None:
        """Pre-flight, before anything is written: the catalogue answers, accepts this worker's
        credentials, and each of ``projects`` exists.

        Idempotent: reads only. Returns None. Raises ``CatalogUnavailable`` (transient),
        ``CatalogAuthRefused`` / ``CatalogAuthRefusedHere`` or ``CatalogRefused`` (a missing project)."""
        self._check_environment(tuple(projects))

    def check_subjects(self, subjects: Sequence[Subject]) -> None:
        """Pre-flight, before anything is written: each product's place exists where the backend
        requires it (AYON: the folder and the task, which production creates; OpenPype creates
        missing parents, so nothing is required).

        Idempotent: reads only. Returns None. Raises ``CatalogRefused`` naming what is missing
        (permanent), ``CatalogUnavailable``."""
        self._check_subjects(tuple(subjects))

    def _check_subjects(self, subjects: tuple[Subject, ...]) -> None:
        """Backends that require existing parents override this."""

    def highest_version(self, subject: Subject) -> int:
        """The highest version number the product has (0 when it has none or does not exist), inactive
        versions included: the floor of the reservation, so that numbers other clients took are skipped.

        Idempotent: reads only. Returns an int >= 0. Raises ``CatalogUnavailable``."""
        return max(0, int(self._highest_number(subject) or 0))

    def version_holder(self, subject: Subject, number: int) -> str | None:
        """Who holds version ``number`` of the product: None (free), "" (a version made outside
        atomic-publish) or the atomic-publish key that made it. An inactive AYON version counts
        as taken.

        Idempotent: reads only. Raises ``CatalogUnavailable``."""
        found = self._find_version(subject, number)
        if found is None:
            return None
        return found.key or ""

    def publish(self, entries: Sequence[VersionEntry]) -> int:
        """Make every entry visible together, or none: one transaction (OpenPype, where the server has
        them) or one operations batch (AYON). Parents are reused when they exist (matched by name)
        and created when missing, where the backend allows it.

        Idempotent under the entries' keys: what exists already (found by its deterministic id) is
        not created again, so a replay after a crash, a lost answer or a roll-forward on another
        worker creates nothing twice. Returns how many entities it created (0 for a replay).
        Raises ``CatalogNumberTaken`` when another client holds an entry's number (nothing is
        visible then), ``CatalogUnavailable``, ``CatalogRefused``."""
        entries = list(entries)
        if not entries:
            return 0
        self._check_entries(entries)
        return int(self._write(entries))

    def unpublish(self, key: str, id_parts_list: Sequence[tuple[str, ...]], projects: Sequence[str] = ()) -> int:
        """Remove what atomic-publish created for those entries of ``key`` (the rollback): their
        versions and representations, and a product (subset) only where atomic-publish created it
        and no other version uses it. A version another client or another key made is never
        touched. ``projects``: where to look (AYON needs them; OpenPype looks everywhere without).

        Idempotent: what is gone already is skipped. Returns how many entities it removed.
        Raises ``CatalogUnavailable``, ``CatalogRefused``."""
        return int(self._remove(key, [tuple(p) for p in id_parts_list], tuple(projects)))

    def version_id(self, id_parts: tuple[str, ...]) -> str:
        """The deterministic id of the version of an entry (what integrations receive as
        ``version_document_id``), a string; the same on every worker and every attempt.

        Pure: no I/O. Raises nothing for a valid ``id_parts``."""
        if not id_parts or not all(isinstance(p, str) and p for p in id_parts):
            raise ValueError(f"id_parts must be non-empty strings, got {id_parts!r}")
        return self._version_id(tuple(id_parts))

    def versions_of_key(self, key: str, subjects: Sequence[Subject] = ()) -> list[CatalogVersion]:
        """The versions ``key`` made visible, with their files (rootless path, size, hash): for
        ``audit``. ``subjects``: the record's products (AYON cannot query versions by their data,
        so it needs them; OpenPype searches every project without).

        Idempotent: reads only. Raises ``CatalogUnavailable``."""
        return sorted(self._find_by_key(key, tuple(subjects)), key=lambda v: (v.subject.subset, v.number))

    def duplicate_numbers(self, projects: Sequence[str] = ()) -> list[DuplicateNumber]:
        """Products with two active versions of one number (``audit``); empty ``projects``: every
        project the backend can list.

        Idempotent: reads only. Raises ``CatalogUnavailable``."""
        return list(self._duplicates(tuple(projects)))

    #: Can this backend write hero versions (``write_hero``)? A publish whose product has a hero
    #: refuses in the pre-flight where it cannot.
    supports_hero: ClassVar[bool] = False

    def write_hero(self, hero: HeroEntry) -> bool:
        """Point the product's hero entry at ``hero.version`` with ``hero``'s files (OpenPype: the
        ``hero_version`` document and its representations; AYON: the hero version entity, with the
        negative number, and its representations). The hero's ids derive from the product, so
        there is one hero per product; its representations are updated in place and those the new
        version lacks are removed. In one transaction or batch where the backend has one.

        Only forward: a hero that points at a higher number already is left as it is (returns
        False); the backend compares the number it replaces inside its own transaction or batch,
        so no read here can go stale before the write. Idempotent: writing the same hero again
        changes nothing visible (returns True). Raises ``CatalogUnavailable``, ``CatalogRefused``
        (also for a backend without heroes)."""
        if not self.supports_hero:
            raise CatalogRefused(f"the {self.name} catalogue has no hero versions; turn the hero off for this "
                                 "product type (ATOMIC_PUBLISH_HERO, studio settings hero.product_types)")
        return bool(self._write_hero(hero))

    def hero_of(self, subject: Subject) -> CatalogHero | None:
        """The product's hero as the catalogue has it, or None (``audit``). Idempotent: reads only."""
        if not self.supports_hero:
            return None
        return self._find_hero(subject)

    def _write_hero(self, hero: HeroEntry) -> bool:
        """Backends with ``supports_hero``: write the hero entry and its representations unless the
        hero points at a higher number already (then write nothing and return False)."""
        raise NotImplementedError

    def _find_hero(self, subject: Subject) -> CatalogHero | None:
        """Backends with ``supports_hero`` read the product's hero."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the backend's connections (idempotent)."""

    # -- checks shared by every backend ------------------------------------------------------

    @staticmethod
    def _check_entries(entries: Sequence[VersionEntry]) -> None:
        """One call publishes distinct products, each under its own ids: two entries of one product
        or with the same ids would make the call refuse itself half-way."""
        seen_ids: set[tuple[str, ...]] = set()
        seen_subjects: set[tuple[str, str, str]] = set()
        for entry in entries:
            if entry.id_parts in seen_ids:
                raise ValueError(f"two entries share the ids {entry.id_parts!r}")
            s = entry.subject
            which = (s.project_name, s.folder_path.lower(), s.subset.lower())
            if which in seen_subjects:
                raise ValueError(f"two entries publish the same product {s.describe()}")
            if entry.id_parts[0] != entry.key or entry.number < 1:
                raise ValueError(f"entry of {entry.key!r}: id_parts must start with the key and the number be >= 1")
            seen_ids.add(entry.id_parts)
            seen_subjects.add(which)

    # -- protected primitives: one set per backend --------------------------------------------

    @abstractmethod
    def _check_environment(self, projects: tuple[str, ...]) -> None:
        """Reach the catalogue, check the credentials and that ``projects`` exist."""

    @abstractmethod
    def _find_subject(self, subject: Subject) -> Any | None:
        """The backend's handle of the product (its id), or None when the folder or product is missing."""

    @abstractmethod
    def _find_version(self, subject: Subject, number: int) -> CatalogVersion | None:
        """The version ``number`` of the product, active or not, or None."""

    @abstractmethod
    def _highest_number(self, subject: Subject) -> int:
        """The highest non-negative version number of the product (inactive ones included), 0 if none."""

    @abstractmethod
    def _find_by_key(self, key: str, subjects: tuple[Subject, ...]) -> list[CatalogVersion]:
        """Every version whose atomic-publish marker names ``key`` (among ``subjects``' when given)."""

    @abstractmethod
    def _write(self, entries: list[VersionEntry]) -> int:
        """Create what is missing of the entries and their parents, atomically; return how many."""

    @abstractmethod
    def _remove(self, key: str, id_parts_list: list[tuple[str, ...]], projects: tuple[str, ...]) -> int:
        """Delete what ``key`` created for those entries; return how many entities went."""

    @abstractmethod
    def _version_id(self, id_parts: tuple[str, ...]) -> str:
        """The backend's deterministic version id."""

    @abstractmethod
    def _duplicates(self, projects: tuple[str, ...]) -> list[DuplicateNumber]:
        """Active versions sharing a number within one product."""
