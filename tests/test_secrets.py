"""Secrets (store password, ftrack key, webhook token) never appear in any output of a farm run."""
from __future__ import annotations

import os

import pytest
import pymongo

from helpers import run_cli, submit_and_farm

pytest.importorskip("ftrack_api")
from atomic_publish.testing.fake_ftrack import FakeFtrackServer  # noqa: E402
from atomic_publish.testing.webhook_receiver import WebhookReceiver  # noqa: E402

FTRACK_KEY = "ftk-7f3e9a1c55d24e0b"
HOOK_TOKEN = "hook-token-91bd7c2e"
DB_PASSWORD = "mongo-pw-4c1d8e77"


def test_no_secret_in_any_output_of_a_farm_run(render, env, store, tmp_path, mongo_uri):
    # A store URI with a password: a user on the test server (SecantusDB without --auth accepts it).
    client = pymongo.MongoClient(mongo_uri)
    try:
        client.admin.command("createUser", "publisher", pwd=DB_PASSWORD, roles=["root"])
    except pymongo.errors.OperationFailure:
        pass
    host = mongo_uri.split("//", 1)[1]
    secret_uri = f"mongodb://publisher:{DB_PASSWORD}@{host}"
    env = dict(env)
    env.pop("ATOMIC_PUBLISH_STORE")
    with FakeFtrackServer(tmp_path / "ft", api_user="publisher", api_key=FTRACK_KEY) as ftrack, \
            WebhookReceiver(tmp_path / "hook", token=HOOK_TOKEN) as hook:
        ftrack.seed_context("demo", "sh010", "comp")
        manifest = render.write_manifest(integrations=[
            {"name": "ftrack"},
            {"name": "webhook", "phase": "notify", "settings": {"url": hook.url + "/n", "token_env": "HOOK_TOKEN"}}])
        proc, out = submit_and_farm(manifest, tmp_path / "job", env,
                                    "--config", f"StoreUri={secret_uri}",
                                    "--config", f"FtrackServer={ftrack.url}",
                                    "--config", "FtrackApiUser=publisher",
                                    "--config", f"FtrackApiKey={FTRACK_KEY}",
                                    "--config", f"IntegrationSecrets=HOOK_TOKEN={HOOK_TOKEN}")
        assert out["job_status"] == "Completed", proc.stdout + proc.stderr
        assert [v["is_published"] for v in ftrack.entities("AssetVersion")] == [True]
        assert len(hook.deliveries()) == 1
    status = run_cli(["status", "--job-id", out["job_id"], "--json"], dict(env, ATOMIC_PUBLISH_STORE=secret_uri))
    outputs = {"farm stdout": proc.stdout, "farm stderr": proc.stderr, "status": status.stdout + status.stderr}
    for path in (tmp_path / "job" / "farm").rglob("*"):
        if path.is_file() and path.name != "AtomicPublish.config":  # the plugin configuration itself (0600)
            outputs[str(path)] = path.read_text(errors="replace")
    rec = store.records.get(f"deadline10:{out['job_id']}:0")
    outputs["record"] = repr(rec)
    outputs["documents"] = repr(list(store.catalog.project("demo").find()))
    for secret in (FTRACK_KEY, HOOK_TOKEN, DB_PASSWORD):
        leaks = [where for where, text in outputs.items() if secret in text]
        assert leaks == [], f"{secret} leaked into {leaks}"
    assert len(outputs) > 5
    assert oct(os.stat(tmp_path / "job" / "farm" / "AtomicPublish.config").st_mode & 0o777) == "0o600"
