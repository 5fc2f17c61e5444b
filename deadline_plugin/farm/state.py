"""The farm's shared state: one JSON file changed under an exclusive file lock.

Several worker processes dequeue tasks, report outcomes and change deny lists at the same time,
like Deadline workers sharing the repository database. Every change is a transaction: take
`state.lock` (fcntl.flock: local machine only), read `state.json`, change, write atomically.
Failure detection (task/job error limits, bad workers) is applied here, in one place.
"""
from __future__ import annotations

import datetime
import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .jobmodel import job_error_limit, task_error_limit
from .processes import pid_alive

TERMINAL = ("Completed", "Failed")
DELETED = "Deleted"  # only the local farm's: Deadline moves a deleted job to its DeletedJobs collection
LOG_TAIL_LINES = 40
EVENTS_CONFIG_FILE = "AtomicPublishEvents.config"  # present when the event plugin is installed (events.py)


def may_take(job: dict[str, Any], worker: str) -> bool:
    """Machine-limit list and machine limit, applied strictly (bad workers are handled apart)."""
    if job["status"] != "Active":
        return False
    listed = worker in job["listed_workers"]
    if job["whitelist_flag"] != listed:  # allow list: must be listed; deny list: must not be
        return False
    limit = int(job.get("machine_limit", 0))
    if limit > 0:
        others = {t["worker"] for t in job["tasks"] if t["status"] == "Rendering" and t["worker"] != worker}
        if len(others) >= limit:
            return False
    return True


class FarmState:
    """Access to `<farm_dir>/state.json` and the error reports next to it."""

    def __init__(self, farm_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(farm_dir)
        self.path = self.dir / "state.json"
        self.lock_path = self.dir / "state.lock"
        self.reports_dir = self.dir / "reports"

    # -- storage -----------------------------------------------------------------------------
    @classmethod
    def create(cls, farm_dir: str | os.PathLike[str], settings: dict[str, Any]) -> "FarmState":
        """A new, empty farm (refuses a folder that already holds one)."""
        state = cls(farm_dir)
        state.dir.mkdir(parents=True, exist_ok=True)
        if state.path.exists():
            raise FileExistsError(f"{state.path} exists: use a new folder for each farm run")
        state._write({"settings": settings, "stop": False, "jobs": {}, "workers": {}, "report_seq": 0})
        return state

    def _write(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_name(f"state.json.tmp{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)

    @contextmanager
    def transaction(self) -> Iterator[dict[str, Any]]:
        """Exclusive read-modify-write of the whole state."""
        with open(self.lock_path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                yield data
                self._write(data)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def read(self) -> dict[str, Any]:
        """A consistent snapshot (taken under the lock, not written back)."""
        with open(self.lock_path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH)
            try:
                return json.loads(self.path.read_text(encoding="utf-8"))
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @staticmethod
    def _job(data: dict[str, Any], job_id: str) -> dict[str, Any]:
        try:
            return data["jobs"][job_id]
        except KeyError:
            raise KeyError(f"no job {job_id} on this farm") from None

    # -- jobs and workers --------------------------------------------------------------------
    def add_job(self, record: dict[str, Any]) -> None:
        with self.transaction() as data:
            data["jobs"][record["job_id"]] = record

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._job(self.read(), job_id)

    def register_worker(self, name: str, pid: int) -> None:
        with self.transaction() as data:
            data["workers"][name] = {"pid": pid, "state": "idle", "job_id": "", "task_id": "",
                                     "child_pgid": None}

    def set_worker(self, name: str, **fields: Any) -> None:
        with self.transaction() as data:
            data["workers"].setdefault(name, {}).update(fields)

    def request_stop(self) -> None:
        with self.transaction() as data:
            data["stop"] = True

    # -- scheduling --------------------------------------------------------------------------
    def _requeue_orphans(self, data: dict[str, Any], job: dict[str, Any]) -> None:
        """Tasks left Rendering by a dead worker go back to the queue (no error counted)."""
        for task in job["tasks"]:
            if task["status"] != "Rendering":
                continue
            info = data["workers"].get(task["worker"])
            if info is None or info.get("state") == "stopped" or not pid_alive(info["pid"]):
                task["status"], task["worker"] = "Queued", ""

    def _good_worker_available(self, data: dict[str, Any], job: dict[str, Any], worker: str) -> bool:
        for name, info in data["workers"].items():
            if name == worker or name in job["bad_workers"] or info.get("state") == "stopped":
                continue
            if pid_alive(info["pid"]) and may_take(job, name):
                return True
        return False

    def dequeue(self, worker: str) -> tuple[str, dict[str, Any]] | None:
        """Give `worker` a queued task it may take, marking it Rendering; None if there is none."""
        with self.transaction() as data:
            if data["stop"]:
                return None
            jobs = sorted(data["jobs"].values(), key=lambda j: (-j["priority"], j["submitted"]))
            for job in jobs:
                if job["status"] != "Active":
                    continue
                self._requeue_orphans(data, job)
                if not may_take(job, worker):
                    continue
                if worker in job["bad_workers"] and self._good_worker_available(data, job, worker):
                    continue  # a bad worker only takes the job when no good one is left
                for task in job["tasks"]:
                    if task["status"] == "Queued":
                        task["status"], task["worker"] = "Rendering", worker
                        data["workers"][worker].update(state="rendering", job_id=job["job_id"],
                                                       task_id=task["task_id"])
                        return job["job_id"], dict(task)
            return None

    def all_jobs_done(self) -> bool:
        """Every job Completed, Failed or deleted, no event of theirs queued or being fired, and no
        live worker still ending a task (a plugin that fails the job ends its own task after that,
        and its error report must be written before the farm stops, as a Deadline Worker writes it)."""
        data = self.read()
        events = (self.dir / EVENTS_CONFIG_FILE).is_file()  # else nothing fires what is queued
        busy = any(w.get("state") == "rendering" and w.get("pid") and pid_alive(int(w["pid"]))
                   for w in data["workers"].values())
        return bool(data["jobs"]) and not busy and all(
            j["status"] in TERMINAL + (DELETED,) and not (events and j.get("pending_events"))
            and not j.get("firing_events") for j in data["jobs"].values())

    def stalled_jobs(self) -> list[str]:
        """Active jobs that no live worker may ever take now (e.g. every worker deny-listed)."""
        data = self.read()
        alive = [n for n, i in data["workers"].items() if i.get("state") != "stopped" and pid_alive(i["pid"])]
        stalled = []
        for job in data["jobs"].values():
            if job["status"] != "Active" or any(t["status"] == "Rendering" for t in job["tasks"]):
                continue
            if not any(may_take(job, name) for name in alive):
                stalled.append(job["job_id"])
        return stalled

    # -- outcomes ----------------------------------------------------------------------------
    @staticmethod
    def _fail_job(job: dict[str, Any]) -> None:
        job["status"] = "Failed"
        job.setdefault("pending_events", []).append("OnJobFailed")  # fired by whoever failed it
        for task in job["tasks"]:
            if task["status"] not in ("Completed", "Rendering"):
                task["status"] = "Failed"

    def finish_task(self, job_id: str, task_id: str, worker: str,
                    error: dict[str, Any] | None = None) -> None:
        """Record a task's end on `worker`; `error` = {"message", "log_tail"} for a failure."""
        with self.transaction() as data:
            job = self._job(data, job_id)
            task = next(t for t in job["tasks"] if t["task_id"] == task_id)
            owned = task["status"] == "Rendering" and task["worker"] == worker
            data["workers"].setdefault(worker, {}).update(state="idle", job_id="", task_id="")
            if error is None:
                job["consecutive_errors"][worker] = 0
                if owned:
                    task["status"] = "Completed"
                if job["status"] == "Active" and all(t["status"] == "Completed" for t in job["tasks"]):
                    job["status"] = "Completed"
                return
            self._add_report(data, job, task_id, worker, error)
            task["errors"] += 1
            job["error_count"] += 1
            streak = job["consecutive_errors"].get(worker, 0) + 1
            job["consecutive_errors"][worker] = streak
            limit = data["settings"]["bad_worker_errors"]
            if (limit > 0 and streak >= limit and not job["ignore_bad_worker_detection"]
                    and worker not in job["bad_workers"]):
                job["bad_workers"].append(worker)
            if owned:
                task_limit = task_error_limit(job)
                failed = job["status"] != "Active" or (task_limit > 0 and task["errors"] >= task_limit)
                task["status"] = "Failed" if failed else "Queued"
                task["worker"] = task["worker"] if failed else ""
            if job["status"] == "Active":
                limit = job_error_limit(job)
                if any(t["status"] == "Failed" for t in job["tasks"]) or (0 < limit <= job["error_count"]):
                    self._fail_job(job)

    def _add_report(self, data: dict[str, Any], job: dict[str, Any], task_id: str, worker: str,
                    error: dict[str, Any]) -> None:
        data["report_seq"] += 1
        report = {
            "report_id": f"{data['report_seq']:05d}",
            "job_id": job["job_id"],
            "job_name": job["job_info"].get("Name", "Untitled"),
            "worker": worker,
            "task_id": task_id,
            "time": datetime.datetime.now().isoformat(timespec="seconds"),
            "message": error["message"],
            "log_tail": list(error.get("log_tail", []))[-LOG_TAIL_LINES:],
        }
        folder = self.reports_dir / job["job_id"]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{report['report_id']}-{worker}-task{task_id}.json").write_text(
            json.dumps(report, indent=1), encoding="utf-8")

    def reports(self, job_id: str) -> list[dict[str, Any]]:
        """Error reports of a job, oldest first."""
        folder = self.reports_dir / job_id
        if not folder.is_dir():
            return []
        return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))]

    # -- repository operations the plugin may call (through the shim's RepositoryUtils) ------
    def fail_job(self, job_id: str) -> None:
        with self.transaction() as data:
            job = self._job(data, job_id)
            if job["status"] not in TERMINAL + (DELETED,):
                self._fail_job(job)

    def set_task_status(self, job_id: str, task_ids: list[str], status: str) -> None:
        with self.transaction() as data:
            job = self._job(data, job_id)
            for task in job["tasks"]:
                if task["task_id"] in task_ids and task["status"] != "Completed":
                    task["status"] = status
                    if status == "Queued":
                        task["worker"] = ""
            if status == "Failed" and job["status"] == "Active":
                self._fail_job(job)

    def change_job(self, job_id: str, **fields: Any) -> None:
        """Set machine-limit fields, plugin info, extra info... (only the ones SaveJob may set)."""
        allowed = {"listed_workers", "whitelist_flag", "machine_limit", "priority", "plugin_info",
                   "extra_info", "environment"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot change {sorted(unknown)} of a job")
        with self.transaction() as data:
            self._job(data, job_id).update(fields)

    def edit_listed_workers(self, job_id: str, add: list[str] = (), remove: list[str] = ()) -> None:
        with self.transaction() as data:
            job = self._job(data, job_id)
            listed = [n for n in job["listed_workers"] if n not in remove]
            listed += [n for n in add if n not in listed]
            job["listed_workers"] = listed

    def add_bad_worker(self, job_id: str, name: str) -> None:
        with self.transaction() as data:
            job = self._job(data, job_id)
            if name not in job["bad_workers"]:
                job["bad_workers"].append(name)

    # -- what an admin does in the Monitor (farm/admin.py), and the events it fires ----------
    def delete_job(self, job_id: str) -> None:
        """The job leaves the queue (status Deleted: kept, like Deadline's DeletedJobs, for OnJobDeleted)."""
        with self.transaction() as data:
            job = self._job(data, job_id)
            job["status"] = DELETED
            job.setdefault("pending_events", []).append("OnJobDeleted")

    def requeue_job(self, job_id: str) -> None:
        """Every task back to Queued (completed ones too), the job Active again."""
        with self.transaction() as data:
            job = self._job(data, job_id)
            if job["status"] == DELETED:
                raise ValueError(f"job {job_id} was deleted: it cannot be requeued")
            for task in job["tasks"]:
                task["status"], task["worker"] = "Queued", ""
            job["status"] = "Active"
            job.setdefault("pending_events", []).append("OnJobRequeued")

    def take_events(self, job_id: str) -> list[str]:
        """The job's queued events, now this caller's to fire (marked in flight until events_done)."""
        with self.transaction() as data:
            job = data["jobs"].get(job_id)
            if job is None or not job.get("pending_events"):
                return []
            events, job["pending_events"] = job["pending_events"], []
            job["firing_events"] = job.get("firing_events", 0) + len(events)
            return events

    def events_done(self, job_id: str, count: int) -> None:
        with self.transaction() as data:
            job = data["jobs"].get(job_id)
            if job is not None:
                job["firing_events"] = max(0, job.get("firing_events", 0) - count)

    def reopen(self) -> None:
        """Let new workers run on a farm that stopped (after a requeue); the stopped ones are forgotten."""
        with self.transaction() as data:
            data["stop"] = False
            data["workers"] = {}
