"""Integrations for a publish of several products (issue 15): one metadata JSON with three AOVs,
published with `atomic-publish run --metadata` as a real process, the real ftrack_api client
against the local ftrack server and a notify webhook against the local receiver.

Each product has its own integration context and receipts: product 0's at the top of the record
(``receipts.{id}``, ``outbox.{id}``), product i's under ``extra_products.{i}``.
"""
from __future__ import annotations

import json

import pytest

from helpers import last_json, run_cli

pytest.importorskip("ftrack_api")
from atomic_publish.testing.fake_ftrack import FakeFtrackServer  # noqa: E402
from atomic_publish.testing.webhook_receiver import WebhookReceiver  # noqa: E402
from test_metadata import AyonRender  # noqa: E402

AOVS = ("beauty", "Z", "N")
PRODUCTS = [f"renderMain_{aov}" for aov in AOVS]
KEY = "deadline10:jobI:0"


@pytest.fixture
def ftrack(tmp_path, env):
    with FakeFtrackServer(tmp_path / "ftrack-state", api_user="publisher", api_key="ftrack-secret-key") as server:
        server.seed_context("demo", "sh010", "lighting")
        env.update(FTRACK_SERVER=server.url, FTRACK_API_USER="publisher", FTRACK_API_KEY="ftrack-secret-key")
        yield server


@pytest.fixture
def hook(tmp_path):
    with WebhookReceiver(tmp_path / "hook-state") as receiver:
        yield receiver


@pytest.fixture
def ayon(tmp_path, hook) -> AyonRender:
    """Three AOVs; the studio settings declare ftrack (gate) and a webhook (notify) for every product."""
    render = AyonRender(tmp_path / "show", aovs=AOVS)
    settings = json.loads(render.settings.read_text())
    settings["integrations"] = [{"name": "ftrack", "settings": {"asset_type": "render"}},
                                {"name": "webhook", "id": "tracker", "phase": "notify",
                                 "settings": {"url": hook.url + "/published"}}]
    render.settings.write_text(json.dumps(settings))
    return render


def _run(ayon: AyonRender, env: dict, **extra_env: str):
    environ = ayon.environ(env)
    environ.update(extra_env)
    proc = run_cli(["run", "--metadata", str(ayon.write()), "--job-id", "jobI", "--task-id", "0",
                    "--worker", "test-worker", "--json"], environ)
    return proc


def _receipts(rec: dict, ident: str) -> list[dict]:
    """Product 0's receipt at the top of the record, then products 1 and 2's under extra_products."""
    return [rec["receipts"].get(ident)] + [(rec["extra_products"][str(i)].get("receipts") or {}).get(ident)
                                           for i in (1, 2)]


def _outboxes(rec: dict, ident: str) -> list[dict]:
    return [rec["outbox"][ident]] + [rec["extra_products"][str(i)]["outbox"][ident] for i in (1, 2)]


def _asset_versions(ftrack) -> dict[str, dict]:
    """ftrack's AssetVersions by the name of their Asset (one Asset per product)."""
    assets = {a["id"]: a["name"] for a in ftrack.entities("Asset")}
    out: dict[str, dict] = {}
    for av in ftrack.entities("AssetVersion"):
        name = assets[av["asset_id"]]
        assert name not in out, f"two AssetVersions of {name}"
        out[name] = av
    return out


def _catalogue_versions(store) -> list[tuple[str, int]]:
    return sorted((d["data"]["atomic_publish"].get("product"), d["name"])
                  for d in store.catalog.project("demo").find({"type": "version"}))


def test_three_products_get_one_published_asset_version_and_one_notification_each(ayon, env, store, ftrack, hook):
    proc = _run(ayon, env)
    out = last_json(proc)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out["outcome"] == "published" and out["notifications_pending"] == []
    avs = _asset_versions(ftrack)
    assert sorted(avs) == sorted(PRODUCTS)
    assert all(av["is_published"] is True and av["version"] == 1 for av in avs.values())
    assert len({av["id"] for av in avs.values()}) == 3
    components = ftrack.entities("Component")
    assert sorted(c["version_id"] for c in components) == sorted(av["id"] for av in avs.values())

    rec = store.records.get(KEY)
    for product, entry in zip(PRODUCTS, _receipts(rec, "ftrack")):
        assert entry["state"] == "committed" and entry["receipt"]["is_published"] is True
        assert entry["receipt"]["asset_version_id"] == avs[product]["id"]
    assert [e["state"] for e in _outboxes(rec, "tracker")] == ["delivered"] * 3

    bodies = [d["body"] for d in hook.deliveries()]
    assert sorted(b["subset"] for b in bodies) == sorted(PRODUCTS)
    assert {b["event"] for b in bodies} == {"publish.published"}
    assert sorted(b["product_index"] for b in bodies) == [0, 1, 2] and {b["product_count"] for b in bodies} == {3}
    assert len({d["idempotency_key"] for d in hook.deliveries()}) == 3   # none deduplicated away as product 0's
    by_subset = {b["subset"]: b for b in bodies}
    for product in PRODUCTS:  # each notification describes its own product's version and files
        body = by_subset[product]
        assert body["final_dir"].endswith(f"/render/{product}/v001")
        assert all(product in f["name"] for rep in body["representations"] for f in rep["files"])
    assert len({b["version_id"] for b in bodies}) == 3
    versions = {d["data"]["atomic_publish"]["product"]: str(d["_id"])
                for d in store.catalog.project("demo").find({"type": "version"})}
    assert {b["subset"]: b["version_id"] for b in bodies} == versions  # the catalogue's own version ids

    applied = ftrack.stats()["applied"]
    proc = _run(ayon, env)  # a requeue: nothing changes anywhere
    assert last_json(proc)["outcome"] == "already-published", proc.stdout
    assert ftrack.stats()["applied"] == applied and len(hook.deliveries()) == 3
    audit = run_cli(["audit", "--root", str(ayon.work), "--ftrack", "--json"], env)
    assert json.loads(audit.stdout.strip().splitlines()[-1])["violations"] == [], audit.stdout


def test_sigkill_between_two_products_prepares_then_the_retry_makes_no_duplicate(ayon, env, store, ftrack):
    proc = _run(ayon, env, ATOMIC_PUBLISH_FAILPOINTS="integrate.prepare=kill@2")  # after product 1's receipt
    assert proc.returncode == -9, proc.stdout + proc.stderr
    rec = store.records.get(KEY)
    assert rec["state"] == "INTEGRATING"
    [r0, r1, r2] = _receipts(rec, "ftrack")
    assert (r0["state"], r1["state"], r2) == ("prepared", "prepared", None)
    first = _asset_versions(ftrack)
    assert sorted(first) == sorted(PRODUCTS[:2]) and not any(av["is_published"] for av in first.values())
    assert _catalogue_versions(store) == []

    proc = _run(ayon, env)
    out = last_json(proc)
    assert proc.returncode == 0 and out["outcome"] == "published", proc.stdout + proc.stderr
    avs = _asset_versions(ftrack)  # raises on a second AssetVersion of one product
    assert sorted(avs) == sorted(PRODUCTS) and all(av["is_published"] for av in avs.values())
    assert {p: avs[p]["id"] for p in first} == {p: av["id"] for p, av in first.items()}  # receipts reused
    assert len(ftrack.entities("Component")) == 3 and len(ftrack.entities("Asset")) == 3
    rec = store.records.get(KEY)
    assert [e["state"] for e in _receipts(rec, "ftrack")] == ["committed"] * 3
    assert _catalogue_versions(store) == sorted((p, 1) for p in PRODUCTS)


def test_a_permanent_failure_after_two_prepares_compensates_every_product(ayon, env, store, ftrack, hook):
    proc = _run(ayon, env, ATOMIC_PUBLISH_FAILPOINTS="integrate.prepare=kill@2")
    assert proc.returncode == -9, proc.stdout + proc.stderr
    assert len(ftrack.entities("AssetVersion")) == 2
    # ftrack now refuses product 2's AssetVersion for good: the whole publish rolls back
    ftrack.set_faults({"kind": "exception", "exception": "ValidationError", "content": "shot is locked",
                       "count": None, "action": "create", "entity_type": "AssetVersion"})
    proc = _run(ayon, env)
    out = last_json(proc)
    assert proc.returncode == 78, proc.stdout + proc.stderr
    assert "ftrack refused" in out["message"] and "rolled back" in out["message"]
    assert ftrack.entities("AssetVersion") == [] and ftrack.entities("Component") == []  # products 1 and 0 undone
    rec = store.records.get(KEY)
    assert rec["state"] == "ROLLED_BACK"
    assert [e["state"] for e in _receipts(rec, "ftrack")] == ["compensated"] * 3
    assert "outbox" not in rec and hook.deliveries() == []
    assert _catalogue_versions(store) == [] and ayon.published() == []
    assert store.reservations.col.count_documents({}) == 0
    compensated = [line for line in proc.stdout.splitlines() if ": compensate" in line]
    assert [p for line in compensated for p in PRODUCTS if p in line] == list(reversed(PRODUCTS))  # last first


def test_abandon_compensates_every_products_prepared_asset_version(ayon, env, store, ftrack):
    proc = _run(ayon, env, ATOMIC_PUBLISH_FAILPOINTS="integrate.prepare=kill@3")  # all three prepared
    assert proc.returncode == -9, proc.stdout + proc.stderr
    assert len(ftrack.entities("AssetVersion")) == 3
    proc = run_cli(["abandon", "--job-id", "jobI", "--reason", "job deleted", "--json"], ayon.environ(env))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ftrack.entities("AssetVersion") == []
    rec = store.records.get(KEY)
    assert rec["state"] == "ROLLED_BACK" and [e["state"] for e in _receipts(rec, "ftrack")] == ["compensated"] * 3


def test_notifications_of_every_product_wait_in_their_outbox_until_deliver(ayon, env, store, ftrack, hook):
    hook.go_down()
    proc = _run(ayon, env)
    out = last_json(proc)
    assert proc.returncode == 0 and out["outcome"] == "published", proc.stdout + proc.stderr
    assert sorted(out["notifications_pending"]) == sorted(f"tracker of {p}" for p in PRODUCTS)
    rec = store.records.get(KEY)
    assert [e["state"] for e in _outboxes(rec, "tracker")] == ["pending"] * 3
    hook.start()
    proc = run_cli(["deliver", "--key", KEY, "--json"], ayon.environ(env))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert last_json(proc) == {"delivered": 3, "pending": {}}
    assert sorted(d["body"]["subset"] for d in hook.deliveries()) == sorted(PRODUCTS)
    rec = store.records.get(KEY)
    assert [e["state"] for e in _outboxes(rec, "tracker")] == ["delivered"] * 3


def test_deliver_reports_a_record_it_cannot_rebuild_and_goes_on(ayon, env, store, ftrack, hook):
    hook.go_down()
    assert last_json(_run(ayon, env))["outcome"] == "published"
    store.records.col.update_one({"_id": KEY}, {"$unset": {"manifest_json": ""}})  # written by an older version
    hook.start()
    proc = run_cli(["deliver", "--all", "--json"], ayon.environ(env))
    assert proc.returncode == 75 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    assert f"{KEY}: notifications not delivered: manifest field manifest_json: the record holds no manifest" \
        in proc.stdout
    assert last_json(proc) == {"delivered": 0, "pending": {KEY: ["(the record's manifest)"]}}
    assert hook.deliveries() == []
