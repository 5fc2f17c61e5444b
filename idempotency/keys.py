"""Idempotency keys and fingerprints.

The key comes only from the farm identity of the work (never the attempt, worker,
time or session), so every retry of a task on any worker maps to the same publish.
The fingerprint binds a key to one manifest: same key, other manifest = permanent error.
"""
from __future__ import annotations

import hashlib
import re

from bson import ObjectId

_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class KeyError_(ValueError):
    """A job or task id that cannot form a key (names the field)."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def deadline_key(job_id: str, task_id: str | int) -> str:
    """Key of a Deadline 10 task: ``deadline10:<JobId>:<TaskId>``."""
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise KeyError_("--job-id", f"{job_id!r} is not a Deadline job id (letters, digits, '_', '.', '-')")
    task = str(task_id)
    if not (task.isascii() and task.isdigit()) or len(task) > 9:
        raise KeyError_("--task-id", f"{task_id!r} is not a task id (a whole number from 0)")
    return f"deadline10:{job_id}:{int(task)}"


def openjd_key(job_id: str, step: str, task_parameters: dict) -> str:
    """Key of an Open Job Description task (AWS Deadline Cloud): job id, step name and the task's
    parameter values, never the session id (a retry runs in a new session)."""
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise KeyError_("--openjd-job-id", f"{job_id!r} is not a job id (letters, digits, '_', '.', '-')")
    if not isinstance(step, str) or not _JOB_ID.fullmatch(step.replace(" ", "_")):
        raise KeyError_("--openjd-step", f"{step!r} is not a step name")
    if not isinstance(task_parameters, dict):
        raise KeyError_("--openjd-task-params", "must be a JSON object of parameter names to values")
    import json

    params = json.dumps(task_parameters, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return f"openjd:{job_id}:{step.replace(' ', '_')}:{hashlib.sha256(params.encode()).hexdigest()[:16]}"


def fingerprint(canonical_manifest: str) -> str:
    """SHA-256 of the canonical manifest JSON."""
    return "sha256:" + hashlib.sha256(canonical_manifest.encode("utf-8")).hexdigest()


def short_hash(key: str, length: int = 12) -> str:
    """A filesystem-safe tag for a key, used in staging folder names."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:length]


def object_id(*parts: str) -> ObjectId:
    """A deterministic ObjectId, so that replays insert the same documents, never duplicates."""
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=12).digest()
    return ObjectId(digest)
