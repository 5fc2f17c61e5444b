"""What happens to a publish when Deadline gives up on its job: `atomic-publish abandon`, the
AtomicPublishEvents event plugin (fired by the local farm through the shim, as Deadline fires it)
and the Monitor script "AtomicPublish status". The real wrapper, the SecantusDB store, real files.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from atomic_publish.deadline_plugin.farm import admin, run_farm
from atomic_publish.deadline_plugin.farm.events import LOG_FILE, build_event_config, write_event_config
from atomic_publish.deadline_plugin.farm.jobmodel import build_job_record
from atomic_publish.deadline_plugin.farm.lifecycle import load_plugin_module
from atomic_publish.deadline_plugin.farm.state import FarmState
from atomic_publish.deadline_plugin.jobfiles import parse_key_value_text
from atomic_publish.deadline_plugin.resources import events_plugin_dir, monitor_scripts_dir, plugin_dir
from helpers import CLI, publish, run_cli

EVENTS_PLUGIN = events_plugin_dir() / "AtomicPublishEvents.py"
MONITOR_SCRIPT = monitor_scripts_dir() / "AtomicPublishStatus.py"


def _crash(manifest: Path, env: dict, job: str, failpoint: str, task: str = "0") -> subprocess.CompletedProcess:
    """A `run` that a failpoint stops midway (exit 70), leaving the record where it was."""
    proc = run_cli(["run", "--manifest", str(manifest), "--job-id", job, "--task-id", task, "--worker", "w1"],
                   {**env, "ATOMIC_PUBLISH_FAILPOINTS": failpoint})
    assert proc.returncode == 70, proc.stdout + proc.stderr
    return proc


def _abandon(env: dict, job: str, *extra: str) -> subprocess.CompletedProcess:
    return run_cli(["abandon", "--job-id", job, *extra], env)


def _no_trace(render, store, key: str) -> None:
    """Invariant 3: a rolled-back key leaves no version, folder, staging folder or reservation."""
    rec = store.records.get(key)
    assert rec["state"] == "ROLLED_BACK", rec["state"]
    assert render.tree() == [], render.tree()
    assert store.reservations.col.count_documents({"key": key, "state": "reserved"}) == 0
    assert store.catalog.project("demo").count_documents({"type": "version"}) == 0


# -- atomic-publish abandon ---------------------------------------------------------------------
def test_abandon_rolls_back_a_crashed_staging_publish(render, env, store):
    _crash(render.write_manifest(), env, "jobA", "stage.file=exit@2")
    key = "deadline10:jobA:0"
    assert store.records.get(key)["state"] == "STAGING" and render.tree()
    done = _abandon(env, "jobA", "--reason", "job jobA was failed in Deadline")
    assert done.returncode == 0, done.stdout + done.stderr
    [line, summary] = done.stdout.splitlines()
    assert line.startswith(f"[atomic-publish] abandon {key} task 0 STAGING -> ROLLED_BACK: rolled back")
    assert "version 1 released" in line and line.endswith("job jobA was failed in Deadline")
    assert summary == "[atomic-publish] abandon job jobA: 1 rolled-back"
    _no_trace(render, store, key)
    rec = store.records.get(key)
    assert rec["error"]["message"] == "job jobA was failed in Deadline"
    assert rec["attempts"][-1]["outcome"] == "abandoned" and rec["lease"] is None
    again = _abandon(env, "jobA", "--json")  # idempotent: the second run changes nothing
    assert again.returncode == 0
    [entry] = json.loads(again.stdout)["keys"]
    assert (entry["before"], entry["action"]) == ("ROLLED_BACK", "already-rolled-back")


def test_abandon_leaves_published_and_committing_alone(render, env, store):
    published, _ = publish(render.write_manifest(), env, "jobP")
    assert published.returncode == 0, published.stdout
    files = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in render.publish_root.rglob("*") if p.is_file()}
    _crash(render.write_manifest("m2.json", subset="renderCompB"), env, "jobP", "commit.begin=exit", "1")
    done = _abandon(env, "jobP", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    by_task = {k["task_id"]: k for k in result["keys"]}
    assert by_task["0"]["action"] == "already-published" and by_task["0"]["after"] == "PUBLISHED"
    assert by_task["1"]["action"] == "left-to-roll-forward" and by_task["1"]["after"] == "COMMITTING"
    assert "past the point of no return" in by_task["1"]["message"]
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files} == files
    committing = store.records.get("deadline10:jobP:1")
    assert committing["state"] == "COMMITTING" and os.path.isdir(committing["staging_dir"])
    rerun, out = publish(render.write_manifest("m2.json", subset="renderCompB"), env, "jobP", "1")
    assert out["outcome"] == "published", rerun.stdout  # invariant 7: it still rolls forward


def test_abandon_never_touches_a_live_attempt(render, env, store, tmp_path):
    hang = {**env, "ATOMIC_PUBLISH_FAILPOINTS": "stage.begin=hang"}
    attempt = subprocess.Popen([*CLI, "run", "--manifest", str(render.write_manifest()), "--job-id", "jobL",
                                "--task-id", "0", "--worker", "w1"], env=hang, stdout=subprocess.PIPE, text=True)
    try:
        for line in attempt.stdout:
            if "failpoint stage.begin: hang" in line:
                break
        before = store.records.get("deadline10:jobL:0")
        done = _abandon(env, "jobL", "--wait", "1")
        assert done.returncode == 76, done.stdout + done.stderr
        assert "STAGING -> STAGING" in done.stdout and "holds this publish" in done.stdout
        assert "left as it is: run `atomic-publish abandon --job-id jobL` again once that attempt has ended" in done.stdout
        assert "requeue" not in done.stdout  # no farm advice: nothing requeues anything here
        after = store.records.get("deadline10:jobL:0")
        assert (after["epoch"], after["lease"]["attempt"]) == (before["epoch"], before["lease"]["attempt"])
        assert os.path.isdir(before["staging_dir"])
    finally:
        attempt.kill()
        attempt.wait()
    done = _abandon(env, "jobL")  # its owner is a dead process on this host: taken over, rolled back
    assert done.returncode == 0, done.stdout + done.stderr
    _no_trace(render, store, "deadline10:jobL:0")


def test_abandon_starts_no_store_and_fails_in_one_line(env, tmp_path):
    bare = {k: v for k, v in env.items() if k not in ("ATOMIC_PUBLISH_STORE", "ATOMIC_PUBLISH_STORE_FILE")}
    bare["ATOMIC_PUBLISH_HOME"] = str(tmp_path / "nohome")
    done = _abandon(bare, "jobX")
    assert done.returncode == 75 and done.stdout == ""
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("atomic-publish abandon: ")
    assert "not running" in run_cli(["store", "status"], bare).stdout  # nothing was started


def test_abandon_of_a_job_without_records_says_so(env, store):
    done = _abandon(env, "nothing-here")
    assert done.returncode == 0 and done.stdout.strip() == (
        "[atomic-publish] abandon job nothing-here: no publish record, nothing to roll back")


# -- the event plugin on the local farm ---------------------------------------------------------
@pytest.fixture
def farm_env(env, monkeypatch):
    """The test's store settings in this process's environment: the farm's workers and the events
    fired from here (the 'Monitor') inherit them."""
    for key, value in env.items():
        if key.startswith("ATOMIC_PUBLISH_"):
            monkeypatch.setenv(key, value)
    return env


def _submit(render, env, folder: Path, **job_info_values: str) -> tuple[Path, Path]:
    """`atomic-publish submit`, then the given job-info values set (as an admin edits a job)."""
    run_cli(["submit", str(render.write_manifest()), "--out", str(folder)], env, check=True)
    job_info = folder / "job_info.job"
    lines = [line for line in job_info.read_text().splitlines() if line.split("=")[0] not in job_info_values]
    job_info.write_text("\n".join(lines + [f"{k}={v}" for k, v in job_info_values.items()]) + "\n")
    return job_info, folder / "plugin_info.job"


class Background:
    """run_farm in a thread, as a farm that runs while an admin acts in the Monitor."""

    def __init__(self, *args, **kwargs):
        self.result = None
        self.error = None
        self.thread = threading.Thread(target=self._run, args=args, kwargs=kwargs, daemon=True)
        self.thread.start()

    def _run(self, *args, **kwargs):
        try:
            self.result = run_farm(*args, **kwargs)
        except BaseException as error:  # pragma: no cover - reported by join()
            self.error = error

    def join(self, timeout: float = 120):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the farm did not stop"
        if self.error:
            raise self.error
        return self.result


def _job_id(farm_dir: Path, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (farm_dir / "state.json").exists():
            jobs = list(FarmState(farm_dir).read()["jobs"])
            if jobs:
                return jobs[0]
        time.sleep(0.1)
    raise AssertionError("no job was submitted to the farm")


def _wait_for_state(store, key: str, state: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = store.records.get(key)
        if rec and rec["state"] == state:
            return rec
        time.sleep(0.1)
    raise AssertionError(f"{key} never reached {state}: {store.records.get(key)}")


def _event_lines(farm_dir: Path) -> list[str]:
    path = farm_dir / LOG_FILE
    return path.read_text().splitlines() if path.exists() else []


def test_job_failed_by_its_error_limit_is_rolled_back_by_the_event(render, farm_env, store, tmp_path, monkeypatch):
    monkeypatch.setenv("ATOMIC_PUBLISH_FAILPOINTS", "stage.file=raise@2")
    job_info, plugin_info = _submit(render, farm_env, tmp_path / "job", FailureDetectionTaskErrors="2")
    result = run_farm(job_info, plugin_info, workers=1, farm_dir=tmp_path / "farm", timeout=120, event_config={})
    assert result.job_status == "Failed" and len(result.error_reports) == 2, result
    key = f"deadline10:{result.job_id}:0"
    lines = _event_lines(tmp_path / "farm")
    mine = [l for l in lines if "AtomicPublishEvents: " + key in l]
    assert len(mine) == 1 and "OnJobFailed" in mine[0], lines
    assert f"STAGING -> ROLLED_BACK: rolled back" in mine[0]
    assert f"job {result.job_id} was failed in Deadline" in mine[0]
    _no_trace(render, store, key)
    worker_log = (tmp_path / "farm" / "workers" / "worker-1" / "worker.log").read_text()
    assert "AtomicPublishEvents: " + key in worker_log  # fired by the worker that failed the job


RECORDER = r'''#!{python}
import json, os, stat, sys
store_file = os.environ.get("ATOMIC_PUBLISH_STORE_FILE", "")
with open({log!r}, "a") as log:
    log.write(json.dumps({{"argv": sys.argv[1:], "store_file": store_file,
                          "mode": oct(os.stat(store_file).st_mode & 0o777) if store_file else "",
                          "env_store": os.environ.get("ATOMIC_PUBLISH_STORE", "")}}) + "\n")
os.execv({real!r}, [{real!r}] + sys.argv[1:])
'''


def test_admin_fails_a_job_while_it_stages_and_the_store_uri_stays_private(render, farm_env, store, tmp_path,
                                                                          monkeypatch, mongo_uri):
    monkeypatch.delenv("ATOMIC_PUBLISH_STORE")  # the store only through the plugin configuration
    monkeypatch.setenv("ATOMIC_PUBLISH_FAILPOINTS", "stage.begin=hang")
    real = Path(sys.executable).parent / "atomic-publish"
    recorder = tmp_path / "bin" / "atomic-publish"
    recorder.parent.mkdir()
    recorder.write_text(RECORDER.format(python=sys.executable, log=str(tmp_path / "calls.jsonl"), real=str(real)))
    recorder.chmod(0o755)
    job_info, plugin_info = _submit(render, farm_env, tmp_path / "job")
    farm_dir = tmp_path / "farm"
    farm = Background(job_info, plugin_info, workers=1, farm_dir=farm_dir, timeout=120,
                      plugin_config={"StoreUri": mongo_uri},
                      event_config={"AtomicPublishExecutable": str(recorder)})
    job_id = _job_id(farm_dir)
    key = f"deadline10:{job_id}:0"
    staging = _wait_for_state(store, key, "STAGING")["staging_dir"]
    for _ in range(100):  # the hang is after the folder is made
        if os.path.isdir(staging):
            break
        time.sleep(0.1)
    assert os.path.isdir(staging)
    lines = admin.fail_job(farm_dir, job_id)
    result = farm.join()
    assert result.job_status == "Failed"
    [line] = [l for l in lines if key in l]
    assert line.startswith(f"INFO: AtomicPublishEvents: {key} task 0 STAGING -> ROLLED_BACK: rolled back"), lines
    _no_trace(render, store, key)
    [call] = [json.loads(l) for l in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert call["argv"][:2] == ["abandon", f"--job-id={job_id}"] and call["mode"] == "0o600"
    assert call["env_store"] == "" and not os.path.exists(call["store_file"])  # removed after the run
    texts = [json.dumps(call["argv"])] + [p.read_text(errors="replace") for p in farm_dir.rglob("*.log")]
    assert not any(mongo_uri.rstrip("/") in text for text in texts)


def test_deleted_job_is_rolled_back(render, farm_env, store, tmp_path, monkeypatch):
    monkeypatch.setenv("ATOMIC_PUBLISH_FAILPOINTS", "staged=hang")
    job_info, plugin_info = _submit(render, farm_env, tmp_path / "job")
    farm_dir = tmp_path / "farm"
    farm = Background(job_info, plugin_info, workers=1, farm_dir=farm_dir, timeout=120, event_config={})
    job_id = _job_id(farm_dir)
    key = f"deadline10:{job_id}:0"
    _wait_for_state(store, key, "STAGED")
    lines = admin.delete_job(farm_dir, job_id)
    assert farm.join().job_status == "Deleted"
    assert any(f"{key} task 0 STAGED -> ROLLED_BACK: rolled back" in l and f"job {job_id} was deleted" in l
               for l in lines), lines
    _no_trace(render, store, key)


def test_committing_publish_is_left_to_roll_forward_and_a_requeue_finishes_it(render, farm_env, store, tmp_path,
                                                                             monkeypatch):
    monkeypatch.setenv("ATOMIC_PUBLISH_FAILPOINTS", "commit.begin=hang")
    job_info, plugin_info = _submit(render, farm_env, tmp_path / "job")
    farm_dir = tmp_path / "farm"
    farm = Background(job_info, plugin_info, workers=1, farm_dir=farm_dir, timeout=120, event_config={})
    job_id = _job_id(farm_dir)
    key = f"deadline10:{job_id}:0"
    staging = _wait_for_state(store, key, "COMMITTING")["staging_dir"]
    staged = sorted(p.name for p in Path(staging).iterdir())
    lines = admin.fail_job(farm_dir, job_id)
    assert farm.join().job_status == "Failed"
    assert any(f"{key} task 0 COMMITTING -> COMMITTING: past the point of no return: left to roll forward" in l
               for l in lines), lines
    rec = store.records.get(key)
    assert rec["state"] == "COMMITTING" and sorted(p.name for p in Path(staging).iterdir()) == staged
    monkeypatch.delenv("ATOMIC_PUBLISH_FAILPOINTS")
    lines = admin.requeue_job(farm_dir, job_id)
    assert any("was requeued: nothing rolled back or changed" in l for l in lines), lines
    result = admin.resume_farm(farm_dir, workers=1, timeout=120)
    assert result.job_status == "Completed", result
    rec = store.records.get(key)
    assert rec["state"] == "PUBLISHED" and os.path.isdir(rec["final_dir"]) and not os.path.exists(staging)
    assert store.catalog.project("demo").count_documents({"type": "version"}) == 1


def test_completed_job_requeued_or_deleted_stays_published(render, farm_env, store, tmp_path):
    job_info, plugin_info = _submit(render, farm_env, tmp_path / "job")
    farm_dir = tmp_path / "farm"
    first = run_farm(job_info, plugin_info, workers=1, farm_dir=farm_dir, timeout=120, event_config={})
    assert first.job_status == "Completed"
    key = f"deadline10:{first.job_id}:0"
    before = store.records.get(key)
    files = {p: p.read_bytes() for p in render.publish_root.rglob("*") if p.is_file()}
    lines = admin.requeue_job(farm_dir, first.job_id)
    assert [l for l in lines if l.startswith("INFO: AtomicPublishEvents:")] == [
        f"INFO: AtomicPublishEvents: job {first.job_id} was requeued: nothing rolled back or changed (a published "
        "publish stays published; the others resume on their next attempt)"]
    again = admin.resume_farm(farm_dir, workers=1, timeout=120)
    assert again.job_status == "Completed"
    log = (farm_dir / "workers" / "worker-1" / "worker.log").read_text()
    assert "result already-published exit=0" in log
    assert store.records.get(key) == before  # not one write
    lines = admin.delete_job(farm_dir, first.job_id)
    assert any(f"{key} task 0 PUBLISHED -> PUBLISHED: already published, left as it is" in l for l in lines), lines
    assert store.records.get(key) == before
    assert {p: p.read_bytes() for p in files} == files
    assert store.catalog.project("demo").count_documents({"type": "version"}) == 1


def _idle_farm(tmp_path: Path, plugin: str = "AtomicPublish", **event_config) -> tuple[Path, str]:
    farm_dir = tmp_path / "farm"
    state = FarmState.create(farm_dir, {"bad_worker_errors": 3})
    state.add_job(build_job_record(parse_key_value_text(f"Plugin={plugin}\n"),
                                   parse_key_value_text("Manifest=/m\n"), job_id="job1"))
    write_event_config(farm_dir, build_event_config(event_config))
    return farm_dir, "job1"


def test_disabled_event_plugin_and_other_jobs_are_left_alone(tmp_path):
    farm_dir, job = _idle_farm(tmp_path, State="Disabled")
    lines = admin.fail_job(farm_dir, job)
    assert lines == [f"INFO: Event plugin AtomicPublishEvents is not enabled for job {job} (State=Disabled): "
                     "OnJobFailed not fired"]
    other = tmp_path / "other"
    other.mkdir()
    farm_dir, job = _idle_farm(other, plugin="Nuke")
    lines = admin.delete_job(farm_dir, job)
    assert len(lines) == 1 and lines[0].startswith("INFO: Event Plugin - OnJobDeleted: AtomicPublishEvents")


# -- the plugin files themselves ----------------------------------------------------------------
def _imports(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"relative import in {path.name}"
            modules.add(node.module or "")
    return modules


@pytest.mark.parametrize("path, allowed", [(EVENTS_PLUGIN, ("Deadline.",)),
                                           (MONITOR_SCRIPT, ("Deadline.", "DeadlineUI."))])
def test_deadline_side_imports_only_stdlib_and_deadline(path: Path, allowed: tuple[str, ...]) -> None:
    modules = _imports(path)
    outside = {m for m in modules if m.split(".")[0] not in sys.stdlib_module_names and not m.startswith(allowed)}
    assert not outside, f"{path.name} imports {outside}"
    assert "Deadline.Scripting" in modules
    ast.parse(path.read_text(), feature_version=(3, 7))  # Deadline 10.1/10.2 ship Python 3.7


def _function(path: Path, name: str) -> str:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            body = node.body[1:] if ast.get_docstring(node) else node.body  # the docstrings say where
            return ast.dump(ast.Module(body=body, type_ignores=[]))
    raise AssertionError(f"{path.name} has no {name}")


@pytest.mark.parametrize("name", ["IntegrationSecrets", "WritePrivateFile"])
def test_copied_code_matches_the_job_plugin(name: str) -> None:
    job_plugin = plugin_dir() / "AtomicPublish.py"
    assert _function(EVENTS_PLUGIN, name) == _function(job_plugin, name)


def test_monitor_script_has_the_event_plugins_wrapper_settings() -> None:
    assert _function(MONITOR_SCRIPT, "WrapperSettings") == _function(EVENTS_PLUGIN, "WrapperSettings")
    for variable in ("ATOMIC_PUBLISH_STORE_FILE", "ATOMIC_PUBLISH_SECRETS_FILE"):
        assert variable in (plugin_dir() / "AtomicPublish.py").read_text() and variable in EVENTS_PLUGIN.read_text()


def test_listener_loads_under_the_shim_and_cleanup_detaches_everything() -> None:
    from Deadline.Events import EventContext

    module = load_plugin_module(EVENTS_PLUGIN)
    listener = module.GetDeadlineEventListener()
    assert listener.plugin_initialized
    listener._bind_context(EventContext(config={}, log=print))
    assert listener.OnJobFailedCallback and listener.OnJobDeletedCallback and listener.OnJobRequeuedCallback
    module.CleanupDeadlineEventListener(listener)
    assert not (listener.OnJobFailedCallback or listener.OnJobDeletedCallback or listener.OnJobRequeuedCallback)


# -- the Monitor script "AtomicPublish status" --------------------------------------------------
def test_monitor_script_shows_the_records_of_the_selected_jobs(render, farm_env, store, tmp_path, monkeypatch,
                                                               mongo_uri):
    import Deadline.Scripting as scripting
    from DeadlineUI.Controls.Scripting import DeadlineScriptDialog as dialog

    from atomic_publish.deadline_plugin.farm.backend import FarmBackend
    from atomic_publish.deadline_plugin.farm.pluginconfig import build_config, write_config

    published, _ = publish(render.write_manifest(), farm_env, "jobM")
    assert published.returncode == 0, published.stdout
    _crash(render.write_manifest("m2.json", subset="renderCompB"), farm_env, "jobM", "stage.file=exit@1", "1")
    assert _abandon(farm_env, "jobM", "--reason", "job jobM was failed in Deadline").returncode == 0
    rolled_back = store.records.get("deadline10:jobM:1")
    monkeypatch.delenv("ATOMIC_PUBLISH_STORE")  # the Monitor reads the store from the plugin configuration
    state = FarmState.create(tmp_path / "repo", {"bad_worker_errors": 3})
    for job_id, plugin in (("jobM", "AtomicPublish"), ("jobEmpty", "AtomicPublish"), ("jobNuke", "Nuke")):
        state.add_job(build_job_record(parse_key_value_text(f"Plugin={plugin}\nName=shot {job_id}\n"),
                                       parse_key_value_text("Manifest=/m\n"), job_id=job_id))
    write_config(tmp_path / "repo", build_config({"StoreUri": mongo_uri}))
    scripting.install_backend(FarmBackend(state, "monitor", log=lambda line: None))
    try:
        scripting.select_in_monitor([scripting.RepositoryUtils.GetJob(j) for j in ("jobM", "jobEmpty", "jobNuke")])
        dialog.shown.clear()
        load_plugin_module(MONITOR_SCRIPT).__main__()
    finally:
        scripting.select_in_monitor([])
        scripting.install_backend(None)
    [(title, text)] = dialog.shown
    assert title == "AtomicPublish status"
    final = store.records.get("deadline10:jobM:0")["final_dir"]
    assert 'Job jobM "shot jobM": 2 publish record(s)' in text
    task0 = text[text.index("Task 0"):text.index("Task 1")]
    assert "state     PUBLISHED" in task0 and "version   v001" in task0 and f"folder    {final}" in task0
    assert "-> published" in task0
    task1 = text[text.index("Task 1"):text.index('Job jobEmpty')]
    assert "state     ROLLED_BACK" in task1
    assert "version   none (v001 was released)" in task1
    assert "folder    none (nothing was published; staging removed)" in task1
    assert rolled_back["final_dir"] not in task1  # a released folder is not shown as if it existed
    assert "reason    job jobM was failed in Deadline" in task1
    assert "1. epoch 1  w1@" in task1 and "-> running, or crashed" in task1
    assert "2. epoch 2  abandon@" in task1 and "-> abandoned: job jobM was failed in Deadline" in task1
    assert 'Job jobEmpty "shot jobEmpty": no publish record yet' in text
    assert 'Job jobNuke "shot jobNuke": not an AtomicPublish job (plugin Nuke)' in text
    assert mongo_uri.rstrip("/") not in text


def test_monitor_script_format_is_a_pure_function() -> None:
    module = load_plugin_module(MONITOR_SCRIPT)
    text = module.FormatStatus("j", "n", [
        {"key": "deadline10:j:0", "task_id": "0", "state": "STAGING", "version": 4, "staging_dir": "/p/.v004.s",
         "final_dir": "/p/v004", "attempts": [{"epoch": 1, "worker": "w", "host": "h", "start": "t0",
                                               "end": "t1", "outcome": "transient", "message": "blip"}]},
        {"key": "deadline10:j:1", "task_id": "1", "state": "COMMITTING", "version": 5, "final_dir": "/p/v005",
         "attempts": []},
        {"key": "deadline10:j:2", "task_id": "2", "state": "NEW", "version": None, "attempts": []},
    ])
    assert "version   v004 (reserved, not published yet)" in text
    assert "folder    none yet (staging in /p/.v004.s)" in text and "/p/v004\n" not in text + "\n"
    assert "1. epoch 1  w@h  t0 -> transient: blip" in text
    assert "version   v005 (committing: the publish rolls forward on its next attempt)" in text
    assert "folder    /p/v005 (being moved into place)" in text
    assert text.count("version   none yet") == 1


def test_farm_command_line_acts_on_an_existing_farm(render, farm_env, store, tmp_path):
    job_info, plugin_info = _submit(render, farm_env, tmp_path / "job")
    farm_dir = tmp_path / "farm"
    first = run_cli(["farm", str(job_info), str(plugin_info), "--workers", "1", "--dir", str(farm_dir),
                     "--events", "--json"], farm_env, timeout=240)
    job_id = json.loads(first.stdout.splitlines()[-1])["job_id"]
    assert first.returncode == 0, first.stdout + first.stderr
    again = run_cli(["farm", "--dir", str(farm_dir), "--requeue-job", job_id, "--resume", "--workers", "1",
                     "--json"], farm_env, timeout=240)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"INFO: AtomicPublishEvents: job {job_id} was requeued: nothing rolled back or changed" in again.stdout
    assert json.loads(again.stdout.splitlines()[-1])["job_status"] == "Completed"
    deleted = run_cli(["farm", "--dir", str(farm_dir), "--delete-job", job_id], farm_env)
    assert deleted.returncode == 0 and "PUBLISHED -> PUBLISHED: already published, left as it is" in deleted.stdout
    nodir = run_cli(["farm", "--fail-job", job_id], farm_env)
    assert nodir.returncode == 2 and nodir.stdout == "" and len(nodir.stderr.strip().splitlines()) == 1
    unknown = run_cli(["farm", "--dir", str(farm_dir), "--fail-job", "nope"], farm_env)
    assert unknown.returncode == 2 and unknown.stderr.strip() == "atomic-publish farm: no job nope on this farm"


def test_event_listener_shim_behaves_like_deadline() -> None:
    from Deadline.Events import DeadlineEventListener, EventContext
    from Deadline.Plugins import PluginConfig

    class WrittenBefore103(DeadlineEventListener):
        def __init__(self):  # no super().__init__(): Deadline's callbacks exist anyway
            self.OnJobFailedCallback += self.Failed
            self.seen = []

        def Failed(self, job):
            self.seen.append(job)

    log: list[str] = []
    listener = WrittenBefore103()
    listener._bind_context(EventContext(config={"State": "Opt-In", "Wait": "3", "On": "True"}, log=log.append))
    listener.OnJobFailedCallback("the job")
    assert listener.seen == ["the job"] and not listener.OnJobDeletedCallback
    assert listener.GetConfigEntryWithDefault("state", "") == "Opt-In"  # keys are case-insensitive
    assert listener.GetIntegerConfigEntryWithDefault("Wait", 0) == 3
    assert listener.GetBooleanConfigEntryWithDefault("On", False) is True
    assert listener.GetConfigEntryWithDefault("Missing", "d") == "d"
    with pytest.raises(KeyError, match="Missing"):
        listener.GetConfigEntry("Missing")
    listener.LogInfo("one")
    listener.LogWarning("two")
    assert log == ["INFO: one", "WARNING: two"]
    with pytest.raises(TypeError, match="is an event"):
        listener.OnJobFailedCallback = listener.Failed
    del listener.OnJobFailedCallback
    assert not listener.OnJobFailedCallback
    with pytest.raises(AttributeError):
        listener.NoSuchThing  # noqa: B018
    config = PluginConfig("AtomicPublish", {"StoreUri": "x"})
    assert config.GetConfigEntryWithDefault("storeuri", "") == "x" and config.GetConfigEntryWithDefault("N", "d") == "d"
