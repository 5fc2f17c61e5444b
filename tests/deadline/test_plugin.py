"""AtomicPublish.py under the shim: imports, lifecycle, exit-code mapping, arguments, secrets.

A unit test of the plugin: each test runs one task in-process through the Simple-plugin
lifecycle, with a stand-in executable for the wrapper and a real farm state as the repository.
"""
from __future__ import annotations

import ast
import itertools
import os
import shlex
import sys
from pathlib import Path

import pytest

import Deadline.Scripting
from Deadline.Plugins import PluginContext

from atomic_publish.deadline_plugin.farm.backend import FarmBackend
from atomic_publish.deadline_plugin.farm.jobmodel import build_job_record
from atomic_publish.deadline_plugin.farm.lifecycle import load_plugin_module, run_simple_task
from atomic_publish.deadline_plugin.farm.state import FarmState
from atomic_publish.deadline_plugin.jobfiles import parse_key_value_text
from atomic_publish.deadline_plugin.resources import plugin_dir

PLUGIN = plugin_dir() / "AtomicPublish.py"
SECRET = "mongodb://publisher:s3cr3t-Pa55w0rd@db.example:27017/publish?authSource=admin"
_farm_numbers = itertools.count()


def test_plugin_imports_only_stdlib_and_deadline() -> None:
    tree = ast.parse(PLUGIN.read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import in the plugin"
            modules.add(node.module or "")
    outside = {m for m in modules
               if m.split(".")[0] not in sys.stdlib_module_names and not m.startswith("Deadline.")}
    assert not outside, f"AtomicPublish.py imports {outside}"
    assert {"Deadline.Plugins", "Deadline.Scripting"} <= modules


def test_plugin_loads_under_the_shim_and_cleanup_detaches_everything() -> None:
    module = load_plugin_module(PLUGIN)
    plugin = module.GetDeadlinePlugin()
    plugin._bind_context(PluginContext(job=None, task=None, slave_name="w", jobs_data_directory="/j",
                                       plugin_directory="/p", plugin_info={}, config={}, log=print))
    plugin.InitializeProcessCallback()
    assert plugin.StdoutHandling and len(plugin.StdoutHandlers) == 3
    module.CleanupDeadlinePlugin(plugin)
    assert not plugin.InitializeProcessCallback and not plugin.CheckExitCodeCallback
    assert all(not handler.HandleCallback for handler in plugin.StdoutHandlers)


@pytest.mark.parametrize("argument", ["plain", "", "with space", 'quote"inside', "trailing\\",
                                      "C:\\Program Files\\x.exe", "it's", "$HOME `x`", 'both \\" mixed'])
def test_quote_argument_round_trips_through_the_farm_split(argument: str) -> None:
    module = load_plugin_module(PLUGIN)
    line = " ".join(module.QuoteArgument(a) for a in ["run", argument, "end"])
    assert shlex.split(line, posix=True) == ["run", argument, "end"]


@pytest.fixture
def run_task(tmp_path: Path, standin: Path, manifest: Path, monkeypatch: pytest.MonkeyPatch):
    """run_task(code, job_extra=, plugin_extra=, config=, env=) -> (outcome, job record, reports)."""
    def run(code: int | str = 0, job_extra: str = "", plugin_extra: str = "",
            config: dict[str, str] | None = None, env: dict[str, str] | None = None,
            manifest_entry: str | None = None, jobs_data: Path | None = None):
        monkeypatch.setenv("STANDIN_EXIT", str(code))
        state = FarmState.create(tmp_path / f"farm{next(_farm_numbers)}", {"bad_worker_errors": 3})
        record = build_job_record(
            parse_key_value_text("Plugin=AtomicPublish\nFrames=0\n" + job_extra),
            parse_key_value_text(f"Manifest={manifest_entry or manifest}\n" + plugin_extra))
        state.add_job(record)
        state.register_worker("worker-1", os.getpid())
        job_id, task = state.dequeue("worker-1")
        log: list[str] = []
        Deadline.Scripting.install_backend(FarmBackend(state, "worker-1", log=log.append, environ=env or {}))
        try:
            outcome = run_simple_task(
                PLUGIN, state.get_job(job_id), task, "worker-1", jobs_data or tmp_path / "jobsData" / job_id,
                {"AtomicPublishExecutable": f"/nonexistent/atomic-publish;{standin}", "StoreUri": "",
                 **(config or {})}, sink=log.append)
        finally:
            Deadline.Scripting.install_backend(None)
        assert outcome.log == [line for line in log if not line.startswith("INFO: RepositoryUtils")]
        state.finish_task(job_id, task["task_id"], "worker-1",
                          None if outcome.ok else {"message": outcome.message, "log_tail": outcome.log})
        return outcome, state.get_job(job_id), state.reports(job_id)
    return run


def test_exit_0_completes(run_task) -> None:
    outcome, job, reports = run_task(0)
    assert outcome.ok and outcome.exit_code == 0
    assert job["status"] == "Completed" and reports == []
    assert "STDOUT: [atomic-publish] result published exit=0 class=-: stand-in outcome published on worker-1" in outcome.log


@pytest.mark.parametrize("code, outcome_name", [(75, "transient"), (76, "busy")])
def test_transient_and_busy_are_task_errors_requeued(run_task, code: int, outcome_name: str) -> None:
    outcome, job, reports = run_task(code)
    assert not outcome.ok
    assert outcome.message == (f"{outcome_name} (exit={code} class={outcome_name}): stand-in outcome "
                               f"{outcome_name} on worker-1; AtomicPublish: task error, Deadline requeues the task")
    assert job["status"] == "Active" and job["tasks"][0]["status"] == "Queued"
    assert job["listed_workers"] == [] and reports[0]["message"] == outcome.message


def test_worker_local_deny_lists_this_worker(run_task) -> None:
    outcome, job, _ = run_task(77)
    assert outcome.message.endswith(f"; AtomicPublish: worker worker-1 deny-listed for job {job['job_id']}")
    assert job["whitelist_flag"] is False and job["listed_workers"] == ["worker-1"]
    assert job["tasks"][0]["status"] == "Queued"


def test_worker_local_on_an_allow_list_removes_this_worker(run_task) -> None:
    outcome, job, _ = run_task(77, job_extra="Whitelist=worker-1,worker-2\n")
    assert "worker worker-1 removed from the allow list" in outcome.message
    assert job["whitelist_flag"] is True and job["listed_workers"] == ["worker-2"]


def test_permanent_fails_the_job(run_task) -> None:
    outcome, job, reports = run_task(78)
    assert outcome.message.endswith(f"; AtomicPublish: permanent error, job {job['job_id']} failed")
    assert job["status"] == "Failed" and len(reports) == 1


def test_permanent_with_fail_task_fails_only_the_task(run_task) -> None:
    outcome, job, _ = run_task(78, plugin_extra="OnPermanentError=fail-task\n")
    assert "permanent error, task 0 failed (OnPermanentError=fail-task)" in outcome.message
    assert "--on-permanent-error=fail-task" in next(l for l in outcome.log if l.startswith("INFO: Argument:"))
    assert job["tasks"][0]["status"] == "Failed"


@pytest.mark.parametrize("code, description", [(1, "the wrapper crashed"), (-9, "killed by signal 9"),
                                                (42, "not an atomic-publish exit code")])
def test_unknown_codes_are_requeued_with_advice(run_task, code: int, description: str) -> None:
    outcome, job, _ = run_task(code)
    assert outcome.exit_code == code
    assert f"unexpected exit code {code} ({description}): task error, requeued; check this task's log" in outcome.message
    assert job["tasks"][0]["status"] == "Queued" and job["listed_workers"] == []
    if code == -9:
        assert outcome.message.startswith("atomic-publish printed no result line")


def test_invalid_on_permanent_error_is_refused_before_running(run_task, calls) -> None:
    outcome, _, _ = run_task(0, plugin_extra="OnPermanentError=ignore\n")
    assert "OnPermanentError=ignore is invalid" in outcome.message and calls() == []


def test_missing_executable_names_candidates_and_deny_lists(run_task, calls) -> None:
    outcome, job, _ = run_task(0, config={"AtomicPublishExecutable": "/nope/a;/nope/b"})
    assert "none of these exists: /nope/a;/nope/b" in outcome.message
    assert "pip install atomic-publish" in outcome.message and "Configure Plugins" in outcome.message
    assert job["listed_workers"] == ["worker-1"] and calls() == []


def test_arguments_and_policy_options(run_task, calls, tmp_path: Path) -> None:
    jobs_data = tmp_path / 'jobs data "quoted"'
    _, job, _ = run_task(0, plugin_extra="RetryAttempts=3\nRetryBudgetSeconds=\nMaxKeyAttempts=4\n"
                         "MaxFailingWorkers=2\nOnPermanentError=fail-job\n", jobs_data=jobs_data)
    argv = calls()[0]["argv"]
    manifest_copy = str(jobs_data / "manifest.task0.mapped.json")
    assert argv == ["run", f"--manifest={manifest_copy}", argv[2], f"--job-id={job['job_id']}", "--task-id=0",
                    "--worker=worker-1", "--retry-attempts=3", "--max-key-attempts=4",
                    "--max-failing-workers=2", "--on-permanent-error=fail-job"]


def test_no_policy_options_when_keys_are_absent(run_task, calls) -> None:
    run_task(0)
    assert len(calls()[0]["argv"]) == 6  # run + 5 options (--option=value), nothing more


def test_path_mapping_of_the_manifest_path_and_contents(run_task, calls, manifest: Path) -> None:
    env = {"ATOMIC_PUBLISH_FARM_PATH_MAPPING": f"/studio/shared=>{manifest.parent};/x/projects=>/x/offline/projects"}
    outcome, _, _ = run_task(0, env=env, manifest_entry="/studio/shared/manifest.json")
    assert outcome.ok
    argv = calls()[0]["argv"]
    copy = Path(argv[1].split("=", 1)[1])
    assert argv[2] == f"--submitted-manifest={manifest}"  # the original, for the fingerprint
    assert copy.read_text() == '{"root": "/x/offline/projects/show/shot"}\n'
    assert manifest.read_text() == '{"root": "/x/projects/show/shot"}\n'  # the shared file is untouched


@pytest.mark.parametrize("code", [0, 77])
def test_store_uri_goes_through_a_private_file_and_nowhere_else(run_task, calls, code: int) -> None:
    outcome, job, reports = run_task(code, config={"StoreUri": SECRET})
    call = calls()[0]
    assert call["store_content"] == SECRET + "\n" and call["store_mode"] == "0o600"
    assert not os.path.exists(call["store_file"]), "store file left behind"
    assert f"INFO: Setting Process Environment Variable ATOMIC_PUBLISH_STORE_FILE to {call['store_file']}" in outcome.log
    everything = "\n".join([*call["argv"], *outcome.log, outcome.message, repr(reports), repr(job)])
    assert "s3cr3t" not in everything and "db.example" not in everything


def test_without_store_uri_the_worker_environment_is_inherited(run_task, calls, monkeypatch) -> None:
    monkeypatch.setenv("ATOMIC_PUBLISH_STORE", "mongodb://inherited")
    run_task(0)
    assert calls()[0]["store_env"] == "mongodb://inherited" and calls()[0]["store_file"] == ""
