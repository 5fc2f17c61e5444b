"""Kept so that existing imports work: the OpenPype schema moved to ``catalogs/openpype.py`` and the
rootless-path helpers, which every catalogue and integration uses, to ``layout.py`` (issue 15).

The functions are the same and write byte-identical documents (``tests/catalogs``)."""
from __future__ import annotations

from .catalogs.openpype import parent_documents, version_documents  # noqa: F401
from .layout import ROOT_NAME, context_roots, resolve_rootless, rootless  # noqa: F401

__all__ = ["ROOT_NAME", "context_roots", "parent_documents", "resolve_rootless", "rootless", "version_documents"]
