"""One durable record per key: state, lease with epoch fencing, progress, attempt history.

Taking the lease increments the epoch in one conditional write; every later write
is conditional on that epoch, so an attempt that lost its lease (a zombie) can change
nothing (docs/design.md section 2).
"""
from __future__ import annotations

import datetime as dt
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from ..wrapper.errors import FingerprintMismatch, LeaseHeld, Superseded
from . import clock
from .keys import short_hash
from .processes import process_alive

NEW = "NEW"                  # lease taken, no version reserved yet
RESERVED = "RESERVED"
STAGING = "STAGING"
STAGED = "STAGED"
INTEGRATING = "INTEGRATING"
COMMITTING = "COMMITTING"    # point of no return: from here attempts only roll forward
PUBLISHED = "PUBLISHED"
ROLLING_BACK = "ROLLING_BACK"
ROLLED_BACK = "ROLLED_BACK"
TERMINAL = (PUBLISHED, ROLLED_BACK)
T = TypeVar("T")
STATES = (NEW, RESERVED, STAGING, STAGED, INTEGRATING, COMMITTING, PUBLISHED, ROLLING_BACK, ROLLED_BACK)


def utcnow() -> dt.datetime:
    """The store's clock (see clock.py): every time in a record is written and judged by it."""
    return clock.now()


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class Identity:
    """Who is attempting: used for the lease and the attempt history."""

    attempt: str
    worker: str
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)  # at creation: a forked process has its own


def lease_is_live(lease: dict[str, Any] | None, now: dt.datetime) -> bool:
    """A lease protects its owner until it expires, unless the owner is a dead process on this host."""
    if not lease:
        return False
    if _aware(lease["expires_at"]) <= now:
        return False
    if lease.get("host") == socket.gethostname() and not process_alive(int(lease.get("pid", 0))):
        return False
    return True


def product_views(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """The fields of every product of a publish: the record itself (product 0), then its
    ``extra_products`` (a publish of several products, invariant 10), each with ``version``,
    ``final_dir``, ``staging_dir``, ``staging_dirs``... as one-product records hold them."""
    extra = rec.get("extra_products") or {}
    return [rec] + [extra[i] for i in sorted(extra, key=int)]


def check_fingerprint(rec: dict[str, Any], fingerprint: str) -> None:
    """Same key, other manifest: a permanent error that changes nothing (like HTTP 422)."""
    if rec["fingerprint"] != fingerprint:
        raise FingerprintMismatch(
            f"job {rec.get('job_id')} task {rec.get('task_id')} was first run with another manifest "
            f"(fingerprint {rec['fingerprint'][:19]}…, now {fingerprint[:19]}…); nothing was changed")


class Records:
    """The ``records`` collection: acquire, fenced writes, release."""

    def __init__(self, collection: Collection):
        self.col = collection

    def ensure_indexes(self) -> None:
        self.col.create_index([("job_id", 1), ("task_id", 1)])
        self.col.create_index([("state", 1)])
        self.col.create_index([("key_hash", 1)], name="by_key_hash")

    def get(self, key: str) -> dict[str, Any] | None:
        return self.col.find_one({"_id": key})

    def acquire(self, key: str, fingerprint: str, who: Identity, lease_seconds: float,
                fields: dict[str, Any]) -> dict[str, Any]:
        """Create the record or take its lease over; returns the record as it now stands.

        A terminal record is returned untouched (the caller decides). Raises
        FingerprintMismatch (permanent) or LeaseHeld (busy) without writing anything.
        """
        for _ in range(8):
            now = utcnow()
            lease = self._lease(who, now, lease_seconds)
            attempt = self._attempt(who, now, 1)
            doc = {"_id": key, "key_hash": short_hash(key), "fingerprint": fingerprint, "state": NEW, "epoch": 1,
                   "lease": lease,
                   "version": None, "receipts": {}, "staging_dirs": {},
                   "attempts": [attempt], "created_at": now, "updated_at": now, **fields}
            try:
                self.col.insert_one(doc)
                return doc
            except DuplicateKeyError:
                pass
            rec = self.get(key)
            if rec is None:
                continue
            check_fingerprint(rec, fingerprint)
            if rec["state"] in TERMINAL:
                return rec
            if (rec.get("lease") or {}).get("attempt") == who.attempt:
                return rec  # our own write whose answer was lost, retried
            if lease_is_live(rec.get("lease"), now):
                held = rec["lease"]
                raise LeaseHeld(f"attempt {held['attempt'][:8]} on {held.get('worker')} ({held.get('host')}, "
                                f"pid {held.get('pid')}) holds this publish until "
                                f"{_aware(held['expires_at']).isoformat(timespec='seconds')}")
            epoch = rec["epoch"] + 1
            updated = self.col.find_one_and_update(
                {"_id": key, "epoch": rec["epoch"]},
                {"$set": {"lease": lease, "epoch": epoch, "updated_at": now},
                 "$push": {"attempts": self._attempt(who, now, epoch)}},
                return_document=ReturnDocument.AFTER)
            if updated is not None:
                return updated
        raise LeaseHeld("the lease on this publish changed hands repeatedly while taking it")

    @staticmethod
    def _lease(who: Identity, now: dt.datetime, seconds: float) -> dict[str, Any]:
        return {"attempt": who.attempt, "worker": who.worker, "host": who.host, "pid": who.pid,
                "expires_at": now + dt.timedelta(seconds=seconds)}

    @staticmethod
    def _attempt(who: Identity, now: dt.datetime, epoch: int) -> dict[str, Any]:
        return {"attempt": who.attempt, "worker": who.worker, "host": who.host, "pid": who.pid,
                "epoch": epoch, "start": now, "end": None, "outcome": None,
                "error_class": None, "error_type": None, "message": None}

    def fenced(self, key: str, epoch: int, update: dict[str, Any], before_commit: bool = False) -> None:
        """Apply ``update`` only while ``epoch`` is current; raises Superseded otherwise.

        ``before_commit``: also only while the record has not reached COMMITTING (a rollback's
        first write: from the point of no return on, nothing is ever rolled back)."""
        update = dict(update)
        update.setdefault("$set", {})
        update["$set"] = {**update["$set"], "updated_at": utcnow()}
        query: dict[str, Any] = {"_id": key, "epoch": epoch}
        if before_commit:
            query["state"] = {"$nin": [COMMITTING, PUBLISHED]}
        result = self.col.update_one(query, update)
        if result.matched_count != 1:
            current = self.get(key) if before_commit else None
            if current is not None and current.get("epoch") == epoch:
                raise Superseded(f"{key} is {current.get('state')}: past the point of no return, it is never "
                                 "rolled back; nothing was changed")
            raise Superseded(f"epoch {epoch} of {key} was superseded by a newer attempt; this attempt stops "
                             "without changing anything")

    def renew(self, key: str, epoch: int, seconds: float) -> None:
        self.fenced(key, epoch, {"$set": {"lease.expires_at": utcnow() + dt.timedelta(seconds=seconds)}})

    def finish_attempt(self, key: str, epoch: int, index: int, outcome: str, error_class: str | None,
                       message: str | None, error_type: str | None = None, release: bool = True) -> None:
        """Close this attempt's history entry and (normally) release the lease, fenced."""
        prefix = f"attempts.{index}"
        update: dict[str, Any] = {"$set": {f"{prefix}.end": utcnow(), f"{prefix}.outcome": outcome,
                                           f"{prefix}.error_class": error_class,
                                           f"{prefix}.message": message, f"{prefix}.error_type": error_type}}
        if release:
            update["$set"]["lease"] = None
        self.fenced(key, epoch, update)

    def find_by_job(self, job_id: str) -> list[dict[str, Any]]:
        return list(self.col.find({"job_id": job_id}).sort("task_id", 1))

    def scan(self, projection: dict[str, Any] | None = None):
        """Every record, streamed (audit and gc)."""
        return self.col.find({}, projection=projection)

    def by_key_hash(self, key_hash: str) -> list[dict[str, Any]]:
        """The records whose key hashes to ``key_hash`` (the hash in a staging folder's name).

        Records written before ``key_hash`` was stored are found by scanning: gc and audit
        must never take "not found" for "no record"."""
        found = list(self.col.find({"key_hash": key_hash}))
        if found:
            return found
        return [r for r in self.col.find({"key_hash": {"$exists": False}}) if short_hash(r["_id"]) == key_hash]

    def fenced_write(self, key: str, epoch: int, write: Callable[[Any], T], supports_transactions: bool,
                     fence_update: dict[str, Any] | None = None) -> T:
        """Run ``write(session)`` only while ``epoch`` is current (invariant 9), for writes to other
        collections (reservations, staging progress) that a plain conditional update cannot fence:
        the fence (a conditional write of the record) is checked just before the write.

        Not in one transaction, on purpose: a transaction that writes the record locks it until it
        commits, and an attempt SIGKILLed inside one (the farm kills tasks) leaves that lock until
        the server reaps the transaction, 60 s on mongod and SecantusDB, and on SecantusDB only when
        a later transaction comes by: every later attempt of the publish then waited on the record
        (fault-suite seed 70046, measured: a plain update still blocked 45 s after the kill). So a
        zombie frozen between its fence and its write can still make that one write; what it can
        write is harmless or taken back: staging progress names only its own epoch's folder (reused
        only while the record lists that folder), and a reservation inserted for a key rolled back
        meanwhile is removed by the zombie itself (Attempt._release_stray_reservation) or by gc,
        and reported by audit until then. ``supports_transactions`` is kept for the callers and
        unused. ``fence_update``: the record update that is the fence (a state change that goes
        with the write: one round trip less than a separate fence)."""
        update = dict(fence_update or {})
        now = utcnow()
        update["$set"] = {**update.get("$set", {}), "fenced_at": now, **({"updated_at": now} if fence_update else {})}

        def fence(session) -> None:
            result = self.col.update_one({"_id": key, "epoch": epoch}, update, session=session)
            if result.matched_count != 1:
                raise Superseded(f"epoch {epoch} of {key} was superseded by a newer attempt; this attempt stops "
                                 "without changing anything")

        fence(None)
        return write(None)
