"""Catalogues by name: the built-ins and those a studio installs as entry points.

A studio adds its own with an entry point in its package's pyproject.toml::

    [project.entry-points."atomic_publish.catalogs"]
    shotgrid = "studio_pipeline.catalog:ShotGridCatalog"

Which catalogue a worker uses is a worker setting, never a manifest field (like SourceRoots):
a manifest cannot send a publish somewhere the farm did not configure.

Precedence: the ``name`` argument (``--catalog``, or the plugin configuration's ``Catalog`` that
the Deadline plugin hands over) > ``ATOMIC_PUBLISH_CATALOG`` > ``openpype`` (the default, today's
behaviour). Each backend then reads its own settings (``from_environment``): ``openpype`` the
state store's MongoClient and ``ATOMIC_PUBLISH_DATABASE``; ``ayon`` ``AYON_SERVER_URL``, the API
key from ``AYON_API_KEY`` or the plugin's private secrets file (``ATOMIC_PUBLISH_SECRETS_FILE``),
and ``AYON_VERSION_STATUS``.
"""
from __future__ import annotations

import importlib
import os
from importlib import metadata
from typing import Any, Mapping

from ..errors import ArgumentError, PermanentError
from .base import Catalog

ENTRY_POINT_GROUP = "atomic_publish.catalogs"
ENV_NAME = "ATOMIC_PUBLISH_CATALOG"
DEFAULT = "openpype"
BUILTIN = {
    "openpype": "atomic_publish.wrapper.catalogs.openpype:OpenPypeCatalog",
    "ayon": "atomic_publish.wrapper.catalogs.ayon:AyonCatalog",
}


def _load(target: str) -> type[Catalog]:
    """Import a backend only when it is chosen: ``ayon_api`` is imported by ``ayon`` alone."""
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, Catalog)):
        raise TypeError(f"{target} is not a Catalog subclass")
    return cls


def available() -> dict[str, str]:
    """Name -> import target of every catalogue this installation knows."""
    found = dict(BUILTIN)
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def chosen_name(name: str | None = None, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(the catalogue's name, where it came from), by the precedence above; ArgumentError if unknown."""
    env = os.environ if environ is None else environ
    if name:
        where = "--catalog"
    elif env.get(ENV_NAME):
        name, where = env[ENV_NAME], ENV_NAME
    else:
        name, where = DEFAULT, "the default"
    name = name.strip().lower()
    known = available()
    if name not in known:
        problem = f"unknown catalogue {name!r}; available: {', '.join(sorted(known))}"
        todo = "set Catalog in the AtomicPublish plugin configuration (or ATOMIC_PUBLISH_CATALOG) to one of them"
        if where == "--catalog":
            raise ArgumentError("--catalog", problem, todo)
        raise PermanentError(f"{ENV_NAME}: {problem}", todo)
    return name, where


def from_environment(name: str | None = None, *, client: Any = None, database: str | None = None,
                     environ: Mapping[str, str] | None = None) -> Catalog:
    """Build the chosen catalogue. ``client`` is the state store's MongoClient (the ``openpype``
    backend writes through it; others ignore it), ``database`` the OpenPype database name."""
    chosen, _where = chosen_name(name, environ)
    cls = _load(available()[chosen])
    return cls.from_environment(client=client, database=database, environ=environ)
