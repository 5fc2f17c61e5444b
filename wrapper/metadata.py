"""Read an AYON or OpenPype 3 publish metadata JSON (``{product}_metadata.json``) as it is.

Their submitters (ayon-deadline's and OpenPype's ``submit_publish_job.py``) write one file per
render job: top-level context (``folderPath``/``asset``, ``user``, ``comment``, ``source``,
``version``, ``intent``, ``job``, ``session``) and one entry per product in ``instances``, each
with its ``representations`` (file names, a rootless ``stagingDir``). A studio switching its farm
publish job to atomic-publish must not have to convert it, so this module turns it into one
``Manifest`` per instance, through the manifest's own validation (wrapper/manifest.py), with the
roots and the publish template of the studio settings (wrapper/studio_settings.py).

Every key used is checked, and every refusal names its JSON path
(``instances[1].representations[0].files``): the farm's job fails in one line that says which
entry of which file to fix. Keys not used are accepted, since these formats grow between releases.
Nothing here writes anything.

The metadata may carry secrets: the render job's ``job.Props.Env`` holds the submitter's
environment (``FTRACK_API_KEY`` among others). ``Publish.raw`` is for the fingerprint (hashed), never
to be stored or printed; nothing of ``job`` but its ids and names reaches ``Publish.job``.
"""
from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ManifestError, WorkerLocalError
from .manifest import ROOT_REF, Manifest, canonical_json, parse_manifest, platform_roots, read_json
from .studio_settings import SettingsError, StudioSettings, load_settings

__all__ = ["MetadataError", "MetadataJob", "Publish", "load_publish", "parse_publish", "resolve_path"]

FORMATS = ("ayon", "openpype3", "manifest")
# settings-side fields of the manifest built for a product: an error there names the settings file
_SETTINGS_FIELDS = {"publish_root": "publish_root", "template": "publish_template", "roots": "roots",
                    "link_mode": "link_mode", "verify": "verify", "integrations": "integrations"}
_FRAME = re.compile(r"^(?P<head>.*?)(?P<frame>\d+)\.[A-Za-z0-9]{1,16}$")


class MetadataError(ManifestError):
    """The metadata JSON is invalid; names the JSON path and the problem (permanent, exit 78)."""

    default_todo = "fix the publish metadata (or the submitter that wrote it) and resubmit the job"

    def __init__(self, field_name: str, problem: str, todo: str | None = None):
        super().__init__(field_name, problem, todo)
        if not field_name.startswith("-"):
            self.cause = f"metadata field {field_name}: {problem}"


@dataclass(frozen=True)
class MetadataJob:
    """What the metadata says of its Deadline jobs (never the render job's environment)."""

    render_job_id: str | None = None     # job._id: the render job this publish depends on
    publish_job_id: str | None = None    # deadline_publish_job_id: the publish job itself
    batch_name: str | None = None        # job.Props.Batch
    user: str | None = None              # job.Props.User


@dataclass(frozen=True)
class _Origin:
    """Where each field of one product's manifest came from in the metadata (for error messages)."""

    fields: dict[str, str]
    representations: tuple[tuple[str, bool], ...] = ()   # JSON path of each kept representation, files-is-a-string

    def translate(self, manifest_field: str) -> str:
        m = re.match(r"^representations\[(\d+)\](?:\.(\w+)(?:\[(\d+)\])?)?(.*)$", manifest_field)
        if m and int(m[1]) < len(self.representations):
            rep_path, single = self.representations[int(m[1])]
            if m[2] in ("files", "frames"):
                return f"{rep_path}.files" + ("" if single or m[3] is None else f"[{m[3]}]")
            return rep_path + (f".{m[2]}" if m[2] else "") + m[4]
        head = manifest_field.split("[", 1)[0].split(".", 1)[0]
        key = manifest_field if manifest_field in self.fields else head
        return self.fields.get(key, manifest_field)


@dataclass(frozen=True)
class Publish:
    """One publish under one key: every product of the metadata, in its order.

    ``raw`` is the parsed JSON as submitted: its canonical JSON (``canonical()``) is the fingerprint.
    It may hold secrets (see the module docstring): hash it, never store or log it."""

    products: tuple[Manifest, ...]
    raw: Any = field(compare=False, repr=False)
    source_format: str = "manifest"
    job: MetadataJob = field(default_factory=MetadataJob)
    project: str = ""
    path: str = ""                       # the file read, on this worker
    settings: StudioSettings | None = None
    origins: tuple[_Origin, ...] = field(default=(), compare=False, repr=False)

    def canonical(self) -> str:
        """The submitted JSON as canonical JSON (sorted keys): what the fingerprint hashes."""
        return canonical_json(self.raw)

    def json_path(self, product: int, manifest_field: str) -> str:
        """The metadata's JSON path of a field of ``products[product]``'s manifest, e.g.
        ``representations[0].files[3]`` -> ``instances[2].representations[0].files[3]``; the
        field itself for a manifest. For messages about a product (staging, conflicts)."""
        if not self.origins:
            return manifest_field
        return self.origins[product].translate(manifest_field)


# -- small typed readers, each error naming the JSON path --------------------------------------
_NAMES = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "an object",
          bool: "true or false", type(None): "null"}


def _kind(value: Any) -> str:
    """What a JSON value is, in the words of the error messages."""
    if isinstance(value, bool):
        return "true/false"
    return _NAMES.get(type(value), type(value).__name__)


def _get(obj: dict[str, Any], key: str, path: str, types: tuple[type, ...], required: bool = False) -> Any:
    """``obj[key]`` checked to be one of ``types`` (bool is never an integer here)."""
    where = f"{path}.{key}" if path else key
    if key not in obj:
        if required:
            raise MetadataError(where, "is required")
        return None
    value = obj[key]
    if isinstance(value, bool) and bool not in types:
        ok = False
    else:
        ok = isinstance(value, types) or (float in types and isinstance(value, int) and not isinstance(value, bool))
    if not ok:
        wanted = " or ".join(_NAMES[t] for t in types)
        raise MetadataError(where, f"is {_kind(value)}, not {wanted}")
    return value


def _text(obj: dict[str, Any], key: str, path: str, required: bool = False) -> str | None:
    value = _get(obj, key, path, (str, type(None)) if not required else (str,), required)
    if required and not value.strip():
        raise MetadataError(f"{path}.{key}" if path else key, "is empty")
    return value


def _first(obj: dict[str, Any], keys: tuple[str, ...], path: str, types: tuple[type, ...]) -> tuple[Any, str | None]:
    """The first of ``keys`` present (AYON's name first, then OpenPype 3's): (value, its JSON path)."""
    for key in keys:
        if key in obj:
            return _get(obj, key, path, types), (f"{path}.{key}" if path else key)
    return None, None


# -- paths -------------------------------------------------------------------------------------
def resolve_path(path: str, settings: StudioSettings | None, argument: str = "--metadata") -> str:
    """A rootless ``{root[work]}/...`` path (as ayon-deadline puts it in the job) on this worker."""
    path = path.strip()
    m = ROOT_REF.match(path)
    if not m:
        return path
    if settings is None:
        raise MetadataError(argument, f"{path!r} is rootless, but no studio settings declare roots (set "
                            "ATOMIC_PUBLISH_SETTINGS, or the plugin's SettingsFile entry)")
    if m["name"] not in settings.roots:
        raise MetadataError(argument, f"{path!r} names root {m['name']!r}, which the studio settings do not "
                            f"declare (declared: {', '.join(sorted(settings.roots))})")
    here = platform_roots(settings.roots)
    if m["name"] not in here:
        raise WorkerLocalError(f"root {m['name']!r} of {argument} has no path on this platform in the studio "
                               "settings", "add it to the settings' roots, or keep this platform's workers off the job")
    return here[m["name"]] + m["rest"].replace("\\", "/")


def _staging_dir(rep: dict[str, Any], rp: str, settings: StudioSettings, files: list[str]) -> str | None:
    staging = _text(rep, "stagingDir", rp)
    if staging is None or not staging.strip():
        if all(os.path.isabs(f) for f in files):
            return None
        raise MetadataError(f"{rp}.stagingDir", "is required (the folder of the representation's files)")
    m = ROOT_REF.match(staging)
    if m:
        if m["name"] not in settings.roots:
            raise MetadataError(f"{rp}.stagingDir", f"names root {m['name']!r}, which the studio settings "
                                f"{settings.path or ''} do not declare (declared: {', '.join(sorted(settings.roots))})")
    elif re.match(r"^[A-Za-z]:[\\/]", staging) and os.name != "nt":
        raise WorkerLocalError(f"{rp}.stagingDir {staging!r} of the metadata is a Windows path, unmapped on this "
                               "worker", "add a Deadline path mapping rule for it (or let the submitter write it "
                               "rootless, with the studio settings' roots), or keep this platform's workers off the job")
    elif not os.path.isabs(staging):
        raise MetadataError(f"{rp}.stagingDir", f"{staging!r} is neither rootless ({{root[NAME]}}/...) nor absolute")
    return staging.rstrip("/\\") or staging


def _files(rep: dict[str, Any], rp: str) -> tuple[list[str], bool]:
    """``files``: a list of names, or one name for a single file. Returns (names, was-a-string)."""
    if "files" not in rep:
        raise MetadataError(f"{rp}.files", "is required (the representation's file names)")
    value = rep["files"]
    if isinstance(value, str):
        if not value.strip():
            raise MetadataError(f"{rp}.files", "is an empty file name")
        return [value], True
    if not isinstance(value, list):
        raise MetadataError(f"{rp}.files", f"is {_kind(value)}: neither a list of file names nor a file name")
    if not value:
        raise MetadataError(f"{rp}.files", "is an empty list: the representation has no file")
    for k, name in enumerate(value):
        if not isinstance(name, str) or not name.strip():
            raise MetadataError(f"{rp}.files[{k}]", f"is {_kind(name) if not isinstance(name, str) else 'empty'}, "
                                "not a file name")
    return list(value), False


def _join(staging: str | None, name: str, where: str) -> str:
    if staging is None:
        return name
    if os.path.isabs(name) or ROOT_REF.match(name) or re.match(r"^[A-Za-z]:[\\/]", name):
        raise MetadataError(where, f"{name!r} is a full path; give names relative to stagingDir")
    return f"{staging}/{name}"


# -- the formats -------------------------------------------------------------------------------
def _project(data: dict[str, Any], environ: Mapping[str, str]) -> tuple[str, str]:
    """The project: the job environment (ayon-deadline sets AYON_PROJECT_NAME, OpenPype AVALON_PROJECT),
    else OpenPype's ``session``. Returns (name, where it came from)."""
    for var in ("AYON_PROJECT_NAME", "AVALON_PROJECT"):
        if (environ.get(var) or "").strip():
            return environ[var].strip(), f"(job environment) {var}"
    session = _get(data, "session", "", (dict, type(None))) or {}
    for var in ("AYON_PROJECT_NAME", "AVALON_PROJECT"):
        value = _get(session, var, "session", (str, type(None)))
        if value and value.strip():
            return value.strip(), f"session.{var}"
    raise MetadataError("(job environment) AYON_PROJECT_NAME", "is not set, and the metadata names no project "
                        "(ayon-deadline's submitter sets it in the publish job's environment; for a job of your own, "
                        "set it with atomic-publish submit --project)")


def _job(data: dict[str, Any]) -> MetadataJob:
    job = _get(data, "job", "", (dict, type(None))) or {}
    props = _get(job, "Props", "job", (dict, type(None))) or {}
    return MetadataJob(render_job_id=_text(job, "_id", "job"),
                       publish_job_id=_text(data, "deadline_publish_job_id", ""),
                       batch_name=_text(props, "Batch", "job.Props"), user=_text(props, "User", "job.Props"))


def _intent(data: dict[str, Any]) -> str | None:
    """OpenPype's intent is a string or {"value", "label"}; AYON's a string or null."""
    value = _get(data, "intent", "", (str, dict, type(None)))
    if isinstance(value, dict):
        value = _get(value, "value", "intent", (str, type(None)))
    return value or None


def _folder(inst: dict[str, Any], p: str, data: dict[str, Any], environ: Mapping[str, str]) -> tuple[str, str, str, str]:
    """(asset, hierarchy, folder path, JSON path): ``/shots/sq01/sh010`` -> sh010 under shots/sq01."""
    value, where = _first(inst, ("folderPath", "asset"), p, (str,))
    if value is None:
        value, where = _first(data, ("folderPath", "asset"), "", (str,))
    if value is None:
        for var in ("AYON_FOLDER_PATH", "AVALON_ASSET"):
            if (environ.get(var) or "").strip():
                value, where = environ[var].strip(), f"(job environment) {var}"
                break
    if value is None:
        raise MetadataError(f"{p}.folderPath", "is required (the folder the product belongs to; OpenPype 3 calls "
                            "it asset)")
    parts = [part for part in value.replace("\\", "/").split("/") if part]
    if not parts:
        raise MetadataError(where, f"{value!r} names no folder")
    return parts[-1], "/".join(parts[:-1]), "/" + "/".join(parts), where


def _number(inst: dict[str, Any], key: str, p: str, whole: bool = True) -> Any:
    return _get(inst, key, p, (int, type(None)) if whole else (float, type(None)))


def _representation(rep: Any, rp: str, settings: StudioSettings) -> dict[str, Any] | None:
    """One representation as the manifest's, plus its AYON data; None for one tagged ``delete``."""
    if not isinstance(rep, dict):
        raise MetadataError(rp, f"is {_kind(rep)}, not an object")
    name = _text(rep, "name", rp, required=True)
    tags = _get(rep, "tags", rp, (list, type(None))) or []
    for k, tag in enumerate(tags):
        if not isinstance(tag, str):
            raise MetadataError(f"{rp}.tags[{k}]", f"is {_kind(tag)}, not a string")
    if "delete" in tags:  # AYON's integrator never integrates these (ayon-core integrate.py)
        return None
    files, single = _files(rep, rp)
    staging = _staging_dir(rep, rp, settings, files)
    paths = [_join(staging, f, f"{rp}.files" if single else f"{rp}.files[{k}]") for k, f in enumerate(files)]
    out: dict[str, Any] = {"name": name, "files": paths}
    if not single and len(files) == 1:  # a one-frame sequence stays a sequence (keeps its frame number)
        m = _FRAME.match(os.path.basename(files[0].replace("\\", "/")))
        if m:
            out["frames"] = str(int(m["frame"]))
    data = {"ext": _text(rep, "ext", rp), "tags": list(tags), "stagingDir": _text(rep, "stagingDir", rp),
            "frameStart": _number(rep, "frameStart", rp), "frameEnd": _number(rep, "frameEnd", rp),
            "fps": _number(rep, "fps", rp, whole=False),
            "colorspaceData": _get(rep, "colorspaceData", rp, (dict, type(None)))}
    return {"manifest": out, "data": {k: v for k, v in data.items() if v is not None}, "single": single}


def _version_data(inst: dict[str, Any], p: str, family: str, comment: str, source: str,
                  intent: str | None) -> dict[str, Any]:
    """What ayon-core's IntegrateAsset.create_version_data writes, from the instance."""
    families = _get(inst, "families", p, (list, type(None))) or []
    for k, fam in enumerate(families):
        if not isinstance(fam, str):
            raise MetadataError(f"{p}.families[{k}]", f"is {_kind(fam)}, not a string")
    data: dict[str, Any] = {"families": [family] + [f for f in families if f != family],
                            "source": source, "comment": comment}
    for key in ("frameStart", "frameEnd", "handleStart", "handleEnd", "frameStartHandle", "frameEndHandle",
                "resolutionWidth", "resolutionHeight"):
        value = _number(inst, key, p)
        if value is not None:
            data[key] = value
    for key in ("fps", "pixelAspect"):
        value = _number(inst, key, p, whole=False)
        if value is not None:
            data[key] = value
    colorspace = _text(inst, "colorspace", p)
    if colorspace:
        data["colorspace"] = colorspace
    if intent:
        data["intent"] = intent
    return data


def _product(inst: Any, i: int, data: dict[str, Any], settings: StudioSettings, project: tuple[str, str],
             environ: Mapping[str, str]) -> tuple[Manifest, _Origin, str] | None:
    """Instance ``i`` as a validated Manifest; None when AYON would not integrate it."""
    p = f"instances[{i}]"
    if not isinstance(inst, dict):
        raise MetadataError(p, f"is {_kind(inst)}, not an object")
    if _get(inst, "integrate", p, (bool, type(None))) is False:
        return None
    product, product_at = _first(inst, ("productName", "subset"), p, (str,))
    if not product:
        raise MetadataError(product_at or f"{p}.productName", "is required (the product name; OpenPype 3 calls it "
                            "subset)" if product is None else "is empty")
    family, family_at = _first(inst, ("productType", "family"), p, (str,))
    if not family:
        raise MetadataError(family_at or f"{p}.productType", "is required (the product type, e.g. render; OpenPype "
                            "3 calls it family)" if family is None else "is empty")
    asset, hierarchy, folder, folder_at = _folder(inst, p, data, environ)
    if "task" in inst:
        task, task_at = _get(inst, "task", p, (str, type(None))), f"{p}.task"
    else:
        var = next((v for v in ("AYON_TASK_NAME", "AVALON_TASK") if (environ.get(v) or "").strip()), None)
        task, task_at = (environ[var].strip(), f"(job environment) {var}") if var else (None, f"{p}.task")
    version, version_at = _get(inst, "version", p, (int, type(None))), f"{p}.version"
    if version is None and settings.follow_workfile_version:
        version, version_at = _get(data, "version", "", (int, type(None))), "version"
    comment, comment_at = _text(inst, "comment", p), f"{p}.comment"
    if comment is None:
        comment, comment_at = _text(data, "comment", ""), "comment"
    source, source_at = _text(inst, "source", p), f"{p}.source"
    if source is None:
        source, source_at = _text(data, "source", ""), "source"
    user = _text(data, "user", "")
    if user is None:
        var = next((v for v in ("AYON_USERNAME", "OPENPYPE_USERNAME") if (environ.get(v) or "").strip()), None)
        user = environ[var].strip() if var else ""
    reps = _get(inst, "representations", p, (list,), required=True)
    if not reps:
        raise MetadataError(f"{p}.representations", "is an empty list: the product has nothing to publish")
    kept: list[tuple[int, dict[str, Any]]] = []
    for j, rep in enumerate(reps):
        built = _representation(rep, f"{p}.representations[{j}]", settings)
        if built is not None:
            kept.append((j, built))
    if not kept:
        return None  # every representation tagged delete: AYON's integrator skips such an instance too
    doc: dict[str, Any] = {
        "project": {"name": project[0], "code": settings.project_code(project[0])},
        "asset": asset, "hierarchy": hierarchy, "subset": product, "family": family, "version": version,
        "publish_root": settings.publish_root, "template": settings.template,
        "representations": [b["manifest"] for _, b in kept],
        "author": user, "comment": comment or "", "source": source or "",
        "integrations": [dict(x) for x in settings.integrations], "roots": settings.roots,
        "link_mode": settings.link_mode, "verify": settings.verify,
    }
    if task:
        doc["task"] = task
    if not hierarchy:
        del doc["hierarchy"]
    origin = _Origin(
        fields={"project.name": project[1], "project.code": f"project_codes.{project[0]}", "project": project[1],
                "asset": folder_at, "hierarchy": folder_at, "subset": product_at, "family": family_at,
                "task": task_at, "version": version_at, "author": "user", "comment": comment_at,
                "source": source_at, "representations": f"{p}.representations", "(top level)": p},
        representations=tuple((f"{p}.representations[{j}]", b["single"]) for j, b in kept))
    manifest = _validated(doc, origin, settings)
    manifest = dataclasses.replace(
        manifest, version_data=_version_data(inst, p, family, comment or "", source or "", _intent(data)),
        representations=tuple(dataclasses.replace(r, data=b["data"]) for r, (_, b) in zip(manifest.representations, kept)))
    return manifest, origin, folder


def _validated(doc: dict[str, Any], origin: _Origin, settings: StudioSettings) -> Manifest:
    """The manifest's own checks (schema, names, paths, published names, version folder), each
    refusal re-addressed to the metadata's JSON path, or to the settings file for its fields."""
    from .layout import plan_files, version_dir

    try:
        manifest = parse_manifest(doc)
        plan_files(manifest, 1)
        version_dir(manifest, 1)
        return manifest
    except SettingsError:
        raise
    except ManifestError as exc:
        head = exc.field.split("[", 1)[0].split(".", 1)[0]
        if head in _SETTINGS_FIELDS:
            raise SettingsError(settings.path, _SETTINGS_FIELDS[head] + exc.field[len(head):], exc.problem) from None
        where = origin.translate(exc.field)
        if where.startswith("project_codes."):
            raise SettingsError(settings.path, where, exc.problem) from None
        raise MetadataError(where, exc.problem) from None


def parse_publish(data: Any, settings: StudioSettings | None = None, *, environ: Mapping[str, str] | None = None,
                  path: str = "") -> Publish:
    """Validate decoded metadata (or a manifest) into a Publish; raises MetadataError/SettingsError."""
    environ = os.environ if environ is None else environ
    if not isinstance(data, dict):
        raise MetadataError("(top level)", f"is {_kind(data)}, not a JSON object")
    if "instances" not in data:
        if "representations" in data or "subset" in data or "project" in data:  # atomic-publish's own manifest
            return Publish(products=(parse_manifest(data),), raw=data, source_format="manifest", path=path,
                           project=str((data.get("project") or {}).get("name", "")), settings=settings)
        raise MetadataError("instances", "is required (the products to publish: an AYON or OpenPype publish "
                            "metadata lists them in instances)")
    if settings is None:
        settings = load_settings(environ=environ)
    if settings is None:
        raise SettingsError(None, "", "an AYON or OpenPype metadata needs the studio settings (roots and publish "
                            "template): set ATOMIC_PUBLISH_SETTINGS, or the plugin's SettingsFile entry "
                            "(docs/ayon-openpype.md)")
    instances = _get(data, "instances", "", (list,), required=True)
    if not instances:
        raise MetadataError("instances", "is an empty list: nothing to publish")
    fmt = "ayon" if "folderPath" in data or any(isinstance(x, dict) and "productName" in x for x in instances) \
        else "openpype3"
    for key in ("user", "comment", "source"):
        _text(data, key, "")
    job = _job(data)
    project = _project(data, environ)
    products: list[Manifest] = []
    origins: list[_Origin] = []
    seen: dict[tuple[str, str], int] = {}
    for i, inst in enumerate(instances):
        built = _product(inst, i, data, settings, project, environ)
        if built is None:
            continue
        manifest, origin, folder = built
        identity = (folder.lower(), manifest.subset.lower())
        if identity in seen:
            raise MetadataError(origin.fields["subset"], f"{manifest.subset!r} in {folder} is also the product of "
                                f"instances[{seen[identity]}]: one publish makes one version per product")
        seen[identity] = i
        products.append(manifest)
        origins.append(origin)
    if not products:
        raise MetadataError("instances", "no instance has a representation to publish (all are tagged delete "
                            "or have integrate false)")
    return Publish(products=tuple(products), raw=data, source_format=fmt, job=job, project=project[0], path=path,
                   settings=settings, origins=tuple(origins))


def load_publish(path: str, settings: StudioSettings | None = None, *,
                 environ: Mapping[str, str] | None = None, argument: str = "--metadata") -> Publish:
    """Read, decode and validate the publish at ``path``: an AYON or OpenPype 3 metadata JSON, or
    an atomic-publish manifest (then ``products`` has one element).

    ``path`` may be rootless (``{root[work]}/...``, as ayon-deadline writes it into the job).
    ``settings`` default: the file named by ATOMIC_PUBLISH_SETTINGS (needed for metadata, not for a
    manifest). ``environ`` (default os.environ) is the job environment: the project name
    (AYON_PROJECT_NAME / AVALON_PROJECT) and fallbacks for the folder, task and user."""
    environ = os.environ if environ is None else environ
    if settings is None and ROOT_REF.match(path.strip()):
        settings = load_settings(environ=environ)
    local = resolve_path(path, settings, argument)
    return parse_publish(read_json(local, argument), settings, environ=environ, path=local)
