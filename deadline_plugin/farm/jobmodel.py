"""Job-info file -> the farm's job record (tasks, limits, machine-limit list).

The record is plain JSON data: the farm state stores it, and the shim's `Deadline.Jobs.Job` maps
Deadline's property names onto it. All interpretation of job-info keys happens here, once.
"""
from __future__ import annotations

import re
import secrets
import struct
import time
from typing import Any

from ..jobfiles import JobFileError, KeyValueFile

DEFAULT_TASK_ERROR_LIMIT = 5
"""Task error limit when a job does not override task failure detection (farm setting)."""
DEFAULT_JOB_ERROR_LIMIT = 100
"""Job error limit when a job does not override job failure detection (Deadline's default)."""


def new_job_id() -> str:
    """A 24-hex id shaped like Deadline's (a MongoDB ObjectId: time first, then random)."""
    return struct.pack(">I", int(time.time())).hex() + secrets.token_hex(8)


MAX_FRAMES = 10000


def parse_frames(text: str, path: str = "<job info>") -> list[int]:
    """Deadline frame lists: `0`, `1-10`, `1,5,7`, `1-100x5`, `10-1` (descending).

    Counted before they are expanded: a hostile `0-999999999` is refused, not enumerated."""
    frames: list[int] = []
    seen: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        match = re.fullmatch(r"(-?\d+)(?:-(-?\d+)(?:x(\d+))?)?", part)
        if not match:
            raise JobFileError(path, None, f"Frames={text!r}: cannot read {part!r}")
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) is not None else start
        step = int(match.group(3) or 1)
        if step < 1:
            raise JobFileError(path, None, f"Frames={text!r}: step must be at least 1")
        direction = 1 if end >= start else -1
        if abs(end - start) // step + 1 + len(frames) > MAX_FRAMES:
            raise JobFileError(path, None, f"Frames={text!r} has more than {MAX_FRAMES} frames")
        for frame in range(start, end + direction, step * direction):
            if frame not in seen:
                seen.add(frame)
                frames.append(frame)
    if not frames:
        raise JobFileError(path, None, f"Frames={text!r} has no frame")
    return frames


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def machine_limit_list(info: KeyValueFile) -> tuple[bool, list[str]]:
    """(whitelist_flag, names): an allow list when Whitelist/Allowlist is set, else a deny list."""
    allow = _names(info.get("Whitelist", "")) + _names(info.get("Allowlist", ""))
    deny = _names(info.get("Blacklist", "")) + _names(info.get("Denylist", ""))
    if allow and deny:
        raise JobFileError(info.path, None, "both an allow list (Whitelist/Allowlist) and a deny list "
                           "(Blacklist/Denylist): a Deadline job has only one machine-limit list")
    return (True, allow) if allow else (False, deny)


def build_job_record(job_info: KeyValueFile, plugin_info: KeyValueFile,
                     job_id: str | None = None) -> dict[str, Any]:
    """The job as the farm stores it; raises JobFileError on values Deadline would refuse."""
    if not any((plugin_info.get(key) or "").strip() for key in ("Manifest", "MetadataFile", "Arguments")):
        raise JobFileError(plugin_info.path, None, "no Manifest=... line: the AtomicPublish plugin needs the "
                           "manifest path (or MetadataFile=..., or an AYON/OpenPype publish job's Arguments=...)")
    chunk = job_info.get_int("ChunkSize", 1)
    if chunk < 1:
        raise JobFileError(job_info.path, None, f"ChunkSize={chunk} must be at least 1")
    frames = parse_frames(job_info.get("Frames", "0") or "0", job_info.path)
    tasks = [{"task_id": str(index), "frames": frames[start:start + chunk], "status": "Queued",
              "errors": 0, "worker": ""}
             for index, start in enumerate(range(0, len(frames), chunk))]
    override_task = job_info.get_bool("OverrideTaskFailureDetection")
    override_job = job_info.get_bool("OverrideJobFailureDetection")
    whitelist_flag, listed = machine_limit_list(job_info)
    timeout = job_info.get_int("TaskTimeoutSeconds", 0) or 60 * job_info.get_int("TaskTimeoutMinutes", 0)
    status = "Suspended" if job_info.get("InitialStatus", "Active").lower() == "suspended" else "Active"
    return {
        "job_id": job_id or new_job_id(),
        "status": status,
        "job_info": dict(job_info.items()),
        "plugin_info": dict(plugin_info.items()),
        "extra_info": job_info.indexed("ExtraInfoKeyValue"),
        "environment": job_info.indexed("EnvironmentKeyValue"),
        "priority": job_info.get_int("Priority", 50),
        "chunk_size": chunk,
        "concurrent_tasks": job_info.get_int("ConcurrentTasks", 1),
        "override_task_failure_detection": override_task,
        "failure_detection_task_errors": job_info.get_int("FailureDetectionTaskErrors", 0),
        "override_job_failure_detection": override_job,
        "failure_detection_job_errors": job_info.get_int("FailureDetectionJobErrors", 0),
        "ignore_bad_worker_detection": job_info.get_bool("IgnoreBadJobDetection"),
        "machine_limit": job_info.get_int("MachineLimit", 0),
        "whitelist_flag": whitelist_flag,
        "listed_workers": listed,
        "task_timeout_seconds": timeout,
        "on_task_timeout": job_info.get("OnTaskTimeout", "Error") or "Error",
        "tasks": tasks,
        "error_count": 0,
        "bad_workers": [],
        "consecutive_errors": {},
        "submitted": time.time(),
    }


def task_error_limit(job: dict[str, Any]) -> int:
    """Errors after which a task fails (0 = unlimited, only possible with the override)."""
    if job["override_task_failure_detection"]:
        return int(job["failure_detection_task_errors"])
    return DEFAULT_TASK_ERROR_LIMIT


def job_error_limit(job: dict[str, Any]) -> int:
    """Errors after which the job fails (0 = unlimited)."""
    if job["override_job_failure_detection"]:
        return int(job["failure_detection_job_errors"])
    return DEFAULT_JOB_ERROR_LIMIT
