"""Staging progress in the store: one document per checkpoint batch, merged newest last."""
from __future__ import annotations

from atomic_publish.idempotency import staged


def _entry(epoch: int, size: int) -> dict:
    return {"src": "/r/a.exr", "size": size, "epoch": epoch, "hash": "", "linked": False}


def test_batches_merge_in_epoch_and_seq_order(store):
    key = "deadline10:j:0"
    store.staged.save(key, 2, 0, {"a": _entry(2, 20)})          # the newer epoch, saved first
    store.staged.save(key, 1, 0, {"a": _entry(1, 10), "b": _entry(1, 11)})  # a late write of the older one
    store.staged.save(key, 2, 1, {"b": _entry(2, 21), "c": _entry(2, 22)})
    files = store.staged.of_key(key)
    assert {fid: e["size"] for fid, e in files.items()} == {"a": 20, "b": 21, "c": 22}
    assert store.staged.of_key("deadline10:other:0") == {}


def test_a_retried_save_replaces_itself_and_big_batches_are_split(store, monkeypatch):
    monkeypatch.setattr(staged, "MAX_ENTRIES_PER_DOC", 7)
    key = "deadline10:j:1"
    batch = {f"f{i:03d}": _entry(1, i) for i in range(30)}
    store.staged.save(key, 1, 0, batch)
    store.staged.save(key, 1, 0, batch)  # the answer was lost and the save ran again
    assert store.staged.col.count_documents({"key": key}) == 5  # 30 entries, 7 per document
    assert store.staged.of_key(key) == batch
    assert store.staged.drop(key) == 5 and store.staged.of_key(key) == {}


def test_per_file_documents_of_earlier_versions_are_still_read(store):
    key = "deadline10:j:2"
    store.staged.col.insert_one({"_id": f"{key}|a", "key": key, "fid": "a", **_entry(1, 10)})
    store.staged.save(key, 2, 0, {"b": _entry(2, 5)})
    files = store.staged.of_key(key)
    assert files["a"]["size"] == 10 and files["b"]["size"] == 5 and "fid" not in files["a"]
