"""What a new project holds before anything is published: attributes, statuses, types, roots.

Modelled on the default anatomy of a real AYON 1.15 server (the shapes and the default values
of the recorded ``GET /api/projects/{name}`` and ``GET /api/attributes`` answers), cut down to
what a farm publish and the client's queries use. Seeding a project copies these lists, so a
test may change its own project's statuses without touching another's.
"""
from __future__ import annotations

import copy
from typing import Any

__all__ = ["ATTRIBUTES", "DEFAULT_ROOTS", "ENTITY_TYPES", "attribute_names", "default_status",
           "new_project"]

#: The project-level entity types the server stores (the ``entityType`` of an operation).
ENTITY_TYPES = ("folder", "task", "product", "version", "representation")

_HIERARCHY = ["project", "folder", "task"]
_FRAMED = ["project", "folder", "version", "representation", "task"]

#: (name, scope, type, default): the built-in attributes a publish and the client touch.
_ATTRIBUTE_ROWS: list[tuple[str, list[str], str, Any]] = [
    ("priority", _HIERARCHY, "string", "normal"),
    ("fps", _FRAMED, "float", 25),
    ("resolutionWidth", _FRAMED, "integer", 1920),
    ("resolutionHeight", _FRAMED, "integer", 1080),
    ("pixelAspect", _FRAMED, "float", 1.0),
    ("clipIn", _FRAMED, "integer", 1),
    ("clipOut", _FRAMED, "integer", 1),
    ("frameStart", _FRAMED, "integer", 1001),
    ("frameEnd", _FRAMED, "integer", 1001),
    ("handleStart", _FRAMED, "integer", 0),
    ("handleEnd", _FRAMED, "integer", 0),
    ("fullName", ["user"], "string", None),
    ("productGroup", ["product"], "string", None),
    ("intent", ["version"], "string", None),
    ("machine", ["version"], "string", None),
    ("source", ["version"], "string", None),
    ("comment", ["version"], "string", None),
    ("site", ["version"], "string", None),
    ("families", ["version"], "list_of_strings", None),
    ("colorSpace", ["version"], "string", None),
    ("path", ["representation"], "string", None),
    ("template", ["representation"], "string", None),
    ("extension", ["representation", "workfile"], "string", None),
    ("description", ["project", "folder", "task", "product", "version", "representation", "workfile"],
     "string", None),
]

#: ``GET /api/attributes`` items, in the real server's shape.
ATTRIBUTES: list[dict[str, Any]] = [
    {"name": name, "position": position, "scope": scope, "builtin": True,
     "data": {"type": kind, "title": name, "default": default, "inherit": "project" in scope}}
    for position, (name, scope, kind, default) in enumerate(_ATTRIBUTE_ROWS)
]

_STATUSES = [
    # name, short, state, icon, color, scope: the real default anatomy, in its order. The
    # first status whose scope holds an entity type is that type's default status.
    ("Not ready", "NRD", "not_started", "fiber_new", "#3d444f", ["folder", "product", "task"]),
    ("Ready to start", "RDY", "not_started", "timer", "#bababa", ["folder", "task"]),
    ("In progress", "PRG", "in_progress", "play_arrow", "#5bb8f5", ["folder", "task"]),
    ("Pending review", "RVW", "in_progress", "visibility", "#ffcd19", ["folder", "version", "task"]),
    ("Approved", "APP", "done", "task_alt", "#08f094", ["folder", "product", "version", "task"]),
    ("On hold", "HLD", "blocked", "back_hand", "#fa6e46", ["folder", "task"]),
    ("Omitted", "OMT", "blocked", "block", "#cb1a1a",
     ["folder", "product", "version", "representation", "task"]),
]
_FOLDER_TYPES = [("Folder", "", "folder"), ("Library", "lib", "category"), ("Asset", "", "smart_toy"),
                 ("Episode", "ep", "live_tv"), ("Sequence", "sq", "theaters"), ("Shot", "sh", "movie")]
_TASK_TYPES = [("Generic", "gener", "task_alt"), ("Layout", "lay", "nature_people"),
               ("Animation", "anim", "directions_run"), ("FX", "fx", "fireplace"),
               ("Lighting", "lgt", "highlight"), ("Compositing", "comp", "layers")]
_PRODUCT_TYPES = ["image", "render", "review", "plate", "camera", "model", "texture", "look", "rig",
                  "animation", "cache", "layout", "workfile"]

# The default link types (links themselves are not modelled).
_LINK_TYPES = [("generative", "version", "#3f67de"), ("breakdown", "folder", "#6edd72"),
               ("reference", "version", "#d94383"), ("template", "folder", "#fff824")]

#: Anatomy roots of a new project: ``{root[work]}`` on each platform.
DEFAULT_ROOTS = {"work": {"windows": "C:/projects", "linux": "/mnt/share/projects",
                          "darwin": "/Volumes/projects"}}


def attribute_names(entity_type: str) -> dict[str, str]:
    """Attribute name -> type for *entity_type*; the server drops any other attrib key."""
    return {a["name"]: a["data"]["type"] for a in ATTRIBUTES if entity_type in a["scope"]}


def new_project(name: str, code: str | None = None, roots: dict | None = None,
                statuses: list[dict] | None = None, product_types: list[str] | None = None,
                folder_types: list[str] | None = None, task_types: list[str] | None = None,
                attrib: dict | None = None, now: str = "") -> dict[str, Any]:
    """The stored project record, with the default anatomy where an argument is None."""
    default_attrib = {a["name"]: a["data"]["default"] for a in ATTRIBUTES
                      if "project" in a["scope"] and a["data"]["default"] is not None}
    project_attrib = {**default_attrib, **(attrib or {})}
    return {
        "name": name,
        "code": code or name[:10],
        "library": False,
        "active": True,
        "folderTypes": [{"name": n, "shortName": s, "color": "#cccccc", "icon": i}
                        for n, s, i in _FOLDER_TYPES if folder_types is None or n in folder_types]
                       + [{"name": n, "shortName": "", "color": "#cccccc", "icon": "folder"}
                          for n in (folder_types or []) if n not in {f[0] for f in _FOLDER_TYPES}],
        "taskTypes": [{"name": n, "shortName": s, "color": "#5c6c79", "icon": i}
                      for n, s, i in _TASK_TYPES if task_types is None or n in task_types]
                     + [{"name": n, "shortName": n.lower()[:5], "color": "#5c6c79", "icon": "task_alt"}
                        for n in (task_types or []) if n not in {t[0] for t in _TASK_TYPES}],
        "linkTypes": [{"name": f"{kind}|{side}|{side}", "linkType": kind, "inputType": side,
                       "outputType": side, "data": {"color": color, "style": "solid"}}
                      for kind, side, color in _LINK_TYPES],
        "statuses": copy.deepcopy(statuses) if statuses is not None else [
            {"name": n, "shortName": s, "state": st, "icon": i, "color": c, "scope": list(sc)}
            for n, s, st, i, c, sc in _STATUSES],
        "tags": [],
        "productTypes": [{"name": n, "baseType": n, "color": "#cccccc", "icon": "deployed_code"}
                         for n in (product_types or _PRODUCT_TYPES)],
        "config": {"roots": copy.deepcopy(roots if roots is not None else DEFAULT_ROOTS),
                   "templates": {"common": {"version_padding": 3, "frame_padding": 4,
                                            "version": "v{version:0>{@version_padding}}",
                                            "frame": "{frame:0>{@frame_padding}}"}}},
        "attrib": project_attrib,
        "ownAttrib": sorted(project_attrib),
        "data": {},
        "createdAt": now,
        "updatedAt": now,
    }


def default_status(project: dict[str, Any], entity_type: str) -> str | None:
    """The first status of the project whose scope holds *entity_type* (None if there is none)."""
    for status in project["statuses"]:
        if entity_type in (status.get("scope") or []):
            return status["name"]
    return None
