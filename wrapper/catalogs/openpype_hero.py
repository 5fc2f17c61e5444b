"""OpenPype's hero version: the ``hero_version`` document and its representations.

OpenPype 3 keeps one ``hero_version`` document per subset (``version_id`` names the version it
mirrors) and representation documents parented to it, whose files are the hero folder's.
``IntegrateHeroVersion`` replaces the document in place keeping its ``_id``; so does this: the
subset's existing hero document keeps its id (one OpenPype made before the studio moved to
atomic-publish too), a first hero gets an id derived from the product (project, asset, subset):
one hero per subset on every worker and attempt. The number it mirrors is kept in ``data.atomic_publish.version`` too, so that the
forward-only check needs no second lookup.
"""
from __future__ import annotations

from typing import Any

from pymongo.collection import Collection

from ...idempotency.keys import object_id
from .base import CatalogHero, HeroEntry, PublishedFile, Subject

__all__ = ["find_hero", "hero_documents", "write_hero"]


def _hero_id(subject: Subject) -> Any:
    return object_id("hero_version", subject.project_name, subject.asset, subject.subset)


def hero_documents(hero: HeroEntry, subset_id: Any, hero_id: Any = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``hero_version`` document and one representation document per representation
    (``hero_id``: the subset's existing hero document's, default the product-derived one)."""
    entry = hero.version
    s = entry.subject
    hero_id = hero_id if hero_id is not None else _hero_id(s)
    doc = {"_id": hero_id, "type": "hero_version", "schema": "openpype:hero_version-1.0", "parent": subset_id,
           "version_id": object_id("version", *entry.id_parts),
           "data": {"atomic_publish": {**entry.marker(), "version": entry.number}}}
    reps = []
    sites = [{"name": "studio", "created_dt": entry.committed_at}]  # the same for every file: one object
    for rep in hero.representations:
        context = {k: v for k, v in _plain(rep.context).items() if k != "version"}  # a hero has no number
        files = [{"_id": object_id("hero_file", s.project_name, s.asset, s.subset, f.name), "path": f.rootless,
                  "size": f.size, "hash": f.hash, "hash_type": f.hash_type, "sites": sites} for f in rep.files]
        data: dict[str, Any] = {"path": rep.data_path, "template": rep.template}
        data.update({k: v for k, v in rep.data.items() if k not in data})
        reps.append({"_id": object_id("hero_representation", s.project_name, s.asset, s.subset, rep.name),
                     "type": "representation", "schema": "openpype:representation-2.0", "parent": hero_id,
                     "name": rep.name, "data": data, "context": context, "files": files})
    return doc, reps


def _plain(value: Any) -> Any:
    if isinstance(value, dict) or hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _number(doc: dict[str, Any] | None) -> int:
    return int((((doc or {}).get("data") or {}).get("atomic_publish") or {}).get("version") or 0)


def write_hero(col: Collection, hero: HeroEntry, subset_id: Any, session) -> bool:
    """Replace the hero's documents (representations first, the hero document last: on a server
    without transactions the hero points at the new version only once its files are listed).
    Only forward: False, and nothing written, when the hero points at a higher number already."""
    s = hero.version.subject
    current = col.find_one({"_id": _hero_id(s)}, session=session) \
        or col.find_one({"type": "hero_version", "parent": subset_id}, session=session)  # OpenPype's own
    doc, reps = hero_documents(hero, subset_id, current["_id"] if current else None)
    if current is not None and _number(current) > hero.number:
        return False
    for rep in reps:
        col.replace_one({"_id": rep["_id"]}, rep, upsert=True, session=session)
    col.delete_many({"type": "representation", "parent": doc["_id"], "_id": {"$nin": [r["_id"] for r in reps]}},
                    session=session)
    col.replace_one({"_id": doc["_id"]}, doc, upsert=True, session=session)
    return True


def find_hero(col: Collection, subject: Subject, subset_id: Any) -> CatalogHero | None:
    """The subset's hero: its own (the product-derived id) or one OpenPype made (any ``hero_version``)."""
    doc = col.find_one({"_id": _hero_id(subject)}) or col.find_one({"type": "hero_version", "parent": subset_id})
    if doc is None:
        return None
    number = _number(doc)
    if not number:
        version = col.find_one({"_id": doc.get("version_id")}, projection={"name": 1}) or {}
        number = int(version.get("name") or 0)
    files = tuple(PublishedFile(name=f["path"].replace("\\", "/").rsplit("/", 1)[-1], path="", rootless=f["path"],
                                size=f.get("size", 0), hash=f.get("hash", ""), hash_type=f.get("hash_type", ""))
                  for rep in col.find({"type": "representation", "parent": doc["_id"]}) for f in rep.get("files") or [])
    key = ((doc.get("data") or {}).get("atomic_publish") or {}).get("key", "")
    return CatalogHero(id=str(doc["_id"]), number=number, version_id=str(doc.get("version_id")), key=key, files=files)
