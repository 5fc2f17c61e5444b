"""Event plugins on the local farm: AtomicPublishEvents, loaded through the shim and fired as Deadline fires it.

Deadline fires a job event in the application that changed the job: the Worker whose error made
the job reach its error limit (or whose plugin called RepositoryUtils.FailJob), the Monitor of
the admin who failed, deleted or requeued it. The farm does the same: the state queues the event
on the job in the transaction that changes it, and whoever made the change takes it and fires it
in a short-lived child process (Deadline 10 can run event plugins in a separate sandbox process
too) with its own environment. The child loads the plugin file, calls GetDeadlineEventListener,
binds the event plugin's configuration, calls the callback with the Job, then
CleanupDeadlineEventListener. Each line the plugin logs goes to the caller's log and, as written,
to `<farm>/events.log`. The farm waits for events in flight before it stops.
"""
from __future__ import annotations

import os
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

from ..jobfiles import read_key_value_file, write_key_value_file
from ..resources import EVENTS_PLUGIN_NAME, ensure_shim_on_path, events_plugin_dir
from .pluginconfig import param_defaults
from .state import EVENTS_CONFIG_FILE, FarmState

CONFIG_FILE = EVENTS_CONFIG_FILE
LOG_FILE = "events.log"
CALLBACKS = {"OnJobFailed": "OnJobFailedCallback", "OnJobDeleted": "OnJobDeletedCallback",
             "OnJobRequeued": "OnJobRequeuedCallback"}
EVENT_TIMEOUT_SECONDS = 900


def build_event_config(overrides: dict[str, str] | None = None) -> dict[str, str]:
    """The event plugin's configuration: .param defaults < .dlinit < explicit overrides."""
    source = events_plugin_dir()
    config = param_defaults(source / f"{EVENTS_PLUGIN_NAME}.param")
    dlinit = source / f"{EVENTS_PLUGIN_NAME}.dlinit"
    if dlinit.is_file():
        config.update(read_key_value_file(dlinit).items())
    config.update(overrides or {})
    return config


def write_event_config(farm_dir: Path, config: dict[str, str]) -> Path:
    """Written privately (0600): StoreUri may hold a password."""
    path = Path(farm_dir) / CONFIG_FILE
    write_key_value_file(path, config, mode=0o600)
    return path


def installed(farm_dir: str | os.PathLike[str]) -> bool:
    """The event plugin is on this farm (run_farm(event_config=...), `atomic-publish farm --events`)."""
    return (Path(farm_dir) / CONFIG_FILE).is_file()


def read_event_config(farm_dir: str | os.PathLike[str]) -> dict[str, str]:
    return dict(read_key_value_file(Path(farm_dir) / CONFIG_FILE).items()) if installed(farm_dir) else {}


def listens(config: dict[str, str], job: dict[str, Any]) -> bool:
    """Deadline's State of an event plugin: Global Enabled, Opt-In (the job's EventOptIns), Disabled."""
    state = (config.get("State") or "").strip().lower()
    if not state:  # event plugins of Deadline 7 and older: Enabled=True/False
        return (config.get("Enabled") or "").strip().lower() == "true"
    if state == "global enabled":
        return True
    if state == "opt-in":
        opted = (job.get("job_info", {}).get("EventOptIns") or "").split(",")
        return EVENTS_PLUGIN_NAME.lower() in (name.strip().lower() for name in opted)
    return False


def fire_in_process(farm_dir: str | os.PathLike[str], event: str, job_id: str,
                    log: Callable[[str], None]) -> None:
    """Fire one event here, through the shim (needs a repository backend installed)."""
    ensure_shim_on_path()
    from Deadline.Events import EventContext
    from Deadline.Jobs import Job

    from .lifecycle import load_plugin_module

    state = FarmState(farm_dir)
    record = state.get_job(job_id)
    config = read_event_config(farm_dir)
    if not listens(config, record):
        log(f"INFO: Event plugin {EVENTS_PLUGIN_NAME} is not enabled for job {job_id} (State="
            f"{config.get('State', '')}): {event} not fired")
        return
    log(f"INFO: Event Plugin - {event}: {EVENTS_PLUGIN_NAME} ({events_plugin_dir() / (EVENTS_PLUGIN_NAME + '.py')})")
    module = listener = None
    try:
        module = load_plugin_module(events_plugin_dir() / f"{EVENTS_PLUGIN_NAME}.py")
        listener = module.GetDeadlineEventListener()
        listener._bind_context(EventContext(config=config, log=log))
        getattr(listener, CALLBACKS[event])(Job(record))
    except Exception:  # Deadline logs an event plugin's exception and carries on
        for line in traceback.format_exc().rstrip().splitlines():
            log(f"Error: {line}")
    finally:
        if module is not None and listener is not None and hasattr(module, "CleanupDeadlineEventListener"):
            module.CleanupDeadlineEventListener(listener)


def fire(farm_dir: str | os.PathLike[str], event: str, job_id: str, env: dict[str, str] | None = None,
         sink: Callable[[str], None] = print) -> list[str]:
    """Fire one event in a child process with ``env`` (default: this process's); returns its log lines."""
    try:
        child = subprocess.run(
            [sys.executable, "-m", "atomic_publish.deadline_plugin.farm.eventhost", "--farm-dir", str(farm_dir),
             "--event", event, "--job-id", job_id],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=dict(os.environ if env is None else env), timeout=EVENT_TIMEOUT_SECONDS,
            encoding="utf-8", errors="replace")
        lines = child.stdout.splitlines()
    except subprocess.TimeoutExpired:  # the caller (a worker) carries on, as Deadline does
        lines = [f"Error: event {event} of job {job_id} did not finish within {EVENT_TIMEOUT_SECONDS} s: stopped"]
    for line in lines:
        sink(line)
    return lines


def dispatch_pending(farm_dir: str | os.PathLike[str], job_id: str, env: dict[str, str] | None = None,
                     sink: Callable[[str], None] = print) -> list[str]:
    """Take the job's queued events (no other process gets them) and fire them in order."""
    state = FarmState(farm_dir)
    events = state.take_events(job_id)
    lines: list[str] = []
    try:
        for event in events if installed(farm_dir) else []:
            lines += fire(farm_dir, event, job_id, env, sink)
    finally:
        if events:
            state.events_done(job_id, len(events))
    return lines
