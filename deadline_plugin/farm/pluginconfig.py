"""The plugin configuration the farm's workers see (Monitor > Configure Plugins on a real farm).

Deadline seeds a plugin's configuration from the `.param` defaults, with `.dlinit` values on top;
the farm then applies its own values (the executable next to this Python, test overrides).
The result is written once per farm as a flat Key=Value file, mode 0600 (StoreUri may be secret).
"""
from __future__ import annotations

import configparser
import shutil
import sys
from pathlib import Path

from ..jobfiles import read_key_value_file, write_key_value_file
from ..resources import PLUGIN_NAME, plugin_dir

CONFIG_FILE = f"{PLUGIN_NAME}.config"


def param_defaults(param_path: Path) -> dict[str, str]:
    """`Default=` of every section of a .param file."""
    parser = configparser.ConfigParser(interpolation=None, strict=True, delimiters=("=",))
    parser.optionxform = str  # keep key case
    parser.read(param_path, encoding="utf-8")
    return {section: parser[section].get("Default", "") for section in parser.sections()}


def default_executable() -> str:
    """The `atomic-publish` console script installed next to the running Python."""
    folder = Path(sys.executable).parent
    for name in ("atomic-publish", "atomic-publish.exe"):
        if (folder / name).is_file():
            return str(folder / name)
    return shutil.which("atomic-publish") or ""


def build_config(overrides: dict[str, str] | None = None) -> dict[str, str]:
    """.param defaults < .dlinit < farm defaults < explicit overrides."""
    source = plugin_dir()
    config = param_defaults(source / f"{PLUGIN_NAME}.param")
    dlinit = source / f"{PLUGIN_NAME}.dlinit"
    if dlinit.is_file():
        config.update(read_key_value_file(dlinit).items())
    executable = default_executable()
    if executable:
        config["AtomicPublishExecutable"] = executable
    config.update(overrides or {})
    return config


def write_config(farm_dir: Path, config: dict[str, str]) -> Path:
    """Write the config privately (0600) into the farm folder."""
    path = farm_dir / CONFIG_FILE
    write_key_value_file(path, config, mode=0o600)
    return path


def read_config(farm_dir: Path) -> dict[str, str]:
    return dict(read_key_value_file(farm_dir / CONFIG_FILE).items())
