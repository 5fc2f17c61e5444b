"""AYON's hero version: the hero version entity (a version with the negative number) and its
representations, written through the real ``ayon-python-api`` client.

AYON keeps one hero version per product: ``new_hero_version_entity`` gives it ``-abs(version)``
of the version it mirrors, and ``IntegrateHeroVersion`` updates that entity in place when the
hero moves. So does this: the hero keeps its id (ours, ``uuid5`` of the product, or the one
AYON's own integrator created before the studio moved to atomic-publish), its number becomes
``-N``, its data and attributes become version N's, and its representations are updated in place
by name (created where missing, deleted where version N has none), all in ONE operations batch,
``canFail=false``: the server applies it in one transaction, so a reader never finds the hero
pointing at N with N-1's files.
"""
from __future__ import annotations

from typing import Any

from ..errors import CatalogRefused
from .base import CatalogHero, HeroEntry, PublishedFile, Subject

__all__ = ["find_hero", "write_hero"]

HERO_FIELDS = {"id", "version", "productId", "data"}
_UPDATABLE = ("version", "taskId", "author", "status", "attrib", "data")


def _task_id(cat: Any, subject: Subject) -> str | None:
    if not subject.task:
        return None
    folder = cat._folder(subject)
    task = cat.con.get_task_by_name(subject.project_name, folder["id"], subject.task, fields={"id"}) if folder else None
    return task["id"] if task else None


def write_hero(cat: Any, hero: HeroEntry, entity_id: Any) -> bool:
    """One batch: the hero version entity created or updated to ``-N``, its representations.
    False, and nothing sent, when the hero mirrors a higher number already (only forward; the
    hero step's hold in the state store keeps other atomic-publish writers out meanwhile)."""
    entry = hero.version
    s, project = entry.subject, entry.subject.project_name
    product_id = cat._find_subject(s)
    if product_id is None:
        raise CatalogRefused(f"AYON product {s.describe()} does not exist, so v{entry.number:0>3} the hero should "
                             "mirror is not visible; nothing was written",
                             "run `atomic-publish audit`: the version is missing in AYON")
    con = cat.con
    existing = con.get_hero_version_by_product_id(project, product_id, fields=HERO_FIELDS)
    if existing is not None and abs(int(existing["version"])) > int(entry.number):
        return False
    hero_id = existing["id"] if existing else entity_id("hero_version", project, product_id)
    body = cat._version_entity(entry, product_id, _task_id(cat, s), cat._version_attributes())
    body["id"], body["version"] = hero_id, -abs(int(entry.number))
    body["data"] = {**(body.get("data") or {}),
                    "atomic_publish": {**entry.marker(), "version": entry.number,
                                       "version_id": cat._version_id(entry.id_parts)}}
    ops: list[dict[str, Any]] = []
    if existing is None:
        ops.append({"type": "create", "entityType": "version", "entityId": hero_id, "data": body})
    else:
        ops.append({"type": "update", "entityType": "version", "entityId": hero_id,
                    "data": {k: body[k] for k in _UPDATABLE if body.get(k) is not None}})
    have = {r["name"]: r["id"] for r in con.get_representations(project, version_ids=[hero_id], active=None,
                                                                fields={"id", "name"})} if existing else {}
    for rep in hero.representations:
        rep_id = have.get(rep.name) or entity_id("hero_representation", project, product_id, rep.name)
        data = cat._representation_entity(entry, rep, rep_id, hero_id)
        if rep.name in have:
            ops.append({"type": "update", "entityType": "representation", "entityId": rep_id,
                        "data": {k: data[k] for k in ("files", "attrib", "data") if k in data}})
        else:
            ops.append({"type": "create", "entityType": "representation", "entityId": rep_id, "data": data})
    wanted = {rep.name for rep in hero.representations}
    ops += [{"type": "delete", "entityType": "representation", "entityId": rid}
            for name, rid in have.items() if name not in wanted]
    status = con.send_background_batch_operations(project, ops, can_fail=False, wait=True, raise_on_fail=False)
    result = status.get("result") or {}
    if not result.get("success"):
        failed = next((o for o in result.get("operations") or [] if not o.get("success")), {})
        raise CatalogRefused(f"the AYON server {cat.url} refused the hero of {s.describe()} (v{entry.number:0>3}): "
                             f"{failed.get('errorCode') or 'no code'}: {str(failed.get('detail') or '')[:200]}; "
                             "nothing of it was kept")
    return True


def find_hero(cat: Any, subject: Subject) -> CatalogHero | None:
    """The product's hero version, with the files of its representations, or None."""
    product_id = cat._find_subject(subject)
    if product_id is None:
        return None
    hero = cat.con.get_hero_version_by_product_id(subject.project_name, product_id, fields=HERO_FIELDS)
    if hero is None:
        return None
    marker = (hero.get("data") or {}).get("atomic_publish") or {}
    files = []
    for rep in cat.con.get_representations(subject.project_name, version_ids=[hero["id"]], active=None,
                                           fields={"id", "files", "data"}):
        hashes = ((rep.get("data") or {}).get("atomic_publish") or {}).get("hashes") or {}
        for f in rep.get("files") or []:
            own = hashes.get(f.get("name")) or {}
            files.append(PublishedFile(name=f.get("name", ""), path="", rootless=f["path"], size=int(f.get("size") or 0),
                                       hash=own.get("hash") or f.get("hash") or "",
                                       hash_type=own.get("hash_type") or f.get("hashType") or ""))
    return CatalogHero(id=hero["id"], number=abs(int(hero["version"])), version_id=marker.get("version_id", ""),
                       key=marker.get("key", ""), files=tuple(files))
