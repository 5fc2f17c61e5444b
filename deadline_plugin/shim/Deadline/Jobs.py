"""Deadline.Jobs: `Job` and `Task`, read-only views of a record the repository backend returns.

The record (plain JSON data) is built by the local farm from the job-info file; this module only
maps Deadline's property names onto it, so a plugin reads the same names it reads on a real farm.
"""
from __future__ import annotations

from typing import Any

__all__ = ["Job", "Task"]


def _ci_get(mapping: dict[str, str], key: str) -> str | None:
    """Deadline looks keys up case-insensitively."""
    lowered = key.lower()
    for name, value in mapping.items():
        if name.lower() == lowered:
            return value
    return None


class Task:
    """One task of a job (TaskId is a 0-based string, like Deadline)."""

    def __init__(self, record: dict[str, Any]) -> None:
        self._record = record

    TaskId = property(lambda self: str(self._record["task_id"]))
    TaskStatus = property(lambda self: self._record["status"])
    TaskErrorCount = property(lambda self: int(self._record.get("errors", 0)))
    TaskSlaveName = property(lambda self: self._record.get("worker", ""))
    TaskSlaveMachineName = property(lambda self: self._record.get("worker", ""))
    TaskFrameList = property(lambda self: list(self._record.get("frames", [])))
    TaskFrameString = property(lambda self: ",".join(str(f) for f in self._record.get("frames", [])))

    def __repr__(self) -> str:
        return f"<Task {self.TaskId} {self.TaskStatus}>"


class Job:
    """A job as Deadline's `Job` class exposes it; mutate then `RepositoryUtils.SaveJob(job)`."""

    def __init__(self, record: dict[str, Any]) -> None:
        self._record = record

    def _info(self, key: str, default: str = "") -> str:
        value = _ci_get(self._record.get("job_info", {}), key)
        return default if value is None else value

    # identity
    JobId = property(lambda self: self._record["job_id"])
    JobName = property(lambda self: self._info("Name", "Untitled"))
    JobBatchName = property(lambda self: self._info("BatchName"))
    JobUserName = property(lambda self: self._info("UserName"))
    JobPlugin = property(lambda self: self._info("Plugin"))
    JobComment = property(lambda self: self._info("Comment"))
    JobDepartment = property(lambda self: self._info("Department"))
    # scheduling
    JobPriority = property(lambda self: int(self._record.get("priority", 50)))
    JobPool = property(lambda self: self._info("Pool", "none"))
    JobGroup = property(lambda self: self._info("Group", "none"))
    JobConcurrentTasks = property(lambda self: int(self._record.get("concurrent_tasks", 1)))
    # frames and counts
    JobFrames = property(lambda self: self._info("Frames", "0"))
    JobFramesPerTask = property(lambda self: int(self._record.get("chunk_size", 1)))
    JobTaskCount = property(lambda self: len(self._record.get("tasks", [])))
    JobQueuedTasks = property(lambda self: self._count("Queued"))
    JobRenderingTasks = property(lambda self: self._count("Rendering"))
    JobCompletedTasks = property(lambda self: self._count("Completed"))
    JobFailedTasks = property(lambda self: self._count("Failed"))
    JobSuspendedTasks = property(lambda self: self._count("Suspended"))
    JobPendingTasks = property(lambda self: self._count("Pending"))
    # state
    JobStatus = property(lambda self: self._record["status"])
    # failure detection
    JobOverrideJobFailureDetection = property(lambda self: bool(self._record["override_job_failure_detection"]))
    JobFailureDetectionJobErrors = property(lambda self: int(self._record["failure_detection_job_errors"]))
    JobOverrideTaskFailureDetection = property(lambda self: bool(self._record["override_task_failure_detection"]))
    JobFailureDetectionTaskErrors = property(lambda self: int(self._record["failure_detection_task_errors"]))
    JobIgnoreBadSlaveDetection = property(lambda self: bool(self._record.get("ignore_bad_worker_detection", False)))
    JobSendJobErrorWarning = property(lambda self: self._info("SendJobErrorWarning", "false").lower() == "true")
    # machine limit
    JobMachineLimit = property(lambda self: int(self._record.get("machine_limit", 0)))
    JobWhitelistFlag = property(lambda self: bool(self._record.get("whitelist_flag", False)))
    JobListedSlaves = property(lambda self: list(self._record.get("listed_workers", [])))
    # timeouts
    JobTaskTimeoutSeconds = property(lambda self: int(self._record.get("task_timeout_seconds", 0)))
    JobOnTaskTimeout = property(lambda self: self._record.get("on_task_timeout", "Error"))

    def _count(self, status: str) -> int:
        return sum(1 for task in self._record.get("tasks", []) if task["status"] == status)

    def __repr__(self) -> str:
        return f"<Job {self.JobId} {self.JobStatus}>"

    # job info / plugin info
    def GetJobInfoKeys(self) -> list[str]:
        return list(self._record.get("job_info", {}))

    def GetJobInfoKeyValue(self, key: str) -> str:
        return self._info(key)

    def GetJobPluginInfoKeys(self) -> list[str]:
        return list(self._record.get("plugin_info", {}))

    def GetJobPluginInfoKeyValue(self, key: str) -> str:
        value = _ci_get(self._record.get("plugin_info", {}), key)
        return "" if value is None else value

    def SetJobPluginInfoKeyValue(self, key: str, value: str) -> None:
        self._record.setdefault("plugin_info", {})[key] = str(value)

    # extra info (ExtraInfoKeyValue<N>=Name=Value)
    def GetJobExtraInfoKeys(self) -> list[str]:
        return list(self._record.get("extra_info", {}))

    def GetJobExtraInfoKeyValue(self, key: str) -> str:
        value = _ci_get(self._record.get("extra_info", {}), key)
        return "" if value is None else value

    def GetJobExtraInfoKeyValueWithDefault(self, key: str, default: str) -> str:
        value = _ci_get(self._record.get("extra_info", {}), key)
        return default if value is None else value

    def SetJobExtraInfoKeyValue(self, key: str, value: str) -> None:
        self._record.setdefault("extra_info", {})[key] = str(value)

    def DeleteJobExtraInfoKey(self, key: str) -> None:
        extra = self._record.setdefault("extra_info", {})
        for name in [n for n in extra if n.lower() == key.lower()]:
            del extra[name]

    # environment (EnvironmentKeyValue<N>=KEY=VALUE)
    def GetJobEnvironmentKeys(self) -> list[str]:
        return list(self._record.get("environment", {}))

    def GetJobEnvironmentKeyValue(self, key: str) -> str:
        value = _ci_get(self._record.get("environment", {}), key)
        return "" if value is None else value

    def SetJobEnvironmentKeyValue(self, key: str, value: str) -> None:
        self._record.setdefault("environment", {})[key] = str(value)
