"""The one-product publish whose OpenPype documents are recorded in ``data/openpype_one_product.json``.

The record was written by the documents code before the catalogue seam (``wrapper/documents.py``
at commit 3760e33): ``python tests/catalogs/golden.py --record`` rewrites it with whatever
``documents.version_documents`` produces now, so only run that on purpose.
"""
from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

DATA = Path(__file__).parent / "data" / "openpype_one_product.json"
KEY = "deadline10:64f0a1b2c3d4e5f6a7b8c9d0:3"
FINAL_DIR = "/mnt/projects/demo/shots/sq01/sh010/publish/render/renderMain/v007"
MANIFEST = {
    "project": {"name": "demo", "code": "dm"},
    "asset": "sh010", "hierarchy": "shots/sq01", "task": "comp",
    "subset": "renderMain", "family": "render",
    "publish_root": "{root[work]}",
    "template": "{root[work]}/{project[name]}/{hierarchy}/{asset}/publish/{family}/{subset}/v{version:0>3}",
    "roots": {"work": {"linux": "/mnt/projects", "windows": "P:/projects", "darwin": "/Volumes/projects"}},
    "representations": [
        {"name": "exr", "files": [f"{{root[work]}}/renders/sh010/beauty.{f}.exr" for f in (1001, 1002, 1003)],
         "frames": "1001-1003"},
        {"name": "mov", "files": ["{root[work]}/renders/sh010/review.mov"]},
    ],
    "author": "alice", "comment": "first comp", "source": "{root[work]}/demo/sh010/work/comp_v007.nk",
}


def record(manifest, plan):
    from atomic_publish.wrapper.staging import file_id

    files = {file_id(p.name): {"size": 1000 + i, "hash": f"{i:032x}", "hash_type": "xxh3_128"}
             for i, p in enumerate(plan)}
    return {"_id": KEY, "version": 7, "committed_at": dt.datetime(2026, 12, 1, 7, 10, 17, 495000, dt.timezone.utc),
            "files": files, "job_id": "64f0a1b2c3d4e5f6a7b8c9d0", "task_id": "3", "submitted_by": "render",
            "fingerprint": "sha256:" + "ab" * 32, "attempts": [{"host": "render-node-07"}]}


def inputs():
    """(manifest, record, plan) of the recorded publish, on Linux (its roots)."""
    from atomic_publish.wrapper.layout import plan_files
    from atomic_publish.wrapper.manifest import parse_manifest

    manifest = parse_manifest(json.loads(json.dumps(MANIFEST)))
    plan = plan_files(manifest, 7)
    return manifest, record(manifest, plan), plan


def encode_all(parents, subset_doc, version_doc, reps) -> dict:
    import bson

    return {"parents": [bson.encode(d).hex() for d in parents], "subset": bson.encode(subset_doc).hex(),
            "version": bson.encode(version_doc).hex(), "representations": [bson.encode(d).hex() for d in reps]}


if __name__ == "__main__" and "--record" in sys.argv:
    from atomic_publish.wrapper.documents import parent_documents, version_documents

    m, rec, plan = inputs()
    parents, subset_doc = parent_documents(m)
    version_doc, reps = version_documents(m, KEY, rec, plan, FINAL_DIR, subset_doc["_id"])
    DATA.write_text(json.dumps(encode_all(parents, subset_doc, version_doc, reps), indent=1) + "\n")
    print(f"recorded {DATA}")
