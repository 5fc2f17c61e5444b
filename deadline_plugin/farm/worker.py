"""One farm worker process: `python -m atomic_publish.deadline_plugin.farm.worker ...`.

Dequeues tasks from the farm state and runs each through the plugin lifecycle, like a Deadline
Worker: the plugin folder is copied into the worker's own `plugins/<jobId>/`, the job's scratch
files go to `jobsData/<jobId>/`. Stops when every job is done, when the farm asks, or when the
farm process is gone; SIGTERM kills the wrapper's process group first. A task taken away while it
renders (its job failed, deleted or requeued in the Monitor) is stopped like Deadline stops it:
SIGTERM to the wrapper's process group, SIGKILL after a grace period. Events the worker's own
changes queued (OnJobFailed at the error limit) are fired by the worker, as on Deadline.
"""
from __future__ import annotations

import argparse
import datetime
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from ..resources import ensure_shim_on_path, plugin_dir, PLUGIN_NAME

ensure_shim_on_path()
import Deadline.Scripting  # noqa: E402  (the shim)

from .backend import FarmBackend  # noqa: E402
from .events import dispatch_pending  # noqa: E402
from .lifecycle import run_simple_task  # noqa: E402
from .processes import kill_process_group  # noqa: E402
from .pluginconfig import read_config  # noqa: E402
from ...idempotency.redact import register_secret, scrub  # noqa: E402
from .state import FarmState  # noqa: E402

POLL_SECONDS = 0.05
WATCH_SECONDS = 0.2
STOP_GRACE_SECONDS = 5.0


class Worker:
    """The dequeue/run/report loop of one named worker."""

    def __init__(self, farm_dir: Path, name: str, farm_pid: int) -> None:
        self.farm_dir = farm_dir
        self.name = name
        self.farm_pid = farm_pid
        self.home = farm_dir / "workers" / name
        self.state = FarmState(farm_dir)
        self.config = read_config(farm_dir)
        register_secret(os.environ.get("ATOMIC_PUBLISH_STORE"))
        register_secret(self.config.get("StoreUri"))
        self.child: int | None = None

    def log(self, line: str) -> None:
        """Worker log line in Deadline's shape (`time:  0: text`), secrets masked."""
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        print(f"{stamp}:  0: {scrub(line)}", flush=True)

    def set_child(self, pgid: int | None) -> None:
        self.child = pgid
        self.state.set_worker(self.name, child_pgid=pgid)

    def should_stop(self) -> bool:
        if os.getppid() != self.farm_pid:
            return True
        data = self.state.read()
        return data["stop"] or (bool(data["jobs"]) and all(
            j["status"] in ("Completed", "Failed", "Deleted") for j in data["jobs"].values()))

    def run(self) -> None:
        delay = float(os.environ.get("ATOMIC_PUBLISH_FARM_WORKER_DELAY", "0") or 0)
        if delay > 0:  # a worker that comes online later (scenarios that need an order)
            time.sleep(delay)
        self.state.register_worker(self.name, os.getpid())
        Deadline.Scripting.install_backend(FarmBackend(self.state, self.name, log=self.log))
        self.log(f"INFO: Worker {self.name} started (pid {os.getpid()})")
        try:
            while not self.should_stop():
                taken = self.state.dequeue(self.name)
                if taken is None:
                    time.sleep(POLL_SECONDS)
                    continue
                self.render(*taken)
        finally:
            if self.child is not None:
                kill_process_group(self.child)
            self.state.set_worker(self.name, state="stopped", child_pgid=None)
            self.log(f"INFO: Worker {self.name} stopped")

    def render(self, job_id: str, task: dict) -> None:
        job = self.state.get_job(job_id)
        self.log(f"INFO: Render Task: job {job_id} task {task['task_id']}")
        local_plugin = self.home / "plugins" / job_id
        if not local_plugin.is_dir():
            shutil.copytree(plugin_dir(), local_plugin, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        done = threading.Event()
        watcher = threading.Thread(target=self.watch, args=(job_id, task["task_id"], done), daemon=True)
        watcher.start()
        try:
            outcome = run_simple_task(local_plugin / f"{PLUGIN_NAME}.py", job, task, self.name,
                                      self.home / "jobsData" / job_id, self.config,
                                      sink=self.log, on_child=self.set_child)
        finally:
            done.set()
            watcher.join()
        error = None
        if not outcome.ok:
            error = {"message": scrub(outcome.message),
                     "log_tail": [scrub(line) for line in outcome.log]}
            self.log(f"ERROR: task {task['task_id']}: {error['message']}")
        self.state.finish_task(job_id, task["task_id"], self.name, error)
        dispatch_pending(self.farm_dir, job_id, sink=self.log)

    def still_mine(self, job_id: str, task_id: str) -> bool:
        job = self.state.read()["jobs"].get(job_id)
        if job is None or job["status"] != "Active":
            return False
        task = next((t for t in job["tasks"] if t["task_id"] == task_id), None)
        return task is not None and task["status"] == "Rendering" and task["worker"] == self.name

    def watch(self, job_id: str, task_id: str, done: threading.Event) -> None:
        """Stop the render once its task is taken away: SIGTERM, then SIGKILL after the grace period."""
        signalled_at = None
        while not done.wait(WATCH_SECONDS):
            child = self.child
            if child is None:
                continue
            if signalled_at is None:
                if self.still_mine(job_id, task_id):
                    continue
                self.log(f"INFO: task {task_id} of job {job_id} was taken away from this worker (failed, deleted "
                         "or requeued): stopping the render")
                try:
                    os.killpg(child, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    pass
                signalled_at = time.monotonic()
            elif time.monotonic() - signalled_at > STOP_GRACE_SECONDS:
                kill_process_group(child)


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--farm-dir", required=True, type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--farm-pid", required=True, type=int)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    Worker(args.farm_dir, args.name, args.farm_pid).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
