"""Run one job on a local farm of worker processes and collect a Monitor-like result.

The farm folder holds everything (state.json, reports/, workers/<name>/...), so a run can be
inspected afterwards. Workers are separate processes, each in its own process group, so that
stopping the farm (end of job, timeout, Ctrl-C) leaves no worker and no wrapper behind.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..jobfiles import JobFileError, read_job_info, read_plugin_info
from ..resources import PLUGIN_NAME
from .jobmodel import build_job_record
from .events import build_event_config, write_event_config
from .pluginconfig import build_config, write_config
from .processes import kill_process_group, pid_alive
from .state import FarmState

DEFAULT_BAD_WORKER_ERRORS = 3
"""Consecutive errors on a job after which a worker is marked bad for it (farm setting)."""
STALL_GRACE_SECONDS = 1.0
STOP_GRACE_SECONDS = 5.0


@dataclass
class FarmResult:
    """What the farm prints with --json (and what tests assert on)."""

    job_id: str
    job_name: str
    job_status: str
    tasks: list[dict[str, Any]]
    error_reports: list[dict[str, Any]]
    deny_list: list[str]
    allow_list: list[str]
    bad_workers: list[str]
    farm_dir: str
    end_reason: str
    workers: dict[str, Any] = field(default_factory=dict)
    published: list[dict[str, Any]] = field(default_factory=list)  # per completed task: version, final_dir

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def parse_worker_env(entries: list[str]) -> dict[str, dict[str, str]]:
    """`NAME:KEY=VALUE` strings -> {NAME: {KEY: VALUE}}."""
    result: dict[str, dict[str, str]] = {}
    for entry in entries:
        name, sep, assignment = entry.partition(":")
        key, eq, value = assignment.partition("=")
        if not sep or not eq or not name or not key:
            raise ValueError(f"--worker-env {entry!r}: expected NAME:KEY=VALUE, e.g. worker-1:FOO=bar")
        result.setdefault(name, {})[key] = value
    return result


class Farm:
    """Owns the worker processes of one farm run."""

    def __init__(self, farm_dir: Path, workers: int, env: dict[str, dict[str, str]],
                 store_uri: str | None) -> None:
        self.dir = farm_dir
        self.names = [f"worker-{i}" for i in range(1, workers + 1)]
        unknown = set(env) - set(self.names)
        if unknown:
            raise ValueError(f"--worker-env names unknown workers {sorted(unknown)}; "
                             f"this farm has {', '.join(self.names)}")
        self.env = env
        self.store_uri = store_uri
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.state = FarmState(farm_dir)

    def start(self) -> None:
        for name in self.names:
            env = dict(os.environ)
            if self.store_uri:
                env["ATOMIC_PUBLISH_STORE"] = self.store_uri
            env.update(self.env.get(name, {}))
            home = self.dir / "workers" / name
            home.mkdir(parents=True, exist_ok=True)
            with open(home / "worker.log", "ab") as log:
                self.processes[name] = subprocess.Popen(
                    [sys.executable, "-m", "atomic_publish.deadline_plugin.farm.worker",
                     "--farm-dir", str(self.dir), "--name", name, "--farm-pid", str(os.getpid())],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                    cwd=home, start_new_session=True)

    def wait(self, timeout: float) -> str:
        """Poll until the job ends; returns why the farm stopped."""
        deadline = time.monotonic() + timeout
        stalled_since: float | None = None
        while True:
            if self.state.all_jobs_done():
                return "job finished"
            if time.monotonic() > deadline:
                return f"timeout after {timeout:g} s: workers killed, job left as it was"
            if all(p.poll() is not None for p in self.processes.values()):
                return "every worker exited before the job finished (see workers/*/worker.log)"
            registered = len(self.state.read()["workers"]) == len(self.names)
            if registered and self.state.stalled_jobs():
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > STALL_GRACE_SECONDS:
                    return "stalled: no live worker may take the job (deny list / allow list)"
            else:
                stalled_since = None
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM every worker group, then SIGKILL what is left, including wrapper groups."""
        try:
            self.state.request_stop()
        except OSError:
            pass
        for process in self.processes.values():
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        end = time.monotonic() + STOP_GRACE_SECONDS
        for process in self.processes.values():
            try:
                process.wait(max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            kill_process_group(process.pid)
            process.wait()
        for info in self.state.read()["workers"].values():
            if info.get("child_pgid"):
                kill_process_group(int(info["child_pgid"]))


# The wrapper's result line as the worker log shows it, and the version and folder in its message
# ("published version 3 of renderMain at /p/v003 (epoch 2)", "version 3 was already published ... at /p/v003; ...").
_TASK_LINE = re.compile(r"Render Task: job (?P<job>\S+) task (?P<task>\S+)")
_RESULT_LINE = re.compile(r"STDOUT: \[atomic-publish\] result (?P<outcome>published|already-published) exit=0 "
                          r"class=\S+: (?P<message>.*)")
_VERSION_AT = re.compile(r"version (?P<version>\d+) .*?at (?P<final_dir>.+?)(?: \(epoch \d+\)|;|$)")


def published_versions(farm_dir: Path, job_id: str, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What each completed task published, read from the result line in the log of its worker."""
    found = []
    for task in tasks:
        if task["status"] != "Completed" or not task["worker"]:
            continue
        log = farm_dir / "workers" / task["worker"] / "worker.log"
        current, last = None, None
        try:
            lines = log.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            started = _TASK_LINE.search(line)
            if started:
                current = (started["job"], started["task"])
                continue
            result = _RESULT_LINE.search(line)
            if result and current == (job_id, str(task["task_id"])):
                last = result
        if last is None:
            continue
        where = _VERSION_AT.search(last["message"])
        found.append({"task_id": task["task_id"], "worker": task["worker"], "outcome": last["outcome"],
                      "version": int(where["version"]) if where else None,
                      "final_dir": where["final_dir"] if where else None, "message": last["message"]})
    return found


def collect_result(farm_dir: Path, job_id: str, end_reason: str,
                   exit_codes: dict[str, int | None]) -> FarmResult:
    """Read the final state into a FarmResult."""
    state = FarmState(farm_dir)
    data = state.read()
    job = data["jobs"][job_id]
    listed = list(job["listed_workers"])
    tasks = [{"task_id": t["task_id"], "status": t["status"], "errors": t["errors"], "worker": t["worker"]}
             for t in job["tasks"]]
    return FarmResult(
        job_id=job_id,
        job_name=job["job_info"].get("Name", "Untitled"),
        job_status=job["status"],
        tasks=tasks,
        error_reports=[{k: r[k] for k in ("report_id", "worker", "task_id", "time", "message")}
                       for r in state.reports(job_id)],
        deny_list=[] if job["whitelist_flag"] else listed,
        allow_list=listed if job["whitelist_flag"] else [],
        bad_workers=list(job["bad_workers"]),
        farm_dir=str(farm_dir),
        end_reason=end_reason,
        workers={name: {"exit_code": exit_codes.get(name),
                        "log": str(farm_dir / "workers" / name / "worker.log")}
                 for name in sorted(data["workers"])},
        published=published_versions(farm_dir, job_id, tasks),
    )


def run_farm(job_info_path: str | os.PathLike[str], plugin_info_path: str | os.PathLike[str],
             workers: int = 3, store_uri: str | None = None,
             worker_env: dict[str, dict[str, str]] | None = None,
             farm_dir: str | os.PathLike[str] | None = None, timeout: float = 600,
             bad_worker_errors: int = DEFAULT_BAD_WORKER_ERRORS,
             plugin_config: dict[str, str] | None = None,
             echo: Callable[[str], None] = lambda line: None,
             event_config: dict[str, str] | None = None) -> FarmResult:
    """Submit one job to a new local farm, run it to the end, stop every worker, report.

    `plugin_config` overrides the AtomicPublish plugin configuration (e.g. the executable).
    `event_config` installs the AtomicPublishEvents event plugin, with these overrides of its
    configuration (None: no event plugin on this farm).
    Raises JobFileError for unreadable job files and ValueError for bad options.
    """
    if workers < 1:
        raise ValueError("a farm needs at least one worker")
    job_info = read_job_info(job_info_path)
    plugin_info = read_plugin_info(plugin_info_path)
    if job_info["Plugin"].strip().lower() != PLUGIN_NAME.lower():
        raise JobFileError(str(job_info_path), None, f"Plugin={job_info['Plugin']}: this farm only "
                           f"has the {PLUGIN_NAME} plugin")
    record = build_job_record(job_info, plugin_info)
    folder = Path(farm_dir) if farm_dir else Path(tempfile.mkdtemp(prefix="atomic-publish-farm-"))
    folder = folder.resolve()
    echo(f"farm folder: {folder}")
    FarmState.create(folder, {"bad_worker_errors": bad_worker_errors, "workers": workers})
    write_config(folder, build_config(plugin_config))
    if event_config is not None:
        write_event_config(folder, build_event_config(event_config))
    farm = Farm(folder, workers, worker_env or {}, store_uri)
    farm.state.add_job(record)
    echo(f"job {record['job_id']} submitted: {len(record['tasks'])} task(s), {workers} worker(s)")
    try:
        farm.start()
        reason = farm.wait(timeout)
    finally:
        farm.stop()
    codes = {name: p.returncode for name, p in farm.processes.items()}
    return collect_result(folder, record["job_id"], reason, codes)


def orphaned_children(farm_dir: str | os.PathLike[str]) -> list[int]:
    """Recorded wrapper process groups that are still alive (should be empty after a run)."""
    data = FarmState(farm_dir).read()
    return [int(i["child_pgid"]) for i in data["workers"].values()
            if i.get("child_pgid") and pid_alive(int(i["child_pgid"]))]
