"""The ``ayon`` catalogue: the AYON server, through the real ``ayon-python-api`` client (the ``ayon`` extra).

The only module that imports ``ayon_api``. What it writes, per entry (one product's version):

* the folder must exist (production creates it; a missing ``folderPath`` is permanent, named),
  and so must the task when the entry names one;
* the product is reused by name, or created with its ``productType``;
* the version with ``author``, the task link, the version data AYON's ``IntegrateAsset`` writes
  (``families``, ``time``, ``author``, ``source``, ``comment``, ``machine``, ``frameStart``/``End``
  and the entry's ``data``: fps, handles, resolution, pixelAspect, intent, colorspace...; the keys
  that are version attributes of the server go to ``attrib``, the rest to ``data``, as the
  integrator splits them), the marker ``data.atomic_publish`` and a configurable status;
* the representations with ``files`` (id, name, rootless path, size, hash, hash_type),
  ``attrib.path`` (the first file, absolute, as the integrator writes it), ``attrib.template``
  and ``data.context``, which AYON's loader formats with the project's roots into the file.

Ids are ``uuid5(role, id_parts).hex`` (32 hex characters, what the server's id regex and
``ayon_api``'s ``uuid.UUID`` check accept), so a replay is recognised by reading, not by the
409 ``unique-violation`` a real server answers to a replayed batch. Everything of one ``publish``
goes in ONE operations batch, ``canFail=false``, and success is read from the answer's
``success`` field (the server answers HTTP 200 to a failed batch).

Version numbers: the reads include inactive versions (``active=None``), so a number any other
client took counts as taken; nothing is created on the server to hold a number while staging,
because an inactive highest version makes ``get_last_version_by_product_id`` return None, which
AYON's own integrator relies on. A batch refused because another client took the number in the
meantime raises :class:`CatalogNumberTaken` (nothing is visible then).

Vocabulary, in this one place: asset -> folder (path ``/hierarchy/asset``), subset -> product,
family -> productType.
"""
from __future__ import annotations

import functools
import os
import re
import uuid
from typing import Any, Callable, ClassVar, Mapping, TypeVar

import ayon_api
import requests
from ayon_api import exceptions as ayon_errors
from ayon_api.operations import (OperationsSession, new_product_entity, new_representation_entity,
                                 new_version_entity)

from ...idempotency.redact import register_secret
from ..errors import (CatalogAuthRefused, CatalogAuthRefusedHere, CatalogNumberTaken, CatalogRefused,
                      CatalogUnavailable, PublishError)
from .base import Catalog, CatalogVersion, DuplicateNumber, PublishedFile, Subject, VersionEntry

T = TypeVar("T")
NAMESPACE = uuid.UUID("0d7f5a52-3c5e-5d1e-9a43-6e2f7c1b8a90")
ENTITY_ID = re.compile(r"^[0-9a-f]{32}$")  # the server's ENTITY_ID_REGEX
_HTTP = re.compile(r"\b([1-5]\d\d) (?:Client|Server) Error")
_VERSION_TAKEN = re.compile(r"Version with product_id, version", re.IGNORECASE)
DEFAULT_TIMEOUT = 30.0
VERSION_FIELDS = {"id", "version", "productId", "active", "data"}
#: ``RepresentationFileModel.hashType`` of the recorded server's OpenAPI (an enum): other hash
#: types go to the representation's ``data.atomic_publish.hashes`` instead.
SERVER_HASH_TYPES = ("md5", "sha1", "sha256", "op3")


def entity_id(role: str, *parts: str) -> str:
    """The deterministic id of one entity: uuid5 of its role and the entry's id parts, 32 hex."""
    value = uuid.uuid5(NAMESPACE, "\x1f".join((role, *parts))).hex
    uuid.UUID(value)  # what ayon_api's _create_or_convert_to_id checks
    assert ENTITY_ID.fullmatch(value)
    return value


class _Refusal(Exception):
    """An HTTP status the client handed back instead of raising (its reads answer None on 401)."""


def _classify(exc: BaseException, step: str, url: str, key_here: bool) -> PublishError:
    """The client's exceptions -> the catalogue's classes, here and not in classify.EXCEPTION_TYPES
    (ServerError and AuthenticationError exist in ftrack_api too). Never prints the key."""
    if isinstance(exc, PublishError):
        return exc
    text = str(exc)
    status = getattr(getattr(exc, "response", None), "status_code", None)
    match = _HTTP.search(text)
    if status is None and match:
        status = int(match.group(1))
    auth = isinstance(exc, (ayon_errors.UnauthorizedError, ayon_errors.AuthenticationError)) or status in (401, 403)
    if auth:
        return _auth_refused(step, url, key_here)
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError,
                        TimeoutError, ayon_errors.ServerNotReached)):
        return CatalogUnavailable(f"the AYON server {url} is unreachable while trying to {step} "
                                  f"({type(exc).__name__}); nothing of it is visible")
    if status is not None and (status >= 500 or status in (408, 429)):
        return CatalogUnavailable(f"the AYON server {url} answered HTTP {status} while trying to {step}")
    if status is not None:
        return CatalogRefused(f"the AYON server {url} refused to {step} (HTTP {status}): {_detail(exc)}")
    if isinstance(exc, ayon_errors.ServerError) and "AYON api error" in text:
        return CatalogUnavailable(f"the AYON server {url} is unreachable while trying to {step}: {text[:200]}")
    if isinstance(exc, ayon_errors.GraphQlQueryFailed):
        return CatalogRefused(f"the AYON server {url} refused a query while trying to {step}: {text[:200]}")
    return CatalogUnavailable(f"the AYON server {url} failed while trying to {step}: {type(exc).__name__}: {text[:200]}")


def _detail(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    try:
        return str(response.json().get("detail"))[:200]
    except Exception:
        return str(exc)[:200]


def _auth_refused(step: str, url: str, key_here: bool) -> PublishError:
    cause = f"the AYON server {url} refused the API key while trying to {step} (the key is not shown)"
    return CatalogAuthRefusedHere(cause) if key_here else CatalogAuthRefused(cause)


def _mapped(step: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    def wrap(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def run(self: "AyonCatalog", *args: Any, **kwargs: Any) -> T:
            try:
                return fn(self, *args, **kwargs)
            except Exception as exc:
                raise _classify(exc, step, self.url, self.key_here) from None
        return run
    return wrap


def read_api_key(environ: Mapping[str, str]) -> tuple[str | None, bool]:
    """(the key, whether it is this worker's own): ``AYON_API_KEY`` of the environment, else the
    ``AYON_API_KEY=`` line of the plugin's private secrets file (``ATOMIC_PUBLISH_SECRETS_FILE``).

    A key that the secrets file also holds came from the plugin configuration (the farm's, so a
    refusal is permanent); one only in the environment is this worker's (worker-local)."""
    from_file = None
    path = environ.get("ATOMIC_PUBLISH_SECRETS_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    name, sep, value = line.rstrip("\n").partition("=")
                    if sep and name == "AYON_API_KEY":
                        from_file = value
        except OSError as exc:
            raise CatalogAuthRefusedHere(f"cannot read the secrets file named by ATOMIC_PUBLISH_SECRETS_FILE "
                                         f"({path}): {exc.strerror}") from None
    env_key = environ.get("AYON_API_KEY") or None
    key = env_key or from_file
    register_secret(key)
    return key, bool(env_key) and env_key != from_file


class AyonCatalog(Catalog):
    """The AYON server at ``url``; ``api_key`` is a service user's key (never logged or printed).

    ``version_status``: the status new versions get (None: the project's default status);
    ``key_here``: the key is this worker's own (a refusal is worker-local, else permanent)."""

    name: ClassVar[str] = "ayon"
    others_create_versions: ClassVar[bool] = True

    def __init__(self, url: str, api_key: str | None, *, version_status: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, max_retries: int | None = None, key_here: bool = False):
        if not url:
            raise CatalogRefused("the ayon catalogue has no server URL",
                                 "set AyonServerUrl in the AtomicPublish plugin configuration (AYON_SERVER_URL)")
        self.url = url.rstrip("/")
        self.key_here = key_here
        self.version_status = version_status or None
        self._key = api_key
        register_secret(api_key)
        self._timeout, self._max_retries = timeout, max_retries
        self._con: ayon_api.ServerAPI | None = None
        self._attributes: set[str] | None = None
        self._statuses: dict[str, set[str]] = {}

    @classmethod
    def from_environment(cls, *, client: Any = None, database: str | None = None,
                         environ: Mapping[str, str] | None = None) -> "AyonCatalog":
        env = os.environ if environ is None else environ
        key, here = read_api_key(env)
        timeout = float(env.get("AYON_SERVER_TIMEOUT") or DEFAULT_TIMEOUT)
        return cls(env.get("AYON_SERVER_URL", ""), key, version_status=env.get("AYON_VERSION_STATUS") or None,
                   timeout=timeout, key_here=here)

    def __repr__(self) -> str:  # never the key
        return f"AyonCatalog({self.url!r})"

    # -- the connection ------------------------------------------------------------------------

    @property
    def con(self) -> ayon_api.ServerAPI:
        """The client, connected and its key checked on first use."""
        if self._con is None:
            if not self._key:
                raise _missing_key(self.key_here)
            con = ayon_api.ServerAPI(self.url, token=self._key, timeout=self._timeout, max_retries=self._max_retries)
            try:
                valid = con.has_valid_token
            except Exception as exc:
                raise _classify(exc, "check the API key", self.url, self.key_here) from None
            if not valid:
                if not self._answers():
                    raise CatalogUnavailable(f"the AYON server {self.url} does not answer; nothing was published")
                raise _auth_refused("check the API key", self.url, self.key_here)
            self._con = con
        return self._con

    def _answers(self) -> bool:
        try:
            return requests.get(self.url, timeout=self._timeout).status_code < 500
        except requests.RequestException:
            return False

    def close(self) -> None:
        if self._con is not None:
            self._con.close_session()
            self._con = None

    # -- reads ---------------------------------------------------------------------------------

    @_mapped("check the project")
    def _check_environment(self, projects: tuple[str, ...]) -> None:
        con = self.con
        for project in projects:
            if con.get_project(project, fields=["name"]) is None:
                raise CatalogRefused(f"the AYON server {self.url} has no project {project!r}; nothing was published",
                                     "create the project in AYON (or fix the project name of the publish)")
        if self.version_status:
            for project in projects:
                self._check_status(project)

    @_mapped("look up folders and tasks")
    def _check_subjects(self, subjects: tuple[Subject, ...]) -> None:
        for s in subjects:
            folder = self._folder(s)
            if folder is None:
                raise CatalogRefused(f"AYON folder {s.folder_path} does not exist in project {s.project_name!r}; "
                                     "nothing was written",
                                     "create the folder in AYON (production creates the shots and assets a render "
                                     "belongs to), or fix folderPath of the publish, and resubmit")
            if s.task and self.con.get_task_by_name(s.project_name, folder["id"], s.task, fields={"id"}) is None:
                raise CatalogRefused(f"AYON task {s.task!r} does not exist in folder {s.folder_path} of project "
                                     f"{s.project_name!r}; nothing was written",
                                     "create the task in AYON, or fix the task of the publish, and resubmit")

    def _folder(self, subject: Subject) -> dict | None:
        return self.con.get_folder_by_path(subject.project_name, subject.folder_path, fields={"id", "path", "name"})

    def _product(self, subject: Subject, folder_id: str) -> dict | None:
        return self.con.get_product_by_name(subject.project_name, subject.subset, folder_id,
                                            fields={"id", "name", "productType", "data"})

    @_mapped("look up a product")
    def _find_subject(self, subject: Subject) -> str | None:
        folder = self._folder(subject)
        product = self._product(subject, folder["id"]) if folder else None
        return product["id"] if product else None

    def _versions(self, project: str, **filters: Any) -> list[dict]:
        """Versions, inactive ones too (``active=None``), hero versions left out."""
        return [v for v in self.con.get_versions(project, active=None, hero=False, fields=VERSION_FIELDS, **filters)
                if int(v["version"]) >= 0]

    @_mapped("look up a version")
    def _find_version(self, subject: Subject, number: int) -> CatalogVersion | None:
        product_id = self._find_subject(subject)
        if product_id is None:
            return None
        found = self._versions(subject.project_name, product_ids=[product_id], versions=[number])
        found.sort(key=lambda v: not v.get("active", True))  # an active one first
        return self._catalog_version(found[0], subject, ()) if found else None

    @_mapped("find the highest version")
    def _highest_number(self, subject: Subject) -> int:
        product_id = self._find_subject(subject)
        if product_id is None:
            return 0
        return max((int(v["version"]) for v in self._versions(subject.project_name, product_ids=[product_id])),
                   default=0)

    @staticmethod
    def _catalog_version(version: dict, subject: Subject, files: tuple[PublishedFile, ...]) -> CatalogVersion:
        marker = (version.get("data") or {}).get("atomic_publish") or {}
        return CatalogVersion(id=version["id"], number=int(version["version"]), subject=subject,
                              key=marker.get("key", ""), files=files, active=bool(version.get("active", True)))

    @_mapped("read a key's versions")
    def _find_by_key(self, key: str, subjects: tuple[Subject, ...]) -> list[CatalogVersion]:
        if not subjects:
            raise ValueError("the ayon catalogue finds a key's versions through its products: pass subjects=")
        found = []
        for subject in subjects:
            product_id = self._find_subject(subject)
            if product_id is None:
                continue
            for version in self._versions(subject.project_name, product_ids=[product_id]):
                if ((version.get("data") or {}).get("atomic_publish") or {}).get("key") != key:
                    continue
                files = []
                for rep in self.con.get_representations(subject.project_name, version_ids=[version["id"]],
                                                        active=None, fields={"id", "files", "data"}):
                    hashes = ((rep.get("data") or {}).get("atomic_publish") or {}).get("hashes") or {}
                    for f in rep.get("files") or []:
                        own = hashes.get(f.get("name")) or {}
                        files.append(PublishedFile(
                            name=f.get("name", ""), path="", rootless=f["path"], size=int(f.get("size") or 0),
                            hash=own.get("hash") or f.get("hash") or "",
                            hash_type=own.get("hash_type") or f.get("hashType") or f.get("hash_type") or ""))
                files = tuple(files)
                found.append(self._catalog_version(version, subject, files))
        return found

    @_mapped("find duplicate version numbers")
    def _duplicates(self, projects: tuple[str, ...]) -> list[DuplicateNumber]:
        if not projects:
            raise ValueError("the ayon catalogue checks the projects it is given: pass projects=")
        out = []
        for project in projects:
            by_number: dict[tuple[str, int], list[str]] = {}
            for version in self.con.get_versions(project, active=True, hero=False, fields={"id", "version", "productId"}):
                by_number.setdefault((version["productId"], int(version["version"])), []).append(version["id"])
            for (product_id, number), ids in sorted(by_number.items()):
                if len(ids) > 1:
                    out.append(DuplicateNumber(self._subject_of_product(project, product_id), number, tuple(ids)))
        return out

    def _subject_of_product(self, project: str, product_id: str) -> Subject:
        product = self.con.get_product_by_id(project, product_id, fields={"name", "productType", "folderId"}) or {}
        folder = self.con.get_folder_by_id(project, product.get("folderId"), fields={"name", "path"}) or {} \
            if product.get("folderId") else {}
        parts = [p for p in (folder.get("path") or "").split("/") if p]
        code = (self.con.get_project(project, fields=["code"]) or {}).get("code", "")
        return Subject(project, code, parts[-1] if parts else "", "/".join(parts[:-1]), product.get("name", ""),
                       product.get("productType", ""))

    def _version_id(self, id_parts: tuple[str, ...]) -> str:
        return entity_id("version", *id_parts)

    # -- writes --------------------------------------------------------------------------------

    def _version_attributes(self) -> set[str]:
        if self._attributes is None:
            self._attributes = set(self.con.get_attributes_for_type("version"))
        return self._attributes

    def _check_status(self, project: str) -> None:
        if project not in self._statuses:
            anatomy = self.con.get_project(project, fields=["statuses"]) or {}
            self._statuses[project] = {s["name"] for s in anatomy.get("statuses") or []
                                       if "version" in (s.get("scope") or ["version"])}
        if self.version_status not in self._statuses[project]:
            known = ", ".join(sorted(self._statuses[project])) or "none"
            raise CatalogRefused(f"AYON project {project!r} has no version status {self.version_status!r} "
                                 f"(AYON_VERSION_STATUS); its version statuses: {known}",
                                 "set AyonVersionStatus (AYON_VERSION_STATUS) to one of them, or leave it empty "
                                 "for the project's default")

    @_mapped("publish the versions")
    def _write(self, entries: list[VersionEntry]) -> int:
        projects = {e.subject.project_name for e in entries}
        if len(projects) > 1:
            raise CatalogRefused("one publish writes into one AYON project; its products name several: "
                                 + ", ".join(sorted(projects)))
        project = next(iter(projects))
        for attempt in (1, 2):
            ops, created = self._plan(entries)
            if not created:
                return 0
            result = self._send(ops, project, {self._version_id(e.id_parts): e for e in entries})
            if result is None:
                return created
            if attempt == 1 and result == "replayed":
                continue  # a concurrent replay created some of our ids: read again, create the rest
            raise result  # type: ignore[misc]
        return 0

    def _plan(self, entries: list[VersionEntry]) -> tuple[list[tuple[str, dict]], int]:
        """Read what exists; the create operations of what is missing, per project, in entry order."""
        ops: list[tuple[str, dict]] = []
        attributes = self._version_attributes()
        for entry in entries:
            s, parts = entry.subject, entry.id_parts
            folder = self._folder(s)
            if folder is None:
                raise CatalogRefused(f"AYON folder {s.folder_path} does not exist in project {s.project_name!r}; "
                                     "nothing was published",
                                     "create the folder in AYON (production creates the shots and assets a render "
                                     "belongs to), or fix folderPath of the publish, and resubmit")
            task_id = None
            if s.task:
                task = self.con.get_task_by_name(s.project_name, folder["id"], s.task, fields={"id"})
                if task is None:
                    raise CatalogRefused(f"AYON task {s.task!r} does not exist in folder {s.folder_path} of project "
                                         f"{s.project_name!r}; nothing was published",
                                         "create the task in AYON, or fix the task of the publish, and resubmit")
                task_id = task["id"]
            if self.version_status:
                self._check_status(s.project_name)
            product = self._product(s, folder["id"])
            if product is None:
                product_id = entity_id("product", s.project_name, folder["id"], s.subset.lower())
                ops.append((s.project_name, {"entityType": "product", "data": new_product_entity(
                    s.subset, s.family, folder["id"], data={"atomic_publish": {"created_by": entry.key}},
                    entity_id=product_id)}))
            else:
                product_id = product["id"]
            version_id = entity_id("version", *parts)
            existing = self.con.get_version_by_id(s.project_name, version_id, fields=VERSION_FIELDS)
            if existing is not None:
                self._check_mine(entry, existing, product_id)
            else:
                if product is not None:
                    holders = self._versions(s.project_name, product_ids=[product_id], versions=[entry.number])
                    if holders:
                        raise CatalogNumberTaken(
                            f"version {entry.number} of {s.describe()} was created by another AYON client since "
                            f"the reservation ({'active' if any(v.get('active', True) for v in holders) else 'inactive'}); "
                            "nothing was published", entry.number, s.subset)
                ops.append((s.project_name, {"entityType": "version",
                                             "data": self._version_entity(entry, product_id, task_id, attributes)}))
            wanted = {entity_id("representation", *parts, r.name): r for r in entry.representations}
            have = set()
            if existing is not None:
                have = {r["id"] for r in self.con.get_representations(
                    s.project_name, representation_ids=list(wanted), active=None, fields={"id"})}
            for rep_id, rep in wanted.items():
                if rep_id not in have:
                    ops.append((s.project_name, {"entityType": "representation",
                                                 "data": self._representation_entity(entry, rep, rep_id, version_id)}))
        return ops, len(ops)

    def _check_mine(self, entry: VersionEntry, existing: dict, product_id: str) -> None:
        marker = (existing.get("data") or {}).get("atomic_publish") or {}
        if (marker.get("key"), int(existing["version"]), existing.get("productId")) != (entry.key, entry.number, product_id):
            raise CatalogRefused(f"AYON version {existing['id']} of {entry.key} exists as version {existing['version']} "
                                 f"of another product or number than v{entry.number:0>3} of {entry.subject.describe()}; "
                                 "nothing was published", "report it: the versions of one publish never change")

    def _version_entity(self, entry: VersionEntry, product_id: str, task_id: str | None,
                        attributes: set[str]) -> dict:
        """The version as ``IntegrateAsset.create_version_data`` shapes it: attributes to attrib, the rest to data."""
        everything: dict[str, Any] = {
            "families": entry.all_families(), "time": entry.committed_at.strftime("%Y%m%dT%H%M%SZ"),
            "author": entry.author, "source": entry.source, "comment": entry.comment, "machine": entry.machine,
            "frameStart": entry.frame_start, "frameEnd": entry.frame_end,
        }
        everything.update({k: v for k, v in entry.data.items() if k != "atomic_publish"})
        attrib = {k: v for k, v in everything.items() if k in attributes and v is not None}
        data = {k: v for k, v in everything.items() if k not in attributes and v is not None}
        data["atomic_publish"] = {**entry.marker(), "id_parts": list(entry.id_parts)}
        return new_version_entity(entry.number, product_id, task_id=task_id, author=entry.author or None,
                                  status=self.version_status, attribs=attrib, data=data,
                                  entity_id=entity_id("version", *entry.id_parts))

    @staticmethod
    def _representation_entity(entry: VersionEntry, rep, rep_id: str, version_id: str) -> dict:
        files, other_hashes = [], {}
        for f in rep.files:
            item = {"id": entity_id("file", *entry.id_parts, f.name), "name": f.name, "path": f.rootless,
                    "size": f.size}
            if f.hash_type in SERVER_HASH_TYPES:
                item.update(hash=f.hash, hashType=f.hash_type)
            else:  # the server's enum has no xxh3: a hash labelled md5 (its default) would lie
                other_hashes[f.name] = {"hash": f.hash, "hash_type": f.hash_type}
            files.append(item)
        data: dict[str, Any] = {"context": loader_context(entry, rep)}
        if other_hashes:
            data["atomic_publish"] = {"hashes": other_hashes}
        data.update({k: v for k, v in rep.data.items() if k != "context"})
        return new_representation_entity(rep.name, version_id, files,
                                          attribs={"path": rep.data_path, "template": loader_template(rep)},
                                          data=data, entity_id=rep_id)

    def _send(self, ops: list[tuple[str, dict]], project: str, by_version: dict[str, VersionEntry]):
        """One batch, canFail=false; None on success, else the error to raise (or "replayed")."""
        session = OperationsSession(con=self.con)
        body = [session.create_entity(p, op["entityType"], op["data"]).to_server_operation() for p, op in ops]
        status = self.con.send_background_batch_operations(project, body, can_fail=False, wait=True,
                                                           raise_on_fail=False)
        result = status.get("result") or {}
        if result.get("success"):
            return None
        failed = next((o for o in result.get("operations") or [] if not o.get("success")), {})
        code, detail = failed.get("errorCode") or "", str(failed.get("detail") or "")[:300]
        by_id = {op["id"]: op for op in body}
        op = by_id.get(failed.get("id"), {})
        if code == "unique-violation" and op.get("entityType") == "version" and _VERSION_TAKEN.search(detail):
            number = int(op["data"]["version"])
            entry = by_version.get(op.get("entityId") or op["data"].get("id"))
            what = entry.subject.describe() if entry else f"product {op['data'].get('productId')} in {project}"
            return CatalogNumberTaken(f"version {number} of {what} was created by another AYON client since the "
                                      f"reservation (the server: {detail}); nothing was published", number,
                                      entry.subject.subset if entry else "")
        if code == "unique-violation" and "with id" in detail:
            return "replayed"
        return CatalogRefused(f"the AYON server {self.url} refused the batch ({code or 'no code'}): {detail}; "
                              "nothing of it was kept")

    # -- the hero version (wrapper/catalogs/ayon_hero.py) -------------------------------------

    supports_hero: ClassVar[bool] = True

    @_mapped("write the hero version")
    def _write_hero(self, hero) -> bool:
        from .ayon_hero import write_hero

        return write_hero(self, hero, entity_id)

    @_mapped("read the hero version")
    def _find_hero(self, subject: Subject):
        from .ayon_hero import find_hero

        return find_hero(self, subject)

    @_mapped("remove the versions")
    def _remove(self, key: str, id_parts_list: list[tuple[str, ...]], projects: tuple[str, ...]) -> int:
        """Delete our versions (the server deletes their representations with them) and a product
        this key created that no other version uses; one batch."""
        by_project: dict[str, list[dict]] = {}
        removed_products: set[str] = set()
        if not projects:
            raise ValueError("the ayon catalogue removes versions within the projects it is given: pass projects=")
        for project in projects:
            for parts in id_parts_list:
                version = self.con.get_version_by_id(project, entity_id("version", *parts), fields=VERSION_FIELDS)
                if version is None or ((version.get("data") or {}).get("atomic_publish") or {}).get("key") != key:
                    continue
                ops = by_project.setdefault(project, [])
                reps = self.con.get_representations(project, version_ids=[version["id"]], active=None, fields={"id"})
                ops += [{"type": "delete", "entityType": "representation", "entityId": r["id"]} for r in reps]
                ops.append({"type": "delete", "entityType": "version", "entityId": version["id"]})
                product_id = version["productId"]
                others = [v for v in self.con.get_versions(project, product_ids=[product_id], active=None,
                                                           hero=None, fields={"id"})
                          if v["id"] not in {entity_id("version", *p) for p in id_parts_list}]
                product = self.con.get_product_by_id(project, product_id, fields={"id", "data"}) or {}
                created_by = ((product.get("data") or {}).get("atomic_publish") or {}).get("created_by")
                if not others and created_by == key and product_id not in removed_products:
                    ops.append({"type": "delete", "entityType": "product", "entityId": product_id})
                    removed_products.add(product_id)
        removed = 0
        for project, ops in by_project.items():
            status = self.con.send_background_batch_operations(project, ops, can_fail=False, wait=True,
                                                               raise_on_fail=False)
            result = status.get("result") or {}
            if not result.get("success"):
                failed = next((o for o in result.get("operations") or [] if not o.get("success")), {})
                raise CatalogRefused(f"the AYON server {self.url} refused to remove the versions of {key}: "
                                     f"{failed.get('errorCode')}: {str(failed.get('detail'))[:200]}")
            removed += len(ops)
        return removed


def _missing_key(key_here: bool) -> PublishError:
    return CatalogAuthRefused("the ayon catalogue has no API key: neither AYON_API_KEY nor the plugin's secrets "
                              "file gives one", "set AyonApiKey in the AtomicPublish plugin configuration")


# -- what AYON's loader resolves ------------------------------------------------------------------

def loader_template(rep) -> str:
    """``attrib.template``: the first file's rootless path with the frame as ``{frame}``, so that
    ``StringTemplate.format_strict_template(template, context + {"root": anatomy roots})`` (what
    ayon-core's ``get_representation_path`` does) gives the file on any platform. Braces of the
    path's own literal text are doubled."""
    first = rep.files[0]
    folder, _, name = first.rootless.rpartition("/")
    root, sep, rest = folder.partition("}")
    folder = root + sep + rest.replace("{", "{{").replace("}", "}}")
    name = name.replace("{", "{{").replace("}", "}}")
    if first.frame is not None:
        head, dot, ext = name.rpartition(f".{first.frame}.")
        if dot:
            name = f"{head}.{{frame}}.{ext}"
    return f"{folder}/{name}"


def loader_context(entry: VersionEntry, rep) -> dict[str, Any]:
    """``data.context`` in AYON's vocabulary (folder, product, task objects; ``IntegrateAsset``'s
    ``db_representation_context_keys``), plus the frame and the roots."""
    s = entry.subject
    old = rep.context
    username = old.get("username") or entry.author
    context: dict[str, Any] = {
        "root": {k: dict(v) if isinstance(v, Mapping) else v for k, v in entry.roots.items()},
        "project": {"name": s.project_name, "code": s.project_code},
        "hierarchy": s.hierarchy, "folder": {"name": s.asset, "path": s.folder_path},
        "product": {"name": s.subset, "type": s.family}, "version": entry.number,
        "representation": rep.name, "ext": rep.ext, "username": username, "user": {"name": username},
    }
    if s.task:
        context["task"] = {"name": s.task}
    if rep.files and rep.files[0].frame is not None:
        context["frame"] = rep.files[0].frame
    return context
