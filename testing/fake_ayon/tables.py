"""The entity tables of the local AYON server, with the real server's constraints.

A real AYON server keeps each project in PostgreSQL tables (``schemas/schema.project.sql``):
primary keys on ``id``, partial unique indexes that hold only among *active* rows (a version
number is unique per product among active versions), and foreign keys to parents and to the
project's statuses and types. The fake checks the same constraints at the same moment (per
operation, as a statement would) and words its refusals the way the server's
``parse_postgres_exception`` does, so a client sees the same ``errorCode`` and ``detail``.

Everything lives in one JSON file in the data folder, rewritten atomically after every change:
a restart of the fake keeps its entities, as a restart of the real server does.
"""
from __future__ import annotations

import copy
import re
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import atomic_write_json, read_json
from .anatomy import ENTITY_TYPES, attribute_names, default_status, new_project

__all__ = ["OpError", "ProjectTables", "Tables", "now_iso"]

STATE_FILE = "ayon_state.json"
_ID = re.compile(r"^[0-9a-f]{32}$")

# Field name -> kind, per entity type, on top of the common ones (id, attrib, data, active,
# status, tags). A trailing "?" allows null; "!" marks a field a create must carry.
_FIELDS: dict[str, dict[str, str]] = {
    "folder": {"name": "str!", "label": "str?", "folderType": "str!", "parentId": "id?",
               "thumbnailId": "id?"},
    "task": {"name": "str!", "label": "str?", "taskType": "str!", "folderId": "id!",
             "assignees": "list", "thumbnailId": "id?"},
    "product": {"name": "str!", "folderId": "id!", "productType": "str!", "productBaseType": "str?"},
    "version": {"version": "int!", "productId": "id!", "taskId": "id?", "thumbnailId": "id?",
                "author": "str?"},
    "representation": {"name": "str!", "versionId": "id!", "files": "files", "traits": "dict?"},
}
_COMMON = {"attrib": "dict", "data": "dict", "active": "bool", "status": "str?", "tags": "list"}

# Foreign keys: field -> (entity type, table name in the server's messages).
_PARENTS: dict[str, dict[str, str]] = {
    "folder": {"parentId": "folder"},
    "task": {"folderId": "folder"},
    "product": {"folderId": "folder"},
    "version": {"productId": "product", "taskId": "task"},
    "representation": {"versionId": "version"},
}
# Unique indexes besides the id, as (fields, holds only among active rows).
_UNIQUE: dict[str, tuple[tuple[str, ...], bool]] = {
    "folder": (("parentId", "name"), True),
    "task": (("folderId", "name"), False),
    "product": (("folderId", "name"), True),
    "version": (("productId", "version"), True),
    "representation": (("versionId", "name"), True),
}
_SNAKE = re.compile(r"(?<!^)(?=[A-Z])")


def now_iso() -> str:
    """A timestamp as the server writes them: ``2026-12-01T07:10:17.495307+00:00``."""
    return datetime.now(timezone.utc).isoformat()


def _snake(name: str) -> str:
    return _SNAKE.sub("_", name).lower()


def _dashed(entity_id: str) -> str:
    """Postgres prints a UUID with dashes; the API speaks 32 hex characters."""
    return str(uuid.UUID(entity_id))


class OpError(Exception):
    """An operation refused: HTTP-like status, the server's errorCode and its detail text."""

    def __init__(self, status: int, code: str | None, detail: str):
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def _invalid(detail: str) -> OpError:
    return OpError(400, "invalid_data", f"Invalid data provided: {detail}")


def _check_kind(entity_type: str, field: str, kind: str, value: Any) -> Any:
    """Validate one top-level field the way the server's pydantic model would (or refuse it)."""
    nullable = kind.endswith("?")
    base = kind.rstrip("?!")
    if value is None:
        if nullable:
            return None
        if base in ("dict", "list", "files", "bool"):
            raise _invalid(f"{entity_type}.{field}: none is not an allowed value")
        raise _invalid(f"{entity_type}.{field}: field required")
    ok = {"str": isinstance(value, str), "int": isinstance(value, int) and not isinstance(value, bool),
          "bool": isinstance(value, bool), "dict": isinstance(value, dict),
          "list": isinstance(value, list) and all(isinstance(v, str) for v in value),
          "id": isinstance(value, str) and bool(_ID.match(value.replace("-", ""))),
          "files": isinstance(value, list) and all(isinstance(f, dict) for f in value)}[base]
    if not ok:
        raise _invalid(f"{entity_type}.{field}: {value!r} is not a valid {base}")
    if base == "id":
        return value.replace("-", "")
    if base == "files":
        return [_check_file(entity_type, i, f) for i, f in enumerate(value)]
    return copy.deepcopy(value)


def _check_file(entity_type: str, index: int, item: dict) -> dict:
    """A representation file: id, name, path, size, hash, hashType (path is required)."""
    if not isinstance(item.get("path"), str):
        raise _invalid(f"{entity_type}.files[{index}].path: field required")
    out = {"id": (item.get("id") or uuid.uuid1().hex).replace("-", ""), "name": item.get("name"),
           "path": item["path"], "size": int(item.get("size") or 0), "hash": item.get("hash"),
           "hashType": item.get("hashType") or "md5"}
    if out["name"] is None:
        out["name"] = out["path"].replace("\\", "/").rsplit("/", 1)[-1]
    return out


def _check_attrib(entity_type: str, attrib: dict, partial: bool) -> dict:
    """Keep the attributes of the entity's scope (the server ignores others); check their types."""
    known = attribute_names(entity_type)
    out = {}
    for name, value in attrib.items():
        kind = known.get(name)
        if kind is None:
            continue
        if value is None:
            if partial:
                out[name] = None  # an update removes it
            continue
        valid = {"string": isinstance(value, (str, int, float)) and not isinstance(value, bool),
                 "integer": isinstance(value, int) and not isinstance(value, bool),
                 "float": isinstance(value, (int, float)) and not isinstance(value, bool),
                 "list_of_strings": isinstance(value, list) and all(isinstance(v, str) for v in value),
                 }.get(kind, True)
        if not valid:
            raise _invalid(f"{entity_type}.attrib.{name}: {value!r} is not a valid {kind}")
        out[name] = str(value) if kind == "string" else value
    return out


class ProjectTables:
    """One project's entities: a working copy that a batch changes and then keeps or drops."""

    def __init__(self, project: dict[str, Any], tables: dict[str, dict[str, dict]], counter: int):
        self.project = project
        self.tables = tables
        self.counter = counter
        self.created = 0

    # -- reading -----------------------------------------------------------------------

    def get(self, entity_type: str, entity_id: str) -> dict | None:
        return self.tables[entity_type].get(entity_id)

    def rows(self, entity_type: str) -> list[dict]:
        """Rows in creation order (the order the real server's cursors follow)."""
        return sorted(self.tables[entity_type].values(), key=lambda r: r["creationOrder"])

    def folder_path(self, folder_id: str | None) -> str:
        names: list[str] = []
        seen = set()
        while folder_id and folder_id not in seen:
            seen.add(folder_id)
            folder = self.tables["folder"].get(folder_id)
            if folder is None:
                break
            names.append(folder["name"])
            folder_id = folder.get("parentId")
        return "/" + "/".join(reversed(names))

    def inherited_attrib(self, folder_id: str | None) -> dict:
        """Project attributes overlaid with each ancestor folder's own, root first (AYON's
        inheritance for folders and tasks)."""
        chain = []
        while folder_id:
            folder = self.tables["folder"].get(folder_id)
            if folder is None:
                break
            chain.append(folder.get("attrib") or {})
            folder_id = folder.get("parentId")
        attrib = dict(self.project["attrib"])
        for own in reversed(chain):
            attrib.update(own)
        return attrib

    # -- writing -----------------------------------------------------------------------

    def create(self, entity_type: str, entity_id: str | None, data: dict, user: str) -> str:
        """Insert one entity or raise OpError; nothing changes when it raises."""
        fields = _FIELDS[entity_type]
        record: dict[str, Any] = {}
        for field, kind in {**fields, **_COMMON}.items():
            if field in data:
                record[field] = _check_kind(entity_type, field, kind, data[field])
            elif kind.endswith("!"):
                raise _invalid(f"{entity_type}.{field}: field required")
        entity_id = (entity_id or data.get("id") or uuid.uuid1().hex).replace("-", "")
        if not _ID.match(entity_id):
            raise _invalid(f"{entity_type}.id: {entity_id!r} is not 32 hexadecimal characters")
        record["id"] = entity_id
        record["attrib"] = _check_attrib(entity_type, record.get("attrib") or {}, partial=False)
        record.setdefault("data", {})
        record.setdefault("tags", [])
        record["active"] = record.get("active", True) is not False
        if entity_type == "version" and not record.get("author"):
            record["author"] = user
        if entity_type == "representation":
            record.setdefault("files", [])
        if entity_type == "task":
            record.setdefault("assignees", [])
        if record.get("status") is None:
            record["status"] = default_status(self.project, entity_type)
        if entity_id in self.tables[entity_type]:
            raise OpError(409, "unique-violation",
                          f"{entity_type.capitalize()} with id '{_dashed(entity_id)}' already exists.")
        self._check_unique(entity_type, record)
        self._check_references(entity_type, record)
        now = now_iso()
        self.counter += 1
        record.update(createdAt=now, updatedAt=now, createdBy=user, updatedBy=user,
                      creationOrder=self.counter)
        self.tables[entity_type][entity_id] = record
        self.created += 1
        return entity_id

    def update(self, entity_type: str, entity_id: str, data: dict, user: str) -> None:
        """Patch one entity (attrib/data/files/traits merged key by key, None removes a key)."""
        current = self.tables[entity_type].get((entity_id or "").replace("-", ""))
        if current is None:
            raise OpError(404, "not-found", "Entity not found")
        kinds = {**_FIELDS[entity_type], **_COMMON}
        patch: dict[str, Any] = {}
        for field, value in data.items():
            if field in kinds:
                patch[field] = _check_kind(entity_type, field, kinds[field].rstrip("!"), value)
        if "attrib" in patch:
            patch["attrib"] = _check_attrib(entity_type, patch["attrib"], partial=True)
        updated = copy.deepcopy(current)
        for field, value in patch.items():
            if field in ("attrib", "data", "traits") and isinstance(value, dict):
                merged = dict(updated.get(field) or {})
                for key, sub in value.items():
                    if sub is None:
                        merged.pop(key, None)
                    else:
                        merged[key] = sub
                updated[field] = merged
            elif field == "status" and value is None:
                updated[field] = default_status(self.project, entity_type)
            else:
                updated[field] = value
        self._check_unique(entity_type, updated)
        self._check_references(entity_type, updated)
        updated.update(updatedAt=now_iso(), updatedBy=user)
        self.tables[entity_type][current["id"]] = updated

    def delete(self, entity_type: str, entity_id: str) -> None:
        """Delete one entity with what the schema cascades to (a folder with products is refused)."""
        entity_id = (entity_id or "").replace("-", "")
        if entity_id not in self.tables[entity_type]:
            raise OpError(404, "not-found", "Entity not found")
        if entity_type == "folder":
            subtree = self._subtree(entity_id)
            if any(p["folderId"] in subtree for p in self.tables["product"].values()):
                raise OpError(409, "constraint-violation",
                              "Unable to delete a folder with products or tasks.")
            for task_id in [t["id"] for t in self.tables["task"].values() if t["folderId"] in subtree]:
                self.delete("task", task_id)
            for folder_id in subtree:
                self.tables["folder"].pop(folder_id, None)
            return
        self.tables[entity_type].pop(entity_id)
        if entity_type == "task":
            for version in self.tables["version"].values():
                if version.get("taskId") == entity_id:
                    version["taskId"] = None
        children = {"product": ("version", "productId"), "version": ("representation", "versionId")}
        if entity_type in children:
            child_type, field = children[entity_type]
            for child_id in [c["id"] for c in self.tables[child_type].values() if c[field] == entity_id]:
                self.delete(child_type, child_id)

    # -- constraints -------------------------------------------------------------------

    def _subtree(self, folder_id: str) -> set[str]:
        found = {folder_id}
        grew = True
        while grew:
            grew = False
            for folder in self.tables["folder"].values():
                if folder.get("parentId") in found and folder["id"] not in found:
                    found.add(folder["id"])
                    grew = True
        return found

    def _check_unique(self, entity_type: str, record: dict) -> None:
        fields, active_only = _UNIQUE[entity_type]
        if active_only and not record.get("active", True):
            return

        def key(row: dict) -> tuple:
            return tuple(str(row.get(f)).lower() if f == "name" else row.get(f) for f in fields)

        mine = key(record)
        for other in self.tables[entity_type].values():
            if other["id"] == record["id"] or (active_only and not other.get("active", True)):
                continue
            if key(other) == mine:
                names = [("lower(name::text)" if f == "name" else _snake(f)) for f in fields
                         if not (f == "parentId" and record.get(f) is None)]
                values = [_dashed(v) if f.endswith("Id") else str(v).lower() if f == "name" else str(v)
                          for f, v in zip(fields, mine) if not (f == "parentId" and v is None)]
                raise OpError(409, "unique-violation",
                              f"{entity_type.capitalize()} with {', '.join(names)} "
                              f"'{', '.join(values)}' already exists.")

    def _check_references(self, entity_type: str, record: dict) -> None:
        for field, parent_type in _PARENTS[entity_type].items():
            value = record.get(field)
            if value is not None and value not in self.tables[parent_type]:
                raise OpError(409, "foreign-key-violation",
                              f"{_snake(field)} '{_dashed(value)}' is not present in table "
                              f"\"{parent_type}s\".")
        project = self.project
        named = [("status", "statuses", project["statuses"])]
        if entity_type == "folder":
            named.append(("folderType", "folder_types", project["folderTypes"]))
        if entity_type == "task":
            named.append(("taskType", "task_types", project["taskTypes"]))
        for field, table, allowed in named:
            value = record.get(field)
            if value is not None and value not in {item["name"] for item in allowed}:
                raise OpError(409, "foreign-key-violation",
                              f"{_snake(field)} '{value}' is not present in table \"{table}\".")
        if entity_type == "product":
            # The server registers a product type the first time a product uses it.
            if record["productType"] not in {t["name"] for t in project["productTypes"]}:
                project["productTypes"].append({"name": record["productType"],
                                                "baseType": record["productType"],
                                                "color": "#cccccc", "icon": "deployed_code"})


class Tables:
    """Every project, persisted in ``<data dir>/ayon_state.json`` (or in memory without a dir)."""

    def __init__(self, data_dir: str | Path | None):
        self.path = Path(data_dir) / STATE_FILE if data_dir is not None else None
        self.lock = threading.RLock()
        state = read_json(self.path, None) if self.path else None
        self.state: dict[str, Any] = state or {"projects": {}, "counter": 0}
        self.save()

    def save(self) -> None:
        if self.path is not None:
            atomic_write_json(self.path, self.state)

    def project(self, name: str) -> dict | None:
        entry = self.state["projects"].get(name)
        return entry["project"] if entry else None

    def project_names(self) -> list[str]:
        return sorted(self.state["projects"])

    def create_project(self, name: str, **anatomy: Any) -> dict:
        """Create a project with its anatomy (an existing one is left as it is) and return it."""
        with self.lock:
            if name not in self.state["projects"]:
                self.state["projects"][name] = {
                    "project": new_project(name, now=now_iso(), **anatomy),
                    "tables": {t: {} for t in ENTITY_TYPES}}
                self.save()
            return copy.deepcopy(self.project(name))

    def delete_project(self, name: str) -> bool:
        with self.lock:
            gone = self.state["projects"].pop(name, None) is not None
            self.save()
            return gone

    def read(self, name: str) -> ProjectTables | None:
        """A snapshot for readers (GraphQL, REST GETs); changes to it are never kept."""
        with self.lock:
            entry = self.state["projects"].get(name)
            if entry is None:
                return None
            return ProjectTables(entry["project"], entry["tables"], self.state["counter"])

    def begin(self, name: str) -> ProjectTables | None:
        """A working copy for one batch; :meth:`keep` makes it the state. Call with the lock held."""
        entry = self.state["projects"].get(name)
        if entry is None:
            return None
        return ProjectTables(copy.deepcopy(entry["project"]), copy.deepcopy(entry["tables"]),
                             self.state["counter"])

    def keep(self, name: str, work: ProjectTables) -> None:
        """Make a batch's working copy the state and write it to disk (call with the lock held)."""
        self.state["projects"][name] = {"project": work.project, "tables": work.tables}
        self.state["counter"] = work.counter
        self.save()

    def reset(self) -> None:
        with self.lock:
            self.state = {"projects": {}, "counter": 0}
            self.save()
