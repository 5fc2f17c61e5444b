"""Run the manifest's integrations at the right points of the lifecycle.

Receipts (gate) and the outbox (notify) live in the record, so every step knows what an
earlier attempt already did: prepared integrations are not prepared again, committed ones
not committed again, and a rollback compensates exactly what was prepared.

A publish of several products (a metadata JSON with several instances) runs every integration
once per product, each with its own context (number, folder, files, version id) and its own
receipts and outbox entries: product 0's at the top of the record (``receipts.{id}``,
``outbox.{id}``, where a one-product publish keeps them), product i's under
``extra_products.{i}.receipts.{id}`` / ``extra_products.{i}.outbox.{id}`` (``R.product_views``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..idempotency.keys import object_id
from . import failpoints, progress
from .documents import rootless
from .errors import TRANSIENT, ManifestError, PublishError
from .integrations import registry
from .integrations.base import GATE, NOTIFY, Context, Integration, PublishedFile
from .layout import plan_files
from .manifest import Manifest, parse_manifest
from .staging import file_id

Retry = Callable[..., Any]
Write = Callable[[dict[str, Any], str], None]
VersionId = Callable[[tuple[str, ...]], str]
Mark = Callable[[str, dict[str, Any]], bool]


def build(manifest: Manifest) -> list[Integration]:
    """The manifest's integrations, validated (ManifestError names the entry)."""
    made: list[Integration] = []
    seen: set[str] = set()
    for i, entry in enumerate(manifest.integrations):
        integration = registry.create(i, entry)
        if integration.id in seen:
            raise ManifestError(f"integrations[{i}].id", f"{integration.id!r} is declared twice; give each an 'id'")
        seen.add(integration.id)
        made.append(integration)
    return made


def recorded_products(rec: dict[str, Any]) -> list[Manifest]:
    """Every product's manifest as the record holds it (product 0 at the top, then
    ``extra_products``), for the tools that work from the record alone (deliver, abandon)."""
    from ..idempotency.records import product_views

    if not rec.get("manifest_json"):
        raise ManifestError("manifest_json", "the record holds no manifest (written by an older atomic-publish)",
                            "deliver or undo its integrations by hand in the systems they reach")
    return [parse_manifest(json.loads(view["manifest_json"])) for view in product_views(rec)
            if view.get("manifest_json")]


def _openpype_version_id(parts: tuple[str, ...]) -> str:
    return str(object_id("version", *parts))


@dataclass(frozen=True)
class Product:
    """One product of the publish as the integrations see it: where its fields are in the record
    and what its deterministic ids derive from (``(key,)`` alone, ``(key, product)`` among several,
    as the catalogue's entries)."""

    index: int
    manifest: Manifest
    id_parts: tuple[str, ...]
    count: int

    @property
    def prefix(self) -> str:
        return "" if self.index == 0 else f"extra_products.{self.index}."

    def view(self, rec: dict[str, Any], create: bool = False) -> dict[str, Any]:
        """This product's fields in ``rec`` (the record itself for product 0)."""
        if self.index == 0:
            return rec
        if create:
            return rec.setdefault("extra_products", {}).setdefault(str(self.index), {})
        return (rec.get("extra_products") or {}).get(str(self.index)) or {}

    def label(self, ident: str) -> str:
        """An integration of this product, in messages and in the pending list."""
        return ident if self.count == 1 else f"{ident} of {self.manifest.subset}"


def products_of(manifests: Sequence[Manifest], key: str) -> list[Product]:
    several = len(manifests) > 1
    return [Product(i, m, (key, m.subset) if several else (key,), len(manifests)) for i, m in enumerate(manifests)]


def context(product: Product, key: str, rec: dict[str, Any], integration: Integration,
            version_id: VersionId = _openpype_version_id) -> Context:
    """What ``integration`` sees of ``product``: its own number, folder, files and version id."""
    view = product.view(rec)
    manifest, final_dir, number = product.manifest, view["final_dir"], int(view["version"])
    files = []
    entries = rec.get("files") or {}  # the staged entries of every product, by file id
    for p in plan_files(manifest, number):
        e = entries.get(file_id(p.name), {})
        path = os.path.join(final_dir, p.name)
        files.append(PublishedFile(p.representation, p.name, path, rootless(path, manifest),
                                   int(e.get("size", 0)), e.get("hash", ""), p.frame))
    return Context(key=key, job_id=rec.get("job_id", ""), task_id=str(rec.get("task_id", "")), manifest=manifest,
                   version=number, final_dir=final_dir, final_rootless=rootless(final_dir, manifest),
                   files=tuple(files),
                   version_document_id=version_id(product.id_parts), settings=integration.settings,
                   id_parts=product.id_parts, product_index=product.index, product_count=product.count)


class Runner:
    """The integration steps of one attempt, over every product of the publish."""

    def __init__(self, integrations: list[Integration], products: Sequence[Manifest], key: str, retry: Retry,
                 write: Write, version_id: VersionId = _openpype_version_id):
        self.integrations, self.key = integrations, key
        self.products = products_of(products, key)
        self.retry, self.write, self.version_id = retry, write, version_id

    def gates(self) -> list[Integration]:
        return [i for i in self.integrations if i.phase == GATE]

    def notifiers(self) -> list[Integration]:
        return [i for i in self.integrations if i.phase == NOTIFY]

    def _context(self, product: Product, rec: dict[str, Any], integ: Integration) -> Context:
        return context(product, self.key, rec, integ, self.version_id)

    def prepare_all(self, rec: dict[str, Any]) -> None:
        """Prepare every gate of every product (product 0 first); a receipt already prepared by an
        earlier attempt is kept, so a retry after a crash between two products creates nothing twice."""
        for product in self.products:
            receipts = product.view(rec, create=True).setdefault("receipts", {})
            for integ in self.gates():
                if (receipts.get(integ.id) or {}).get("state") in ("prepared", "committed"):
                    continue
                where, label = f"{product.prefix}receipts.{integ.id}", product.label(integ.id)
                progress.status(f"integration {label}: prepare")
                if integ.id not in receipts:  # a prepare that fails halfway must still be compensated
                    receipts[integ.id] = {"name": integ.name, "phase": GATE, "state": "preparing", "receipt": {}}
                    self.write({"$set": {where: receipts[integ.id]}}, f"note the prepare of {label}")
                receipt = self.retry(f"prepare integration {label}", integ.prepare,
                                     self._context(product, rec, integ))
                entry = {"name": integ.name, "phase": GATE, "state": "prepared", "receipt": receipt}
                self.write({"$set": {where: entry}}, f"save the receipt of {label}")
                receipts[integ.id] = entry
                failpoints.hit("integrate.prepare")

    def commit_all(self, rec: dict[str, Any]) -> None:
        """Commit every prepared gate of every product, after the versions are visible."""
        for product in self.products:
            receipts = product.view(rec, create=True).setdefault("receipts", {})
            for integ in self.gates():
                entry = receipts.get(integ.id) or {}
                if entry.get("state") == "committed":
                    continue
                where, label = f"{product.prefix}receipts.{integ.id}", product.label(integ.id)
                progress.status(f"integration {label}: commit")
                receipt = self.retry(f"commit integration {label}", integ.commit,
                                     self._context(product, rec, integ), entry.get("receipt") or {})
                entry = {**entry, "state": "committed", "receipt": receipt}
                self.write({"$set": {where: entry}}, f"save the commit of {label}")
                receipts[integ.id] = entry
                failpoints.hit("integrate.commit")

    def compensate_all(self, rec: dict[str, Any]) -> None:
        """Undo every gate integration that began to prepare, last product first and last
        integration first; idempotent (integrations find what to undo from the key, so a prepare
        that failed halfway is undone too)."""
        by_id = {i.id: i for i in self.integrations}
        for product in reversed(self.products):
            view = product.view(rec)
            receipts = view.get("receipts") or {}
            for ident in reversed(list(receipts)):
                entry = receipts[ident]
                if entry.get("state") not in ("preparing", "prepared", "committed") or ident not in by_id:
                    continue
                integ, where, label = by_id[ident], f"{product.prefix}receipts.{ident}", product.label(ident)
                progress.status(f"integration {label}: compensate")
                if view.get("version") is not None and view.get("final_dir"):
                    try:
                        self.retry(f"compensate integration {label}", integ.compensate,
                                   self._context(product, rec, integ), entry.get("receipt") or {})
                    except PublishError as exc:
                        if exc.failure_class == TRANSIENT:
                            raise  # the next attempt finishes the rollback
                        # A refusal that no retry can change must not block the rollback forever.
                        progress.info(f"warning: compensation of integration {label} refused ({exc.cause}); "
                                      "the rollback goes on; undo it by hand in that system")
                        self.write({"$set": {f"{where}.state": "compensation-refused", f"{where}.error": exc.cause}},
                                   f"save the refusal of {label}")
                        failpoints.hit("rollback.compensate")
                        continue
                self.write({"$set": {f"{where}.state": "compensated"}}, f"save the compensation of {label}")
                failpoints.hit("rollback.compensate")

    def unprepare(self, index: int, rec: dict[str, Any]) -> None:
        """Product ``index`` moves to another number before the commit (renumbered: its number was
        taken since an earlier attempt prepared its gates): compensate what was prepared at the old
        number and forget those receipts, so that ``prepare_all`` prepares them at the new one
        (an ftrack AssetVersion must not keep the number the version no longer has)."""
        product = self.products[index]
        view = product.view(rec)
        receipts = view.get("receipts") or {}
        by_id = {i.id: i for i in self.gates()}
        for ident in reversed([k for k, e in receipts.items() if e.get("state") in ("preparing", "prepared")]):
            if ident not in by_id:
                continue
            integ, where, label = by_id[ident], f"{product.prefix}receipts.{ident}", product.label(ident)
            progress.status(f"integration {label}: undo the prepare at v{int(view['version']):0>3} (renumbered)")
            self.retry(f"compensate integration {label}", integ.compensate, self._context(product, rec, integ),
                       receipts[ident].get("receipt") or {})
            self.write({"$unset": {where: ""}}, f"forget the receipt of {label}")
            receipts.pop(ident, None)

    def outbox(self) -> dict[str, Any]:
        """The outbox entries written at COMMITTING, one per notifier and product."""
        return {f"{p.prefix}outbox.{i.id}": {"name": i.name, "state": "pending", "attempts": 0, "last_error": None}
                for p in self.products for i in self.notifiers()}


def has_pending(rec: dict[str, Any]) -> bool:
    """Whether any product of ``rec`` still has a notification to deliver."""
    from ..idempotency.records import product_views

    return any(e.get("state") == "pending" for view in product_views(rec) for e in (view.get("outbox") or {}).values())


def deliver_pending(integrations: list[Integration], products: Sequence[Manifest], key: str, rec: dict[str, Any],
                    retry: Retry, mark: Mark, version_id: VersionId = _openpype_version_id) -> list[str]:
    """Deliver every pending notification of every product; ``mark(field, entry)`` saves an outbox
    entry at its dotted record field (``outbox.{id}`` or ``extra_products.{i}.outbox.{id}``) if it
    is still pending. Returns the labels still pending (never raises)."""
    still: list[str] = []
    for product in products_of(products, key):
        outbox = product.view(rec).get("outbox") or {}
        for integ in integrations:
            entry = outbox.get(integ.id)
            if integ.phase != NOTIFY or not entry or entry.get("state") != "pending":
                continue
            where, label = f"{product.prefix}outbox.{integ.id}", product.label(integ.id)
            try:
                receipt = retry(f"deliver notification {label}", integ.deliver,
                                context(product, key, rec, integ, version_id))
            except PublishError as exc:
                mark(where, {"state": "pending", "attempts": entry.get("attempts", 0) + 1, "last_error": exc.cause})
                progress.info(f"notification {label} not delivered yet ({exc.cause}); later attempts and "
                              "`atomic-publish deliver` retry it")
                still.append(label)
                continue
            mark(where, {"state": "delivered", "attempts": entry.get("attempts", 0) + 1, "last_error": None,
                         "receipt": receipt})
            progress.status(f"notification {label} delivered")
    return still
