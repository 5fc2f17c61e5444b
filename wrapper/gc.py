"""`atomic-publish gc`: remove what abandoned attempts left behind.

Staging folders of dead epochs (and, under --root, staging folders no record knows), expired
leases, reservations of rolled-back keys. Never anything a live lease protects or that is
committed: the current epoch's staging folder of an unfinished publish is kept, since the next
attempt resumes from it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import time

from ..idempotency import records as R
from ..idempotency.records import lease_is_live, utcnow
from .audit import STAGING_RE

DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    m = DURATION.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30s, 15m, 2h or 7d")
    return float(m.group(1)) * UNITS[m.group(2)]


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--older-than", type=parse_duration, default=parse_duration("1h"),
                   help="only what was abandoned at least this long ago (default 1h; e.g. 30m, 2d)")
    p.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    p.add_argument("--root", action="append", default=[], help="publish root to scan for unknown staging folders")
    p.add_argument("--store", default=None)


def _age(ts) -> float:
    if ts is None:
        return float("inf")
    ts = ts if ts.tzinfo else ts.replace(tzinfo=dt.timezone.utc)
    return (utcnow() - ts).total_seconds()


def collect(store, roots: list[str], older_than: float, dry_run: bool, say=print) -> dict[str, int]:
    """Do (or with dry_run, list) the clean-up; returns counts."""
    done = {"staging": 0, "leases": 0, "reservations": 0}
    now = utcnow()
    known: set[str] = set()

    def remove(folder: str, why: str) -> None:
        say(f"{'would remove' if dry_run else 'removing'} {folder} ({why})")
        if not dry_run:
            shutil.rmtree(folder, ignore_errors=True)
        done["staging"] += 1

    for rec in store.records.col.find({}):
        key, epoch, state = rec["_id"], int(rec.get("epoch", 0)), rec.get("state")
        dirs = rec.get("staging_dirs") or {}
        known.update(d for d in dirs.values() if d)
        if lease_is_live(rec.get("lease"), now) or _age(rec.get("updated_at")) < older_than:
            continue
        for ep, folder in dirs.items():
            dead = int(ep) != epoch or state in (R.PUBLISHED, R.ROLLED_BACK)
            if folder and dead and os.path.isdir(folder):
                remove(folder, f"staging of epoch {ep} of {key}, now {state} at epoch {epoch}")
        if rec.get("lease"):
            say(f"{'would release' if dry_run else 'releasing'} the expired lease of {key}")
            if not dry_run:
                store.records.col.update_one({"_id": key, "epoch": epoch, "lease.attempt": rec["lease"]["attempt"]},
                                             {"$set": {"lease": None}})
            done["leases"] += 1
        if state == R.ROLLED_BACK:
            for res in store.reservations.col.find({"key": key, "state": "reserved"}):
                say(f"{'would release' if dry_run else 'releasing'} reservation v{res['version']} of rolled-back {key}")
                if not dry_run:
                    store.reservations.col.delete_one({"_id": res["_id"], "state": "reserved"})
                done["reservations"] += 1
    for res in store.reservations.col.find({"state": "reserved"}):
        if store.records.col.find_one({"_id": res["key"]}, projection={"_id": 1}) is None \
                and _age(res.get("created_at")) >= older_than:
            say(f"{'would release' if dry_run else 'releasing'} reservation v{res['version']} of "
                f"{res['key']} (no record)")
            if not dry_run:
                store.reservations.col.delete_one({"_id": res["_id"], "state": "reserved"})
            done["reservations"] += 1
    for root in roots:
        for folder, names, _files in os.walk(root):
            for name in list(names):
                if STAGING_RE.match(name):
                    path = os.path.join(folder, name)
                    names.remove(name)
                    if path not in known and time.time() - os.stat(path).st_mtime >= older_than:
                        remove(path, "staging folder no record knows")
    return done


def main(args: argparse.Namespace) -> int:
    from .cliutil import open_store_for

    store = open_store_for("gc", args.store)
    if store is None:
        return 2
    try:
        done = collect(store, [os.path.abspath(r) for r in args.root], args.older_than, args.dry_run)
    finally:
        store.close()
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {done['staging']} staging folder(s), {done['leases']} expired lease(s), "
          f"{done['reservations']} reservation(s)")
    return 0
