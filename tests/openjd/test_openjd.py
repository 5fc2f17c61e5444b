"""`submit --format openjd` and the template run by the real Open Job Description runtime (`openjd run`).

The store URI reaches the wrapper either as the template's Store parameter or through the inherited
environment (as a Deadline Cloud queue environment would set it); the databases of the test always
come from the inherited environment, so a publish landing in the test's databases shows that
`openjd run` hands its environment to the wrapper.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from helpers import Render, run_cli

from atomic_publish.idempotency.keys import openjd_key

BIN = Path(sys.executable).parent
OPENJD = BIN / "openjd"
ATOMIC_PUBLISH = BIN / "atomic-publish"
FINAL = Path("demo/shots/sq01/sh010/publish/render/renderCompMain")

pytestmark = pytest.mark.timeout(120)


def bundle(manifest: Path, out: Path, env: dict, *extra: str) -> Path:
    """`atomic-publish submit --format openjd`; returns the template's path."""
    run_cli(["submit", str(manifest), "--out", str(out), "--format", "openjd", *extra], env, check=True)
    return out / "template.json"


def openjd_args(template: Path, job_id: str, store: str = "") -> list[str]:
    return [str(OPENJD), "run", str(template), "--step", "Publish", "-p", f"JobId={job_id}",
            "-p", f"Store={store}", "-p", f"AtomicPublishExecutable={ATOMIC_PUBLISH}"]


def openjd_run(template: Path, env: dict, job_id: str, store: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(openjd_args(template, job_id, store), env=env, capture_output=True, text=True, timeout=90)


def result_line(output: str) -> str:
    lines = [line for line in output.splitlines() if "[atomic-publish] result " in line]
    assert len(lines) == 1, output
    return lines[0].split("[atomic-publish] result ", 1)[1]


def versions_on_disk(render: Render) -> list[str]:
    folder = render.publish_root / FINAL
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def staged_files(folder: Path) -> int:
    """Files in the staging folders of v001 (0 before one exists)."""
    try:
        return sum(1 for d in folder.glob(".v001.staging-*") for f in os.scandir(d) if f.name.endswith(".exr"))
    except FileNotFoundError:
        return 0


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def audit(render: Render, env: dict) -> tuple[int, dict]:
    proc = run_cli(["audit", "--root", str(render.publish_root), "--json"], env)
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def job_id() -> str:
    return f"local-{uuid.uuid4().hex[:12]}"


def test_submit_writes_a_template_that_openjd_validates(render, env, tmp_path):
    template = bundle(render.write_manifest(), tmp_path / "job", env)
    data = json.loads(template.read_text())
    assert data["specificationVersion"] == "jobtemplate-2023-09"
    assert [s["name"] for s in data["steps"]] == ["Publish"]
    assert "parameterSpace" not in data["steps"][0]  # one task, task parameters {}
    on_run = data["steps"][0]["script"]["actions"]["onRun"]
    assert on_run["command"] == "{{Param.AtomicPublishExecutable}}"
    assert on_run["cancelation"] == {"mode": "NOTIFY_THEN_TERMINATE", "notifyPeriodInSeconds": 120}
    assert on_run["args"][:6] == ["run", "--manifest={{Param.Manifest}}", "--openjd-step=Publish",
                                  "--openjd-task-params={}", "--openjd-job-id={{Param.JobId}}",
                                  "--store={{Param.Store}}"]
    params = {p["name"]: p for p in data["parameterDefinitions"]}
    assert sorted(params) == ["AtomicPublishExecutable", "JobId", "Manifest", "Store"]
    assert params["Manifest"]["default"] == "manifest.json" and (template.parent / "manifest.json").is_file()
    assert params["Store"]["default"] == "" and params["JobId"]["default"] == ""
    assert not list(template.parent.glob("*.job"))

    check = subprocess.run([str(OPENJD), "check", str(template)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr

    # a password never goes into a job parameter
    refused = run_cli(["submit", str(render.write_manifest()), "--out", str(tmp_path / "secret"), "--format",
                       "openjd", "--store", "mongodb://publisher:s3cr3t@db.example:27017/"], env)
    assert refused.returncode == 1 and "password" in refused.stderr
    assert "s3cr3t" not in refused.stdout + refused.stderr
    assert not (tmp_path / "secret" / "template.json").exists()


def test_openjd_run_publishes_one_version_and_a_second_run_publishes_nothing(render, env, store, tmp_path, job_id):
    template = bundle(render.write_manifest(), tmp_path / "job", env)
    key = openjd_key(job_id, "Publish", {})

    # 1st run: the store URI as the template's Store parameter, not in the environment
    no_store_env = {k: v for k, v in env.items() if k != "ATOMIC_PUBLISH_STORE"}
    first = openjd_run(template, dict(no_store_env, DEADLINE_JOB_ID="ignored-when-JobId-is-given"), job_id,
                       store=env["ATOMIC_PUBLISH_STORE"])
    assert first.returncode == 0, first.stdout + first.stderr
    assert result_line(first.stdout).startswith("published exit=0"), first.stdout
    assert f"status publishing {key} " in first.stdout
    assert versions_on_disk(render) == ["v001"]
    final = render.publish_root / FINAL / "v001"
    assert json.loads((final / ".atomic-publish.json").read_text())["key"] == key
    for i, src in enumerate(render.frames):
        assert (final / f"dm_sh010_renderCompMain_v001.{1001 + i}.exr").read_bytes() == src.read_bytes()
    record = store.records.get(key)
    assert record["state"] == "PUBLISHED" and record["version"] == 1 and record["lease"] is None
    assert store.catalog.project("demo").count_documents({"type": "version"}) == 1

    # 2nd run: Store blank, the URI comes from the inherited ATOMIC_PUBLISH_STORE (a queue environment's job)
    before = snapshot(render.publish_root)
    second = openjd_run(template, env, job_id)
    assert second.returncode == 0, second.stdout + second.stderr
    assert result_line(second.stdout).startswith("already-published exit=0"), second.stdout
    assert snapshot(render.publish_root) == before
    assert versions_on_disk(render) == ["v001"]
    assert store.catalog.project("demo").count_documents({"type": "version"}) == 1
    assert [r["_id"] for r in store.records.find_by_job(job_id)] == [key]

    # on Deadline Cloud JobId is blank and the worker agent's DEADLINE_JOB_ID is the job id
    third = openjd_run(template, dict(env, DEADLINE_JOB_ID=job_id), "")
    assert third.returncode == 0 and result_line(third.stdout).startswith("already-published exit=0"), third.stdout
    assert store.catalog.project("demo").count_documents({"type": "version"}) == 1


def test_cancel_during_staging_then_run_again_publishes_exactly_one_version(env, store, tmp_path, job_id):
    render = Render(tmp_path, frames=300, size=256 * 1024, movie=False)
    template = bundle(render.write_manifest(), tmp_path / "job", env)
    key = openjd_key(job_id, "Publish", {})
    folder = render.publish_root / FINAL

    proc = subprocess.Popen(openjd_args(template, job_id), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while staged_files(folder) < 30:  # cancel once staging is well under way
            assert proc.poll() is None, f"openjd run ended before staging was under way:\n{proc.stdout.read()}"
            assert time.monotonic() < deadline, "staging did not begin within 60 s"
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)  # what cancelling the session does: OpenJD notifies the wrapper
        cancelled_at = time.monotonic()
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, output
    # the wrapper stopped at a safe point well inside the notify period (120 s), not by SIGKILL
    assert time.monotonic() - cancelled_at < 30
    assert result_line(output).startswith("transient exit=75"), output
    assert "SIGTERM received" in output, output
    record = store.records.get(key)
    assert record["state"] in ("RESERVED", "STAGING"), record["state"]
    assert record["lease"] is None  # released: the next attempt resumes at once
    assert not (folder / "v001").exists()
    staged = staged_files(folder)
    assert 30 <= staged < 300, f"{staged} files staged: the cancel did not come in the middle of staging"

    again = openjd_run(template, env, job_id)
    assert again.returncode == 0, again.stdout + again.stderr
    assert result_line(again.stdout).startswith("published exit=0"), again.stdout
    assert versions_on_disk(render) == ["v001"]  # no staging folder left, no second version
    assert len([p for p in (folder / "v001").iterdir() if p.suffix == ".exr"]) == 300
    assert store.catalog.project("demo").count_documents({"type": "version"}) == 1
    record = store.records.get(key)
    assert record["state"] == "PUBLISHED" and record["version"] == 1
    assert [a.get("outcome") for a in record["attempts"]][-1] == "published"

    code, report = audit(render, env)
    assert code == 0, report
    assert report["violations"] == []


QUEUE_ENVIRONMENT = """\
specificationVersion: environment-2023-09
environment:
  name: AtomicPublishStore
  script:
    actions:
      onEnter:
        command: bash
        args: ["{{Env.File.Enter}}"]
    embeddedFiles:
    - name: Enter
      type: TEXT
      data: |
        set -euo pipefail
        umask 077
        printf '%s\\n' "$TEST_SECRET_STORE_URI" > "{{Session.WorkingDirectory}}/atomic-publish-store"
        echo "openjd_env: ATOMIC_PUBLISH_STORE_FILE={{Session.WorkingDirectory}}/atomic-publish-store"
"""


def test_store_uri_from_a_queue_environment_never_reaches_the_log(render, env, store, tmp_path, job_id):
    """docs/deadline-cloud.md's recipe: a queue environment writes the URI to a 0600 file in the session
    and exports ATOMIC_PUBLISH_STORE_FILE (here the secret comes from a variable instead of Secrets Manager)."""
    template = bundle(render.write_manifest(), tmp_path / "job", env)
    (tmp_path / "queue-env.yaml").write_text(QUEUE_ENVIRONMENT)
    uri = env["ATOMIC_PUBLISH_STORE"]
    run_env = {k: v for k, v in env.items() if k != "ATOMIC_PUBLISH_STORE"}
    run_env["TEST_SECRET_STORE_URI"] = uri
    args = openjd_args(template, job_id)
    proc = subprocess.run([*args[:3], "--environment", str(tmp_path / "queue-env.yaml"), *args[3:]], env=run_env,
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert result_line(proc.stdout).startswith("published exit=0"), proc.stdout
    assert store.records.get(openjd_key(job_id, "Publish", {}))["state"] == "PUBLISHED"
    assert uri not in proc.stdout + proc.stderr


def test_submit_openjd_metadata_template_publishes_every_product_once(env, store, tmp_path, job_id):
    """`submit --format openjd --metadata`: like the Deadline 10 job's MetadataFile, the template runs
    `run --metadata`; the project reaches the wrapper through the template's job environment (the worker's
    environment has only the studio settings), and `openjd run` publishes the three AOVs under one key."""
    from test_metadata import AyonRender

    ayon = AyonRender(tmp_path / "show", aovs=("beauty", "Z", "N"))
    metadata = ayon.write()
    worker_env = {k: v for k, v in env.items() if not k.startswith(("AYON_", "AVALON_"))}
    worker_env["ATOMIC_PUBLISH_SETTINGS"] = str(ayon.settings)
    out = tmp_path / "job"
    proc = run_cli(["submit", "--metadata", str(metadata), "--project", "demo", "--out", str(out),
                    "--format", "openjd"], worker_env, check=True)
    assert "3 product(s): renderMain_beauty, renderMain_Z, renderMain_N; project demo" in proc.stdout, proc.stdout
    template = out / "template.json"
    data = json.loads(template.read_text())
    params = {p["name"]: p for p in data["parameterDefinitions"]}
    assert sorted(params) == ["AtomicPublishExecutable", "JobId", "Metadata", "Project", "Store"]
    assert params["Metadata"]["default"] == "renderMain_metadata.json" and params["Project"]["default"] == "demo"
    assert json.loads((out / "renderMain_metadata.json").read_text()) == json.loads(metadata.read_text())
    assert data["jobEnvironments"] == [{"name": "AtomicPublishProject",
                                        "variables": {"AYON_PROJECT_NAME": "{{Param.Project}}"}}]
    args = data["steps"][0]["script"]["actions"]["onRun"]["args"]
    assert args[:2] == ["run", "--metadata={{Param.Metadata}}"] and "--openjd-step=Publish" in args
    assert data["name"] == "publish demo/shots/sq01/sh010/renderMain_beauty (+2 more)"
    check = subprocess.run([str(OPENJD), "check", str(template)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr

    key = openjd_key(job_id, "Publish", {})
    first = openjd_run(template, worker_env, job_id)
    assert first.returncode == 0, first.stdout + first.stderr
    assert result_line(first.stdout).startswith("published exit=0"), first.stdout
    record = store.records.get(key)
    assert record["state"] == "PUBLISHED" and len(record["extra_products"]) == 2
    versions = sorted((d["data"]["atomic_publish"]["product"], d["name"])
                      for d in store.catalog.project("demo").find({"type": "version"}))
    assert versions == [("renderMain_N", 1), ("renderMain_Z", 1), ("renderMain_beauty", 1)]
    for aov in ("beauty", "Z", "N"):
        assert sorted(os.listdir(ayon.publish_dir / "render" / f"renderMain_{aov}")) == ["v001"]

    before = snapshot(ayon.publish_dir)
    second = openjd_run(template, worker_env, job_id)  # a retry of the task: the same publish, nothing new
    assert result_line(second.stdout).startswith("already-published exit=0"), second.stdout
    assert snapshot(ayon.publish_dir) == before
    assert store.catalog.project("demo").count_documents({"type": "version"}) == 3

    # the Deadline 10 options still have no meaning here, and a password never goes into a parameter
    refused = run_cli(["submit", "--metadata", str(metadata), "--project", "demo", "--out", str(tmp_path / "x"),
                       "--format", "openjd", "--pool", "publish"], worker_env)
    assert refused.returncode == 1 and "--pool: Deadline 10 options" in refused.stderr
    refused = run_cli(["submit", "--metadata", str(metadata), "--project", "demo", "--out", str(tmp_path / "y"),
                       "--format", "openjd", "--store", "mongodb://u:s3cr3t@db:27017/"], worker_env)
    assert refused.returncode == 1 and "password" in refused.stderr and "s3cr3t" not in refused.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
