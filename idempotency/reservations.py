"""Version numbers reserved under a unique index, so two publishers never share one.

A retry finds its own reservation by key; a pinned number held by another key is a
conflict, never an overwrite.
"""
from __future__ import annotations

from typing import Any, Callable

from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from ..wrapper.errors import VersionConflict
from .records import utcnow

MAX_PROBES = 1000


class Reservations:
    def __init__(self, collection: Collection):
        self.col = collection

    def ensure_indexes(self) -> None:
        self.col.create_index([("project", 1), ("asset", 1), ("subset", 1), ("version", 1)],
                              unique=True, name="one_key_per_version")
        self.col.create_index([("key", 1)], name="by_key")

    def of_key(self, key: str) -> dict[str, Any] | None:
        return self.col.find_one({"key": key})

    def highest(self, project: str, asset: str, subset: str) -> int:
        doc = self.col.find_one({"project": project, "asset": asset, "subset": subset},
                                sort=[("version", -1)], projection={"version": 1})
        return int(doc["version"]) if doc else 0

    def reserve(self, key: str, project: str, asset: str, subset: str, pinned: int | None,
                floor: int, taken_by: Callable[[int], str | None],
                insert: Callable[[dict[str, Any]], None] | None = None, known_absent: bool = False) -> int:
        """Reserve ``pinned`` or the next free number above ``floor``; idempotent per key.

        ``taken_by(n)`` lets the caller refuse numbers it knows are taken elsewhere (a
        version document or a folder that no reservation accounts for); it returns who
        holds the number, or None. ``insert(doc)`` writes the reservation; an attempt passes
        one fenced by its epoch (invariant 9), so a zombie cannot reserve for a rolled-back key.
        ``known_absent``: the caller knows this key holds no reservation (the first try of its
        first epoch), which saves the lookup; a retried call must not pass it.
        """
        insert = insert or self.col.insert_one
        ident = {"project": project, "asset": asset, "subset": subset}
        mine = None if known_absent else self.col.find_one({"key": key, **ident})  # per product of the key
        if mine:
            return int(mine["version"])
        if pinned is not None:
            holder = self.col.find_one({**ident, "version": pinned})
            if holder and holder.get("key") != key:
                raise VersionConflict(f"version {pinned} of {project}/{asset}/{subset} is held by another "
                                      f"publish ({holder.get('key', 'unknown')}); nothing was overwritten")
            other = taken_by(pinned)
            if other:
                raise VersionConflict(f"version {pinned} of {project}/{asset}/{subset} already exists: {other}; "
                                      "nothing was overwritten")
            try:
                insert({**ident, "version": pinned, "key": key, "state": "reserved", "created_at": utcnow()})
                return pinned
            except DuplicateKeyError:
                holder = self.col.find_one({**ident, "version": pinned}) or {}
                if holder.get("key") == key:
                    return pinned
                raise VersionConflict(f"version {pinned} of {project}/{asset}/{subset} is held by another "
                                      f"publish ({holder.get('key', 'unknown')}); nothing was overwritten") from None
        # A fresh key tries the number after the catalogue's highest first: the unique index refuses it
        # if another publish holds it, and only then are the reservations read (one round trip less
        # per publish; under contention one collision, then the reservations' highest).
        candidate = floor + 1 if known_absent else max(floor, self.highest(project, asset, subset)) + 1
        for _ in range(MAX_PROBES):
            if taken_by(candidate) is None:
                try:
                    insert({**ident, "version": candidate, "key": key, "state": "reserved",
                            "created_at": utcnow()})
                    return candidate
                except DuplicateKeyError:
                    mine = self.col.find_one({"key": key, **ident})
                    if mine:
                        return int(mine["version"])
                    candidate = max(candidate, self.highest(project, asset, subset))
            candidate += 1
        raise VersionConflict(f"no free version number found for {project}/{asset}/{subset} "
                              f"after {MAX_PROBES} tries")

    def release_stray(self, key: str, epoch: int) -> int:
        """Remove a reservation that ``epoch`` inserted after its key was rolled back (a zombie
        on a store without transactions: see Records.fenced_write)."""
        return self.col.delete_many({"key": key, "epoch": epoch, "state": "reserved"}).deleted_count

    def mark_committed(self, key: str) -> None:
        self.col.update_many({"key": key}, {"$set": {"state": "committed", "committed_at": utcnow()}})

    def release(self, key: str) -> int:
        """Give the number back (rollback); committed reservations are never released."""
        return self.col.delete_many({"key": key, "state": "reserved"}).deleted_count
