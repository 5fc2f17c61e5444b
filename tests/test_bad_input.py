"""Bad input: a clear one-line error naming the problem, a non-zero exit, and no trace."""
from __future__ import annotations

import os
import socket

import pytest

from helpers import publish


def assert_no_trace(render, store):
    assert render.tree() == [], render.tree()
    assert store.records.col.count_documents({}) == 0
    assert store.reservations.col.count_documents({}) == 0
    assert store.catalog.db.list_collection_names() == []


def result_line(proc) -> str:
    lines = [l for l in proc.stdout.splitlines() if l.startswith("[atomic-publish] result ")]
    assert len(lines) == 1, proc.stdout
    return lines[0]


@pytest.mark.parametrize("overrides, expected", [
    ({"subset": None}, "manifest field subset: None is not of type 'string'"),
    ({"subset": "../evil"}, "manifest field subset: '../evil' is not allowed"),
    ({"representations": []}, "manifest field representations: [] should be non-empty"),
    ({"publish_root": "relative/root"}, "manifest field publish_root: 'relative/root' is not an absolute path"),
    ({"template": "{publish_root}/{subset}"}, "manifest field template: must contain {version}"),
    ({"template": "{publish_root}/{project.__class__}/{version}"}, "field {project.__class__} is not allowed"),
    ({"extra": 1}, "manifest field (top level): unknown field(s) 'extra'"),
    ({"asset": "CON"}, "'CON' is a reserved name on Windows"),
])
def test_invalid_manifest(render, env, store, overrides, expected):
    proc, out = publish(render.write_manifest(**overrides), env)
    assert proc.returncode == 78, proc.stdout + proc.stderr
    assert expected in out["message"], out["message"]
    assert "nothing was written; a farm fails the job without further retries" in result_line(proc)
    assert_no_trace(render, store)


def test_missing_field_is_named(render, env, store):
    data = render.manifest()
    del data["publish_root"]
    path = render.root / "m.json"
    import json
    path.write_text(json.dumps(data))
    proc, out = publish(path, env)
    assert proc.returncode == 78 and "manifest field publish_root: is required" in out["message"]
    assert_no_trace(render, store)


def test_not_json(render, env, store):
    path = render.root / "m.json"
    path.write_text("{not json")
    proc, out = publish(path, env)
    assert proc.returncode == 78 and "is not valid JSON" in out["message"]
    assert_no_trace(render, store)


def test_missing_source_file(render, env, store):
    render.frames[1].unlink()
    proc, out = publish(render.write_manifest(), env)
    assert proc.returncode == 78
    assert f"source file {render.frames[1]} does not exist" in out["message"]
    assert_no_trace(render, store)


def test_source_is_a_fifo(render, env, store):
    os.unlink(render.frames[0])
    os.mkfifo(render.frames[0])
    proc, out = publish(render.write_manifest(), env)
    assert proc.returncode == 78 and "not a regular file" in out["message"]
    assert_no_trace(render, store)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file; the errno table is tested in unit tests")
def test_unreadable_source(render, env, store):
    os.chmod(render.frames[0], 0)
    proc, out = publish(render.write_manifest(), env)
    assert proc.returncode == 77 and "cannot read source" in out["message"]
    assert_no_trace(render, store)


def test_template_escaping_the_root(render, env, store):
    proc, out = publish(render.write_manifest(template="{publish_root}/../escape/v{version}"), env)
    assert proc.returncode == 78
    assert "outside the publish root" in out["message"] or "contains '..'" in out["message"]
    assert_no_trace(render, store)
    assert not (render.root / "escape").exists()


def test_symlink_escaping_the_root(render, env, store, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    os.symlink(elsewhere, render.publish_root / "demo")
    proc, out = publish(render.write_manifest(), env)
    assert proc.returncode == 78 and "a symlink escapes it" in out["message"]
    assert list(elsewhere.iterdir()) == []
    assert store.records.col.count_documents({}) == 0


def test_missing_publish_root_is_worker_local(render, env, store):
    proc, out = publish(render.write_manifest(publish_root=str(render.root / "not-mounted")), env)
    assert proc.returncode == 77
    assert "cannot see the publish root" in out["message"] and "a farm deny-lists this worker" in out["message"]
    # A worker-local failure is remembered (for escalation across workers), and nothing else is written.
    rec = store.records.get("deadline10:job1:0")
    assert rec["state"] == "NEW" and rec["lease"] is None and rec["version"] is None and store.staged.of_key("deadline10:job1:0") == {}
    assert [(a["outcome"], a["error_type"], a["worker"]) for a in rec["attempts"]] == [
        ("worker-local", "PublishRootUnavailable", "test-worker")]
    assert store.reservations.col.count_documents({}) == 0
    assert render.tree() == []


def test_bad_job_id(render, env, store):
    proc, out = publish(render.write_manifest(), env, "job;rm -rf /")
    assert proc.returncode == 78 and "--job-id" in out["message"]
    assert_no_trace(render, store)


def test_unreachable_store(render, env, store):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bad = dict(env, ATOMIC_PUBLISH_STORE=f"mongodb://user:hunter22@127.0.0.1:{port}/?serverSelectionTimeoutMS=500")
    proc, out = publish(render.write_manifest(), bad)
    assert proc.returncode == 75
    assert "cannot reach the store" in out["message"] and "hunter22" not in proc.stdout + proc.stderr
    assert_no_trace(render, store)
