"""The integration protocol and the context an integration sees."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..manifest import Manifest

GATE = "gate"
NOTIFY = "notify"


@dataclass(frozen=True)
class PublishedFile:
    representation: str
    name: str
    path: str          # final absolute path on this worker
    rootless: str      # {root[...]}/... form stored in the documents
    size: int
    hash: str
    frame: str | None


@dataclass(frozen=True)
class Context:
    """What an integration knows about one product of the publish; identical on every attempt of
    the key. A publish of several products (one metadata JSON with several instances) gives each
    product its own context: derive every deterministic id from ``identity``, never from ``key``
    alone, or two products would share one external object."""

    key: str
    job_id: str
    task_id: str
    manifest: Manifest
    version: int
    final_dir: str     # as this worker reaches it (another worker may mount the storage elsewhere)
    files: tuple[PublishedFile, ...]
    version_document_id: str
    settings: dict[str, Any] = field(default_factory=dict)
    id_parts: tuple[str, ...] = ()  # (key,) for one product, (key, product) among several
    product_index: int = 0
    product_count: int = 1
    final_rootless: str = ""  # {root[...]}/... form: the same on every worker

    @property
    def identity(self) -> tuple[str, ...]:
        """What this product's external ids derive from: ``(key,)`` when it is the only product
        (ids unchanged from one-product publishes), ``(key, product name)`` among several."""
        return self.id_parts or (self.key,)

    def describe(self) -> dict[str, Any]:
        """A JSON description of the version (what a webhook receives). Only paths every worker
        shares (rootless): a retry on a worker that mounts the storage elsewhere must send the same
        body under the same Idempotency-Key, or a receiver following the IETF draft refuses it
        (422) past the point of no return."""
        m = self.manifest
        reps: dict[str, list[dict[str, Any]]] = {}
        for f in self.files:
            reps.setdefault(f.representation, []).append({"name": f.name, "path": f.rootless, "size": f.size,
                                                          "hash": f.hash, "frame": f.frame})
        return {"key": self.key, "job_id": self.job_id, "task_id": self.task_id,
                "project": {"name": m.project_name, "code": m.project_code}, "asset": m.asset,
                "hierarchy": m.hierarchy, "task": m.task, "subset": m.subset, "family": m.family,
                "version": self.version, "version_id": self.version_document_id, "author": m.author,
                "comment": m.comment, "final_dir": self.final_rootless or self.final_dir,
                "representations": [{"name": n, "files": fs} for n, fs in reps.items()],
                **({"product_index": self.product_index, "product_count": self.product_count}
                   if self.product_count > 1 else {})}


class Integration:
    """Base class. Every method must be idempotent under ``ctx.key``: it may run again after a
    crash, on another worker, with the receipt of an earlier attempt.

    Subclasses set ``name`` and ``settings_schema`` (a JSON schema of the manifest's
    ``settings``; secrets never go there: they come from the environment), and implement
    ``prepare``/``commit``/``compensate`` (gate) and/or ``deliver`` (notify).
    """

    name: ClassVar[str] = ""
    phases: ClassVar[tuple[str, ...]] = (GATE, NOTIFY)
    settings_schema: ClassVar[dict[str, Any]] = {"type": "object", "additionalProperties": False}

    def __init__(self, instance_id: str, phase: str, settings: dict[str, Any]):
        self.id = instance_id
        self.phase = phase
        self.settings = settings

    def check_environment(self) -> None:
        """Pre-flight: credentials and client libraries present on this worker (raise PublishError)."""

    def prepare(self, ctx: Context) -> dict[str, Any]:
        """Create the side effect, invisible or unpublished; return a JSON receipt."""
        return {}

    def commit(self, ctx: Context, receipt: dict[str, Any]) -> dict[str, Any]:
        """Make it visible (after the version is committed); returns the updated receipt."""
        return receipt

    def compensate(self, ctx: Context, receipt: dict[str, Any]) -> None:
        """Undo what ``prepare`` did (the publish rolls back)."""

    def deliver(self, ctx: Context) -> dict[str, Any]:
        """Notify phase: deliver the message once more (receivers deduplicate by key)."""
        raise NotImplementedError(f"integration {self.name} has no notify phase")
