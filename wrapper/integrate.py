"""Run the manifest's integrations at the right points of the lifecycle.

Receipts (gate) and the outbox (notify) live in the record, so every step knows what an
earlier attempt already did: prepared integrations are not prepared again, committed ones
not committed again, and a rollback compensates exactly what was prepared.
"""
from __future__ import annotations

import os
from typing import Any, Callable

from ..idempotency.keys import object_id
from . import failpoints, progress
from .documents import rootless
from .errors import TRANSIENT, ManifestError, PublishError
from .integrations import registry
from .integrations.base import GATE, NOTIFY, Context, Integration, PublishedFile
from .layout import PlannedFile
from .manifest import Manifest
from .staging import file_id

Retry = Callable[..., Any]
Write = Callable[[dict[str, Any], str], None]


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


def context(manifest: Manifest, key: str, rec: dict[str, Any], plan: list[PlannedFile],
            integration: Integration) -> Context:
    files = []
    entries = rec.get("files") or {}
    for p in plan:
        e = entries.get(file_id(p.name), {})
        path = os.path.join(rec["final_dir"], p.name)
        files.append(PublishedFile(p.representation, p.name, path, rootless(path, manifest),
                                   int(e.get("size", 0)), e.get("hash", ""), p.frame))
    return Context(key=key, job_id=rec.get("job_id", ""), task_id=str(rec.get("task_id", "")), manifest=manifest,
                   version=int(rec["version"]), final_dir=rec["final_dir"], files=tuple(files),
                   version_document_id=str(object_id("version", key)), settings=integration.settings)


class Runner:
    """The integration steps of one attempt."""

    def __init__(self, integrations: list[Integration], manifest: Manifest, key: str, retry: Retry, write: Write):
        self.integrations, self.manifest, self.key = integrations, manifest, key
        self.retry, self.write = retry, write

    def gates(self) -> list[Integration]:
        return [i for i in self.integrations if i.phase == GATE]

    def notifiers(self) -> list[Integration]:
        return [i for i in self.integrations if i.phase == NOTIFY]

    def prepare_all(self, rec: dict[str, Any], plan: list[PlannedFile]) -> None:
        receipts = rec.setdefault("receipts", {})
        for integ in self.gates():
            if (receipts.get(integ.id) or {}).get("state") in ("prepared", "committed"):
                continue
            progress.status(f"integration {integ.id}: prepare")
            if integ.id not in receipts:  # a prepare that fails halfway must still be compensated
                receipts[integ.id] = {"name": integ.name, "phase": GATE, "state": "preparing", "receipt": {}}
                self.write({"$set": {f"receipts.{integ.id}": receipts[integ.id]}}, f"note the prepare of {integ.id}")
            receipt = self.retry(f"prepare integration {integ.id}", integ.prepare,
                                 context(self.manifest, self.key, rec, plan, integ))
            entry = {"name": integ.name, "phase": GATE, "state": "prepared", "receipt": receipt}
            self.write({"$set": {f"receipts.{integ.id}": entry}}, f"save the receipt of {integ.id}")
            receipts[integ.id] = entry
            failpoints.hit("integrate.prepare")

    def commit_all(self, rec: dict[str, Any], plan: list[PlannedFile]) -> None:
        receipts = rec.setdefault("receipts", {})
        for integ in self.gates():
            entry = receipts.get(integ.id) or {}
            if entry.get("state") == "committed":
                continue
            progress.status(f"integration {integ.id}: commit")
            receipt = self.retry(f"commit integration {integ.id}", integ.commit,
                                 context(self.manifest, self.key, rec, plan, integ), entry.get("receipt") or {})
            entry = {**entry, "state": "committed", "receipt": receipt}
            self.write({"$set": {f"receipts.{integ.id}": entry}}, f"save the commit of {integ.id}")
            receipts[integ.id] = entry
            failpoints.hit("integrate.commit")

    def compensate_all(self, rec: dict[str, Any], plan: list[PlannedFile] | None) -> None:
        """Undo every gate integration that began to prepare, last first; idempotent (integrations
        find what to undo from the key, so a prepare that failed halfway is undone too)."""
        receipts = rec.get("receipts") or {}
        by_id = {i.id: i for i in self.integrations}
        for ident in reversed(list(receipts)):
            entry = receipts[ident]
            if entry.get("state") not in ("preparing", "prepared", "committed") or ident not in by_id:
                continue
            integ = by_id[ident]
            progress.status(f"integration {ident}: compensate")
            if rec.get("version") is not None and plan is not None:
                ctx = context(self.manifest, self.key, rec, plan, integ)
                try:
                    self.retry(f"compensate integration {ident}", integ.compensate, ctx, entry.get("receipt") or {})
                except PublishError as exc:
                    if exc.failure_class == TRANSIENT:
                        raise  # the next attempt finishes the rollback
                    # A refusal that no retry can change must not block the rollback forever.
                    progress.info(f"warning: compensation of integration {ident} refused ({exc.cause}); "
                                  "the rollback goes on; undo it by hand in that system")
                    self.write({"$set": {f"receipts.{ident}.state": "compensation-refused",
                                         f"receipts.{ident}.error": exc.cause}}, f"save the refusal of {ident}")
                    failpoints.hit("rollback.compensate")
                    continue
            self.write({"$set": {f"receipts.{ident}.state": "compensated"}}, f"save the compensation of {ident}")
            failpoints.hit("rollback.compensate")

    def outbox(self) -> dict[str, Any]:
        """The outbox entries written at COMMITTING."""
        return {f"outbox.{i.id}": {"name": i.name, "state": "pending", "attempts": 0, "last_error": None}
                for i in self.notifiers()}


def deliver_pending(integrations: list[Integration], manifest: Manifest, key: str, rec: dict[str, Any],
                    plan: list[PlannedFile], retry: Retry, mark: Callable[[str, dict[str, Any]], bool]) -> list[str]:
    """Deliver every pending notification; returns the ids still pending (never raises)."""
    still: list[str] = []
    for integ in integrations:
        entry = (rec.get("outbox") or {}).get(integ.id)
        if integ.phase != NOTIFY or not entry or entry.get("state") != "pending":
            continue
        try:
            receipt = retry(f"deliver notification {integ.id}", integ.deliver,
                            context(manifest, key, rec, plan, integ))
        except PublishError as exc:
            mark(integ.id, {"state": "pending", "attempts": entry.get("attempts", 0) + 1, "last_error": exc.cause})
            progress.info(f"notification {integ.id} not delivered yet ({exc.cause}); later attempts and "
                          "`atomic-publish deliver` retry it")
            still.append(integ.id)
            continue
        mark(integ.id, {"state": "delivered", "attempts": entry.get("attempts", 0) + 1, "last_error": None,
                        "receipt": receipt})
        progress.status(f"notification {integ.id} delivered")
    return still
