"""Where a version's files go: the version folder from the template, the published
file names (OpenPype's convention) and the checks that keep both inside the publish root.
"""
from __future__ import annotations

import os
import re
import string
from dataclasses import dataclass

from .errors import DestinationError, ManifestError
from .manifest import Manifest

SPEC_RE = re.compile(r"(?:[0-9A-Za-z_-]?[<>^])?0?\d{0,2}")
ROOT_FIELD = re.compile(r"^root\[[A-Za-z0-9_-]+\]$")
ALLOWED_FIELDS = {"publish_root", "project[name]", "project[code]", "hierarchy", "asset",
                  "family", "subset", "task", "version"}
FRAME_RE = re.compile(r"^(?P<head>.*?)(?P<frame>\d+)\.(?P<ext>[A-Za-z0-9]{1,16})$")
EXT_RE = re.compile(r"\.([A-Za-z0-9]{1,16})$")


@dataclass(frozen=True, slots=True)  # slots: one per file, 50,000 in a big publish
class PlannedFile:
    """One source file and the name it is published under inside the version folder."""

    representation: str
    source: str
    name: str
    frame: str | None
    ext: str


def check_template(template: str) -> None:
    """Only the documented fields, no attribute access, and a version field somewhere."""
    has_version = False
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ManifestError("template", f"is not a valid template: {exc}") from None
    for _literal, field_name, spec, conversion in parsed:
        if field_name is None:
            continue
        if field_name not in ALLOWED_FIELDS and not ROOT_FIELD.match(field_name):
            raise ManifestError("template", f"field {{{field_name}}} is not allowed; use one of "
                                + ", ".join(sorted(ALLOWED_FIELDS)))
        if conversion or (spec and "{" in spec):
            raise ManifestError("template", f"field {{{field_name}}} has an unsupported conversion or nested field")
        if spec and not SPEC_RE.fullmatch(spec):
            raise ManifestError("template", f"field {{{field_name}}} has an unsupported format spec {spec!r} "
                                "(use fill, alignment and width, e.g. 0>3)")
        has_version |= field_name == "version"
    if not has_version:
        raise ManifestError("template", "must contain {version}, or every version would share one folder")


class _Roots(dict):
    """``{root[NAME]}`` in a template: the root's path on this platform, or a clear error."""

    def __init__(self, manifest: Manifest):
        super().__init__(manifest.platform_roots)
        self.declared = manifest.roots

    def __missing__(self, name: str) -> str:
        if name not in self.declared:
            raise ManifestError("template", f"names root {name!r}, which the manifest's roots do not declare")
        from .errors import WorkerLocalError

        raise WorkerLocalError(f"root {name!r} has no path for this platform (manifest field template)",
                               "add it to the manifest's roots, or keep this platform's workers off the job")


def version_dir(manifest: Manifest, version: int) -> str:
    """The final folder of ``version``, checked to stay inside the publish root."""
    check_template(manifest.template)
    values = {
        "publish_root": manifest.publish_root,
        "project": {"name": manifest.project_name, "code": manifest.project_code},
        "hierarchy": manifest.hierarchy, "asset": manifest.asset, "family": manifest.family,
        "subset": manifest.subset, "task": manifest.task or "", "version": version,
        "root": _Roots(manifest),
    }
    try:
        path = manifest.template.format(**values)
    except (ValueError, KeyError, IndexError) as exc:
        raise ManifestError("template", f"cannot be filled: {exc}") from None
    path = path.replace("\\", "/")
    parts = [p for p in path.split("/")]
    if any(p in ("..", ".") for p in parts):
        raise DestinationError(f"template resolves to {path!r}, which contains '..' or '.'")
    root_depth = len([p for p in manifest.publish_root.replace("\\", "/").split("/") if p])
    for part in [p for p in parts if p][root_depth:]:
        _check_folder_name(part)
    norm = os.path.normpath(path.replace("//", "/"))
    root = os.path.normpath(manifest.publish_root)
    if not os.path.isabs(norm) or os.path.commonpath([norm, root]) != root or norm == root:
        raise DestinationError(f"template resolves to {norm!r}, outside the publish root {root!r}")
    return norm


def _check_folder_name(part: str) -> None:
    """Folders the template makes must be portable: Windows refuses trailing dots and spaces,
    reserved names and control characters, and most filesystems names over 255 bytes."""
    from .manifest import WINDOWS_RESERVED

    if part.endswith((".", " ")):
        raise DestinationError(f"template makes folder {part!r}, which ends with a dot or a space")
    if any(ord(c) < 32 for c in part):
        raise DestinationError(f"template makes folder {part!r}, which contains a control character")
    if len(part.encode("utf-8")) > 255:
        raise DestinationError(f"template makes folder {part[:40]!r}..., which is longer than 255 bytes")
    if WINDOWS_RESERVED.match(part):
        raise DestinationError(f"template makes folder {part!r}, a reserved name on Windows")


def check_inside_root(path: str, root: str) -> None:
    """Refuse a version folder whose existing ancestors escape the root through symlinks."""
    real_root = os.path.realpath(root)
    probe = path
    while not os.path.lexists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    real = os.path.realpath(probe)
    if os.path.commonpath([real, real_root]) != real_root:
        raise DestinationError(f"{probe!r} resolves to {real!r}, outside the publish root {root!r} (a symlink escapes it)")


def plan_files(manifest: Manifest, version: int) -> list[PlannedFile]:
    """Published names: ``{code}_{asset}_{subset}_v{version:03}[_{rep}][.{frame}].{ext}``.

    The representation name is added when it differs from the extension, so that two
    representations of one extension do not collide.
    """
    base = f"{manifest.project_code}_{manifest.asset}_{manifest.subset}_v{version:0>3}"
    planned: list[PlannedFile] = []
    taken: dict[str, str] = {}
    for ri, rep in enumerate(manifest.representations):
        sequence = len(rep.files) > 1 or rep.frames is not None
        frames: set[str] = set()
        for fi, src in enumerate(rep.files):
            field = f"representations[{ri}].files[{fi}]"
            basename = os.path.basename(src.replace("\\", "/"))
            m = FRAME_RE.match(basename) if sequence else None
            if sequence and not m:
                raise ManifestError(field, f"{basename!r} has no frame number, but representation {rep.name!r} has several files")
            if m:
                frame, ext = m.group("frame"), m.group("ext")
                if frame in frames:
                    raise ManifestError(field, f"frame {frame} appears twice in representation {rep.name!r}")
                frames.add(frame)
            else:
                em = EXT_RE.search(basename)
                if not em:
                    raise ManifestError(field, f"{basename!r} has no file extension")
                frame, ext = None, em.group(1)
            suffix = "" if rep.name.lower() == ext.lower() else f"_{rep.name}"
            name = f"{base}{suffix}{'.' + frame if frame else ''}.{ext}"
            low = name.lower()
            if low in taken:
                raise ManifestError(field, f"publishes to {name!r}, which {taken[low]} already takes "
                                    "(names must differ even on case-insensitive filesystems)")
            taken[low] = field
            planned.append(PlannedFile(rep.name, src, name, frame, ext))
        if rep.frames:
            _check_frames(f"representations[{ri}].frames", rep.frames, frames)
    return planned


MAX_FRAMES = 100000


def _check_frames(field: str, spec: str, found: set[str]) -> None:
    """The sequence has exactly the frames the manifest announces: no gap, nothing extra."""
    wanted: set[int] = set()
    for part in spec.split(","):
        start, _, end = part.partition("-")
        lo, hi = int(start), int(end or start)
        if hi < lo:
            raise ManifestError(field, f"range {part!r} runs backwards")
        if hi - lo + 1 + len(wanted) > MAX_FRAMES:
            raise ManifestError(field, f"{spec!r} has more than {MAX_FRAMES} frames")
        wanted.update(range(lo, hi + 1))
    have = {int(f) for f in found}
    missing = sorted(wanted - have)
    if missing:
        raise ManifestError(field, f"frame {missing[0]} of {spec} is missing"
                            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    extra = sorted(have - wanted)
    if extra:
        raise ManifestError(field, f"frame {extra[0]} is not in {spec}")


# -- rootless paths (moved from documents.py: every catalogue and integration uses them) --------

ROOT_NAME = "publish"


def rootless(path: str, manifest: Manifest) -> str:
    """``/mnt/projects/demo/...`` -> ``{root[work]}/demo/...`` (OpenPype's and AYON's rootless form).

    The manifest's named root that holds the path (the longest) is used; without named roots,
    the publish root is the root named ``publish``."""
    candidates = dict(manifest.platform_roots) or {ROOT_NAME: manifest.publish_root}
    best = None
    for name, root in candidates.items():
        root = os.path.normpath(root)
        if os.path.commonpath([os.path.normpath(path), root]) == root and (best is None or len(root) > len(best[1])):
            best = (name, root)
    if best is None:
        best = (ROOT_NAME, os.path.normpath(manifest.publish_root))
    rel = os.path.relpath(path, best[1]).replace(os.sep, "/")
    return f"{{root[{best[0]}]}}/{rel}"


def resolve_rootless(path: str, manifest: Manifest) -> str:
    """``{root[work]}/demo/...`` -> this worker's path, with its own (path-mapped) roots.

    Records keep the version's folders in this form too, so that a roll-forward on a worker
    that reaches the same storage through another mount finds them and writes the same
    documents as the first worker would have (issue 16: never ``{root[publish]}/../..``)."""
    from .manifest import ROOT_REF

    m = ROOT_REF.match(path)
    if not m:
        return path
    roots = dict(manifest.platform_roots)
    base = roots.get(m["name"]) or (manifest.publish_root if m["name"] == ROOT_NAME else None)
    if base is None:
        from .errors import WorkerLocalError

        raise WorkerLocalError(f"root {m['name']!r} of {path} has no path on this worker",
                               "add it to the manifest's roots for this platform")
    return os.path.normpath(base.rstrip("/\\") + m["rest"])


def context_roots(manifest: Manifest) -> dict:
    """``context.root``: every named root on every platform, so that any platform can resolve."""
    return {name: dict(paths) for name, paths in manifest.roots.items()} or {ROOT_NAME: manifest.publish_root}
