"""Where a file a catalogue lists is on the auditing host: its rootless ``{root[name]}/...`` path
resolved with this host's roots.

Why: the catalogue's path is what AYON's loader (and every other reader) opens, not the version's
folder. An audit that looked for ``final_dir/name`` would call a version healthy whose catalogue
points somewhere else (another product's folder, a work file, a path that no longer exists).

The roots are the studio settings' of this host (``$ATOMIC_PUBLISH_SETTINGS``, the worker's
path-mapped view, as `run` uses them), else the roots the product was published with (its
manifest in the record, for this platform; the publish root as ``{root[publish]}``).
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

from .layout import ROOT_NAME
from .manifest import ROOT_REF, platform_roots


def settings_roots(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """This host's roots from its studio settings file, for this platform; {} without one (or when it
    cannot be read: the record's roots are used then, and an unreadable file is `run`'s error to report)."""
    from .errors import PublishError
    from .studio_settings import load_settings

    try:
        settings = load_settings(environ=environ)
    except PublishError:
        return {}
    return platform_roots(settings.roots) if settings is not None else {}


def recorded_roots(view: Mapping[str, Any]) -> dict[str, str]:
    """The roots a product was published with (its ``manifest_json`` in the record), for this platform."""
    try:
        manifest = json.loads(view.get("manifest_json") or "{}")
    except ValueError:
        return {}
    if not isinstance(manifest, dict):
        return {}
    roots = platform_roots(manifest.get("roots") or {}) if isinstance(manifest.get("roots"), dict) else {}
    if manifest.get("publish_root"):
        roots.setdefault(ROOT_NAME, manifest["publish_root"])
    return roots


def resolve(rootless: str, view: Mapping[str, Any], host_roots: Mapping[str, str]) -> str | None:
    """``rootless`` on this host (an absolute path is returned as it is); None when its root is
    known neither to this host's settings nor to the record."""
    m = ROOT_REF.match(rootless)
    if not m:
        return os.path.normpath(rootless) if rootless else None
    base = host_roots.get(m["name"]) or recorded_roots(view).get(m["name"])
    if not base:
        return None
    return os.path.normpath(base.rstrip("/\\") + m["rest"])


def version_folder(view: Mapping[str, Any], host_roots: Mapping[str, str]) -> str | None:
    """The version's folder as this host reaches it: its rootless form in the record resolved like the
    catalogue's paths (the publishing worker's absolute path otherwise)."""
    rootless = view.get("final_rootless")
    return (resolve(rootless, view, host_roots) if rootless else None) or view.get("final_dir")


def inside(path: str, folder: str) -> bool:
    """Whether ``path`` is inside the version's ``folder``."""
    path, folder = os.path.normcase(os.path.normpath(path)), os.path.normcase(os.path.normpath(folder))
    try:
        return path != folder and os.path.commonpath([path, folder]) == folder
    except ValueError:  # another drive (Windows)
        return False
