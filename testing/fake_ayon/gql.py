"""``POST /graphql``: the part of AYON's GraphQL schema that ``ayon_api`` queries.

The client builds its reads (``get_folders``, ``get_tasks``, ``get_products``,
``get_versions``, ``get_representations`` and every ``get_*_by_*`` built on them) as GraphQL
queries with variables typed ``[String!]``, ``Boolean`` and ``[Int!]``, paginated with
``first: 300`` and an ``after`` cursor (``ayon_api/graphql_queries.py``). This module declares
just those fields and arguments, with the same names and types, and lets ``graphql-core``
parse, validate and execute the queries. A field or filter that is not declared here fails
validation: a client that needs more gets an error, never a silent empty answer.

As the real server does, it applies no ``active`` filter (the client filters active rows
itself), returns ``data``/``allAttrib`` as JSON strings, a file ``size`` as a string, and
cursors that are the base64 of ``[creation order]``.
"""
from __future__ import annotations

import base64
import json
from typing import Any, Callable

from graphql import GraphQLError, build_schema, graphql_sync

from .tables import ProjectTables, Tables

__all__ = ["SDL", "execute"]

# hasLinks is declared so that the client's explicit ``hasLinks: null`` validates; any other
# value is refused (links are not modelled here).
_PAGE = "hasLinks: HasLinksFilter, first: Int, after: String"
_COMMON = """
  id: String!
  active: Boolean!
  status: String!
  tags: [String!]!
  data: String
  allAttrib: String!
  createdAt: String!
  updatedAt: String!
"""
SDL = f"""
type Query {{
  project(name: String!): ProjectNode
  projects(name: String, includeSkeleton: Boolean, {_PAGE}): ProjectsConnection!
}}
enum HasLinksFilter {{ NONE  ANY  IN  OUT  BOTH }}
type PageInfo {{ hasNextPage: Boolean!  hasPreviousPage: Boolean!  startCursor: String  endCursor: String }}
type ProductTypeNode {{ name: String!  baseType: String  color: String  icon: String }}
type ProjectNode {{
  name: String!
  projectName: String!
  code: String!
  active: Boolean!
  library: Boolean!
  productTypes: [ProductTypeNode!]!
  folders(ids: [String!], parentIds: [String!], names: [String!], paths: [String!],
          folderTypes: [String!], statuses: [String!], tags: [String!], {_PAGE}): FoldersConnection!
  tasks(ids: [String!], names: [String!], taskTypes: [String!], folderIds: [String!],
        statuses: [String!], tags: [String!], assignees: [String!], {_PAGE}): TasksConnection!
  products(ids: [String!], names: [String!], folderIds: [String!], productTypes: [String!],
           statuses: [String!], tags: [String!], {_PAGE}): ProductsConnection!
  versions(ids: [String!], productIds: [String!], versions: [Int!], taskIds: [String!],
           statuses: [String!], tags: [String!], heroOnly: Boolean, latestOnly: Boolean,
           heroOrLatestOnly: Boolean, {_PAGE}): VersionsConnection!
  representations(ids: [String!], versionIds: [String!], names: [String!], statuses: [String!],
                  tags: [String!], {_PAGE}): RepresentationsConnection!
}}
type FolderNode {{ {_COMMON}
  name: String!  label: String  folderType: String!  path: String!  parentId: String
  thumbnailId: String  ownAttrib: [String!]!
}}
type TaskNode {{ {_COMMON}
  name: String!  label: String  taskType: String!  folderId: String!  assignees: [String!]!
  thumbnailId: String  ownAttrib: [String!]!
}}
type ProductNode {{ {_COMMON}
  name: String!  folderId: String!  productType: String!  productBaseType: String
}}
type VersionNode {{ {_COMMON}
  version: Int!  name: String!  productId: String!  taskId: String  thumbnailId: String  author: String
}}
type FileNode {{ id: String!  name: String  path: String!  hash: String  hashType: String  size: String! }}
type RepresentationNode {{ {_COMMON}
  name: String!  versionId: String!  files: [FileNode!]!  context: String  traits: String
}}
""" + "".join(
    f"type {name}Edge {{ node: {name}Node!  cursor: String }}\n"
    f"type {plural}Connection {{ edges: [{name}Edge!]!  pageInfo: PageInfo! }}\n"
    for name, plural in (("Project", "Projects"), ("Folder", "Folders"), ("Task", "Tasks"), ("Product", "Products"),
                         ("Version", "Versions"), ("Representation", "Representations")))

_SCHEMA = build_schema(SDL)


def _cursor(row: dict) -> str:
    return base64.b64encode(json.dumps([row["creationOrder"]]).encode()).decode()


def _after(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        return int(json.loads(base64.b64decode(cursor))[0])
    except (ValueError, TypeError, IndexError) as exc:
        raise GraphQLError(f"Invalid cursor {cursor!r}") from exc


def _connection(rows: list[dict], node: Callable[[dict], dict], first: int | None,
                after: str | None, links: Any = None) -> dict:
    if links is not None:
        raise GraphQLError("hasLinks is not supported by the local AYON server")
    start = _after(after)
    rows = [r for r in rows if r["creationOrder"] > start]
    page = rows if first is None else rows[:max(first, 0)]
    return {"edges": [{"node": node(r), "cursor": _cursor(r)} for r in page],
            "pageInfo": {"hasNextPage": len(page) < len(rows), "hasPreviousPage": start > 0,
                         "startCursor": _cursor(page[0]) if page else None,
                         "endCursor": _cursor(page[-1]) if page else None}}


def _keep(rows: list[dict], **filters: Any) -> list[dict]:
    """Rows whose field is in the given list, for every filter that was passed (None = no filter)."""
    for field, wanted in filters.items():
        if wanted is not None:
            wanted = set(wanted)
            rows = [r for r in rows if r.get(field) in wanted]
    return rows


def _tagged(rows: list[dict], tags: list[str] | None) -> list[dict]:
    return rows if tags is None else [r for r in rows if set(tags) <= set(r.get("tags") or [])]


def _json_or_null(value: dict | None) -> str | None:
    return json.dumps(value, separators=(",", ":")) if value else None


class _Project:
    """Resolvers over one snapshot of a project's tables."""

    def __init__(self, work: ProjectTables):
        self.work = work
        project = work.project
        self.root = {"name": project["name"], "projectName": project["name"], "code": project["code"],
                     "active": project["active"], "library": project["library"],
                     "productTypes": self.product_types, "folders": self.folders,
                     "tasks": self.tasks, "products": self.products, "versions": self.versions,
                     "representations": self.representations}

    def product_types(self, info) -> list[dict]:
        """The product types the project's products use (as the recorded server answered)."""
        used = {p["productType"] for p in self.work.rows("product")}
        return [t for t in self.work.project["productTypes"] if t["name"] in used]

    def _common(self, row: dict, all_attrib: dict) -> dict:
        return {**row, "data": _json_or_null(row.get("data")),
                "allAttrib": json.dumps(all_attrib, separators=(",", ":"))}

    # -- nodes -------------------------------------------------------------------------

    def _folder(self, row: dict) -> dict:
        return {**self._common(row, self.work.inherited_attrib(row["id"])),
                "path": self.work.folder_path(row["id"]), "ownAttrib": sorted(row.get("attrib") or {})}

    def _task(self, row: dict) -> dict:
        attrib = {**self.work.inherited_attrib(row["folderId"]), **(row.get("attrib") or {})}
        return {**self._common(row, attrib), "ownAttrib": sorted(row.get("attrib") or {})}

    def _own(self, row: dict) -> dict:
        return self._common(row, row.get("attrib") or {})

    def _version(self, row: dict) -> dict:
        number = row["version"]
        return {**self._own(row), "name": f"v{number:03d}" if number >= 0 else "HERO"}

    def _representation(self, row: dict) -> dict:
        files = [{**f, "size": str(f.get("size", 0))} for f in row.get("files") or []]
        # as ayon-backend's representation_from_record: ``context`` is ``data.context`` serialized
        # (a representation has no top-level context: the operations endpoint keeps it in data)
        context = (row.get("data") or {}).get("context", {})
        return {**self._own(row), "files": files, "context": json.dumps(context),
                "traits": _json_or_null(row.get("traits"))}

    # -- connections -------------------------------------------------------------------

    def folders(self, info, ids=None, parentIds=None, names=None, paths=None, folderTypes=None,
                statuses=None, tags=None, hasLinks=None, first=None, after=None) -> dict:
        rows = _keep(self.work.rows("folder"), id=ids, name=names, folderType=folderTypes,
                     status=statuses)
        if parentIds is not None:
            parents = {None if p == "root" else p for p in parentIds}
            rows = [r for r in rows if r.get("parentId") in parents]
        if paths is not None:
            wanted = {p.strip("/") for p in paths}
            rows = [r for r in rows if self.work.folder_path(r["id"]).strip("/") in wanted]
        return _connection(_tagged(rows, tags), self._folder, first, after, hasLinks)

    def tasks(self, info, ids=None, names=None, taskTypes=None, folderIds=None, statuses=None,
              tags=None, assignees=None, hasLinks=None, first=None, after=None) -> dict:
        rows = _keep(self.work.rows("task"), id=ids, name=names, taskType=taskTypes,
                     folderId=folderIds, status=statuses)
        if assignees is not None:
            rows = [r for r in rows if set(assignees) <= set(r.get("assignees") or [])]
        return _connection(_tagged(rows, tags), self._task, first, after, hasLinks)

    def products(self, info, ids=None, names=None, folderIds=None, productTypes=None,
                 statuses=None, tags=None, hasLinks=None, first=None, after=None) -> dict:
        rows = _keep(self.work.rows("product"), id=ids, name=names, folderId=folderIds,
                     productType=productTypes, status=statuses)
        return _connection(_tagged(rows, tags), self._own, first, after, hasLinks)

    def versions(self, info, ids=None, productIds=None, versions=None, taskIds=None,
                 statuses=None, tags=None, heroOnly=None, latestOnly=None, heroOrLatestOnly=None,
                 hasLinks=None, first=None, after=None) -> dict:
        everything = self.work.rows("version")
        rows = _tagged(_keep(everything, id=ids, productId=productIds, version=versions,
                             taskId=taskIds, status=statuses), tags)
        latest: dict[str, dict] = {}
        heroes: dict[str, dict] = {}
        for row in everything:  # latest = highest number, ties to the newest; inactive ones count
            if row["version"] < 0:
                heroes.setdefault(row["productId"], row)
            elif row["version"] >= latest.get(row["productId"], {"version": -1})["version"]:
                latest[row["productId"]] = row
        if latestOnly:
            rows = [r for r in rows if latest.get(r["productId"]) is r]
        elif heroOnly:
            rows = [r for r in rows if r["version"] < 0]
        elif heroOrLatestOnly:
            rows = [r for r in rows if heroes.get(r["productId"], latest.get(r["productId"])) is r]
        return _connection(rows, self._version, first, after, hasLinks)

    def representations(self, info, ids=None, versionIds=None, names=None, statuses=None,
                        tags=None, hasLinks=None, first=None, after=None) -> dict:
        rows = _keep(self.work.rows("representation"), id=ids, versionId=versionIds, name=names,
                     status=statuses)
        return _connection(_tagged(rows, tags), self._representation, first, after, hasLinks)


def execute(tables: Tables, body: Any) -> dict:
    """Run one GraphQL request body (``query``, ``variables``, ``operationName``)."""
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        return {"data": None, "errors": [{"message": "the body must hold a 'query' string"}]}

    def project(info, name: str) -> dict:
        work = tables.read(name)
        if work is None:
            raise GraphQLError(f"Project {name} not found")
        return _Project(work).root

    def projects(info, name=None, includeSkeleton=None, hasLinks=None, first=None, after=None) -> dict:
        names = [n for n in tables.project_names() if name is None or n == name]
        rows = [{"creationOrder": i, "name": n} for i, n in enumerate(names, 1)]
        return _connection(rows, lambda r: project(info, r["name"]), first, after, hasLinks)

    result = graphql_sync(_SCHEMA, body["query"], root_value={"project": project, "projects": projects},
                          variable_values=body.get("variables") or None,
                          operation_name=body.get("operationName"))
    out: dict[str, Any] = {"data": result.data}
    if result.errors:
        out["errors"] = [error.formatted for error in result.errors]
    return out
