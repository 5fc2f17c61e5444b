"""Deadline.Events: `DeadlineEventListener`, the base class of an event plugin.

Callbacks are .NET events like the job plugin's (`self.OnJobFailedCallback += self.OnJobFailed`,
`del self.OnJobFailedCallback` in Cleanup). On Deadline they exist from the start, so plugins
written before 10.3 that never call `super().__init__()` still attach handlers: here they are made
on first use. The host (the local farm, or a test) binds an `EventContext` (the plugin's
configuration, where its log lines go) with `_bind_context` before it fires a callback.
"""
from __future__ import annotations

from typing import Any, Callable

from Deadline.Jobs import _ci_get as _lookup
from Deadline.Plugins import Event, _EventOwner, _parse_bool

__all__ = ["DeadlineEventListener"]

# Every callback of DeadlineEventListener (Deadline 10 "Event Plugins" manual and scripting reference).
CALLBACKS = (
    "OnJobSubmittedCallback", "OnJobImportedCallback", "OnJobStartedCallback", "OnJobFinishedCallback",
    "OnJobRequeuedCallback", "OnJobFailedCallback", "OnJobSuspendedCallback", "OnJobResumedCallback",
    "OnJobPendedCallback", "OnJobReleasedCallback", "OnJobDeletedCallback", "OnJobErrorCallback",
    "OnJobPurgedCallback", "OnJobArchivedCallback", "OnJobUnarchivedCallback",
    "OnHouseCleaningCallback", "OnRepositoryRepairCallback",
    "OnSlaveStartedCallback", "OnSlaveStoppedCallback", "OnSlaveIdleCallback", "OnSlaveRenderingCallback",
    "OnSlaveStartingJobCallback", "OnSlaveStalledCallback",
    "OnIdleShutdownCallback", "OnMachineStartupCallback", "OnThermalShutdownCallback", "OnMachineRestartCallback",
)


class EventContext:
    """What the application firing the event knows: the event plugin's configuration and its log."""

    def __init__(self, *, config: dict[str, str], log: Callable[[str], None]) -> None:
        self.config = config
        self.log = log


class DeadlineEventListener(_EventOwner):
    """Base class of every Deadline 10 event plugin (`GetDeadlineEventListener()` returns one)."""

    _EVENTS = CALLBACKS

    def __init__(self) -> None:
        for name in self._EVENTS:
            if name not in self.__dict__:
                object.__setattr__(self, name, Event(name))
        self.plugin_initialized = True

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: a callback of a listener that skipped __init__.
        if name in CALLBACKS:
            event = Event(name)
            object.__setattr__(self, name, event)
            return event
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # -- host side (not Deadline API) --------------------------------------------------------
    def _bind_context(self, context: EventContext) -> None:
        object.__setattr__(self, "_context", context)

    @property
    def _ctx(self) -> EventContext:
        context = self.__dict__.get("_context")
        if context is None:
            raise RuntimeError("no event context: the host must call _bind_context before firing an event")
        return context

    # -- logging -----------------------------------------------------------------------------
    def LogInfo(self, message: str) -> None:
        self._ctx.log(f"INFO: {message}")

    def LogWarning(self, message: str) -> None:
        self._ctx.log(f"WARNING: {message}")

    # -- the event plugin's configuration (.param / .dlinit, Monitor > Configure Events) -----
    def GetConfigEntry(self, key: str) -> str:
        value = _lookup(self._ctx.config, key)
        if value is None:
            raise KeyError(f"event plugin config entry {key!r} does not exist")
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
