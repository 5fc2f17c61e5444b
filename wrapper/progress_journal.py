"""Staging progress kept beside the files it describes: one append-only journal per staging folder.

Each checkpoint batch of ``staging.stage`` appends one BSON document of verified entries (file id
-> entry) and fsyncs it. BSON, not JSON lines: pymongo's C encoder writes a batch into one buffer,
where ``json.dumps`` makes a dozen small strings per entry while the copy threads allocate the
entries themselves (memray put 23 MB of the arenas alive at a 50,000-file publish's peak on the
JSON encoding; the peak RSS measured the same either way). The batch's bytes were made durable
first (``durable.BatchSync``), so a document on disk never names a copy that a crash could still
lose. The store receives every entry once, when staging is done (``Attempt._stage``): a checkpoint
costs no store round trip, and a publish sends the same number of store commands for 1 file as
for 50,000 (issue 18).

A retry reads the journals of the earlier epochs' folders its record lists. What a document claims is
checked again before it is trusted (``staging._reusable``: the staged copy's size and mtime, the
source's size and mtime), exactly as an entry read from the store is, so a stale document, or one a
zombie of an earlier epoch wrote after the takeover, can only name a copy that is still whole. A
document cut short by a kill ends the journal: what it named is adopted by hash or copied again.

The journal never reaches a published version: ``commit.move_into_place`` removes it just before
the staging folder is renamed into place.
"""
from __future__ import annotations

import os
from typing import Any, BinaryIO, Mapping

import bson
from bson.errors import InvalidBSON

from .fsops import fsync, long_path

NAME = ".atomic-publish-progress.bson"


class ProgressJournal:
    """The journal of one staging folder; ``append`` is the checkpoint ``staging.stage`` calls."""

    def __init__(self, folder: str):
        self.path = os.path.join(folder, NAME)
        self._fh: BinaryIO | None = None

    def append(self, batch: dict[str, dict[str, Any]]) -> None:
        """Append one batch and make it durable before returning (one write, one fsync)."""
        if not batch:
            return
        if self._fh is None:
            self._fh = open(long_path(self.path), "ab")
        self._fh.write(bson.encode(batch))
        self._fh.flush()
        fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_journal(folder: str) -> dict[str, dict[str, Any]]:
    """Every entry the journal of ``folder`` holds, later batches winning; {} without a journal.

    Reading stops at the first document that is not whole (the tail of a killed append)."""
    merged: dict[str, dict[str, Any]] = {}
    try:
        with open(long_path(os.path.join(folder, NAME)), "rb") as fh:
            for batch in bson.decode_file_iter(fh):
                merged.update((fid, e) for fid, e in batch.items() if isinstance(e, dict))
    except InvalidBSON:  # a document cut short, or bytes that are not one: what came before stands
        pass
    except OSError:  # no journal, or an unreadable one: its copies are adopted by hash or copied again
        return {}
    return merged


def merge_newest(into: dict[str, dict[str, Any]], entries: dict[str, dict[str, Any]]) -> None:
    """Merge ``entries`` into ``into``; per file, the entry of the higher epoch wins (ties: ``entries``)."""
    for fid, entry in entries.items():
        old = into.get(fid)
        if old is None or int(entry.get("epoch") or 0) >= int(old.get("epoch") or 0):
            into[fid] = entry


def merge_journals(into: dict[str, dict[str, Any]], staging_dirs: Mapping[str, str | None],
                   skip_epoch: str | None = None) -> dict[str, dict[str, Any]]:
    """Merge the journals of ``staging_dirs`` (epoch -> folder, as a record lists them) into
    ``into``, oldest epoch first, the newest entry of each file winning; returns ``into``."""
    for epoch, folder in sorted(staging_dirs.items(), key=lambda kv: int(kv[0])):
        if folder and epoch != skip_epoch:
            merge_newest(into, read_journal(folder))
    return into


def with_journals(entries: dict[str, dict[str, Any]], rec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``entries`` (the store's, for ``rec``'s key) with the journals of every staging folder the
    record lists, for every product, under the paths the worker wrote (a folder this machine does
    not reach adds nothing): what a publish has verified so far, as ``status`` shows it."""
    from ..idempotency.records import product_views

    for view in product_views(rec):
        merge_journals(entries, view.get("staging_dirs") or {})
    return entries


def drop_journal(folder: str) -> None:
    """Remove the journal of ``folder`` (done staging: the store holds every entry)."""
    try:
        os.unlink(long_path(os.path.join(folder, NAME)))
    except FileNotFoundError:
        pass
