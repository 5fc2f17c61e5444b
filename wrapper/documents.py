"""Build the OpenPype-schema documents of a version, deterministically from the record.

Everything comes from the manifest and the record (including the commit time), so a
roll-forward after a crash rebuilds byte-identical documents with identical ids.
"""
from __future__ import annotations

import getpass
import os
import socket
from typing import Any

from ..idempotency.keys import object_id
from .layout import PlannedFile
from .manifest import Manifest
from .staging import file_id

ROOT_NAME = "publish"


def rootless(path: str, manifest: Manifest) -> str:
    """``/mnt/projects/demo/...`` -> ``{root[work]}/demo/...`` (OpenPype's rootless form).

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


def context_roots(manifest: Manifest) -> dict[str, Any]:
    """``context.root``: every named root on every platform, so that any platform can resolve."""
    return {name: dict(paths) for name, paths in manifest.roots.items()} or {ROOT_NAME: manifest.publish_root}


def parent_documents(manifest: Manifest) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Project and asset documents, and the subset document, used only where none exists yet."""
    project, asset = manifest.project_name, manifest.asset
    project_id = object_id("project", project)
    asset_id = object_id("asset", project, asset)
    parents = [
        {"_id": project_id, "type": "project", "name": project, "schema": "openpype:project-3.0",
         "data": {"code": manifest.project_code}},
        {"_id": asset_id, "type": "asset", "name": asset, "schema": "openpype:asset-3.0",
         "parent": project_id,
         "data": {"parents": [p for p in manifest.hierarchy.split("/") if p], "visualParent": None}},
    ]
    subset_doc = {"_id": object_id("subset", project, asset, manifest.subset), "type": "subset",
                  "schema": "openpype:subset-3.0", "name": manifest.subset, "parent": asset_id,
                  "data": {"family": manifest.family, "families": [manifest.family]}}
    return parents, subset_doc


def version_documents(manifest: Manifest, key: str, record: dict[str, Any], plan: list[PlannedFile],
                      final_dir: str, subset_id: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The version document and one representation document per manifest representation."""
    version_no = int(record["version"])
    committed_at = record["committed_at"]
    version_id = object_id("version", key)
    entries = record.get("files") or {}
    frames = sorted(int(p.frame) for p in plan if p.frame is not None)
    attempt = (record.get("attempts") or [{}])[-1]
    version_doc = {
        "_id": version_id, "type": "version", "schema": "openpype:version-3.0", "name": version_no,
        "parent": subset_id,
        "data": {
            "families": [manifest.family], "time": committed_at.strftime("%Y%m%dT%H%M%SZ"),
            "author": manifest.author or record.get("submitted_by") or "",
            "source": manifest.source, "comment": manifest.comment,
            "machine": attempt.get("host") or socket.gethostname(),
            "frameStart": frames[0] if frames else None, "frameEnd": frames[-1] if frames else None,
            "atomic_publish": {"key": key, "job_id": record.get("job_id"), "task_id": record.get("task_id"),
                               "fingerprint": record["fingerprint"]},
        },
    }
    reps = []
    for rep in manifest.representations:
        items = [p for p in plan if p.representation == rep.name]
        files = []
        for p in items:
            e = entries[file_id(p.name)]
            files.append({"_id": object_id("file", key, p.name), "path": rootless(os.path.join(final_dir, p.name), manifest),
                          "size": e["size"], "hash": e["hash"], "hash_type": e.get("hash_type", "xxh3_128"),
                          "sites": [{"name": "studio", "created_dt": committed_at}]})
        first = items[0]
        context = {"root": context_roots(manifest), "project": {"name": manifest.project_name, "code": manifest.project_code},
                   "asset": manifest.asset, "hierarchy": manifest.hierarchy, "task": manifest.task,
                   "subset": manifest.subset, "family": manifest.family, "version": version_no,
                   "representation": rep.name, "ext": first.ext, "username": manifest.author or getpass.getuser()}
        if first.frame is not None:
            context["frame"] = first.frame
        reps.append({"_id": object_id("representation", key, rep.name), "type": "representation",
                     "schema": "openpype:representation-2.0", "parent": version_id, "name": rep.name,
                     "data": {"path": os.path.join(final_dir, first.name), "template": manifest.template},
                     "context": context, "files": files})
    return version_doc, reps
