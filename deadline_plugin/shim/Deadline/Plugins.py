"""Deadline.Plugins: `DeadlinePlugin`, `PluginType`, `FailRenderException`.

Callbacks behave like Deadline's .NET events: attach with `+=`, remove all handlers with
`del self.XCallback` (the Cleanup idiom of every shipped plugin). The worker-side state a plugin
reads (job, task, plugin info, config, directories) comes from a `PluginContext` that the host
(the local farm, or a test) binds with `_bind_context` before the first callback runs.
"""
from __future__ import annotations

import enum
import re
from typing import Any, Callable

from Deadline.Jobs import _ci_get as _lookup

__all__ = ["DeadlinePlugin", "PluginType", "FailRenderException", "PluginConfig"]


class PluginType(enum.IntEnum):
    """Deadline's `enum PluginType { Simple, Advanced }`."""

    Simple = 0
    Advanced = 1


class FailRenderException(Exception):
    """What `FailRender` throws: aborts the callback and makes the task an error."""


class Event:
    """A .NET-style event: `+=` attaches, `-=` detaches, calling it invokes every handler.

    Like a multicast delegate, the call returns the last handler's return value.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._handlers: list[Callable[..., Any]] = []

    def __iadd__(self, handler: Callable[..., Any]) -> "Event":
        if not callable(handler):
            raise TypeError(f"{self.name}: handler {handler!r} is not callable")
        self._handlers.append(handler)
        return self

    def __isub__(self, handler: Callable[..., Any]) -> "Event":
        if handler in self._handlers:
            self._handlers.remove(handler)
        return self

    def __call__(self, *args: Any) -> Any:
        result = None
        for handler in list(self._handlers):
            result = handler(*args)
        return result

    def __bool__(self) -> bool:
        return bool(self._handlers)

    def clear(self) -> None:
        self._handlers.clear()


class _EventOwner:
    """Makes event attributes behave like .NET events on assignment and `del`."""

    _EVENTS: tuple[str, ...] = ()

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._EVENTS and name in self.__dict__ and value is not self.__dict__[name]:
            raise TypeError(f"{name} is an event: attach a handler with +=, not =")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        if name in self._EVENTS:
            event = self.__dict__.get(name)
            if event is not None:
                event.clear()  # Deadline's `del self.XCallback`: detach everything
            return
        object.__delattr__(self, name)


class StdoutHandler(_EventOwner):
    """Returned by `AddStdoutHandlerCallback`; `HandleCallback` fires on each matching line."""

    _EVENTS = ("HandleCallback",)

    def __init__(self, regex: str) -> None:
        self.Regex = regex
        self.pattern = re.compile(regex)
        self.HandleCallback = Event("HandleCallback")


class PluginContext:
    """What the worker knows about the current job and task (set by the host, not the plugin)."""

    def __init__(self, *, job: Any, task: Any, slave_name: str, jobs_data_directory: str,
                 plugin_directory: str, plugin_info: dict[str, str], config: dict[str, str],
                 log: Callable[[str], None]) -> None:
        self.job = job
        self.task = task
        self.slave_name = slave_name
        self.jobs_data_directory = jobs_data_directory
        self.plugin_directory = plugin_directory
        self.plugin_info = plugin_info
        self.config = config
        self.log = log
        self.process_environment: dict[str, str] = {}
        self.progress = 0.0
        self.status_message = ""


def _parse_bool(key: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    raise ValueError(f"{key}={value!r} is not a boolean (true or false)")


class DeadlinePlugin(_EventOwner):
    """Base class of every Deadline 10 plugin; subclasses must call `super().__init__()`."""

    _EVENTS = (
        "InitializeProcessCallback", "RenderExecutableCallback", "RenderArgumentCallback",
        "StartupDirectoryCallback", "PreRenderTasksCallback", "PostRenderTasksCallback",
        "CheckExitCodeCallback", "IsSingleFramesOnlyCallback", "StartJobCallback",
        "EndJobCallback", "RenderTasksCallback", "RenderCanceledCallback",
        "MonitoredManagedProcessExitCallback", "ModifyCommandLineCallback",
    )

    def __init__(self) -> None:
        for name in self._EVENTS:
            object.__setattr__(self, name, Event(name))
        self.PluginType = PluginType.Simple
        self.SingleFramesOnly = False
        self.StdoutHandling = False
        self.PopupHandling = False
        self.UseProcessTree = False
        self.TerminateOnExit = True
        self.HideDosWindow = True
        self.DebugLogging = False
        self.StdoutHandlers: list[StdoutHandler] = []
        self._context: PluginContext | None = None
        self._match: re.Match[str] | None = None
        self._suppress = False
        self._previous_line = ""
        self.plugin_initialized = True

    # -- host side (not Deadline API) --------------------------------------------------------
    def _bind_context(self, context: PluginContext) -> None:
        self._context = context

    @property
    def _ctx(self) -> PluginContext:
        if self._context is None:
            raise RuntimeError("no worker context: the host must call _bind_context before callbacks")
        return self._context

    def _handle_stdout_line(self, line: str) -> bool:
        """Run every matching handler (unanchored search); True when the line was suppressed."""
        self._suppress = False
        if self.StdoutHandling:
            for handler in list(self.StdoutHandlers):
                match = handler.pattern.search(line)
                if match:
                    self._match = match
                    handler.HandleCallback()
        self._previous_line = line
        return self._suppress

    # -- failing, logging, status ------------------------------------------------------------
    def FailRender(self, message: str) -> None:
        raise FailRenderException(message)

    def LogInfo(self, message: str) -> None:
        self._ctx.log(f"INFO: {message}")

    def LogWarning(self, message: str) -> None:
        self._ctx.log(f"WARNING: {message}")

    def LogStdout(self, message: str) -> None:
        self._ctx.log(message)

    def DebugMessage(self, message: str) -> None:
        if self.DebugLogging:
            self._ctx.log(f"DEBUG: {message}")

    def SetProgress(self, progress: float) -> None:
        self._ctx.progress = float(progress)

    def SetStatusMessage(self, message: str) -> None:
        self._ctx.status_message = str(message)

    def IsCanceled(self) -> bool:
        return False

    # -- stdout handling ---------------------------------------------------------------------
    def AddStdoutHandlerCallback(self, regex: str) -> StdoutHandler:
        handler = StdoutHandler(regex)
        self.StdoutHandlers.append(handler)
        return handler

    def GetRegexMatch(self, index: int) -> str:
        if self._match is None:
            raise RuntimeError("GetRegexMatch called outside a stdout handler")
        return self._match.group(index) or ""

    def SuppressThisLine(self) -> None:
        self._suppress = True

    def GetPreviousStdoutLine(self) -> str:
        return self._previous_line

    # -- plugin info (per job) ---------------------------------------------------------------
    def GetPluginInfoEntry(self, key: str) -> str:
        value = _lookup(self._ctx.plugin_info, key)
        if value is None:
            raise KeyError(f"plugin info entry {key!r} does not exist")
        return value

    def GetPluginInfoEntryWithDefault(self, key: str, default: str) -> str:
        value = _lookup(self._ctx.plugin_info, key)
        return default if value is None else value

    def GetBooleanPluginInfoEntry(self, key: str) -> bool:
        return _parse_bool(key, self.GetPluginInfoEntry(key))

    def GetBooleanPluginInfoEntryWithDefault(self, key: str, default: bool) -> bool:
        value = _lookup(self._ctx.plugin_info, key)
        return default if value is None else _parse_bool(key, value)

    def GetIntegerPluginInfoEntry(self, key: str) -> int:
        return int(self.GetPluginInfoEntry(key))

    def GetIntegerPluginInfoEntryWithDefault(self, key: str, default: int) -> int:
        value = _lookup(self._ctx.plugin_info, key)
        return default if value is None else int(value)

    GetLongPluginInfoEntry = GetIntegerPluginInfoEntry
    GetLongPluginInfoEntryWithDefault = GetIntegerPluginInfoEntryWithDefault

    def GetFloatPluginInfoEntry(self, key: str) -> float:
        return float(self.GetPluginInfoEntry(key))

    def GetFloatPluginInfoEntryWithDefault(self, key: str, default: float) -> float:
        value = _lookup(self._ctx.plugin_info, key)
        return default if value is None else float(value)

    # -- plugin configuration (.param / .dlinit) ---------------------------------------------
    def GetConfigEntry(self, key: str) -> str:
        value = _lookup(self._ctx.config, key)
        if value is None:
            raise KeyError(f"plugin config entry {key!r} does not exist")
        return value

    def GetConfigEntryWithDefault(self, key: str, default: str) -> str:
        value = _lookup(self._ctx.config, key)
        return default if value is None else value

    def GetBooleanConfigEntry(self, key: str) -> bool:
        return _parse_bool(key, self.GetConfigEntry(key))

    def GetBooleanConfigEntryWithDefault(self, key: str, default: bool) -> bool:
        value = _lookup(self._ctx.config, key)
        return default if value is None else _parse_bool(key, value)

    def GetIntegerConfigEntry(self, key: str) -> int:
        return int(self.GetConfigEntry(key))

    def GetIntegerConfigEntryWithDefault(self, key: str, default: int) -> int:
        value = _lookup(self._ctx.config, key)
        return default if value is None else int(value)

    GetLongConfigEntry = GetIntegerConfigEntry
    GetLongConfigEntryWithDefault = GetIntegerConfigEntryWithDefault

    def GetFloatConfigEntry(self, key: str) -> float:
        return float(self.GetConfigEntry(key))

    def GetFloatConfigEntryWithDefault(self, key: str, default: float) -> float:
        value = _lookup(self._ctx.config, key)
        return default if value is None else float(value)

    # -- job / task context ------------------------------------------------------------------
    def GetJob(self) -> Any:
        return self._ctx.job

    def GetCurrentTask(self) -> Any:
        return self._ctx.task

    def GetCurrentTaskId(self) -> str:
        return self._ctx.task.TaskId

    def GetJobInfoEntry(self, key: str) -> str:
        if key.lower() == "jobid":
            return self._ctx.job.JobId
        return self._ctx.job.GetJobInfoKeyValue(key)

    def GetStartFrame(self) -> int:
        frames = self._ctx.task.TaskFrameList
        return min(frames) if frames else 0

    def GetEndFrame(self) -> int:
        frames = self._ctx.task.TaskFrameList
        return max(frames) if frames else 0

    def GetThreadNumber(self) -> int:
        return 0

    def GetSlaveName(self) -> str:
        return self._ctx.slave_name

    def GetJobsDataDirectory(self) -> str:
        return self._ctx.jobs_data_directory

    def GetPluginDirectory(self) -> str:
        return self._ctx.plugin_directory

    # -- process environment -----------------------------------------------------------------
    def SetProcessEnvironmentVariable(self, key: str, value: str) -> None:
        # Deadline logs the value verbatim: never pass a secret through here.
        self.LogInfo(f"Setting Process Environment Variable {key} to {value}")
        self._ctx.process_environment[key] = str(value)

    def GetProcessEnvironmentVariable(self, key: str) -> str:
        return self._ctx.process_environment.get(key, "")

    def ClearProcessEnvironmentVariables(self) -> None:
        self._ctx.process_environment.clear()


class PluginConfig:
    """A plugin's configuration as `RepositoryUtils.GetPluginConfig(name)` returns it (the values
    of Monitor > Tools > Configure Plugins / Configure Events: .param defaults, .dlinit, edits)."""

    def __init__(self, name: str, entries: dict[str, str]) -> None:
        self.name = name
        self._entries = dict(entries)

    def GetConfigEntry(self, key: str) -> str:
        value = _lookup(self._entries, key)
        if value is None:
            raise KeyError(f"plugin {self.name} has no config entry {key!r}")
        return value

    def GetConfigEntryWithDefault(self, key: str, default: str) -> str:
        value = _lookup(self._entries, key)
        return default if value is None else value

    def GetBooleanConfigEntryWithDefault(self, key: str, default: bool) -> bool:
        value = _lookup(self._entries, key)
        return default if value is None else _parse_bool(key, value)

    def GetIntegerConfigEntryWithDefault(self, key: str, default: int) -> int:
        value = _lookup(self._entries, key)
        return default if value is None else int(value)
