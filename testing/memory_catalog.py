"""An in-memory catalogue for lifecycle tests (Powertools' ``MockPersistenceLayer``).

It is a real backend of :class:`~atomic_publish.wrapper.catalogs.base.Catalog`, not a mock: the
base class's invariants run on it unchanged, and it keeps the rules the real backends keep
(deterministic ids, all entries of a call or none, numbers unique per product among active
versions, inactive versions count as taken, rollback removes only what the key created). What it
cannot have, it simulates on request: a server that is down (``down = True``), versions made by
another client (``add_foreign_version``), folders production has not created
(``require_folders``).
"""
from __future__ import annotations

import copy
import hashlib
import threading
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable

from ..wrapper.catalogs.base import (Catalog, CatalogHero, CatalogVersion, DuplicateNumber, HeroEntry, Subject,
                                     VersionEntry)
from ..wrapper.errors import CatalogNumberTaken, CatalogRefused, CatalogUnavailable


@dataclass
class _Version:
    id: str
    number: int
    key: str
    active: bool
    subject: Subject
    entry: VersionEntry | None = None
    representations: list[str] = field(default_factory=list)


def memory_id(role: str, *parts: str) -> str:
    return hashlib.sha256("\x1f".join((role, *parts)).encode()).hexdigest()[:32]


class MemoryCatalog(Catalog):
    """Products by (project, folder path, subset), each with its versions.

    ``require_folders``: None (every folder exists) or the folder paths per project that exist;
    a publish into another folder is refused like the AYON backend refuses it."""

    name: ClassVar[str] = "memory"

    def __init__(self, require_folders: dict[str, Iterable[str]] | None = None):
        self.lock = threading.Lock()
        self.products: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.versions: dict[str, _Version] = {}
        self.representations: dict[str, dict[str, Any]] = {}
        self.folders = None if require_folders is None else {p: set(f) for p, f in require_folders.items()}
        self.down = False
        self.writes = 0  # calls of _write that created something (a test surface)

    # -- what tests arrange ------------------------------------------------------------------

    def add_foreign_version(self, subject: Subject, number: int, active: bool = True) -> str:
        """A version another client made (no atomic-publish key)."""
        with self.lock:
            product = self._product(subject, create=True, key="")
            vid = memory_id("foreign", subject.project_name, subject.folder_path, subject.subset, str(number),
                            str(len(self.versions)))
            self.versions[vid] = _Version(vid, number, "", active, subject)
            product["versions"].append(vid)
            return vid

    def visible(self, subject: Subject) -> list[tuple[int, str, bool]]:
        """(number, key, active) of the product's versions."""
        with self.lock:
            product = self.products.get(self._where(subject))
            return sorted((self.versions[v].number, self.versions[v].key, self.versions[v].active)
                          for v in (product or {}).get("versions", []))

    # -- primitives ----------------------------------------------------------------------------

    def _up(self) -> None:
        if self.down:
            raise CatalogUnavailable("the memory catalogue is down (simulated); nothing of it is visible")

    @staticmethod
    def _where(subject: Subject) -> tuple[str, str, str]:
        return (subject.project_name, subject.folder_path.lower(), subject.subset.lower())

    def _product(self, subject: Subject, create: bool = False, key: str = "") -> dict[str, Any] | None:
        where = self._where(subject)
        if where not in self.products and create:
            self.products[where] = {"id": memory_id("product", *where), "created_by": key, "versions": [],
                                    "family": subject.family}
        return self.products.get(where)

    def _check_environment(self, projects: tuple[str, ...]) -> None:
        self._up()
        if self.folders is not None:
            for project in projects:
                if project not in self.folders:
                    raise CatalogRefused(f"the memory catalogue has no project {project!r}")

    def _find_subject(self, subject: Subject) -> str | None:
        self._up()
        product = self._product(subject)
        return product["id"] if product else None

    def _find_version(self, subject: Subject, number: int) -> CatalogVersion | None:
        self._up()
        with self.lock:
            product = self._product(subject) or {"versions": []}
            found = sorted((self.versions[v] for v in product["versions"] if self.versions[v].number == number),
                           key=lambda v: not v.active)
            return self._view(found[0]) if found else None

    def _highest_number(self, subject: Subject) -> int:
        self._up()
        with self.lock:
            product = self._product(subject) or {"versions": []}
            return max((self.versions[v].number for v in product["versions"]), default=0)

    def _view(self, v: _Version) -> CatalogVersion:
        files = tuple(f for r in (v.entry.representations if v.entry else ()) for f in r.files)
        return CatalogVersion(v.id, v.number, v.subject, v.key, files, v.active)

    def _find_by_key(self, key: str, subjects: tuple[Subject, ...]) -> list[CatalogVersion]:
        self._up()
        with self.lock:
            return [self._view(v) for v in self.versions.values() if v.key == key]

    def _duplicates(self, projects: tuple[str, ...]) -> list[DuplicateNumber]:
        self._up()
        out = []
        with self.lock:
            for (project, _f, _s), product in self.products.items():
                if projects and project not in projects:
                    continue
                by_number: dict[int, list[_Version]] = {}
                for vid in product["versions"]:
                    if self.versions[vid].active:
                        by_number.setdefault(self.versions[vid].number, []).append(self.versions[vid])
                out += [DuplicateNumber(vs[0].subject, n, tuple(v.id for v in vs))
                        for n, vs in sorted(by_number.items()) if len(vs) > 1]
        return out

    def _version_id(self, id_parts: tuple[str, ...]) -> str:
        return memory_id("version", *id_parts)

    def _write(self, entries: list[VersionEntry]) -> int:
        self._up()
        with self.lock:
            snapshot = copy.deepcopy((self.products, self.versions, self.representations))
            try:
                created = sum(self._write_one(e) for e in entries)
            except BaseException:
                self.products, self.versions, self.representations = snapshot  # all or nothing
                raise
            self.writes += bool(created)
            return created

    def _write_one(self, entry: VersionEntry) -> int:
        s = entry.subject
        if self.folders is not None and s.folder_path not in self.folders.get(s.project_name, ()):
            raise CatalogRefused(f"folder {s.folder_path} does not exist in project {s.project_name!r}")
        created = 0
        if self._product(s) is None:
            self._product(s, create=True, key=entry.key)
            created += 1
        product = self._product(s)
        vid = self._version_id(entry.id_parts)
        if vid in self.versions:
            return created
        if any(self.versions[v].number == entry.number for v in product["versions"]):
            raise CatalogNumberTaken(f"version {entry.number} of {s.describe()} is taken", entry.number, s.subset)
        version = _Version(vid, entry.number, entry.key, True, s, entry)
        for rep in entry.representations:
            rid = memory_id("representation", *entry.id_parts, rep.name)
            self.representations[rid] = {"version": vid, "name": rep.name}
            version.representations.append(rid)
        self.versions[vid] = version
        product["versions"].append(vid)
        return created + 1 + len(version.representations)

    def _remove(self, key: str, id_parts_list: list[tuple[str, ...]], projects: tuple[str, ...]) -> int:
        self._up()
        removed = 0
        with self.lock:
            for parts in id_parts_list:
                version = self.versions.get(self._version_id(parts))
                if version is None or version.key != key:
                    continue
                for rid in version.representations:
                    removed += self.representations.pop(rid, None) is not None
                del self.versions[version.id]
                removed += 1
                where = self._where(version.subject)
                product = self.products[where]
                product["versions"].remove(version.id)
                if not product["versions"] and product["created_by"] == key:
                    del self.products[where]
                    removed += 1
        return removed

    # -- the hero version: one per product, replaced in place ------------------------------------
    supports_hero: ClassVar[bool] = True

    def _write_hero(self, hero: HeroEntry) -> bool:
        self._up()
        s = hero.version.subject
        with self.lock:
            product = self.products.get(self._where(s))
            if product is None:
                raise CatalogRefused(f"product {s.describe()} does not exist; nothing was written")
            if product.get("hero") is not None and product["hero"].number > hero.number:
                return False
            files = tuple(f for rep in hero.representations for f in rep.files)
            product["hero"] = CatalogHero(id=memory_id("hero", *self._where(s)), number=hero.number,
                                          version_id=self._version_id(hero.version.id_parts), key=hero.version.key,
                                          files=files)
        return True

    def _find_hero(self, subject: Subject) -> CatalogHero | None:
        self._up()
        with self.lock:
            return (self.products.get(self._where(subject)) or {}).get("hero")
