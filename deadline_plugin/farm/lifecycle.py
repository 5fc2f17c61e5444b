"""One task through a Simple plugin, in the order a Deadline 10 worker calls it.

GetDeadlinePlugin -> InitializeProcess -> PreRenderTasks -> RenderExecutable / RenderArgument /
StartupDirectory -> run the process (stdout through the handlers) -> CheckExitCode ->
PostRenderTasks -> CleanupDeadlinePlugin. Any exception (FailRender or not) makes the task an
error with the exception's text, like Deadline's error report. Requires the shim on sys.path.
"""
from __future__ import annotations

import importlib.util
import itertools
import os
import subprocess
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from ..resources import ensure_shim_on_path
from .cmdline import split_windows
from .processes import kill_process_group

ensure_shim_on_path()
from Deadline.Jobs import Job, Task  # noqa: E402  (the shim, after the path is set)
from Deadline.Plugins import FailRenderException, PluginContext, PluginType  # noqa: E402

_module_counter = itertools.count()
TIMEOUT_KILLS = ("Error", "ErrorAndNotify", "Requeue", "RequeueAndNotify", "Fail", "FailAndNotify")


@dataclass
class TaskOutcome:
    """How one task ended on one worker, with the task log (raw lines, as the plugin wrote them)."""

    ok: bool
    message: str = ""
    exit_code: int | None = None
    log: list[str] = field(default_factory=list)


def load_plugin_module(plugin_file: Path) -> ModuleType:
    """Import the plugin file under a fresh module name (Deadline loads plugins by file)."""
    name = f"deadline_plugin_{plugin_file.stem}_{next(_module_counter)}"
    spec = importlib.util.spec_from_file_location(name, plugin_file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load plugin {plugin_file}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Run:
    """The state of one task run (log, outcome), so each step stays a small method."""

    def __init__(self, plugin_file: Path, job: dict[str, Any], task: dict[str, Any], worker: str,
                 jobs_data_dir: Path, config: dict[str, str], sink: Callable[[str], None],
                 on_child: Callable[[int | None], None]) -> None:
        self.plugin_file = plugin_file
        self.job_record = job
        self.log_lines: list[str] = []
        self.sink = sink
        self.on_child = on_child
        self.context = PluginContext(
            job=Job(job), task=Task(task), slave_name=worker, jobs_data_directory=str(jobs_data_dir),
            plugin_directory=str(plugin_file.parent), plugin_info=dict(job["plugin_info"]),
            config=dict(config), log=self.log)

    def log(self, line: str) -> None:
        self.log_lines.append(line)
        self.sink(line)

    def run(self) -> TaskOutcome:
        module = plugin = None
        exit_code = None
        try:
            module = load_plugin_module(self.plugin_file)
            plugin = module.GetDeadlinePlugin()
            if not getattr(plugin, "plugin_initialized", False):
                raise RuntimeError("the plugin class did not call super().__init__() "
                                   "(required since Deadline 10.3)")
            plugin._bind_context(self.context)
            self.log("INFO: Plugin: InitializeProcess")
            plugin.InitializeProcessCallback()
            if plugin.PluginType != PluginType.Simple:
                raise RuntimeError("the local farm only runs Simple plugins")
            plugin.PreRenderTasksCallback()
            exit_code = self.run_process(plugin)
            if plugin.CheckExitCodeCallback:
                plugin.CheckExitCodeCallback(exit_code)
            elif exit_code != 0:
                raise RuntimeError(f"Error: Renderer returned non-zero error code, {exit_code}. "
                                   "Check the log for more information.")
            plugin.PostRenderTasksCallback()
            return TaskOutcome(True, "", exit_code, self.log_lines)
        except FailRenderException as error:
            self.log(f"Error: FailRenderException : {error}")
            return TaskOutcome(False, str(error), exit_code, self.log_lines)
        except Exception as error:  # any plugin bug is a task error, like on Deadline
            for line in traceback.format_exc().rstrip().splitlines():
                self.log(line)
            return TaskOutcome(False, f"{type(error).__name__}: {error}", exit_code, self.log_lines)
        finally:
            if module is not None and plugin is not None and hasattr(module, "CleanupDeadlinePlugin"):
                try:
                    module.CleanupDeadlinePlugin(plugin)
                except Exception as error:
                    self.log(f"WARNING: CleanupDeadlinePlugin failed: {error}")

    def run_process(self, plugin: Any) -> int:
        executable = plugin.RenderExecutableCallback()
        arguments = plugin.RenderArgumentCallback() or ""
        directory = plugin.StartupDirectoryCallback() if plugin.StartupDirectoryCallback else None
        argv = [executable] + split_windows(arguments)
        self.log(f'INFO: Executable: "{executable}"')
        self.log(f"INFO: Argument: {arguments}")
        self.log(f"INFO: Startup Directory: \"{directory or os.getcwd()}\"")
        env = dict(os.environ)
        env.update(self.job_record.get("environment", {}))
        env.update(self.context.process_environment)
        try:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, env=env, cwd=directory or None,
                                       start_new_session=True)
        except OSError as error:
            raise RuntimeError(f"could not start {executable}: {error}") from None
        self.on_child(process.pid)
        timed_out = threading.Event()
        timer = self.start_timer(process.pid, timed_out)
        try:
            assert process.stdout is not None
            for raw in process.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if not plugin._handle_stdout_line(line):
                    self.log(f"STDOUT: {line}")
            exit_code = process.wait()
        finally:
            if timer is not None:
                timer.cancel()
            if process.poll() is None:
                kill_process_group(process.pid)
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
            self.on_child(None)
        if timed_out.is_set():
            seconds = self.job_record["task_timeout_seconds"]
            raise RuntimeError(f"task timeout: the task ran longer than TaskTimeoutSeconds={seconds} "
                               f"(OnTaskTimeout={self.job_record['on_task_timeout']}); "
                               "the process tree was killed")
        self.log(f"INFO: Process exit code: {exit_code}")
        return exit_code

    def start_timer(self, pgid: int, timed_out: threading.Event) -> threading.Timer | None:
        seconds = int(self.job_record.get("task_timeout_seconds", 0))
        if seconds <= 0 or self.job_record.get("on_task_timeout", "Error") not in TIMEOUT_KILLS:
            return None

        def expire() -> None:
            timed_out.set()
            kill_process_group(pgid)

        timer = threading.Timer(seconds, expire)
        timer.daemon = True
        timer.start()
        return timer


def run_simple_task(plugin_file: Path, job: dict[str, Any], task: dict[str, Any], worker: str,
                    jobs_data_dir: Path, config: dict[str, str],
                    sink: Callable[[str], None] = lambda line: None,
                    on_child: Callable[[int | None], None] = lambda pid: None) -> TaskOutcome:
    """Run one task; `sink` gets each task-log line, `on_child` the process group (None at end).

    Repository calls of the plugin go to whatever backend is installed in Deadline.Scripting.
    """
    jobs_data_dir.mkdir(parents=True, exist_ok=True)
    return _Run(plugin_file, job, task, worker, jobs_data_dir, config, sink, on_child).run()
