"""One publish of several products (a metadata JSON with one instance per AOV): one key, every
product's version visible together, or none (invariant 10; issue 15 item 2).

The core is driven in-process here with the products a metadata JSON yields (one Manifest per
instance); tests/test_metadata.py and tests/deadline/test_ayon_jobs.py drive the same through
`atomic-publish run --metadata` and the farm.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers import run_cli

AOVS = ("beauty", "diffuse", "specular")


def _products(render, **overrides):
    from atomic_publish.wrapper.manifest import load_manifest

    out = []
    for aov in AOVS:
        frames = []
        for f in range(3):
            path = render.renders / f"{aov}.{1001 + f}.exr"
            path.write_bytes(os.urandom(32 * 1024))
            frames.append(str(path))
        data = render.manifest(subset=f"render{aov.capitalize()}", representations=[{"name": "exr", "files": frames}])
        data.update(overrides.get(aov, {}))
        path = render.root / f"{aov}.json"
        path.write_text(json.dumps(data))
        out.append(load_manifest(str(path)))
    return out


def _attempt(store, products, job="jobM", worker="w1"):
    from atomic_publish.idempotency.keys import deadline_key, fingerprint
    from atomic_publish.wrapper.guard import StopGuard
    from atomic_publish.wrapper.manifest import canonical_json
    from atomic_publish.wrapper.publish import Attempt, Request

    key = deadline_key(job, "0")
    req = Request(manifest_path="", job_id=job, task_id="0", worker=worker)
    print_ = fingerprint(canonical_json([p.raw for p in products]))
    return Attempt(store, products[0], key, print_, req, StopGuard(), [], products)


def _versions(store):
    return sorted((d["data"]["atomic_publish"].get("product"), d["name"])
                  for d in store.catalog.project("demo").find({"type": "version"}))


def test_three_products_publish_under_one_key_with_one_version_each(render, env, store, monkeypatch):
    products = _products(render)
    out = _attempt(store, products).run()
    assert out.outcome == "published", out.message
    assert _versions(store) == [(f"render{a.capitalize()}", 1) for a in sorted(AOVS)]
    rec = store.records.get("deadline10:jobM:0")
    assert rec["state"] == "PUBLISHED" and len(rec["extra_products"]) == 2
    for p in out.extra["products"]:
        assert len(list(Path(p["final_dir"]).glob("*.exr"))) == 3
    again = _attempt(store, products).run()
    assert again.outcome == "already-published" and _versions(store) == [
        (f"render{a.capitalize()}", 1) for a in sorted(AOVS)]
    audit = run_cli(["audit", "--root", str(render.publish_root), "--json"], env)
    assert json.loads(audit.stdout.strip().splitlines()[-1])["violations"] == []


def test_one_product_missing_a_frame_rolls_back_every_product(render, env, store):
    products = _products(render)
    missing = products[2].representations[0].files[1]
    os.unlink(missing)                                   # one AOV lost a frame before the publish ran
    out = _attempt(store, products).run()
    assert out.exit_code == 78 and "does not exist" in out.message, out.message
    assert _versions(store) == []
    assert render.tree() == []                           # nothing of any product on disk
    assert store.reservations.col.count_documents({}) == 0


def test_a_failure_after_staging_one_product_rolls_back_all(render, env, store, monkeypatch):
    from atomic_publish.wrapper.errors import SourceError

    products = _products(render)
    attempt = _attempt(store, products)
    real = attempt._stage_product

    def stage(i, *args):
        if i == 2:
            raise SourceError(f"injected: product {i} cannot be staged")
        return real(i, *args)

    monkeypatch.setattr(attempt, "_stage_product", stage)
    out = attempt.run()
    assert out.exit_code == 78 and "rolled back" in out.message, out.message
    assert _versions(store) == [] and render.tree() == []
    assert store.records.get("deadline10:jobM:0")["state"] == "ROLLED_BACK"
    assert store.reservations.col.count_documents({}) == 0


def test_a_crash_after_committing_rolls_every_product_forward(render, env, store):
    from atomic_publish.wrapper import failpoints

    products = _products(render)
    failpoints.configure("commit.rename=raise")  # after every product's rename, before the documents
    try:
        first = _attempt(store, products).run()
    finally:
        failpoints.configure("")
    assert first.failure_class == "transient", first.message
    rec = store.records.get("deadline10:jobM:0")
    assert rec["state"] == "COMMITTING" and _versions(store) == []      # renamed, nothing visible yet
    rec["lease"] = None
    store.records.col.update_one({"_id": rec["_id"]}, {"$set": {"lease": None}})
    second = _attempt(store, products, worker="w2").run()
    assert second.outcome == "published", second.message
    assert _versions(store) == [(f"render{a.capitalize()}", 1) for a in sorted(AOVS)]


def test_numbers_are_reserved_per_product(render, env, store):
    first = _attempt(store, _products(render), job="jobA").run()
    second = _attempt(store, _products(render), job="jobB").run()
    assert first.outcome == second.outcome == "published"
    assert _versions(store) == sorted((f"render{a.capitalize()}", n) for a in AOVS for n in (1, 2))
    assert store.reservations.col.count_documents({"key": "deadline10:jobB:0", "version": 2}) == 3
