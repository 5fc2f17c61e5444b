"""Where the installed package data lives: the plugin folder and the Deadline shim."""
from __future__ import annotations

import importlib.resources
import os
import sys
from pathlib import Path

PLUGIN_NAME = "AtomicPublish"
EVENTS_PLUGIN_NAME = "AtomicPublishEvents"


def package_dir() -> Path:
    """The installed `atomic_publish.deadline_plugin` folder (must be a real directory)."""
    return Path(os.fspath(importlib.resources.files("atomic_publish.deadline_plugin")))


def plugin_dir() -> Path:
    """deadline_plugin/AtomicPublish: exactly what an admin copies into custom/plugins/."""
    return package_dir() / PLUGIN_NAME


def events_plugin_dir() -> Path:
    """deadline_plugin/AtomicPublishEvents: what an admin copies into custom/events/."""
    return package_dir() / EVENTS_PLUGIN_NAME


def monitor_scripts_dir() -> Path:
    """deadline_plugin/scripts/Jobs: what an admin copies into custom/scripts/Jobs/."""
    return package_dir() / "scripts" / "Jobs"


def shim_dir() -> Path:
    """The folder to put on sys.path so that `import Deadline` finds the shim."""
    return package_dir() / "shim"


def ensure_shim_on_path() -> None:
    """Put the shim first on sys.path; refuses a different `Deadline` already imported."""
    path = str(shim_dir())
    loaded = sys.modules.get("Deadline")
    if loaded is not None and not getattr(loaded, "SHIM", False):
        raise RuntimeError(f"a non-shim Deadline package is already imported from {loaded.__file__}")
    if path not in sys.path:
        sys.path.insert(0, path)
