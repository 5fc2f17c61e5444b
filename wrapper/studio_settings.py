"""Studio settings: what an AYON or OpenPype publish metadata JSON does not say.

Their metadata names files by rootless paths (``{root[work]}/...``) and leaves the publish folder
to the studio's anatomy; atomic-publish reads both from one small JSON file, named by
``ATOMIC_PUBLISH_SETTINGS`` (the AtomicPublish plugin sets it from its ``SettingsFile`` entry):

    {"roots": {"work": {"linux": "/mnt/projects", "windows": "P:/projects"}},
     "publish_template": "{root[work]}/{project[name]}/{hierarchy}/{folder[name]}/publish/"
                         "{product[type]}/{product[name]}/{@version}"}

and, optionally, ``version_template``, ``publish_root``, ``link_mode``, ``verify``, ``catalog``,
``ayon_server_url``, ``version_status``, ``project_codes``, ``follow_workfile_version``,
``integrations`` (docs/ayon-openpype.md) and ``hero`` (docs/hero.md). No secret belongs here: the AYON API key travels in the
plugin's 0600 secrets file, like the ftrack key. The plugin's ``Catalog`` and ``AyonServerUrl``
entries override the file (``ATOMIC_PUBLISH_CATALOG``, ``AYON_SERVER_URL``: the names the
catalogues read, wrapper/catalogs/registry.py); ``export_catalog_settings`` hands the file's values
to the catalogues where the environment says nothing.

The file is validated as strictly as a manifest, before anything is written: a typo in a studio
setting must fail the first job in one line, not publish to the wrong folder.
"""
from __future__ import annotations

import os
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from .errors import ManifestError, WorkerLocalError
from .manifest import NAME, ROOT_REF, read_json

__all__ = ["SettingsError", "StudioSettings", "export_catalog_settings", "load_settings", "map_template",
           "SETTINGS_ENV"]

SETTINGS_ENV = "ATOMIC_PUBLISH_SETTINGS"
CATALOG_ENV = "ATOMIC_PUBLISH_CATALOG"
AYON_URL_ENV = "AYON_SERVER_URL"
AYON_STATUS_ENV = "AYON_VERSION_STATUS"
CATALOGS = ("openpype", "ayon")
DEFAULT_VERSION_TEMPLATE = "v{version:0>3}"

# AYON anatomy fields -> the template fields wrapper/layout.py fills (OpenPype 3's names pass as they are)
FIELD_MAP = {
    "folder[name]": "asset", "asset": "asset",
    "product[name]": "subset", "subset": "subset",
    "product[type]": "family", "family": "family",
    "task[name]": "task", "task": "task",
    "project[name]": "project[name]", "project[code]": "project[code]",
    "hierarchy": "hierarchy", "version": "version",
}
_ROOT_FIELD = re.compile(r"^root\[[A-Za-z0-9_-]+\]$")

_PATH = {"type": "string", "minLength": 1, "maxLength": 1024}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["roots", "publish_template"],
    "properties": {
        "roots": {"type": "object", "minProperties": 1, "maxProperties": 16, "propertyNames": {"pattern": NAME},
                  "additionalProperties": {"type": "object", "additionalProperties": False, "minProperties": 1,
                                           "properties": {p: _PATH for p in ("windows", "linux", "darwin")}}},
        "publish_template": _PATH,
        "version_template": {"type": "string", "minLength": 1, "maxLength": 64},
        "publish_root": _PATH,
        "link_mode": {"enum": ["copy", "hardlink"]},
        "verify": {"enum": ["size", "hash"]},
        "catalog": {"enum": list(CATALOGS)},
        "ayon_server_url": {"type": "string", "pattern": r"^https?://[^\s@]+\Z", "maxLength": 1024},
        "version_status": {"type": ["string", "null"], "minLength": 1, "maxLength": 128},
        "project_codes": {"type": "object", "propertyNames": {"pattern": NAME},
                          "additionalProperties": {"type": "string", "pattern": r"^[A-Za-z0-9_]{1,16}\Z"}},
        "follow_workfile_version": {"type": "boolean"},
        "integrations": {"type": "array"},  # checked by the manifest's own schema, see _check_integrations
        "hero": {"type": "object", "additionalProperties": False,  # wrapper/hero_settings.py
                 "properties": {"product_types": {"type": "array", "maxItems": 256, "uniqueItems": True,
                                                  "items": {"type": "string", "pattern": r"^(\*|[A-Za-z0-9_.-]{1,64})\Z"}},
                                "template": _PATH, "link_mode": {"enum": ["copy", "hardlink"]},
                                "keep_previous": {"type": "boolean"}}},
    },
}
_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


class SettingsError(ManifestError):
    """The studio settings file is invalid; names the file, the field and the problem (permanent:
    every worker reads the same file, so retrying elsewhere would fail the same way)."""

    default_todo = "fix the studio settings file (docs/ayon-openpype.md) and requeue the job"

    def __init__(self, path: str | None, field_name: str, problem: str, todo: str | None = None):
        super().__init__(field_name, problem, todo)
        where = f"studio settings {path}" if path else "studio settings"
        self.cause = f"{where} field {field_name}: {problem}" if field_name else f"{where}: {problem}"


@dataclass(frozen=True)
class StudioSettings:
    """The validated settings; ``template`` and ``publish_root`` are already in the manifest's terms."""

    path: str | None = None
    roots: dict[str, dict[str, str]] = field(default_factory=dict)
    publish_template: str | None = None   # as written (AYON anatomy style)
    template: str | None = None           # mapped to wrapper/layout.py's fields
    publish_root: str | None = None       # "{root[work]}" or an absolute path
    link_mode: str = "copy"
    verify: str = "size"
    catalog: str = "openpype"
    ayon_server_url: str | None = None
    version_status: str | None = None
    project_codes: dict[str, str] = field(default_factory=dict)
    follow_workfile_version: bool = False
    integrations: tuple[dict[str, Any], ...] = ()
    hero: dict[str, Any] = field(default_factory=dict)  # validated; read by wrapper/hero_settings.py

    def project_code(self, project: str) -> str:
        """The project's short code (published file names): ``project_codes``, else the name itself
        (letters, digits and '_' only, at most 16 characters)."""
        if project in self.project_codes:
            return self.project_codes[project]
        return re.sub(r"[^A-Za-z0-9_]", "_", project)[:16]


def map_template(template: str, version_template: str = DEFAULT_VERSION_TEMPLATE, field_name: str = "publish_template",
                 path: str | None = None) -> str:
    """An AYON/OpenPype anatomy publish directory template in wrapper/layout.py's fields.

    ``{folder[name]}`` -> ``{asset}``, ``{product[name]}`` -> ``{subset}``, ``{product[type]}`` ->
    ``{family}``, ``{task[name]}`` -> ``{task}``, ``{@version}`` -> ``version_template``; roots,
    ``{project[name]}``, ``{project[code]}`` and ``{hierarchy}`` stay. Anything else (and AYON's
    optional ``<...>`` parts) is refused: a field we cannot fill would publish to the wrong place."""
    out: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise SettingsError(path, field_name, f"is not a valid template: {exc}") from None
    for literal, name, spec, conversion in parsed:
        if "<" in literal or ">" in literal:
            raise SettingsError(path, field_name, "optional parts <...> are not supported in the publish folder")
        out.append(literal.replace("{", "{{").replace("}", "}}"))
        if name is None:
            continue
        if conversion:
            raise SettingsError(path, field_name, f"field {{{name}}} has a conversion (!{conversion})")
        if name == "folder[path]":  # AYON's full folder path: the parents, then the folder
            if spec:
                raise SettingsError(path, field_name, "{folder[path]} takes no format spec")
            out.append("{hierarchy}/{asset}")
            continue
        if name == "@version":
            if spec:
                raise SettingsError(path, field_name, "{@version} takes no format spec (set version_template)")
            out.append(version_template)
            continue
        if _ROOT_FIELD.match(name):
            mapped = name
        elif name in FIELD_MAP:
            mapped = FIELD_MAP[name]
        else:
            raise SettingsError(path, field_name, f"field {{{name}}} is not supported; use "
                                + ", ".join("{" + f + "}" for f in [*FIELD_MAP, "folder[path]", "root[NAME]", "@version"]))
        out.append("{" + mapped + (":" + spec if spec else "") + "}")
    mapped_template = "".join(out)
    from .layout import check_template

    try:
        check_template(mapped_template)
    except ManifestError as exc:
        raise SettingsError(path, field_name, exc.problem) from None
    return mapped_template


def _first_error(data: Any, path: str | None) -> None:
    errors = sorted(_VALIDATOR.iter_errors(data), key=lambda e: (list(e.absolute_path), e.validator))
    if not errors:
        return
    first = errors[0]
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first.absolute_path).lstrip(".")
    if first.validator == "required":
        missing = first.message.split("'")[1]
        raise SettingsError(path, f"{where}.{missing}" if where else missing, "is required")
    if first.validator == "additionalProperties":
        extra = sorted(set(first.instance) - set(first.schema.get("properties", {})))
        raise SettingsError(path, where or "(top level)", f"unknown field(s) {', '.join(map(repr, extra))}")
    raise SettingsError(path, where or "(top level)", first.message)


def _check_integrations(integrations: list[Any], path: str | None) -> None:
    """The manifest's own rules for integrations (one schema, not two)."""
    from .manifest import SCHEMA as MANIFEST_SCHEMA

    validator = jsonschema.Draft202012Validator(MANIFEST_SCHEMA["properties"]["integrations"])
    errors = sorted(validator.iter_errors(integrations), key=lambda e: list(e.absolute_path))
    if errors:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in errors[0].absolute_path)
        raise SettingsError(path, f"integrations{where}", errors[0].message)


def parse_settings(data: Any, path: str | None = None, environ: Mapping[str, str] | None = None) -> StudioSettings:
    """Validate decoded settings, apply the environment's overrides; raises SettingsError."""
    environ = os.environ if environ is None else environ
    _first_error(data, path)
    _check_integrations(data.get("integrations", []), path)
    version_template = data.get("version_template", DEFAULT_VERSION_TEMPLATE)
    if "{version" not in version_template:
        raise SettingsError(path, "version_template", "must contain {version}, e.g. v{version:0>3}")
    template = map_template(data["publish_template"], version_template, path=path)
    roots = data["roots"]
    for name in re.findall(r"\{root\[([A-Za-z0-9_-]+)\]\}", data["publish_template"]):
        if name not in roots:
            raise SettingsError(path, "publish_template", f"names root {name!r}, which roots does not declare "
                                f"(declared: {', '.join(sorted(roots))})")
    publish_root = data.get("publish_root")
    if publish_root is None:
        lead = re.match(r"^\{root\[([A-Za-z0-9_-]+)\]\}", data["publish_template"])
        if not lead:
            raise SettingsError(path, "publish_root", "is required when publish_template does not start with "
                                "{root[NAME]} (the folder every version must stay inside)")
        publish_root = lead.group(0)
    else:
        m = ROOT_REF.match(publish_root)
        if m and m["name"] not in roots:
            raise SettingsError(path, "publish_root", f"names root {m['name']!r}, which roots does not declare")
        if not m and not os.path.isabs(publish_root):
            raise SettingsError(path, "publish_root", f"{publish_root!r} is neither {{root[NAME]}} nor absolute")
    catalog = (environ.get(CATALOG_ENV) or "").strip() or data.get("catalog", "openpype")
    if catalog not in CATALOGS:
        raise SettingsError(path, f"{CATALOG_ENV} (plugin entry Catalog)", f"{catalog!r} is not one of "
                            + ", ".join(CATALOGS))
    return StudioSettings(
        path=path, roots=roots, publish_template=data["publish_template"], template=template,
        publish_root=publish_root, link_mode=data.get("link_mode", "copy"), verify=data.get("verify", "size"),
        catalog=catalog, ayon_server_url=(environ.get(AYON_URL_ENV) or "").strip() or data.get("ayon_server_url"),
        version_status=(environ.get(AYON_STATUS_ENV) or "").strip() or data.get("version_status"),
        project_codes=dict(data.get("project_codes", {})),
        follow_workfile_version=bool(data.get("follow_workfile_version", False)),
        integrations=tuple(data.get("integrations", ())), hero=dict(data.get("hero") or {}))


def load_settings(path: str | None = None, environ: Mapping[str, str] | None = None) -> StudioSettings | None:
    """The settings file at ``path`` (default ``$ATOMIC_PUBLISH_SETTINGS``); None when none is named.

    A named file this worker cannot read is worker-local (a mount missing here); an invalid one is
    a SettingsError (permanent)."""
    environ = os.environ if environ is None else environ
    path = path or (environ.get(SETTINGS_ENV) or "").strip() or None
    if path is None:
        return None
    if not os.path.isfile(path):
        raise WorkerLocalError(f"studio settings file {path} ({SETTINGS_ENV}) is not readable on this worker",
                               "mount the storage that holds it on this worker, or fix the plugin's SettingsFile "
                               "entry")
    try:
        data = read_json(path, SETTINGS_ENV)
    except ManifestError as exc:
        raise SettingsError(path, "", exc.problem) from None
    return parse_settings(data, path, environ)


def export_catalog_settings(settings: StudioSettings | None, environ: dict[str, str] | None = None) -> list[str]:
    """Give the catalogues (which read the environment: wrapper/catalogs/registry.py) the settings
    file's ``catalog``, ``ayon_server_url`` and ``version_status`` where the environment sets none
    (the plugin configuration and the job environment win). Returns the names it set."""
    environ = os.environ if environ is None else environ  # type: ignore[assignment]
    if settings is None or settings.path is None:
        return []
    names = []
    for name, value in ((CATALOG_ENV, settings.catalog), (AYON_URL_ENV, settings.ayon_server_url),
                        (AYON_STATUS_ENV, settings.version_status)):
        if value and not (environ.get(name) or "").strip():
            environ[name] = value
            names.append(name)
    return names
