"""`atomic-publish gc`: remove what abandoned attempts left behind.

Staging folders of dead epochs (and, under --root, staging folders no record knows), expired
leases, reservations of rolled-back keys. Never anything a live lease protects or that is
committed: the current epoch's staging folder of an unfinished publish is kept, since the next
attempt resumes from it, and nothing of a COMMITTING record is ever touched (invariant 7).

gc and publishers agree through the store, without a lock: every removal is decided from the
scan and decided again from the record re-read just before the folder goes, and a publish
always writes its record (and the staging folder's name into it) before it creates the folder.
Folders are matched to records by path or by inode (folders.py), never by string alone; what
cannot be matched with certainty is left and reported.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import time
from typing import Any, Callable

from ..idempotency import clock
from ..idempotency import records as R
from ..idempotency.records import lease_is_live, utcnow
from .commit import read_marker
from .folders import STAGING_RE, KnownFolders, same_folder
from .gc_hero import collect_heroes

DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    m = DURATION.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30s, 15m, 2h or 7d")
    return float(m.group(1)) * UNITS[m.group(2)]


def configure_parser(p: argparse.ArgumentParser) -> None:
    from .cliutil import add_store_options

    p.add_argument("--older-than", type=parse_duration, default=parse_duration("1h"), metavar="AGE",
                   help="only what was abandoned at least this long ago, e.g. 30m, 2h, 7d (default: 1h)")
    p.add_argument("--dry-run", action="store_true",
                   help="say what would be removed, remove nothing (and start no embedded store)")
    p.add_argument("--root", action="append", default=[], metavar="DIR",
                   help="publish root to scan for staging folders no record knows (repeatable; default: none)")
    add_store_options(p, "the store to clean")


def _removable(rec: dict[str, Any], epoch: str) -> bool:
    """May the staging folder of ``epoch`` go, by the record alone?

    Never from COMMITTING on (invariant 7: whichever staging folder the record names holds the
    version's files until the rename). Before it, only an older epoch's folder: the current
    epoch's is where the next attempt resumes. After PUBLISHED or ROLLED_BACK, any leftover."""
    state = rec.get("state")
    if state == R.COMMITTING:
        return False
    if state in (R.PUBLISHED, R.ROLLED_BACK):
        return True
    return int(epoch) < int(rec.get("epoch", 0))


def _listed(rec: dict[str, Any], epoch: str) -> list[str]:
    """The staging folders of ``epoch`` that the record names (one per product)."""
    return [f for v in R.product_views(rec) for ep, f in (v.get("staging_dirs") or {}).items() if ep == epoch and f]


def _idle(rec: dict[str, Any], older_than: float) -> bool:
    """No live lease (judged by the store's clock) and untouched for ``older_than``."""
    return not lease_is_live(rec.get("lease"), utcnow()) and clock.age_seconds(rec.get("updated_at")) >= older_than


class Collector:
    """One gc run. Every removal is decided twice: from the scan, then again from the record
    re-read just before the folder is removed (a publish may have moved on in between); a folder
    that cannot be matched to a record with certainty is left and reported."""

    def __init__(self, store, older_than: float, dry_run: bool, say: Callable[[str], None] = print):
        self.store, self.older_than, self.dry_run, self.say = store, older_than, dry_run, say
        self.done = {"staging": 0, "leases": 0, "reservations": 0, "left": 0}
        self.known = KnownFolders()
        self.store_id = store.store_id(create=False)

    def run(self, roots: list[str]) -> dict[str, int]:
        for rec in self.store.records.scan():
            for view in R.product_views(rec):
                for folder in (view.get("staging_dirs") or {}).values():
                    self.known.add(folder)
                self.known.add(view.get("final_dir"))
            self.record(rec)
        self.orphan_reservations()
        collect_heroes(self)  # leftovers of interrupted hero moves: wrapper/gc_hero.py
        for root in roots:
            self.walk(root)
        return self.done

    # -- what the records name -------------------------------------------------------------
    def record(self, rec: dict[str, Any]) -> None:
        key, epoch = rec["_id"], int(rec.get("epoch", 0))
        if not _idle(rec, self.older_than):
            return
        for ep, folder in ((ep, f) for v in R.product_views(rec) for ep, f in (v.get("staging_dirs") or {}).items()):
            if folder and _removable(rec, ep) and os.path.isdir(folder):
                self.remove_if_still(folder, key, ep, f"staging of epoch {ep} of {key}, now {rec.get('state')} at "
                                                      f"epoch {epoch}")
        lease = rec.get("lease")
        if lease:
            self.say(f"{'would release' if self.dry_run else 'releasing'} the expired lease of {key}")
            if not self.dry_run:
                self.store.records.col.update_one({"_id": key, "epoch": epoch, "lease.attempt": lease["attempt"]},
                                                  {"$set": {"lease": None}})
            self.done["leases"] += 1
        if rec.get("state") == R.ROLLED_BACK:
            for res in self.store.reservations.col.find({"key": key, "state": "reserved"}):
                self.say(f"{'would release' if self.dry_run else 'releasing'} reservation v{res['version']} of "
                         f"rolled-back {key}")
                if not self.dry_run:
                    self.store.reservations.col.delete_one({"_id": res["_id"], "state": "reserved"})
                self.done["reservations"] += 1

    def remove_if_still(self, folder: str, key: str, epoch: str, why: str) -> None:
        """Remove ``folder`` only if the record, read again now, still lets it go."""
        fresh = self.store.records.get(key)
        listed = _listed(fresh, epoch) if fresh else []
        if fresh is None or not _idle(fresh, self.older_than) or not _removable(fresh, epoch) \
                or (listed and not any(same_folder(f, folder) for f in listed)):
            self.leave(folder, f"the record of {key} changed since gc looked ({(fresh or {}).get('state')}); "
                               "left for the next run")
            return
        self.remove(folder, why)

    def orphan_reservations(self) -> None:
        for res in self.store.reservations.col.find({"state": "reserved"}):
            if self.store.records.get(res["key"]) is None and clock.age_seconds(res.get("created_at")) >= self.older_than:
                self.say(f"{'would release' if self.dry_run else 'releasing'} reservation v{res['version']} of "
                         f"{res['key']} (no record)")
                if not self.dry_run:
                    self.store.reservations.col.delete_one({"_id": res["_id"], "state": "reserved"})
                self.done["reservations"] += 1

    # -- what the disk holds ---------------------------------------------------------------
    def walk(self, root: str) -> None:
        for folder, names, _files in os.walk(root):
            for name in list(names):
                m = STAGING_RE.match(name)
                if m:
                    names.remove(name)
                    path = os.path.join(folder, name)
                    if path not in self.known:  # by path or inode: a record's folder, decided above
                        self.unknown(path, m["hash"], m["epoch"])

    def unknown(self, path: str, key_hash: str, epoch: str) -> None:
        """A staging folder no scanned record names (by path or inode)."""
        owner = read_marker(path) or {}
        if owner.get("store_id") and self.store_id and owner["store_id"] != self.store_id:
            self.leave(path, f"it belongs to another store ({owner['store_id']}); run gc against that store")
            return
        records = self.store.records.by_key_hash(key_hash)  # read now: a publish may have begun since the scan
        if records:
            listing = [r for r in records if _listed(r, epoch)]
            if listing:
                self.leave(path, f"record {listing[0]['_id']} names epoch {epoch} under another path "
                                 f"({', '.join(_listed(listing[0], epoch))}) that cannot be matched to this one "
                                 "from here")
                return
            rec = records[0]
            if len(records) == 1 and _idle(rec, self.older_than) and _removable(rec, epoch) \
                    and rec.get("state") != R.COMMITTING:
                self.remove_if_unlisted(path, rec["_id"], epoch)
                return
            self.leave(path, f"it belongs to {rec['_id']} ({rec.get('state')}), which may still need it")
            return
        try:
            age = time.time() - os.stat(path).st_mtime
        except OSError:
            return
        if age >= self.older_than:
            if self.store.records.by_key_hash(key_hash):  # a record appeared: decide next run
                self.leave(path, "a record for it appeared while gc looked; left for the next run")
                return
            self.remove(path, "staging folder no record knows")

    def remove_if_unlisted(self, path: str, key: str, epoch: str) -> None:
        fresh = self.store.records.get(key)
        if fresh is None or _listed(fresh, epoch) or not _idle(fresh, self.older_than) \
                or not _removable(fresh, epoch):
            self.leave(path, f"the record of {key} changed since gc looked; left for the next run")
            return
        self.remove(path, f"staging of epoch {epoch} of {key}, which its record no longer lists "
                          f"({fresh.get('state')} at epoch {fresh.get('epoch')})")

    def remove(self, folder: str, why: str) -> None:
        self.say(f"{'would remove' if self.dry_run else 'removing'} {folder} ({why})")
        if not self.dry_run:
            shutil.rmtree(folder, ignore_errors=True)
        self.done["staging"] += 1

    def leave(self, folder: str, why: str) -> None:
        self.say(f"leaving {folder}: {why}")
        self.done["left"] += 1


def collect(store, roots: list[str], older_than: float, dry_run: bool, say=print) -> dict[str, int]:
    """Do (or with dry_run, list) the clean-up; returns counts."""
    return Collector(store, older_than, dry_run, say).run(roots)


def main(args: argparse.Namespace) -> int:
    from .cliutil import open_store_for

    store = open_store_for("gc", args.store, start_embedded=not args.dry_run, chosen_catalog=True)
    if store is None:
        return 2
    try:
        done = collect(store, [os.path.abspath(r) for r in args.root], args.older_than, args.dry_run)
    finally:
        store.close()
    verb = "would remove" if args.dry_run else "removed"
    left = f"; left {done['left']} folder(s) it could not match to a record with certainty (listed above)" \
        if done["left"] else ""
    print(f"{verb} {done['staging']} staging folder(s), {done['leases']} expired lease(s), "
          f"{done['reservations']} reservation(s){left}")
    return 0
