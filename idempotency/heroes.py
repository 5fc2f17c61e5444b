"""Who may move a product's hero version, and to which number: one document per product.

The hero folder and the catalogue's hero entry are shared by every publish of a product, so
the moves of two publishes (v4 and v5 committing at once, or a late retry of v6 after v7) are
serialised here, in the state store, never by the filesystem:

* ``version`` is the number the hero mirrors when nobody is moving it (0: no hero yet);
* ``target`` is the highest number any publish ever claimed: a claim below it is refused
  (``NEWER``), so the hero only moves forward, even while the publish of ``target`` is still
  rolling forward after a crash (its COMMITTING record always reaches PUBLISHED);
* ``holder`` is the one publish moving it now, with a lease judged by the store's clock, like
  the record's (invariant 8). Its own key may take it over at once (a retry, a newer epoch);
  another key waits until it is released or expires.

Every write is conditional on what was read (compare-and-set), and the holder's writes are
conditional on its attempt id: a zombie whose hold was taken over changes nothing here.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from ..wrapper.errors import Superseded
from .records import Identity, lease_is_live, utcnow

__all__ = ["BUSY", "CLAIMED", "DONE", "NEWER", "Claim", "Heroes", "hero_id"]

CLAIMED, NEWER, BUSY, DONE = "claimed", "newer", "busy", "done"


def hero_id(project: str, asset: str, subset: str) -> str:
    """One document per product: the ids the reservations use, joined."""
    return "\x1f".join((project, asset, subset))


@dataclass(frozen=True)
class Claim:
    """The answer to a claim: ``state`` is one of CLAIMED, NEWER, BUSY, DONE; ``doc`` the
    document as read (who holds it, which version it mirrors)."""

    state: str
    doc: dict[str, Any]


class Heroes:
    """The ``heroes`` collection of the state store."""

    def __init__(self, collection: Collection):
        self.col = collection

    def get(self, project: str, asset: str, subset: str) -> dict[str, Any] | None:
        return self.col.find_one({"_id": hero_id(project, asset, subset)})

    def scan(self) -> list[dict[str, Any]]:
        return list(self.col.find({}))

    @staticmethod
    def _holder(who: Identity, key: str, epoch: int, target: int, now: dt.datetime,
                seconds: float) -> dict[str, Any]:
        return {"key": key, "epoch": epoch, "attempt": who.attempt, "worker": who.worker, "host": who.host,
                "pid": who.pid, "target": target, "expires_at": now + dt.timedelta(seconds=seconds)}

    def claim(self, ident: tuple[str, str, str], key: str, epoch: int, target: int, who: Identity,
              seconds: float, hero_dir: str = "") -> Claim:
        """Take the hold to move the hero of ``ident`` to ``target``, or say why not.

        NEWER: the hero mirrors, or a publish claimed, a number >= ``target`` of another key
        (nothing to do: the hero never moves back). DONE: this key's ``target`` is the hero
        already. BUSY: another key holds a live hold for a lower number (wait and ask again).
        ``hero_dir`` (the claimer's path to the hero folder) is kept for ``gc``.
        Raises Superseded when a newer epoch of this key holds it."""
        _id = hero_id(*ident)
        for _ in range(16):
            now = utcnow()
            doc = self.col.find_one({"_id": _id})
            holder = self._holder(who, key, epoch, target, now, seconds)
            if doc is None:
                fresh = {"_id": _id, "project": ident[0], "asset": ident[1], "subset": ident[2], "version": 0,
                         "key": None, "target": target, "target_key": key, "holder": holder, "hero_dir": hero_dir,
                         "updated_at": now}
                try:
                    self.col.insert_one(fresh)
                    return Claim(CLAIMED, fresh)
                except DuplicateKeyError:
                    continue
            if doc.get("version") == target and doc.get("key") == key:
                return Claim(DONE, doc)
            if int(doc.get("version") or 0) >= target:
                return Claim(NEWER, doc)
            if int(doc.get("target") or 0) > target and doc.get("target_key") != key:
                return Claim(NEWER, doc)
            held = doc.get("holder")
            if held and held.get("key") != key and lease_is_live(held, now):
                return Claim(BUSY, doc)
            if held and held.get("key") == key and int(held.get("epoch", 0)) > epoch:
                raise Superseded(f"epoch {held['epoch']} of {key} moves the hero now; epoch {epoch} stops "
                                 "without changing anything")
            query: dict[str, Any] = {"_id": _id, "version": doc.get("version"), "target": doc.get("target"),
                                     "holder.attempt": held.get("attempt") if held else None}
            update = {"$set": {"holder": holder, "target": target, "target_key": key, "hero_dir": hero_dir,
                               "updated_at": now}}
            if self.col.update_one(query, update).matched_count == 1:
                return Claim(CLAIMED, {**doc, **update["$set"]})
        return Claim(BUSY, self.col.find_one({"_id": _id}) or {})

    def confirm(self, ident: tuple[str, str, str], who: Identity, seconds: float) -> None:
        """The fence right before a change of the hero folder or entry: still the holder (the
        hold is renewed by the same write). Raises Superseded otherwise."""
        now = utcnow()
        result = self.col.update_one({"_id": hero_id(*ident), "holder.attempt": who.attempt},
                                     {"$set": {"holder.expires_at": now + dt.timedelta(seconds=seconds),
                                               "updated_at": now}})
        if result.matched_count != 1:
            raise Superseded(f"the hold on the hero of {'/'.join(ident)} was taken over; this attempt leaves the "
                             "hero to its new holder")

    def finish(self, ident: tuple[str, str, str], key: str, target: int, who: Identity,
               touched: dict[int, int] | None = None) -> None:
        """The hero mirrors ``target`` of ``key``: record it and release the hold (one write).

        ``touched``: version -> the storage's change time (ns) after this move linked or unlinked
        hero files of that version (``touched.{version}``, kept as a maximum): a hardlink coming or
        going changes the published file's change time, and audit tells that apart from a
        modification by it. Idempotent: a lost answer retried finds the hero already at ``target``."""
        _id = hero_id(*ident)
        update: dict[str, Any] = {"$set": {"version": target, "key": key, "holder": None, "updated_at": utcnow()}}
        if touched:
            update["$max"] = {f"touched.{v}": int(ns) for v, ns in touched.items()}
        result = self.col.update_one({"_id": _id, "holder.attempt": who.attempt, "version": {"$lt": target}}, update)
        if result.matched_count == 1:
            return
        doc = self.col.find_one({"_id": _id}) or {}
        if doc.get("version") == target and doc.get("key") == key:
            return
        raise Superseded(f"the hold on the hero of {'/'.join(ident)} was taken over before v{target:0>3} was "
                         "recorded; its new holder finishes the hero")

    def touch(self, ident: tuple[str, str, str], touched: dict[int, int]) -> None:
        """``gc`` removed hero files of those versions at those change times (see ``finish``)."""
        if touched:
            self.col.update_one({"_id": hero_id(*ident)}, {"$max": {f"touched.{v}": int(ns) for v, ns in touched.items()}})

    def release(self, ident: tuple[str, str, str], who: Identity) -> None:
        """Give the hold back without moving the hero (an attempt that stops midway): another
        publish need not wait for the hold to expire. What was done is finished by the next holder."""
        self.col.update_one({"_id": hero_id(*ident), "holder.attempt": who.attempt}, {"$set": {"holder": None}})
