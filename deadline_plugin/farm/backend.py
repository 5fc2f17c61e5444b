"""The repository backend the shim's `RepositoryUtils` calls, for one worker of the local farm."""
from __future__ import annotations

import os
from typing import Any, Callable

from .state import FarmState

PATH_MAPPING_ENV = "ATOMIC_PUBLISH_FARM_PATH_MAPPING"
"""`FROM=>TO;FROM2=>TO2`: this worker's Mapped Paths (Repository Options > Mapped Paths)."""


def parse_path_mapping(text: str) -> list[tuple[str, str]]:
    """Rules in order; an entry without `=>` or with an empty side is an error, not ignored."""
    rules = []
    for entry in text.split(";"):
        if not entry.strip():
            continue
        source, sep, target = entry.partition("=>")
        if not sep or not source or not target:
            raise ValueError(f"{PATH_MAPPING_ENV}: {entry!r} is not FROM=>TO")
        rules.append((source, target))
    return rules


class FarmBackend:
    """Implements Deadline.Scripting.RepositoryBackend over the farm state."""

    def __init__(self, state: FarmState, worker: str, log: Callable[[str], None] = print,
                 environ: dict[str, str] | None = None) -> None:
        self.state = state
        self.worker = worker
        self.log = log
        env = os.environ if environ is None else environ
        self.rules = parse_path_mapping(env.get(PATH_MAPPING_ENV, ""))

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self.state.get_job(job_id)

    def save_job(self, record: dict[str, Any]) -> None:
        self.state.change_job(record["job_id"], **{k: record[k] for k in (
            "listed_workers", "whitelist_flag", "machine_limit", "priority", "plugin_info",
            "extra_info", "environment")})

    def fail_job(self, job_id: str) -> None:
        self.log(f"INFO: RepositoryUtils.FailJob({job_id})")
        self.state.fail_job(job_id)

    def set_task_status(self, job_id: str, task_ids: list[str], status: str) -> None:
        self.log(f"INFO: RepositoryUtils: tasks {task_ids} of job {job_id} -> {status}")
        self.state.set_task_status(job_id, task_ids, status)

    def add_listed_workers(self, job_id: str, names: list[str]) -> None:
        self.log(f"INFO: RepositoryUtils.AddSlavesToMachineLimitList({job_id}, {names})")
        self.state.edit_listed_workers(job_id, add=names)

    def remove_listed_workers(self, job_id: str, names: list[str]) -> None:
        self.log(f"INFO: RepositoryUtils.RemoveSlavesFromMachineLimitList({job_id}, {names})")
        self.state.edit_listed_workers(job_id, remove=names)

    def set_listed_workers(self, job_id: str, names: list[str]) -> None:
        self.state.change_job(job_id, listed_workers=list(names))

    def set_whitelist_flag(self, job_id: str, flag: bool) -> None:
        self.state.change_job(job_id, whitelist_flag=bool(flag))

    def set_machine_limit(self, job_id: str, limit: int) -> None:
        self.state.change_job(job_id, machine_limit=int(limit))

    def add_bad_worker(self, job_id: str, name: str) -> None:
        self.state.add_bad_worker(job_id, name)

    def get_reports(self, job_id: str) -> list[dict[str, Any]]:
        return self.state.reports(job_id)

    def path_mapping_rules(self) -> list[tuple[str, str]]:
        return list(self.rules)

    def log_text(self, text: str) -> None:
        self.log(text)

    def plugin_config(self, name: str) -> dict[str, str]:
        """Configure Plugins (AtomicPublish) or Configure Events (AtomicPublishEvents) of this farm."""
        from ..resources import EVENTS_PLUGIN_NAME, PLUGIN_NAME
        from .events import read_event_config
        from .pluginconfig import read_config

        if name.lower() == PLUGIN_NAME.lower():
            return read_config(self.state.dir)
        if name.lower() == EVENTS_PLUGIN_NAME.lower():
            return read_event_config(self.state.dir)
        raise KeyError(f"no plugin {name} on this farm (it has {PLUGIN_NAME} and {EVENTS_PLUGIN_NAME})")
