"""Load and validate a publish manifest.

Validation is all-or-nothing and happens before the store or the disk is
touched, so bad input leaves no trace. Every error names the field and the problem.
"""
from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from .errors import ManifestError

DEFAULT_TEMPLATE = ("{publish_root}/{project[name]}/{hierarchy}/{asset}/publish/"
                    "{family}/{subset}/v{version:0>3}")
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z"  # \Z: "$" would accept a trailing newline
WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["project", "asset", "subset", "family", "publish_root", "representations"],
    "properties": {
        "project": {
            "type": "object", "additionalProperties": False, "required": ["name", "code"],
            "properties": {"name": {"type": "string", "pattern": NAME},
                           "code": {"type": "string", "pattern": r"^[A-Za-z0-9_]{1,16}\Z"}},
        },
        "asset": {"type": "string", "pattern": NAME},
        "hierarchy": {"type": "string", "maxLength": 512,
                      "pattern": r"^([A-Za-z0-9][A-Za-z0-9_-]{0,63})(/[A-Za-z0-9][A-Za-z0-9_-]{0,63})*\Z"},
        "task": {"type": "string", "pattern": NAME},
        "subset": {"type": "string", "pattern": NAME},
        "family": {"type": "string", "pattern": NAME},
        "version": {"type": ["integer", "null"], "minimum": 1, "maximum": 99999},
        "publish_root": {"type": "string", "minLength": 1, "maxLength": 1024},
        "template": {"type": "string", "minLength": 1, "maxLength": 1024},
        "representations": {
            "type": "array", "minItems": 1, "maxItems": 64,
            "items": {
                "type": "object", "additionalProperties": False, "required": ["name", "files"],
                "properties": {
                    "name": {"type": "string", "pattern": NAME},
                    "files": {"type": "array", "minItems": 1, "maxItems": 100000,
                              "items": {"type": "string", "minLength": 1, "maxLength": 4096}},
                    "frames": {"type": "string", "maxLength": 256,
                               "pattern": r"^\d{1,9}(-\d{1,9})?(,\d{1,9}(-\d{1,9})?)*\Z"},
                },
            },
        },
        "author": {"type": "string", "maxLength": 256},
        "comment": {"type": "string", "maxLength": 4096},
        "source": {"type": "string", "maxLength": 4096},
        "integrations": {"type": "array", "maxItems": 32,
                         "items": {"type": "object", "required": ["name"], "additionalProperties": False,
                                   "properties": {"name": {"type": "string", "pattern": NAME},
                                                  "id": {"type": "string", "pattern": NAME},
                                                  "phase": {"enum": ["gate", "notify"]},
                                                  "settings": {"type": "object"}}}},
        "roots": {"type": "object", "maxProperties": 16,
                  "propertyNames": {"pattern": NAME},
                  "additionalProperties": {
                      "type": "object", "additionalProperties": False, "minProperties": 1,
                      "properties": {p: {"type": "string", "minLength": 1, "maxLength": 1024}
                                     for p in ("windows", "linux", "darwin")}}},
        "link_mode": {"enum": ["copy", "hardlink"]},
        "verify": {"enum": ["size", "hash"]},
    },
}
_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


@dataclass(frozen=True)
class Representation:
    name: str
    files: tuple[str, ...]
    frames: str | None = None  # e.g. "1001-1024": the sequence must have exactly these frames
    # what an AYON/OpenPype metadata says of the representation beyond its files (ext, tags,
    # colorspaceData, frameStart/frameEnd, fps): for a catalogue that writes them (wrapper/metadata.py)
    data: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Manifest:
    """A validated manifest, with defaults applied; ``canonical()`` is what the fingerprint hashes."""

    project_name: str
    project_code: str
    asset: str
    hierarchy: str
    task: str | None
    subset: str
    family: str
    version: int | None
    publish_root: str
    template: str
    representations: tuple[Representation, ...]
    author: str
    comment: str
    source: str
    integrations: tuple[dict[str, Any], ...] = ()
    link_mode: str = "copy"
    verify: str = "size"
    roots: dict[str, dict[str, str]] = field(default_factory=dict)   # name -> platform -> path
    platform_roots: dict[str, str] = field(default_factory=dict)     # name -> path on this platform
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # the version data AYON's integrator writes (families, frame range, handles, fps, resolution,
    # colorspace, intent...), from an AYON/OpenPype metadata instance (wrapper/metadata.py); {} otherwise
    version_data: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def canonical(self) -> str:
        """The manifest as given, as canonical JSON (what the fingerprint hashes by default)."""
        return canonical_json(self.raw)

    def normalised(self) -> str:
        """The normalised manifest as canonical JSON (sorted keys, defaults applied)."""
        doc = {
            "project": {"name": self.project_name, "code": self.project_code},
            "asset": self.asset, "hierarchy": self.hierarchy, "task": self.task,
            "subset": self.subset, "family": self.family, "version": self.version,
            "publish_root": self.publish_root, "template": self.template,
            "representations": [{"name": r.name, "files": list(r.files)} for r in self.representations],
            "author": self.author, "comment": self.comment, "source": self.source,
            "integrations": list(self.integrations), "link_mode": self.link_mode,
            "verify": self.verify,
        }
        return canonical_json(doc)


def _field_path(error: jsonschema.ValidationError) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return path.lstrip(".") or "(top level)"


def _problem(error: jsonschema.ValidationError) -> str:
    if error.validator == "pattern":
        return (f"{error.instance!r} is not allowed (letters, digits, '_' and '-' only, "
                f"starting with a letter or digit)")
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return f"unknown field(s) {', '.join(map(repr, extra))}"
    if error.validator == "required":
        return error.message.replace("is a required property", "is required")
    return error.message


def parse_manifest(data: Any) -> Manifest:
    """Validate a decoded manifest and apply defaults; raises ManifestError."""
    errors = sorted(_VALIDATOR.iter_errors(data), key=lambda e: (list(e.absolute_path), e.validator))
    if errors:
        first = errors[0]
        field_path = _field_path(first)
        if first.validator == "required":
            missing = first.message.split("'")[1]
            field_path = f"{field_path}.{missing}" if field_path != "(top level)" else missing
            raise ManifestError(field_path, "is required")
        raise ManifestError(field_path, _problem(first))
    _check_unicode(data, "")
    named = [("project.name", data["project"]["name"]), ("asset", data["asset"]), ("subset", data["subset"]),
             ("family", data["family"]), ("task", data.get("task") or "x")]
    named += [("hierarchy", part) for part in (data.get("hierarchy") or "").split("/") if part]
    for field_name, name in named:
        if WINDOWS_RESERVED.match(name):
            raise ManifestError(field_name, f"{name!r} is a reserved name on Windows")
    seen: dict[str, str] = {}
    for i, rep in enumerate(data["representations"]):
        low = rep["name"].lower()
        if WINDOWS_RESERVED.match(rep["name"]):
            raise ManifestError(f"representations[{i}].name", f"{rep['name']!r} is a reserved name on Windows")
        if low in seen:
            raise ManifestError(f"representations[{i}].name",
                                f"{rep['name']!r} duplicates representation {seen[low]!r} (names are case-insensitive)")
        seen[low] = rep["name"]
        for j, path in enumerate(rep["files"]):
            _check_source_path(f"representations[{i}].files[{j}]", path)
    roots = data.get("roots") or {}
    here = platform_roots(roots)
    root = resolve_roots("publish_root", data["publish_root"], roots, here)
    if "\x00" in root or any(ord(c) < 32 for c in root):
        raise ManifestError("publish_root", "contains a NUL or control character")
    if not os.path.isabs(root):
        raise ManifestError("publish_root", f"{root!r} is not an absolute path")
    if ".." in root.replace("\\", "/").split("/"):
        raise ManifestError("publish_root", "contains '..' (give the publish root in normal form)")
    representations = tuple(
        Representation(r["name"], tuple(resolve_roots(f"representations[{i}].files[{j}]", f, roots, here)
                                        for j, f in enumerate(r["files"])), r.get("frames"))
        for i, r in enumerate(data["representations"]))
    return Manifest(
        project_name=data["project"]["name"], project_code=data["project"]["code"],
        asset=data["asset"], hierarchy=data.get("hierarchy") or "", task=data.get("task"),
        subset=data["subset"], family=data["family"], version=data.get("version"),
        publish_root=os.path.normpath(root), template=data.get("template") or DEFAULT_TEMPLATE,
        representations=representations, roots=roots, platform_roots=here,
        author=data.get("author") or "", comment=data.get("comment") or "",
        source=data.get("source") or "", integrations=tuple(data.get("integrations") or ()),
        link_mode=data.get("link_mode") or "copy", verify=data.get("verify") or "size", raw=data,
    )


def _check_source_path(field_name: str, path: str) -> None:
    if "\x00" in path or any(ord(c) < 32 for c in path):
        raise ManifestError(field_name, "contains a NUL or control character")
    if not os.path.isabs(path) and not ROOT_REF.match(path):
        raise ManifestError(field_name, f"{path!r} is not an absolute path")
    if ".." in path.replace("\\", "/").split("/"):
        raise ManifestError(field_name, f"{path!r} contains '..'")


def _check_unicode(value: Any, path: str) -> None:
    """Lone surrogates decode from JSON escapes but cannot be written anywhere: refuse them."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ManifestError(path or "(top level)", "is not valid Unicode (lone surrogate)") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_unicode(k, path)
            _check_unicode(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_unicode(v, f"{path}[{i}]")


ROOT_REF = re.compile(r"^\{root\[(?P<name>[A-Za-z0-9_-]+)\]\}(?P<rest>(?:[/\\].*)?)$")


def current_platform() -> str:
    """OpenPype's platform names: windows, linux, darwin."""
    if os.name == "nt":
        return "windows"
    return "darwin" if sys.platform == "darwin" else "linux"


def platform_roots(roots: dict[str, dict[str, str]], platform: str | None = None) -> dict[str, str]:
    """Each named root's path on ``platform`` (default: this one); roots without one are left out."""
    platform = platform or current_platform()
    return {name: paths[platform].rstrip("/\\") or paths[platform] for name, paths in roots.items()
            if paths.get(platform)}


def resolve_roots(field_name: str, value: str, roots: dict[str, dict[str, str]], here: dict[str, str]) -> str:
    """``{root[work]}/renders/x.exr`` -> ``/mnt/projects/renders/x.exr`` on this platform."""
    m = ROOT_REF.match(value)
    if not m:
        return value
    name = m["name"]
    if name not in roots:
        raise ManifestError(field_name, f"names root {name!r}, which the manifest's roots do not declare")
    if name not in here:
        from .errors import WorkerLocalError

        raise WorkerLocalError(f"root {name!r} has no path for platform {current_platform()} (manifest field "
                               f"{field_name})", "add it to the manifest's roots, or keep this platform's "
                               "workers off the job")
    rest = m["rest"].replace("\\", "/")
    return here[name] + rest


def canonical_json(data: Any) -> str:
    """The canonical text of a decoded JSON document (sorted keys, no spaces): what the fingerprint hashes."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def read_json(path: str | os.PathLike[str], field: str = "--manifest") -> Any:
    """Read and decode a manifest file without validating it."""
    try:
        with open(path, "rb") as fh:
            blob = fh.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise ManifestError(field, f"file {os.fspath(path)!r} does not exist") from None
    except OSError as exc:
        raise ManifestError(field, f"cannot read {os.fspath(path)!r}: {exc.strerror}") from None
    if len(blob) > MAX_MANIFEST_BYTES:
        raise ManifestError(field, f"file is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        text = blob.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(field, f"is not UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise ManifestError(field, f"is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ManifestError(field, "is nested deeper than Python can read") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose key appears twice is ambiguous (which one wins?): refuse it."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ManifestError(key, "appears twice (JSON keys must be unique)")
        seen[key] = value
    return seen


def load_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read, decode and validate the manifest file at ``path``."""
    return parse_manifest(read_json(path))
