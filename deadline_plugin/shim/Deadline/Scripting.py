"""Deadline.Scripting: RepositoryUtils, FileUtils, SystemUtils, ClientUtils, MonitorUtils.

`RepositoryUtils` acts on the repository; here that is whatever backend the local farm installed
with `install_backend` (see `RepositoryBackend` for the methods it must have). Without one, every
repository call raises `NoRepositoryError` instead of pretending to succeed.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Iterable, Protocol

from Deadline.Jobs import Job, Task
from Deadline.Plugins import PluginConfig

__all__ = ["RepositoryUtils", "FileUtils", "SystemUtils", "ClientUtils", "MonitorUtils", "JobReportCollection",
           "Report"]


class NoRepositoryError(RuntimeError):
    """A repository call made outside the local farm (no backend installed)."""


class RepositoryBackend(Protocol):
    """What the local farm provides; job records are the plain dicts `Deadline.Jobs` wraps."""

    def get_job(self, job_id: str) -> dict[str, Any]: ...
    def save_job(self, record: dict[str, Any]) -> None: ...
    def fail_job(self, job_id: str) -> None: ...
    def set_task_status(self, job_id: str, task_ids: list[str], status: str) -> None: ...
    def add_listed_workers(self, job_id: str, names: list[str]) -> None: ...
    def remove_listed_workers(self, job_id: str, names: list[str]) -> None: ...
    def set_listed_workers(self, job_id: str, names: list[str]) -> None: ...
    def set_whitelist_flag(self, job_id: str, flag: bool) -> None: ...
    def set_machine_limit(self, job_id: str, limit: int) -> None: ...
    def add_bad_worker(self, job_id: str, name: str) -> None: ...
    def get_reports(self, job_id: str) -> list[dict[str, Any]]: ...
    def path_mapping_rules(self) -> list[tuple[str, str]]: ...
    def log_text(self, text: str) -> None: ...
    def plugin_config(self, name: str) -> dict[str, str]: ...


_backend: RepositoryBackend | None = None


def install_backend(backend: RepositoryBackend | None) -> None:
    """Called by the local farm (or a test); None uninstalls."""
    global _backend
    _backend = backend


def _repo() -> RepositoryBackend:
    if _backend is None:
        raise NoRepositoryError(
            "Deadline.Scripting.RepositoryUtils has no repository: this is the atomic-publish shim, "
            "which only works inside `atomic-publish farm` (or a test that calls install_backend)")
    return _backend


def _job_id(job_or_id: Any) -> str:
    return job_or_id.JobId if isinstance(job_or_id, Job) else str(job_or_id)


def _task_ids(tasks: Iterable[Any]) -> list[str]:
    return [t.TaskId if isinstance(t, Task) else str(t) for t in tasks]


class Report:
    """An error/log report (Deadline's `Report` property names)."""

    def __init__(self, record: dict[str, Any]) -> None:
        self._record = record

    ReportID = property(lambda self: self._record["report_id"])
    ReportMessage = property(lambda self: self._record["message"])
    ReportSlaveName = property(lambda self: self._record["worker"])
    ReportTaskID = property(lambda self: str(self._record["task_id"]))
    ReportDateTimeOf = property(lambda self: self._record["time"])
    ReportJobName = property(lambda self: self._record.get("job_name", ""))


class JobReportCollection:
    """`RepositoryUtils.GetJobReports(jobId)`: only error reports exist on the local farm."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self._reports = [Report(r) for r in records]

    def GetAllReports(self) -> list[Report]:
        return list(self._reports)

    def GetErrorReports(self) -> list[Report]:
        return list(self._reports)

    def GetLogReports(self) -> list[Report]:
        return []

    def GetTaskErrorReports(self, taskId: str) -> list[Report]:
        return [r for r in self._reports if r.ReportTaskID == str(taskId)]


def _map_path(path: str, rules: list[tuple[str, str]]) -> str:
    windows = SystemUtils.IsRunningOnWindows()
    for source, target in rules:
        head = path[:len(source)]
        if head == source or (windows and head.lower() == source.lower()):
            return target + path[len(source):]
    return path


class RepositoryUtils:
    """Static repository operations (job ids, not Job objects, where Deadline takes ids)."""

    @staticmethod
    def GetJob(jobId: str, invalidate: bool = True) -> Job:
        return Job(_repo().get_job(str(jobId)))

    @staticmethod
    def SaveJob(job: Job) -> None:
        _repo().save_job(job._record)

    @staticmethod
    def FailJob(job: Job) -> None:
        _repo().fail_job(_job_id(job))

    @staticmethod
    def GetJobTasks(job: Job, invalidate: bool = True) -> list[Task]:
        return [Task(t) for t in _repo().get_job(_job_id(job))["tasks"]]

    @staticmethod
    def RequeueTasks(job: Job, tasks: Iterable[Any]) -> None:
        _repo().set_task_status(_job_id(job), _task_ids(tasks), "Queued")

    @staticmethod
    def FailTasks(job: Job, tasks: Iterable[Any]) -> None:
        _repo().set_task_status(_job_id(job), _task_ids(tasks), "Failed")

    @staticmethod
    def AddSlavesToMachineLimitList(jobId: str, slaveNames: Iterable[str]) -> None:
        _repo().add_listed_workers(str(jobId), list(slaveNames))

    @staticmethod
    def RemoveSlavesFromMachineLimitList(jobId: str, slaveNames: Iterable[str]) -> None:
        _repo().remove_listed_workers(str(jobId), list(slaveNames))

    @staticmethod
    def SetMachineLimitListedSlaves(jobId: str, slaveNames: Iterable[str]) -> None:
        _repo().set_listed_workers(str(jobId), list(slaveNames))

    @staticmethod
    def SetMachineLimitWhiteListFlag(jobId: str, whitelistFlag: bool) -> None:
        _repo().set_whitelist_flag(str(jobId), bool(whitelistFlag))

    @staticmethod
    def SetMachineLimitMaximum(jobId: str, limit: int) -> None:
        _repo().set_machine_limit(str(jobId), int(limit))

    @staticmethod
    def AddBadSlaveForJob(job: Job, slaveName: str) -> None:
        _repo().add_bad_worker(_job_id(job), slaveName)

    @staticmethod
    def GetJobReports(jobId: str) -> JobReportCollection:
        return JobReportCollection(_repo().get_reports(str(jobId)))

    @staticmethod
    def GetPluginConfig(pluginName: str, slaveName: str | None = None) -> PluginConfig:
        """The configuration of a job or event plugin (Configure Plugins / Configure Events)."""
        return PluginConfig(pluginName, _repo().plugin_config(pluginName))

    @staticmethod
    def PathMappingRequired(path: str) -> bool:
        return _map_path(path, _repo().path_mapping_rules()) != path

    @staticmethod
    def CheckPathMapping(path: str, forceSeparator: bool = False) -> str:
        """Prefix replace with the first matching rule (case-insensitive only on Windows)."""
        mapped = _map_path(path, _repo().path_mapping_rules())
        if forceSeparator:
            mapped = mapped.replace("\\" if os.sep == "/" else "/", os.sep)
        return mapped

    @staticmethod
    def CheckPathMappingInFile(inFileName: str, outFileName: str) -> None:
        """Copy a text file, replacing every occurrence of each rule's source path."""
        rules = _repo().path_mapping_rules()
        with open(inFileName, encoding="utf-8") as handle:
            text = handle.read()
        for source, target in rules:
            text = text.replace(source, target)
        with open(outFileName, "w", encoding="utf-8") as handle:
            handle.write(text)


class FileUtils:
    """File helpers plugins use to find executables."""

    @staticmethod
    def FileExists(path: str) -> bool:
        return os.path.isfile(path)

    @staticmethod
    def SearchFileList(fileList: str) -> str:
        """First existing file of a semicolon-separated list, or "" (Deadline's contract)."""
        for candidate in fileList.split(";"):
            candidate = candidate.strip()
            if candidate and os.path.isfile(candidate):
                return candidate
        return ""


class SystemUtils:
    """Platform checks and sleeping."""

    @staticmethod
    def IsRunningOnWindows() -> bool:
        return sys.platform.startswith("win")

    @staticmethod
    def IsRunningOnLinux() -> bool:
        return sys.platform.startswith("linux")

    @staticmethod
    def IsRunningOnMac() -> bool:
        return sys.platform == "darwin"

    @staticmethod
    def Sleep(milliseconds: int) -> None:
        time.sleep(milliseconds / 1000.0)


class ClientUtils:
    """Logging to the worker log."""

    @staticmethod
    def LogText(text: str) -> None:
        if _backend is not None:
            _backend.log_text(text)
        else:
            print(text, flush=True)


_selection: list[Job] = []


def select_in_monitor(jobs: Iterable[Job]) -> None:
    """Host side (a test, the local farm): the jobs a Monitor user has selected."""
    _selection[:] = list(jobs)


class MonitorUtils:
    """What a Monitor script sees of the Monitor (`custom/scripts/Jobs/*.py`)."""

    @staticmethod
    def GetSelectedJobs() -> list[Job]:
        return list(_selection)
