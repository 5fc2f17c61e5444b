"""`atomic-publish audit`, hero versions (invariant 11, docs/hero.md): for every product whose hero
atomic-publish moves (the store's ``heroes`` collection), unless a publish is moving it right now:

* the hero mirrors the highest published version that asked for a hero, made by the key the
  store names, nothing is left over from an interrupted move, and beside it at most the one
  ``previous`` folder (an older version's content, kept until the next move);
* the hero folder holds exactly that version's files (same size, same content), under the hero
  names, and its marker names that version;
* the catalogue's hero entry points at that version and lists the hero folder's files.

Hardlinked hero files share their inode with the version's files, so every hero move changes
those files' change time (the link count): ``hero_link_change`` tells that apart from a
modification by the storage times the store recorded for each move (``touched``).
"""
from __future__ import annotations

import hashlib
import os
from typing import Any

from ..idempotency import records as R
from ..idempotency.records import lease_is_live, utcnow
from .commit import MARKER
from .hero_swap import HERO_MARKER, leftovers, marker_version, read_hero_marker

__all__ = ["check_heroes", "hero_link_change"]

INVARIANT = 11


def hero_link_change(auditor: Any, view: dict[str, Any], doc_file: dict[str, Any], st: os.stat_result,
                     committed_ns: int) -> bool:
    """A published file changed after the commit only by a hero's hardlink coming or going: its
    modification time before the commit, its change time no later than the last hero move that
    linked or unlinked this version's files (the store's ``touched``, in the storage's clock), or
    any time while a content folder of this version lies beside the hero from a move or gc cut
    short (its links being made or removed, not yet recorded; audit reports that folder under
    invariant 11). A change after that is still reported, with or without hashes."""
    if st.st_mtime_ns > committed_ns:
        return False
    subject = view.get("subset") or {}
    ident = (subject.get("project"), subject.get("asset"), subject.get("subset"))
    cache = auditor.__dict__.setdefault("_hero_touched", {})
    if ident not in cache:
        doc = auditor.store.heroes.get(*ident) or {}
        folder = doc.get("hero_dir") or ""
        cut_short = {marker_version(p) for p in leftovers(folder)} if folder else set()
        cache[ident] = (doc.get("touched") or {}, cut_short)
    touched, cut_short = cache[ident]
    number = int(view.get("version") or 0)
    return number in cut_short or st.st_ctime_ns <= int(touched.get(str(number)) or 0)


def _digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _views_by_product(store: Any) -> dict[tuple, list[tuple[dict[str, Any], dict[str, Any]]]]:
    """(record, product view) of every published product whose commit asked for a hero, by
    product: one scan of the records for every hero."""
    out: dict[tuple, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for rec in store.records.col.find({"state": R.PUBLISHED}, projection={"attempts": 0}):
        for view in R.product_views(rec):
            s = view.get("subset") or {}
            if view.get("hero"):
                out.setdefault((s.get("project"), s.get("asset"), s.get("subset")), []).append((rec, view))
    return out


def check_heroes(auditor: Any) -> None:
    """Invariant 11 over every hero of the store (see the module docstring)."""
    heroes = getattr(auditor.store, "heroes", None)
    if heroes is None:
        return
    docs = heroes.scan()
    views = _views_by_product(auditor.store) if docs else {}
    for doc in docs:
        auditor.report.checked["heroes"] = auditor.report.checked.get("heroes", 0) + 1
        _check_one(auditor, doc, views.get((doc.get("project"), doc.get("asset"), doc.get("subset")), []))


def _check_one(auditor: Any, doc: dict[str, Any], views: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    report, store = auditor.report, auditor.store
    ident = (doc.get("project"), doc.get("asset"), doc.get("subset"))
    name = "/".join(str(p) for p in ident)
    if lease_is_live(doc.get("holder"), utcnow()):
        return  # a publish is moving it now: judged when it is done
    folder = doc.get("hero_dir") or ""
    number, key = int(doc.get("version") or 0), doc.get("key")
    found = leftovers(folder) if folder else []
    if found:
        report.add(INVARIANT, key, f"hero of {name}: {len(found)} folder(s) of an interrupted move beside {folder} "
                                   f"({', '.join(os.path.basename(p) for p in found)})",
                   "run the task of the publish named by the store's hero document again, or `atomic-publish gc`")
    previous = leftovers(folder, ("previous",)) if folder else []
    versions = [int((read_hero_marker(p) or {}).get("version") or 0) for p in previous]
    if len(previous) > 1 or any(v >= number or v < 1 for v in versions):
        report.add(INVARIANT, key, f"hero of {name}: beside {folder} the previous content should be one folder "
                                   f"of a version below v{number:0>3}, found {len(previous)} (versions {versions})",
                   "run `atomic-publish gc`, or remove the extra ones after checking no reader uses them")
    highest = max((int(v.get("version") or 0) for _, v in views), default=0)
    target = int(doc.get("target") or 0)
    if target > number:
        rec = store.records.get(doc.get("target_key")) or {}
        if rec.get("state") != R.COMMITTING:
            report.add(INVARIANT, doc.get("target_key"), f"hero of {name}: the move to v{target:0>3} stopped and its "
                                                         f"publish is {rec.get('state') or 'gone'}",
                       "run that publish's task again (it rolls forward and finishes the hero)")
        return  # a COMMITTING publish finishes the move
    if highest > number:
        report.add(INVARIANT, key, f"hero of {name} mirrors v{number:0>3}, but v{highest:0>3} is published with a hero",
                   "run the task of the highest version again; a hero only moves forward")
    if not number:
        return
    mine = [(rec, v) for rec, v in views if rec["_id"] == key and int(v.get("version") or 0) == number]
    if not mine:
        report.add(INVARIANT, key, f"hero of {name} names v{number:0>3} of {key}, which is not a published version "
                                   "with a hero", "investigate: the store's heroes document and the records disagree")
        return
    rec, view = mine[0]
    _check_folder(auditor, name, key, number, folder, view.get("final_dir") or "")
    _check_catalog(auditor, name, key, number, view)


def _check_folder(auditor: Any, name: str, key: str, number: int, folder: str, final: str) -> None:
    report = auditor.report
    if not os.path.isdir(folder):
        report.add(INVARIANT, key, f"hero folder {folder} of {name} is missing (it should mirror v{number:0>3})",
                   "run `atomic-publish gc` (it finishes an interrupted move), or publish the product again")
        return
    marker = read_hero_marker(folder) or {}
    if int(marker.get("version") or 0) != number:
        report.add(INVARIANT, key, f"hero folder {folder} of {name} holds v{marker.get('version')} where the store "
                                   f"says v{number:0>3}", "run the task of the hero version again")
        return
    expected = {e.name.replace(f"_v{number:0>3}", "_hero", 1): e.path for e in os.scandir(final)
                if e.is_file() and e.name != MARKER} if os.path.isdir(final) else {}
    present = {e.name: e.path for e in os.scandir(folder) if e.is_file() and e.name != HERO_MARKER}
    if set(present) != set(expected):
        extra, missing = sorted(set(present) - set(expected)), sorted(set(expected) - set(present))
        report.add(INVARIANT, key, f"hero folder {folder} of {name} does not hold exactly v{number:0>3}'s files "
                                   f"(extra: {extra[:3]}, missing: {missing[:3]})",
                   "run the task of the hero version again after removing the hero's marker; never edit it by hand")
        return
    for hero_name, path in present.items():
        auditor.report.checked["hero_files"] = auditor.report.checked.get("hero_files", 0) + 1
        src, dst = os.stat(expected[hero_name]), os.stat(path)
        if (src.st_dev, src.st_ino) == (dst.st_dev, dst.st_ino):
            continue
        if src.st_size != dst.st_size or (auditor.verify_hashes and _digest(path) != _digest(expected[hero_name])):
            report.add(INVARIANT, key, f"hero file {path} of {name} differs from v{number:0>3}'s {expected[hero_name]}",
                       "restore the hero by running the version's task again after removing the hero's marker")


def _check_catalog(auditor: Any, name: str, key: str, number: int, view: dict[str, Any]) -> None:
    catalog = auditor.catalog
    if catalog is None or not getattr(catalog, "supports_hero", False):
        return
    hero = catalog.hero_of(auditor._subject(view))
    if hero is None:
        auditor.report.add(INVARIANT, key, f"hero of {name} is v{number:0>3} on disk but has no entry in the "
                                           f"{catalog.name} catalogue", "run the task of the hero version again")
        return
    if hero.number != number:
        auditor.report.add(INVARIANT, key, f"the {catalog.name} catalogue's hero of {name} points at "
                                           f"v{hero.number:0>3}, the hero folder holds v{number:0>3}",
                           "run the task of the hero version again")
        return
    listed = sorted(f.rootless.replace("\\", "/").rsplit("/", 1)[-1] for f in hero.files)
    folder = (auditor.store.heroes.get(*[(view.get("subset") or {}).get(k) for k in ("project", "asset", "subset")])
              or {}).get("hero_dir") or ""
    on_disk = sorted(e.name for e in os.scandir(folder) if e.is_file() and e.name != HERO_MARKER) \
        if os.path.isdir(folder) else []
    if listed != on_disk:
        auditor.report.add(INVARIANT, key, f"the {catalog.name} catalogue's hero of {name} lists {len(listed)} files, "
                                           f"the hero folder holds {len(on_disk)} other or more",
                           "run the task of the hero version again")
