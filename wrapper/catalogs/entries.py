"""Build the values that cross the catalogue seam from a manifest and its record.

This is the neutral half of what ``documents.version_documents`` computed before the seam: the
number, key, job, task and fingerprint, author, comment, source, the commit time, the frames,
and each file's rootless path, size and hash. Everything comes from the manifest and the record
(the commit time too), so a roll-forward builds the same entry on any worker.
"""
from __future__ import annotations

import getpass
import os
import socket
from typing import Any, Mapping

from ..layout import PlannedFile, context_roots, rootless
from ..manifest import Manifest
from ..staging import file_id
from .base import PublishedFile, Representation, Subject, VersionEntry


def subject_of(manifest: Manifest) -> Subject:
    """The product a manifest publishes."""
    return Subject(project_name=manifest.project_name, project_code=manifest.project_code, asset=manifest.asset,
                   hierarchy=manifest.hierarchy, subset=manifest.subset, family=manifest.family, task=manifest.task)


def entry_from_manifest(manifest: Manifest, key: str, record: Mapping[str, Any], plan: list[PlannedFile],
                        final_dir: str, id_parts: tuple[str, ...] | None = None,
                        data: Mapping[str, Any] | None = None, families: tuple[str, ...] = ()) -> VersionEntry:
    """The entry of one product: ``record`` carries ``version``, ``committed_at``, ``files`` (by
    ``file_id``: size, hash, hash_type), ``job_id``, ``task_id``, ``fingerprint``, ``submitted_by``
    and ``attempts`` (the last one's host is the machine). ``id_parts`` defaults to ``(key,)``."""
    number = int(record["version"])
    committed_at = record["committed_at"]
    recorded = record.get("files") or {}
    frames = sorted(int(p.frame) for p in plan if p.frame is not None)
    attempt = (record.get("attempts") or [{}])[-1]
    subject = subject_of(manifest)
    representations = []
    for rep in manifest.representations:
        items = [p for p in plan if p.representation == rep.name]
        files = []
        for p in items:
            e = recorded[file_id(p.name)]
            path = os.path.join(final_dir, p.name)
            files.append(PublishedFile(name=p.name, path=path, rootless=rootless(path, manifest), size=e["size"],
                                       hash=e["hash"], hash_type=e.get("hash_type", "xxh3_128"), frame=p.frame))
        first = items[0]
        context: dict[str, Any] = {
            "root": context_roots(manifest), "project": {"name": manifest.project_name, "code": manifest.project_code},
            "asset": manifest.asset, "hierarchy": manifest.hierarchy, "task": manifest.task,
            "subset": manifest.subset, "family": manifest.family, "version": number,
            "representation": rep.name, "ext": first.ext, "username": manifest.author or getpass.getuser()}
        if first.frame is not None:
            context["frame"] = first.frame
        representations.append(Representation(name=rep.name, ext=first.ext, files=tuple(files),
                                              template=manifest.template, context=context,
                                              data_path=os.path.join(final_dir, first.name)))
    return VersionEntry(
        key=key, id_parts=tuple(id_parts or (key,)), subject=subject, number=number,
        job_id=record.get("job_id"), task_id=record.get("task_id"), fingerprint=record["fingerprint"],
        author=manifest.author or record.get("submitted_by") or "", comment=manifest.comment,
        source=manifest.source, committed_at=committed_at,
        frame_start=frames[0] if frames else None, frame_end=frames[-1] if frames else None,
        roots=context_roots(manifest), final_dir=final_dir, representations=tuple(representations),
        machine=attempt.get("host") or socket.gethostname(), families=tuple(families), data=dict(data or {}))
