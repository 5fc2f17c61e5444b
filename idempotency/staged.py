"""Per-file staging progress, saved one document per checkpoint batch.

Kept out of the record on purpose: the record is rewritten by every fenced write, and a
record holding 10,000 file entries would make each of them cost megabytes. A batch is one
document (not one per file) because the server's cost is per document: 512 upserts took
0.4 s on the embedded store where one document of 512 entries takes 0.01 s.

Entries carry their epoch; a retry reuses one only when its epoch's staging folder is still
listed in the record and the staged copy's size and mtime still match, so a late write from a
superseded attempt cannot mislead it. Batches are merged in (epoch, seq) order, so a newer
entry for a file replaces an older one.
"""
from __future__ import annotations

from typing import Any

from pymongo import ReplaceOne
from pymongo.collection import Collection

MAX_ENTRIES_PER_DOC = 1000  # ~0.5 MB with long paths: far below the 16 MB document limit


class StagedFiles:
    def __init__(self, collection: Collection):
        self.col = collection

    def ensure_indexes(self) -> None:
        self.col.create_index([("key", 1)], name="by_key")

    def save(self, key: str, epoch: int, seq: int, batch: dict[str, dict[str, Any]], session=None) -> None:
        """Save one batch of verified entries (file id -> entry) in one round trip.

        Idempotent: the document ids derive from (key, epoch, seq), so a retried save replaces itself."""
        items = list(batch.items())
        ops = []
        for part, start in enumerate(range(0, len(items), MAX_ENTRIES_PER_DOC)):
            doc_id = f"{key}|{epoch}|{seq:08d}|{part:04d}"
            ops.append(ReplaceOne({"_id": doc_id}, {"_id": doc_id, "key": key, "epoch": epoch, "seq": seq,
                                                    "part": part,
                                                    "entries": dict(items[start:start + MAX_ENTRIES_PER_DOC])},
                                  upsert=True))
        if ops:
            self.col.bulk_write(ops, ordered=False, session=session)

    def of_key(self, key: str) -> dict[str, dict[str, Any]]:
        """Every file's latest entry (file id -> entry)."""
        docs = sorted(self.col.find({"key": key}),
                      key=lambda d: (d.get("epoch", 0), d.get("seq", -1), d.get("part", 0)))
        merged: dict[str, dict[str, Any]] = {}
        for d in docs:
            if "entries" in d:
                merged.update(d["entries"])
            elif "fid" in d:  # one document per file, as earlier versions wrote it (an upgrade mid-publish)
                merged[d["fid"]] = {k: v for k, v in d.items() if k not in ("_id", "key", "fid")}
        return merged

    def drop(self, key: str) -> int:
        return self.col.delete_many({"key": key}).deleted_count
