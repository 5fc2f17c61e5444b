"""Integrations by name: the built-ins and those a studio installs as entry points.

A studio adds its own with an entry point in its package's pyproject.toml::

    [project.entry-points."atomic_publish.integrations"]
    shotgrid = "studio_pipeline.publish:ShotGridIntegration"
"""
from __future__ import annotations

from importlib import metadata
from typing import Any

import jsonschema

from ..errors import ManifestError
from .base import GATE, Integration

ENTRY_POINT_GROUP = "atomic_publish.integrations"
BUILTIN = {
    "webhook": "atomic_publish.wrapper.integrations.webhook:WebhookIntegration",
    "ftrack": "atomic_publish.wrapper.integrations.ftrack:FtrackIntegration",
}


def _load(target: str) -> type[Integration]:
    module, _, attr = target.partition(":")
    import importlib

    return getattr(importlib.import_module(module), attr)


def available() -> dict[str, str]:
    """Name -> import target of every integration this installation knows."""
    found = dict(BUILTIN)
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def create(index: int, entry: dict[str, Any]) -> Integration:
    """Build the integration declared at ``integrations[index]`` of the manifest; ManifestError if invalid."""
    field = f"integrations[{index}]"
    name = entry["name"]
    known = available()
    if name not in known:
        raise ManifestError(f"{field}.name", f"unknown integration {name!r}; available: {', '.join(sorted(known))}")
    cls = _load(known[name])
    phase = entry.get("phase", GATE)
    if phase not in cls.phases:
        raise ManifestError(f"{field}.phase", f"integration {name!r} has no {phase!r} phase")
    settings = entry.get("settings") or {}
    errors = sorted(jsonschema.Draft202012Validator(cls.settings_schema).iter_errors(settings),
                    key=lambda e: list(e.absolute_path))
    if errors:
        path = "".join(f".{p}" for p in errors[0].absolute_path)
        raise ManifestError(f"{field}.settings{path}", errors[0].message)
    return cls(entry.get("id") or name, phase, settings)
