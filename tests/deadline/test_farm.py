"""The local farm with real worker processes and the stand-in wrapper."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from atomic_publish.deadline_plugin.farm import run_farm
from atomic_publish.deadline_plugin.farm.jobmodel import build_job_record
from atomic_publish.deadline_plugin.farm.processes import pid_alive
from atomic_publish.deadline_plugin.farm.runner import orphaned_children
from atomic_publish.deadline_plugin.farm.state import FarmState
from atomic_publish.deadline_plugin.jobfiles import JobFileError, parse_key_value_text

SECRET = "mongodb://publisher:s3cr3t-Pa55w0rd@db.example:27017/publish"


@pytest.fixture
def farm(tmp_path: Path, standin: Path, write_job, record_dir: Path):
    """farm(job_extra=, plugin_extra=, **run_farm kwargs) -> FarmResult."""
    def run(job_extra: str = "", plugin_extra: str = "", **kwargs):
        job, plugin = write_job(job_extra, plugin_extra)
        kwargs.setdefault("timeout", 30)
        return run_farm(job, plugin, farm_dir=tmp_path / "farm",
                        plugin_config={"AtomicPublishExecutable": str(standin)}, **kwargs)
    return run


def test_worker_local_error_deny_lists_the_worker_and_the_job_completes_elsewhere(farm, calls, monkeypatch) -> None:
    monkeypatch.setenv("STANDIN_EXIT_WORKER_1", "77")
    result = farm("Frames=0-1\n", workers=2, worker_env={"worker-2": {"STANDIN_SLEEP": "1.0"}})
    assert result.job_status == "Completed", result
    assert result.deny_list == ["worker-1"]
    assert [(t["status"], t["worker"]) for t in result.tasks] == [("Completed", "worker-2")] * 2
    assert [(r["worker"], r["task_id"] in ("0", "1")) for r in result.error_reports] == [("worker-1", True)]
    assert f"worker worker-1 deny-listed for job {result.job_id}" in result.error_reports[0]["message"]
    assert [c["worker"] for c in calls()].count("worker-1") == 1  # never retried on the denied worker
    assert orphaned_children(result.farm_dir) == []


def test_permanent_error_fails_the_job_after_one_attempt(farm, calls, monkeypatch) -> None:
    monkeypatch.setenv("STANDIN_EXIT", "78")
    result = farm(workers=2)
    assert result.job_status == "Failed"
    assert len(result.error_reports) == 1 and len(calls()) == 1
    assert "permanent error, job" in result.error_reports[0]["message"]


def test_transient_error_then_success_completes(farm, calls, monkeypatch) -> None:
    monkeypatch.setenv("STANDIN_EXIT", "75,0")
    result = farm(workers=2)
    assert result.job_status == "Completed"
    assert result.tasks[0]["errors"] == 1 and len(result.error_reports) == 1 and len(calls()) == 2


def test_task_error_limit_fails_the_job(farm, calls, monkeypatch) -> None:
    monkeypatch.setenv("STANDIN_EXIT", "75")
    result = farm("OverrideTaskFailureDetection=True\nFailureDetectionTaskErrors=3\n", workers=2,
                  bad_worker_errors=0)
    assert result.job_status == "Failed"
    assert result.tasks[0]["status"] == "Failed" and result.tasks[0]["errors"] == 3
    assert len(result.error_reports) == 3 and len(calls()) == 3


def test_timeout_kills_workers_and_the_wrapper(farm, calls, monkeypatch) -> None:
    monkeypatch.setenv("STANDIN_SLEEP", "60")
    started = time.monotonic()
    result = farm(workers=1, timeout=1.5)
    assert time.monotonic() - started < 15
    assert result.end_reason.startswith("timeout") and result.job_status == "Active"
    wrapper_pid = calls()[0]["pid"]
    for _ in range(50):
        if not pid_alive(wrapper_pid):
            break
        time.sleep(0.1)
    assert not pid_alive(wrapper_pid), "the wrapper outlived its killed worker"
    assert all(w["exit_code"] is not None for w in result.workers.values())


def test_cli_json_never_shows_the_store_password(tmp_path: Path, standin: Path, write_job, calls,
                                                 monkeypatch) -> None:
    monkeypatch.setenv("STANDIN_EXIT", "77")
    job, plugin = write_job()
    done = subprocess.run(
        [sys.executable, "-m", "atomic_publish.deadline_plugin.farm", str(job), str(plugin), "--workers", "1",
         "--store", SECRET, "--json", "--dir", str(tmp_path / "farm"),
         "--config", f"AtomicPublishExecutable={standin}", "--timeout", "30"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr  # stalled: the only worker is deny-listed
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["deny_list"] == ["worker-1"] and result["end_reason"].startswith("stalled")
    assert result["job_status"] == "Active" and result["error_reports"][0]["worker"] == "worker-1"
    assert "store: mongodb://publisher:***@db.example" in done.stdout
    assert calls()[0]["store_env"] == SECRET  # it did reach the wrapper
    texts = [done.stdout, done.stderr] + [p.read_text(errors="replace")
                                          for p in (tmp_path / "farm").rglob("*") if p.is_file()]
    assert not any("s3cr3t" in text for text in texts)


def test_farm_refuses_a_job_for_another_plugin(tmp_path: Path, manifest: Path) -> None:
    (tmp_path / "j.job").write_text("Plugin=Nuke\n")
    (tmp_path / "p.job").write_text(f"Manifest={manifest}\n")
    with pytest.raises(JobFileError, match="only has the AtomicPublish plugin"):
        run_farm(tmp_path / "j.job", tmp_path / "p.job", farm_dir=tmp_path / "farm")


def test_bad_worker_waits_while_a_good_worker_is_alive(tmp_path: Path) -> None:
    """Failure detection in the state itself: consecutive errors, then 'bad', then deprioritised."""
    state = FarmState.create(tmp_path / "farm", {"bad_worker_errors": 2})
    state.add_job(build_job_record(parse_key_value_text("Plugin=AtomicPublish\n"),
                                   parse_key_value_text("Manifest=/m\n"), job_id="job"))
    for name in ("w1", "w2"):
        state.register_worker(name, os.getpid())
    for _ in range(2):
        job_id, task = state.dequeue("w1")
        state.finish_task(job_id, task["task_id"], "w1", {"message": "boom"})
    assert state.get_job("job")["bad_workers"] == ["w1"]
    assert state.dequeue("w1") is None  # w2 is alive and may take it
    state.set_worker("w2", state="stopped")
    assert state.dequeue("w1") is not None  # only bad workers left: it retries
    assert [r["message"] for r in state.reports("job")] == ["boom", "boom"]
