"""ftrack through the real ``ftrack-python-api`` client (the ``ftrack`` extra), two-phase.

prepare: find or create the Asset (named after the subset) under the shot, create the
AssetVersion with an id derived from the key (and the product, among several: one
AssetVersion per product; uuid5) and ``is_published=False``, metadata ``atomic_publish_key``,
one component per representation pointing at the final published path in the
``ftrack.unmanaged`` location. commit: ``is_published=True``. compensate: delete
the AssetVersion (and its components); where the server refuses the deletion, unpublish it.

After any failed commit the session is rolled back, and before creating anything again the
deterministic id is queried: a response lost after the server applied a change never
creates a duplicate. Credentials come only from the environment (FTRACK_SERVER,
FTRACK_API_USER, FTRACK_API_KEY), which the Deadline plugin fills from its configuration.
"""
from __future__ import annotations

import logging
import os
import re
import uuid
from typing import Any, Callable, ClassVar

from ..errors import PermanentError, PublishError, TransientError, WorkerLocalError
from .base import GATE, Context, Integration

NAMESPACE = uuid.UUID("5b0b7a43-8f6e-4b8e-9b39-3f3c6a1e1d27")
UNMANAGED = "ftrack.unmanaged"
PERMANENT_SERVER_ERRORS = ("ValidationError", "PermissionError", "AuthenticationError", "NotFoundError",
                           "InvalidStateError", "ImmutableAttributeError")
_STATUS = re.compile(r"^(\d{3}) (?:Client|Server) Error")


class FtrackError(TransientError):
    default_todo = "check the ftrack server; the publish resumes when it answers"


class FtrackRefused(PermanentError):
    default_todo = "fix the ftrack settings of the manifest (context, asset type) or the API user's permissions"


def deterministic_id(*parts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "\x1f".join(parts)))


def classify_ftrack(exc: BaseException, step: str) -> PublishError:
    """ServerError texts carry the HTTP status or the server's exception name: map them."""
    import ftrack_api

    if isinstance(exc, PublishError):
        return exc
    text = str(exc)
    if isinstance(exc, ftrack_api.exception.ServerError):
        status = _STATUS.match(text)
        if status:
            code = int(status.group(1))
            if code >= 500 or code in (408, 429):
                return FtrackError(f"ftrack answered HTTP {code} while trying to {step}")
            return FtrackRefused(f"ftrack refused to {step} (HTTP {code})")
        if any(name in text for name in PERMANENT_SERVER_ERRORS):
            return FtrackRefused(f"ftrack refused to {step}: {text[:300]}")
        return FtrackError(f"ftrack failed to {step}: {text[:300]}")
    return FtrackError(f"ftrack unreachable while trying to {step}: {type(exc).__name__}: {text[:300]}")


class FtrackIntegration(Integration):
    name: ClassVar[str] = "ftrack"
    phases: ClassVar[tuple[str, ...]] = (GATE,)
    settings_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "properties": {
            "context_id": {"type": "string", "pattern": r"^[0-9a-fA-F-]{32,36}$"},
            "context_type": {"enum": ["Shot", "AssetBuild", "Sequence", "Episode", "Folder"]},
            "asset_type": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,32}$"},
            "timeout": {"type": "number", "minimum": 1, "maximum": 300},
        },
    }

    def check_environment(self) -> None:
        try:
            import ftrack_api  # noqa: F401
        except ImportError:
            raise WorkerLocalError("ftrack integration: ftrack-python-api is not installed on this worker",
                                   "install it with `pip install 'atomic-publish[ftrack]'`") from None
        missing = [v for v in ("FTRACK_SERVER", "FTRACK_API_USER", "FTRACK_API_KEY") if not os.environ.get(v)]
        if missing:
            raise WorkerLocalError(f"ftrack integration: {', '.join(missing)} not set on this worker",
                                   "set them in the plugin configuration (FtrackServer, FtrackApiUser, "
                                   "FtrackApiKey) or the worker's environment")

    # -- plumbing ------------------------------------------------------------------------
    def _session(self):
        import ftrack_api

        logging.getLogger("ftrack_api").setLevel(logging.CRITICAL)  # we report failures ourselves
        try:
            return ftrack_api.Session(server_url=os.environ["FTRACK_SERVER"], api_key=os.environ["FTRACK_API_KEY"],
                                      api_user=os.environ["FTRACK_API_USER"], auto_connect_event_hub=False,
                                      schema_cache_path=False, plugin_paths=[],
                                      timeout=float(self.settings.get("timeout", 60)))
        except Exception as exc:
            raise classify_ftrack(exc, "open a session") from None

    @staticmethod
    def _commit(session, step: str, applied: Callable[[], bool]) -> None:
        """Commit; after a failure roll back, then ask the server whether it applied it anyway."""
        try:
            session.commit()
        except Exception as exc:
            session.rollback()
            try:
                if applied():
                    return  # the response was lost after the server applied the change
            except Exception:
                pass
            raise classify_ftrack(exc, step) from None

    @staticmethod
    def _first(session, query: str, step: str):
        try:
            return session.query(query).first()
        except Exception as exc:
            raise classify_ftrack(exc, step) from None

    # -- phases ----------------------------------------------------------------------------
    def prepare(self, ctx: Context) -> dict[str, Any]:
        session = self._session()
        try:
            version_id = deterministic_id("AssetVersion", *ctx.identity)
            version = self._first(session, f'AssetVersion where id is "{version_id}"', "look up the version")
            if version is None:
                version = self._create_version(session, ctx, version_id)
            self._ensure_metadata(session, version, ctx.key)
            components = self._ensure_components(session, ctx, version)
            return {"asset_version_id": version_id, "asset_id": version["asset_id"], "components": components}
        finally:
            session.close()

    def _context(self, session, ctx: Context):
        if self.settings.get("context_id"):
            found = self._first(session, f'Context where id is "{self.settings["context_id"]}"', "find the context")
            where = f"context {self.settings['context_id']}"
        else:
            kind = self.settings.get("context_type", "Shot")
            found = self._first(session, f'{kind} where name is "{ctx.manifest.asset}" and project.name is '
                                         f'"{ctx.manifest.project_name}"', "find the shot")
            where = f"{kind} {ctx.manifest.asset} in project {ctx.manifest.project_name}"
        if found is None:
            raise FtrackRefused(f"ftrack has no {where}", "create it in ftrack or set settings.context_id")
        return found

    def _create_version(self, session, ctx: Context, version_id: str):
        m = ctx.manifest
        parent = self._context(session, ctx)
        type_short = self.settings.get("asset_type", "render")[:4].lower()
        asset_type = self._first(session, f'AssetType where short is "{type_short}"', "find the asset type")
        if asset_type is None:
            raise FtrackRefused(f"ftrack has no asset type with short name {type_short!r}",
                                "create it in ftrack or set settings.asset_type")
        asset_id = deterministic_id("Asset", parent["id"], m.subset)
        asset = self._first(session, f'Asset where name is "{m.subset}" and context_id is "{parent["id"]}"',
                            "find the asset")
        if asset is None:
            session.create("Asset", {"id": asset_id, "name": m.subset, "parent": parent, "type": asset_type})
            self._commit(session, "create the asset", lambda: self._first(
                session, f'Asset where id is "{asset_id}"', "check the asset") is not None)
            asset = self._first(session, f'Asset where name is "{m.subset}" and context_id is "{parent["id"]}"',
                                "find the asset")
        task = None
        if m.task:
            task = self._first(session, f'Task where name is "{m.task}" and parent_id is "{parent["id"]}"',
                               "find the task")
        data = {"id": version_id, "asset": asset, "version": ctx.version, "is_published": False,
                "comment": m.comment or f"atomic-publish {ctx.key}"}
        if task is not None:
            data["task"] = task
        session.create("AssetVersion", data)
        self._commit(session, "create the version", lambda: self._first(
            session, f'AssetVersion where id is "{version_id}"', "check the version") is not None)
        return self._first(session, f'AssetVersion where id is "{version_id}"', "read the version back")

    def _ensure_metadata(self, session, version, key: str) -> None:
        if version["metadata"].get("atomic_publish_key") == key:
            return
        version["metadata"]["atomic_publish_key"] = key
        self._commit(session, "write the version's metadata", lambda: self._first(
            session, f'AssetVersion where id is "{version["id"]}" and metadata any (key is "atomic_publish_key" '
                     f'and value is "{key}")', "check the metadata") is not None)

    def _ensure_components(self, session, ctx: Context, version) -> list[str]:
        location = self._first(session, f'Location where name is "{UNMANAGED}"', "find the unmanaged location")
        ids = []
        for rep in ctx.manifest.representations:
            files = [f for f in ctx.files if f.representation == rep.name]
            found = self._first(session, f'Component where name is "{rep.name}" and version_id is "{version["id"]}"',
                                "find a component")
            if found is None:
                path = files[0].path if len(files) == 1 else files[0].path.replace(f".{files[0].frame}.", ".%0"
                                                                                  f"{len(files[0].frame)}d.")
                try:
                    found = version.create_component(path, data={"name": rep.name}, location=location)
                except Exception as exc:
                    session.rollback()
                    found = self._first(session, f'Component where name is "{rep.name}" and version_id is '
                                                 f'"{version["id"]}"', "check a component")
                    if found is None:
                        raise classify_ftrack(exc, f"create the {rep.name} component") from None
            ids.append(found["id"])
        return ids

    def commit(self, ctx: Context, receipt: dict[str, Any]) -> dict[str, Any]:
        session = self._session()
        try:
            version_id = receipt.get("asset_version_id") or deterministic_id("AssetVersion", *ctx.identity)
            version = self._first(session, f'AssetVersion where id is "{version_id}"', "find the version")
            if version is None:
                raise FtrackError(f"ftrack version {version_id} prepared earlier is gone",
                                  "it was deleted in ftrack; the next attempt recreates it")
            if not version["is_published"]:
                version["is_published"] = True
                self._commit(session, "publish the version", lambda: bool(self._first(
                    session, f'AssetVersion where id is "{version_id}" and is_published is true',
                    "check is_published")))
            return {**receipt, "is_published": True}
        finally:
            session.close()

    def compensate(self, ctx: Context, receipt: dict[str, Any]) -> None:
        session = self._session()
        try:
            version_id = receipt.get("asset_version_id") or deterministic_id("AssetVersion", *ctx.identity)
            version = self._first(session, f'AssetVersion where id is "{version_id}"', "find the version")
            if version is None:
                return
            for component in list(version["components"]):
                session.delete(component)
            session.delete(version)
            try:
                self._commit(session, "delete the version", lambda: self._first(
                    session, f'AssetVersion where id is "{version_id}"', "check the deletion") is None)
            except FtrackRefused:
                version = self._first(session, f'AssetVersion where id is "{version_id}"', "find the version")
                if version is not None and version["is_published"]:
                    version["is_published"] = False
                    self._commit(session, "unpublish the version", lambda: False)
        finally:
            session.close()
