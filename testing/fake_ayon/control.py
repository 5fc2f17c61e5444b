"""Steer a local AYON server running in another process, through its ``/_fake/*`` endpoints."""
from __future__ import annotations

from typing import Any, Iterable

from .. import FakeControl

__all__ = ["FakeAyonControl"]


class FakeAyonControl(FakeControl):
    """The same methods as :class:`~.server.FakeAyonServer` for what tests need."""

    def set_faults(self, faults: Iterable[dict] | dict, replace: bool = True) -> list[dict]:
        faults = [faults] if isinstance(faults, dict) else list(faults)
        return self._call("POST", "/_fake/faults", {"faults": faults, "replace": replace})["pending"]

    def clear_faults(self) -> None:
        self._call("DELETE", "/_fake/faults")

    def stats(self) -> dict:
        return self._call("GET", "/_fake/stats")

    def requests(self) -> list[dict]:
        return self._call("GET", "/_fake/requests")

    def entities(self, project: str, entity_type: str) -> list[dict]:
        return self._call("GET", f"/_fake/entities?project={project}&type={entity_type}")

    def create_project(self, name: str, **anatomy: Any) -> dict:
        return self._call("POST", "/_fake/project", {"name": name, **anatomy})

    def seed(self, project: str = "proj", folders: Iterable[str] = ("sq01/sh010",),
             tasks: Iterable[str] = ("comp",), **options: Any) -> dict:
        return self._call("POST", "/_fake/seed", {"project": project, "folders": list(folders),
                                                  "tasks": list(tasks), **options})

    def outage(self, seconds: float) -> None:
        """The server stops listening at once and comes back after *seconds*, state kept."""
        self._call("POST", "/_fake/outage", {"seconds": seconds})

    def reset(self) -> None:
        self._call("POST", "/_fake/reset", {})
