"""Webhook integration: gate (required before the commit) and notify (outbox, at least once)."""
from __future__ import annotations


import pytest

from helpers import publish, run_cli, submit_and_farm

from atomic_publish.testing.webhook_receiver import WebhookReceiver


@pytest.fixture
def hook(tmp_path):
    with WebhookReceiver(tmp_path / "hook-state") as receiver:
        yield receiver


def hook_manifest(render, url: str, phase: str, **extra):
    return render.write_manifest(integrations=[{"name": "webhook", "phase": phase, "settings": {"url": url}}], **extra)


def events(receiver) -> list[str]:
    return [d["body"]["event"] for d in receiver.deliveries()]


def test_gate_webhook_answering_503_twice_is_survived_inside_one_attempt_on_the_farm(render, env, store, hook, tmp_path):
    hook.set_faults({"kind": "http_error", "status": 503, "count": 2})
    proc, out = submit_and_farm(hook_manifest(render, hook.url + "/publish", "gate"), tmp_path / "job", env)
    assert out["job_status"] == "Completed", proc.stdout
    assert out["error_reports"] == [] and out["tasks"][0]["errors"] == 0
    assert events(hook) == ["publish.prepared", "publish.committed"]
    assert hook.stats()["faults_fired"] == {"http_error": 2}
    log = "\n".join(p.read_text() for p in (tmp_path / "job" / "farm").rglob("*.log"))
    assert log.count("retry prepare integration webhook") == 2
    body = hook.deliveries()[0]["body"]
    assert body["version"] == 1 and body["subset"] == "renderCompMain"
    assert hook.deliveries()[0]["idempotency_key"].startswith("atomic-publish-")
    rec = store.records.get(f"deadline10:{out['job_id']}:0")
    assert rec["receipts"]["webhook"]["state"] == "committed"


def test_gate_webhook_refusing_rolls_back_and_compensates(render, env, store, hook):
    hook.set_faults({"kind": "http_error", "status": 400, "path": "/publish", "count": 1})
    proc, out = publish(hook_manifest(render, hook.url + "/publish", "gate"), env)
    assert proc.returncode == 78, proc.stdout
    assert "refused the request with HTTP 400" in out["message"] and "rolled back" in out["message"]
    assert render.tree() == [] or all(".staging" not in p for p in render.tree())
    assert not any(p.endswith("v001") for p in render.tree())
    assert store.reservations.col.count_documents({}) == 0
    assert store.records.get("deadline10:job1:0")["state"] == "ROLLED_BACK"
    assert store.catalog.db.list_collection_names() == []


def test_gate_webhook_compensated_when_a_later_step_fails_permanently(render, env, store, hook, tmp_path):
    manifest = render.write_manifest(integrations=[
        {"name": "webhook", "id": "tracker", "phase": "gate", "settings": {"url": hook.url + "/tracker"}},
        {"name": "webhook", "id": "review", "phase": "gate", "settings": {"url": hook.url + "/review"}}])
    hook.set_faults({"kind": "http_error", "status": 422, "path": "/review", "count": 1})
    proc, out = publish(manifest, env)
    assert proc.returncode == 78
    # Every integration that began to prepare is compensated, last first (a refused one too:
    # it may have acted before refusing, and a compensation is idempotent).
    assert [(d["path"], d["body"]["event"]) for d in hook.deliveries()] == [
        ("/tracker", "publish.prepared"), ("/review", "publish.rolled_back"), ("/tracker", "publish.rolled_back")]
    rec = store.records.get("deadline10:job1:0")
    assert rec["receipts"]["tracker"]["state"] == "compensated"
    assert rec["receipts"]["review"]["state"] == "compensated"


def test_notify_webhook_down_for_two_attempts_is_delivered_exactly_once(render, env, store, hook):
    manifest = hook_manifest(render, hook.url + "/notify", "notify")
    hook.go_down()
    proc, out = publish(manifest, env)
    assert proc.returncode == 0 and out["outcome"] == "published"
    assert out["notifications_pending"] == ["webhook"]
    assert store.catalog.project("demo").count_documents({"type": "version"}) == 1  # never blocked

    proc, out = publish(manifest, env)  # a later attempt of the same task: still down
    assert proc.returncode == 0 and out["outcome"] == "already-published"
    assert out["notifications_pending"] == ["webhook"]
    rec = store.records.get("deadline10:job1:0")
    assert rec["outbox"]["webhook"]["state"] == "pending" and rec["outbox"]["webhook"]["attempts"] == 2

    hook.start()
    proc = run_cli(["deliver", "--job-id", "job1", "--json"], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc, out = publish(manifest, env)
    assert out["notifications_pending"] == []
    proc = run_cli(["deliver", "--all"], env, check=True)
    assert events(hook) == ["publish.published"]
    assert store.records.get("deadline10:job1:0")["outbox"]["webhook"]["state"] == "delivered"


def test_notify_delivery_repeated_is_deduplicated_by_the_receiver(render, env, store, hook):
    from atomic_publish.wrapper.integrations.base import Context
    from atomic_publish.wrapper.integrations.webhook import WebhookIntegration
    from atomic_publish.wrapper.manifest import parse_manifest

    m = parse_manifest(render.manifest())
    ctx = Context(key="k1", job_id="j", task_id=0, manifest=m, version=1, final_dir="/x/v001", files=(),
                  version_document_id="v")
    w = WebhookIntegration("webhook", "notify", {"url": hook.url + "/n"})
    w.deliver(ctx)
    w.deliver(ctx)
    assert len(hook.deliveries()) == 1 and hook.stats()["duplicates"] == 1


def test_unknown_integration_and_bad_settings_are_refused_before_anything(render, env, store):
    proc, out = publish(render.write_manifest(integrations=[{"name": "shotgun"}]), env)
    assert proc.returncode == 78 and "integrations[0].name: unknown integration 'shotgun'" in out["message"]
    proc, out = publish(render.write_manifest(integrations=[{"name": "webhook", "settings": {"url": "ftp://x"}}]), env)
    assert proc.returncode == 78 and "integrations[0].settings.url" in out["message"]
    assert store.records.col.count_documents({}) == 0 and render.tree() == []


def test_a_commit_retried_through_another_mount_sends_the_same_body(render, env, store, hook, tmp_path):
    """The receiver recorded the committed event, its answer was lost, and the task rolls forward
    on a worker that reaches the same storage through another path: under the same Idempotency-Key
    it must send the same body (rootless paths only), or a receiver following the IETF draft
    answers 422 past the point of no return and the farm fails a task that only had to finish."""
    url = hook.url + "/tracker"
    manifest = hook_manifest(render, url, "gate")
    proc = run_cli(["run", "--manifest", str(manifest), "--job-id", "job1", "--task-id", "0"],
                   dict(env, ATOMIC_PUBLISH_FAILPOINTS="integrate.prepare=exit"))
    assert proc.returncode != 0 and [d["body"]["event"] for d in hook.deliveries()] == ["publish.prepared"]
    hook.set_faults({"kind": "drop_after_record", "path": "/tracker", "count": None})
    proc, out = publish(manifest, env, "job1", "0", "--retry-attempts", "2", "--retry-budget", "3")
    assert proc.returncode == 75, proc.stdout  # committing; the commit's answer never came
    assert store.records.get("deadline10:job1:0")["state"] == "COMMITTING"
    hook.clear_faults()
    alias = tmp_path / "other-mount"
    alias.symlink_to(render.publish_root)  # another worker's path to the same storage
    other = hook_manifest(render, url, "gate", name="other-mount.json", publish_root=str(alias))
    proc, out = publish(other, env, "job1", "0", "--submitted-manifest", str(manifest))
    assert proc.returncode == 0, proc.stdout
    assert out["outcome"] == "published"
    committed = [d for d in hook.deliveries() if d["body"]["event"] == "publish.committed"]
    assert len(committed) == 1 and hook.stats()["conflicts"] == 0
    assert committed[0]["body"]["final_dir"].startswith("{root[")


def test_a_refusal_past_the_point_of_no_return_says_requeue_not_resubmit(render, env, store, hook):
    """A gate that refuses its commit after COMMITTING cannot be rolled back: the message must
    send the admin back to the same task (it rolls forward), never to a new job (a new version)."""
    manifest = hook_manifest(render, hook.url + "/tracker", "gate")
    proc = run_cli(["run", "--manifest", str(manifest), "--job-id", "job1", "--task-id", "0"],
                   dict(env, ATOMIC_PUBLISH_FAILPOINTS="integrate.prepare=exit"))
    assert proc.returncode != 0
    hook.set_faults({"kind": "http_error", "status": 400, "path": "/tracker", "count": None})
    proc, out = publish(manifest, env)
    assert proc.returncode == 78 and store.records.get("deadline10:job1:0")["state"] == "COMMITTING"
    assert "not rolled back" in out["message"] and "requeue this task (not a new job" in out["message"]
    assert "resubmit" not in out["message"]
    hook.clear_faults()
    proc, out = publish(manifest, env)
    assert proc.returncode == 0 and out["outcome"] == "published"


def test_a_version_renumbered_after_its_prepare_is_prepared_again_under_a_new_key(render, env, store, hook):
    """Prepared at v001 by an earlier attempt, renumbered to v002 before the commit (v001's folder
    was taken): the receiver hears v001 rolled back and v002 prepared and committed, each under its
    own Idempotency-Key (a reused key with another body would be a 422)."""
    manifest = hook_manifest(render, hook.url + "/tracker", "gate")
    proc = run_cli(["run", "--manifest", str(manifest), "--job-id", "job1", "--task-id", "0"],
                   dict(env, ATOMIC_PUBLISH_FAILPOINTS="integrate.prepare=exit"))
    assert proc.returncode != 0
    (render.publish_root / "demo/shots/sq01/sh010/publish/render/renderCompMain/v001").mkdir(parents=True)
    proc, out = publish(manifest, env)
    assert proc.returncode == 0 and out["version"] == 2, proc.stdout
    seen = [(d["body"]["event"], d["body"]["version"]) for d in hook.deliveries()]
    assert seen == [("publish.prepared", 1), ("publish.rolled_back", 1), ("publish.prepared", 2),
                    ("publish.committed", 2)]
    assert len({d["idempotency_key"] for d in hook.deliveries()}) == 4 and hook.stats()["conflicts"] == 0
