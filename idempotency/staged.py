"""Per-file staging progress, one small document per staged file.

Kept out of the record on purpose: the record is rewritten by every fenced write, and a
record holding 10,000 file entries would make each of them cost megabytes. Entries carry
their epoch; a retry reuses one only when its epoch's staging folder is still listed in the
record and the staged copy's size and mtime still match, so a late write from a superseded
attempt cannot mislead it.
"""
from __future__ import annotations

from typing import Any

from pymongo import ReplaceOne
from pymongo.collection import Collection


class StagedFiles:
    def __init__(self, collection: Collection):
        self.col = collection

    def ensure_indexes(self) -> None:
        self.col.create_index([("key", 1)], name="by_key")

    def save(self, key: str, batch: dict[str, dict[str, Any]]) -> None:
        """Upsert a batch of verified entries (file id -> entry) in one round trip."""
        if batch:
            self.col.bulk_write([ReplaceOne({"_id": f"{key}|{fid}"}, {"_id": f"{key}|{fid}", "key": key, "fid": fid,
                                                                       **entry}, upsert=True)
                                 for fid, entry in batch.items()], ordered=False)

    def of_key(self, key: str) -> dict[str, dict[str, Any]]:
        return {d["fid"]: {k: v for k, v in d.items() if k not in ("_id", "key", "fid")}
                for d in self.col.find({"key": key})}

    def summary(self, key: str) -> tuple[int, int]:
        """(files, bytes) staged for ``key``."""
        count = size = 0
        for d in self.col.find({"key": key}, projection={"size": 1}):
            count += 1
            size += int(d.get("size", 0))
        return count, size

    def drop(self, key: str) -> int:
        return self.col.delete_many({"key": key}).deleted_count
