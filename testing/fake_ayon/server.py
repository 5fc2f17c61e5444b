"""The local AYON server: HTTP routing, API-key check, scripted faults, counters, control.

``FakeAyonServer`` is a :class:`~atomic_publish.testing.LoopbackServer` (a threaded HTTP server
on 127.0.0.1). The client's endpoints are routed to :mod:`.rest`, :mod:`.gql` and
:mod:`.operations`; ``/_fake/*`` lets a test seed projects, script faults, cut the server off
for a while and read counters, also when the server runs in another process
(:class:`~.control.FakeAyonControl`).

The API key is compared and forgotten: it is never logged, never echoed, never stored. The
server log (``<data dir>/ayon_server.log``) has one line per request: method, path, status and
the user name or the reason a request was refused.
"""
from __future__ import annotations

import copy
import hmac
import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Iterable

from .. import LoopbackServer
from . import gql, rest
from .faults import check_targets, matches, new_fault_book
from .operations import BackgroundTasks, BatchRefused, run_batch
from .tables import OpError, Tables

__all__ = ["ROUTES", "FakeAyonServer", "seed_id"]

#: Every endpoint of the client's the server answers, as the real server's OpenAPI names them
#: (``/`` and ``/graphql`` are outside the OpenAPI document on the real server too).
ROUTES = [
    ("GET", "/"),
    ("GET", "/api/info"),
    ("GET", "/api/users/me"),
    ("GET", "/api/attributes"),
    ("GET", "/api/projects/{project_name}"),
    ("GET", "/api/projects/{project_name}/folders/{folder_id}"),
    ("GET", "/api/projects/{project_name}/tasks/{task_id}"),
    ("GET", "/api/projects/{project_name}/products/{product_id}"),
    ("GET", "/api/projects/{project_name}/versions/{version_id}"),
    ("GET", "/api/projects/{project_name}/representations/{representation_id}"),
    ("POST", "/api/projects/{project_name}/operations"),
    ("POST", "/api/projects/{project_name}/operations/background"),
    ("GET", "/api/projects/{project_name}/operations/background/{task_id}"),
    ("POST", "/graphql"),
]

LOG_FILE = "ayon_server.log"
_ENTITY_ROUTE = re.compile(r"^/api/projects/([^/]+)/(folder|task|product|version|representation)s/([^/]+)$")
_OPS_ROUTE = re.compile(r"^/api/projects/([^/]+)/operations(/background)?$")
_POLL_ROUTE = re.compile(r"^/api/projects/([^/]+)/operations/background/([^/]+)$")
_PROJECT_ROUTE = re.compile(r"^/api/projects/([^/]+)$")


def seed_id(*names: str) -> str:
    """Deterministic 32-hex id of a seeded entity, so seeding twice finds the same entities."""
    return uuid.uuid5(uuid.NAMESPACE_URL, "fake-ayon:" + "/".join(names)).hex


class FakeAyonServer(LoopbackServer):
    """The local AYON server, in-process. ``data_dir=None`` keeps everything in memory.

    *api_key* is the one key it accepts (``x-api-key`` header), for the service user *user*.
    *faults* are fault dicts (:mod:`.faults`) active from the start.
    """

    def __init__(self, data_dir: str | Path | None, api_key: str = "fake-ayon-api-key",
                 user: str = "atomic-publish", port: int = 0, faults: Iterable[dict] | None = None):
        super().__init__(port)
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.user = user
        self._api_key = api_key
        self.tables = Tables(self.data_dir)
        self.background = BackgroundTasks()
        self.faults = new_fault_book(list(faults or []))
        self._stats_lock = threading.Lock()
        self._stats = self._empty_stats()
        self._journal: list[dict] = []
        self._outage: threading.Thread | None = None

    def _make_handler(self) -> type:
        return type("FakeAyonHandler", (_AyonHandler,), {"fake": self})

    # -- public API ----------------------------------------------------------------

    def check_key(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode(), self._api_key.encode())

    def set_faults(self, faults: Iterable[dict] | dict, replace: bool = True) -> list[dict]:
        """Script faults (see :mod:`.faults`); return what is pending."""
        checked = check_targets(faults if isinstance(faults, dict) else list(faults))
        (self.faults.replace if replace else self.faults.add)(checked)
        return self.faults.pending()

    def clear_faults(self) -> None:
        self.faults.clear()

    def outage(self, seconds: float) -> None:
        """Stop listening now and listen again (same port, same state) after *seconds*."""
        def run() -> None:
            self.stop()
            time.sleep(seconds)
            self.start()
        # The answer to the control request goes out before the listener stops.
        self._outage = threading.Thread(target=lambda: (time.sleep(0.05), run()), daemon=True)
        self._outage.start()

    def stats(self) -> dict:
        """Counters for assertions: requests, batches received/committed/failed, entities kept."""
        with self._stats_lock:
            out = copy.deepcopy(self._stats)
        out["faults_fired"] = dict(self.faults.fired)
        out["faults_pending"] = self.faults.pending()
        return out

    def requests(self) -> list[dict]:
        """The last 1000 requests: method, path, status and the operations of a batch."""
        with self._stats_lock:
            return copy.deepcopy(self._journal)

    def entities(self, project: str, entity_type: str) -> list[dict]:
        """Stored rows of one type in creation order (inactive ones too), as the server keeps them."""
        work = self.tables.read(project)
        return copy.deepcopy(work.rows(entity_type)) if work else []

    def create_project(self, name: str, **anatomy: Any) -> dict:
        """Create a project (``code``, ``roots``, ``statuses``, ``product_types``, ``folder_types``,
        ``task_types``, ``attrib``; the default anatomy otherwise). An existing one is kept."""
        return self.tables.create_project(name, **anatomy)

    def seed(self, project: str = "proj", folders: Iterable[str] = ("sq01/sh010",),
             tasks: Iterable[str] = ("comp",), folder_type: str = "Shot",
             task_type: str = "Compositing", **anatomy: Any) -> dict:
        """Create what production creates before a render is published: the project, the
        folders (``"sq01/sh010"``: parents are plain folders, the leaf has *folder_type*) and
        the *tasks* on every leaf folder. Ids are :func:`seed_id` of the names, and existing
        entities are kept, so seeding twice is harmless. Returns the ids by path."""
        self.create_project(project, **anatomy)
        ids: dict[str, Any] = {"project": project, "folders": {}, "tasks": {}}
        with self.tables.lock:
            work = self.tables.begin(project)
            for path in folders:
                parts = [p for p in path.strip("/").split("/") if p]
                parent = None
                for depth, name in enumerate(parts, 1):
                    sub = "/".join(parts[:depth])
                    folder_id = seed_id(project, sub)
                    if work.get("folder", folder_id) is None:
                        kind = folder_type if depth == len(parts) else "Folder"
                        work.create("folder", folder_id, {"name": name, "folderType": kind,
                                                          "parentId": parent}, self.user)
                    ids["folders"]["/" + sub] = parent = folder_id
                for task in tasks:
                    task_id = seed_id(project, "/".join(parts), task)
                    if work.get("task", task_id) is None:
                        work.create("task", task_id, {"name": task, "taskType": task_type,
                                                      "folderId": parent}, self.user)
                    ids["tasks"][f"/{'/'.join(parts)}/{task}"] = task_id
            self.tables.keep(project, work)
        return ids

    def reset(self) -> None:
        """Forget every project, fault, counter and background task."""
        self.tables.reset()
        self.faults.clear()
        self.faults.fired.clear()
        self.background = BackgroundTasks()
        with self._stats_lock:
            self._stats = self._empty_stats()
            self._journal.clear()

    # -- bookkeeping ---------------------------------------------------------------

    @staticmethod
    def _empty_stats() -> dict:
        return {"requests": 0, "rejected_auth": 0, "graphql": 0, "batches": 0,
                "batches_committed": 0, "batches_failed": 0, "polls": 0,
                "created": 0, "updated": 0, "deleted": 0, "created_by_type": {}}

    def _record(self, method: str, path: str, status: int | str, who: str,
                operations: list | None = None) -> None:
        entry: dict[str, Any] = {"method": method, "path": path, "status": status}
        if operations is not None:
            entry["operations"] = operations
        with self._stats_lock:
            self._journal = (self._journal + [entry])[-1000:]
        if self.data_dir is not None:
            line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} [{method}] {path} | {status} | {who}\n"
            with open(self.data_dir / LOG_FILE, "a", encoding="utf-8") as log:
                log.write(line)

    def _count(self, **increments: int) -> None:
        with self._stats_lock:
            for name, value in increments.items():
                self._stats[name] += value

    def _count_batch(self, success: bool, counts: dict) -> None:
        with self._stats_lock:
            stats = self._stats
            stats["batches"] += 1
            stats["batches_committed" if success else "batches_failed"] += 1
            for kind, key in (("create", "created"), ("update", "updated"), ("delete", "deleted")):
                stats[key] += counts[kind]
            for entity_type, number in counts["created_by_type"].items():
                by_type = stats["created_by_type"]
                by_type[entity_type] = by_type.get(entity_type, 0) + number


class _AyonHandler(BaseHTTPRequestHandler):
    """The client's endpoints, plus ``/_fake/*`` for tests."""

    fake: FakeAyonServer
    server_version = "FakeAyon/1.0"
    _pending: tuple | None = None  # the journal entry of the request being answered

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request goes to the server log instead, without headers

    # -- plumbing ------------------------------------------------------------------

    def _body(self) -> Any:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return json.loads(raw) if raw else None

    def _send(self, status: int, payload: Any, content_type: str = "application/json") -> None:
        body = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        pending, self._pending = self._pending, None
        if pending is not None:  # journalled before the answer leaves, so a client never outruns it
            method, path, user, operations = pending
            self.fake._record(method, path, status, user, operations)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if status != 204:
            self.wfile.write(body)

    def _error(self, status: int, detail: str) -> None:
        self._send(status, {"code": status, "detail": detail})

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(2)
        except OSError:
            pass

    def _user(self) -> tuple[str | None, str]:
        """(user, reason): the user of a valid API key, else None and the server's 401 text."""
        key = self.headers.get("x-api-key")
        authorization = self.headers.get("Authorization") or ""
        if not key and authorization.lower().startswith("apikey "):
            key = authorization.split(None, 1)[1].strip()
        if key:
            return (self.fake.user, "") if self.fake.check_key(key) else (None, "Invalid API key")
        parts = authorization.split()
        if len(parts) == 2 and parts[0].lower() == "bearer" and len(parts[1]) == 64:
            return None, "Invalid access token"  # no login sessions here
        return None, "Access token is missing"

    # -- verbs ---------------------------------------------------------------------

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def _route(self, method: str) -> None:
        path, _, query = self.path.partition("?")
        if path.startswith("/_fake/"):
            self._control(method, path, query)
            return
        fake = self.fake
        fake._count(requests=1)
        try:
            body = self._body() if method == "POST" else None
        except ValueError:
            fake._record(method, path, 400, "-")
            self._error(400, "the body is not JSON")
            return
        if method == "GET" and path in ("", "/"):
            fake._record(method, path, 200, "-")
            self._send(200, "<!doctype html><title>AYON</title><p>local AYON server for tests</p>",
                       "text/html; charset=utf-8")
            return
        user, reason = self._user()
        if method == "GET" and path == "/api/info":
            fake._record(method, path, 200, user or "-")
            self._send(200, rest.info(user))
            return
        if user is None:
            fake._count(rejected_auth=1)
            fake._record(method, path, 401, f"refused: {reason}")
            self._error(401, reason)
            return
        target = ("operations" if _OPS_ROUTE.match(path) and method == "POST" else
                  "poll" if _POLL_ROUTE.match(path) else "graphql" if path == "/graphql" else "rest")
        if self._scripted(method, path, target, user):
            return
        self._pending = (method, path, user,
                         body.get("operations") if target == "operations" and isinstance(body, dict) else None)
        status = self._dispatch(method, path, body, user, target)
        if self._pending is not None:  # nothing was sent (the answer was dropped)
            fake._record(method, path, status, user, self._pending[3])
            self._pending = None

    def _scripted(self, method: str, path: str, target: str, user: str) -> bool:
        """Fire a fault that answers instead of the server; True if one did."""
        faults, check = self.fake.faults, matches(target)
        delay = faults.take("delay", check)
        if delay:
            time.sleep(float(delay.get("seconds", 1.0)))
        fault = faults.take("http_error", check)
        if fault:
            status = int(fault.get("status", 503))
            self.fake._record(method, path, status, f"{user} (scripted http_error)")
            self._error(status, f"local AYON server: scripted HTTP {status}")
            return True
        if faults.take("drop_before", check):
            self.fake._record(method, path, "dropped before", user)
            self._drop()
            return True
        return False

    def _dispatch(self, method: str, path: str, body: Any, user: str, target: str) -> int:
        fake = self.fake
        if target == "graphql" and method == "POST":
            fake._count(graphql=1)
            return self._answer(200, gql.execute(fake.tables, body), target)
        if target == "operations":
            project, background = _OPS_ROUTE.match(path).groups()
            try:
                status, answer, counts = run_batch(fake.tables, project, body, user)
            except BatchRefused as refused:
                return self._answer(refused.status, {"code": refused.status,
                                                     "detail": refused.detail}, target)
            fake._count_batch(status == 200 and answer["success"], counts)
            if background and status == 200:
                answer = fake.background.add(project, answer)
            return self._answer(status, answer, target)
        if method != "GET":
            return self._answer(405, {"code": 405, "detail": "Method Not Allowed"}, target)
        if match := _POLL_ROUTE.match(path):
            fake._count(polls=1)
            task = fake.background.status(*match.groups())
            if task is None:
                return self._answer(404, {"code": 404, "detail": "Background task not found"}, target)
            return self._answer(200, task, target)
        if path == "/api/users/me":
            return self._answer(200, rest.user_me(user), target)
        if path == "/api/attributes":
            return self._answer(200, rest.attributes(), target)
        if match := _PROJECT_ROUTE.match(path):
            work = fake.tables.read(match.group(1))
            if work is None:
                return self._answer(404, {"code": 404, "detail": f"Project {match.group(1)} not found"},
                                    target)
            return self._answer(200, rest.project(work), target)
        if match := _ENTITY_ROUTE.match(path):
            project, entity_type, entity_id = match.groups()
            work = fake.tables.read(project)
            if work is None:
                return self._answer(404, {"code": 404, "detail": f"Project {project} not found"}, target)
            row = work.get(entity_type, entity_id.replace("-", ""))
            if row is None:
                return self._answer(404, {"code": 404, "detail": "Entity not found"}, target)
            return self._answer(200, rest.entity(work, entity_type, row), target)
        return self._answer(404, {"code": 404, "detail": "Not Found"}, target)

    def _answer(self, status: int, payload: Any, target: str) -> int | str:
        """Send the answer, unless a ``drop_after_commit`` fault swallows it (the work is done)."""
        if self.fake.faults.take("drop_after_commit", matches(target)):
            self._drop()
            return f"{status}, answer dropped"
        self._send(status, payload)
        return status

    # -- control -------------------------------------------------------------------

    def _control(self, method: str, path: str, query: str) -> None:
        fake = self.fake
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        try:
            data = self._body() if method == "POST" else None
            if path == "/_fake/faults" and method == "POST":
                data = data or {}
                self._send(200, {"pending": fake.set_faults(data.get("faults", []),
                                                            replace=data.get("replace", True))})
            elif path == "/_fake/faults" and method == "GET":
                self._send(200, {"pending": fake.faults.pending()})
            elif path == "/_fake/faults" and method == "DELETE":
                fake.clear_faults()
                self._send(200, {"pending": []})
            elif path == "/_fake/stats" and method == "GET":
                self._send(200, fake.stats())
            elif path == "/_fake/requests" and method == "GET":
                self._send(200, fake.requests())
            elif path == "/_fake/entities" and method == "GET":
                self._send(200, fake.entities(params["project"], params["type"]))
            elif path == "/_fake/project" and method == "POST":
                self._send(200, fake.create_project(**(data or {})))
            elif path == "/_fake/seed" and method == "POST":
                self._send(200, fake.seed(**(data or {})))
            elif path == "/_fake/outage" and method == "POST":
                fake.outage(float((data or {}).get("seconds", 1.0)))
                self._send(200, {"down_for": float((data or {}).get("seconds", 1.0))})
            elif path == "/_fake/reset" and method == "POST":
                fake.reset()
                self._send(200, {"ok": True})
            else:
                self._send(404, {"error": f"no control endpoint {method} {path}"})
        except (ValueError, TypeError, KeyError, OpError) as exc:
            self._send(400, {"error": str(exc)})
