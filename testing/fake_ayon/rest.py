"""The REST answers the client reads: server info, the current user, attributes, a project,
and single entities by id (``GET /api/projects/{project}/{type}s/{id}``).

Shapes follow the recorded answers of a real 1.15 server: REST entities carry ``attrib`` and
``data`` as objects, ``ownAttrib``, ``path``, ``createdBy``/``updatedBy``, and leave out fields
that are null (the server serialises its models with ``exclude_none``).
"""
from __future__ import annotations

import time
from typing import Any

from .anatomy import ATTRIBUTES
from .tables import ProjectTables

__all__ = ["SERVER_VERSION", "attributes", "entity", "info", "project", "user_me"]

#: Reported server version: the recorded server's, so the client turns on the same features
#: (product base types from 1.13, representation traits from 1.7.5).
SERVER_VERSION = "1.15.17+fake"
_STARTED = time.time()


def user_me(name: str) -> dict[str, Any]:
    """The service user behind the API key. Unlike the real answer it has no ``apiKey`` hash
    and no ``apiKeyPreview``: nothing derived from the key leaves the fake."""
    return {"name": name, "uiExposureLevel": 900, "attrib": {"fullName": f"{name} (local AYON)"},
            "data": {"accessGroups": {}, "defaultAccessGroups": [], "isAdmin": True,
                     "isService": True},
            "active": True, "ownAttrib": ["fullName"],
            "createdAt": "2026-01-01T00:00:00+00:00", "updatedAt": "2026-01-01T00:00:00+00:00"}


def info(user: str | None) -> dict[str, Any]:
    """``GET /api/info``: version and uptime for anyone, the user and attributes once logged in."""
    out: dict[str, Any] = {"version": SERVER_VERSION, "uptime": round(time.time() - _STARTED, 1),
                           "disableFeedback": True, "offlineMode": True}
    if user is not None:
        out.update(user=user_me(user), attributes=ATTRIBUTES, sites=[], extras="",
                   frontendFlags=[], ssoOptions=[], disableChangelog=True)
    return out


def attributes() -> dict[str, Any]:
    return {"attributes": ATTRIBUTES}


def project(work: ProjectTables) -> dict[str, Any]:
    """``GET /api/projects/{name}``: the project with its anatomy (statuses, types, roots)."""
    out = {k: v for k, v in work.project.items() if k != "productTypes"}
    out["config"] = {**out["config"],
                     "productBaseTypes": {"definitions": [
                         {"name": t["name"], "color": t["color"], "icon": t["icon"]}
                         for t in work.project["productTypes"]]}}
    return out


def _path(work: ProjectTables, entity_type: str, row: dict) -> str:
    if entity_type == "folder":
        return work.folder_path(row["id"])
    if entity_type in ("task", "product"):
        return f"{work.folder_path(row['folderId'])}/{row['name']}"
    if entity_type == "version":
        product = work.get("product", row["productId"]) or {"folderId": None, "name": "?"}
        number = row["version"]
        return f"{_path(work, 'product', product)}/" + (f"v{number:03d}" if number >= 0 else "HERO")
    version = work.get("version", row["versionId"])
    return f"{_path(work, 'version', version)}/{row['name']}" if version else f"/{row['name']}"


def entity(work: ProjectTables, entity_type: str, row: dict) -> dict[str, Any]:
    """One entity as ``GET /api/projects/{project}/{type}s/{id}`` returns it."""
    out = {k: v for k, v in row.items() if k != "creationOrder" and v is not None}
    own = dict(row.get("attrib") or {})
    if entity_type in ("folder", "task"):
        folder_id = row["id"] if entity_type == "folder" else row["folderId"]
        out["attrib"] = {**work.inherited_attrib(folder_id), **own}
    else:
        out["attrib"] = own
    out["ownAttrib"] = sorted(own)
    out["path"] = _path(work, entity_type, row)
    return out
