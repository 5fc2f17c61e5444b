"""``POST /api/projects/{project}/operations`` (and its background variant): batches of changes.

The real server (``ayon_server/operations/project_level``) runs a batch with ``canFail=false``
in one transaction: the first failed operation ends the batch, everything before it is rolled
back, and the answer is still HTTP 200 with ``success: false`` and the failed operation's
``status``/``errorCode``/``detail`` (only ``raiseOnError=true`` turns it into an HTTP error).
With ``canFail=true`` every operation runs on its own and the ones that worked are kept. The
background variant answers at once with a task id that the client polls; here the batch is
already done when that answer is sent, so the first poll sees it completed.
"""
from __future__ import annotations

import threading
import uuid
from typing import Any

from .anatomy import ENTITY_TYPES
from .tables import OpError, Tables

__all__ = ["BackgroundTasks", "BatchRefused", "run_batch"]

_SUCCESS_STATUS = {"create": 201, "update": 204, "delete": 204}
_NOTHING: dict[str, Any] = {"create": 0, "update": 0, "delete": 0, "created_by_type": {}}


class BatchRefused(Exception):
    """The whole request is refused before any operation runs (HTTP status, detail)."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


def _parse(body: Any) -> tuple[list[dict], bool, bool]:
    """Validate the request model (``OperationsRequestModel``); return ops, canFail, raiseOnError."""
    if not isinstance(body, dict):
        raise BatchRefused(400, "the request body must be a JSON object")
    operations = body.get("operations")
    if not isinstance(operations, list):
        raise BatchRefused(400, "operations: field required (a list)")
    for flag in ("canFail", "raiseOnError", "waitForEvents"):
        if not isinstance(body.get(flag, False), bool):
            raise BatchRefused(400, f"{flag}: value is not a valid boolean")
    touched: set[tuple[str, str]] = set()
    parsed = []
    for index, op in enumerate(operations):
        where = f"operations[{index}]"
        if not isinstance(op, dict):
            raise BatchRefused(400, f"{where}: an operation is a JSON object")
        if op.get("type") not in _SUCCESS_STATUS:
            raise BatchRefused(400, f"{where}.type: must be one of create, update, delete")
        if op.get("entityType") not in ENTITY_TYPES:
            raise BatchRefused(400, f"{where}.entityType: must be one of {', '.join(ENTITY_TYPES)}")
        if op["type"] != "delete" and not isinstance(op.get("data"), dict):
            raise BatchRefused(400, f"{where}.data: required for {op['type']}")
        if op["type"] != "create":
            if not op.get("entityId"):
                raise BatchRefused(400, "entity_id is required for update/delete")
            key = (op["entityType"], op["entityId"])
            if key in touched:
                raise BatchRefused(400, f"Duplicate operation for {key[0]} {key[1]}")
            touched.add(key)
        parsed.append({**op, "id": op.get("id") or str(uuid.uuid4())})
    return parsed, body.get("canFail", False), body.get("raiseOnError", False)


def run_batch(tables: Tables, project: str, body: Any, user: str) -> tuple[int, dict, dict]:
    """Run one batch; return (HTTP status, answer, counts of what was kept: none if rolled back).

    Raises :class:`BatchRefused` for a malformed request or an unknown project.
    """
    operations, can_fail, raise_on_error = _parse(body)
    with tables.lock:
        work = tables.begin(project)
        if work is None:
            raise BatchRefused(404, f"Project {project} not found")
        results: list[dict] = []
        counts: dict[str, Any] = {"create": 0, "update": 0, "delete": 0, "created_by_type": {}}
        for op in operations:
            result = {"id": op["id"], "type": op["type"], "entityType": op["entityType"],
                      "entityId": op.get("entityId"), "success": True,
                      "status": _SUCCESS_STATUS[op["type"]], "errorCode": None, "detail": None}
            try:
                if op["type"] == "create":
                    result["entityId"] = work.create(op["entityType"], op.get("entityId"),
                                                     op["data"], user)
                elif op["type"] == "update":
                    work.update(op["entityType"], op["entityId"], op["data"], user)
                else:
                    work.delete(op["entityType"], op["entityId"])
                counts[op["type"]] += 1
                if op["type"] == "create":
                    by_type = counts["created_by_type"]
                    by_type[op["entityType"]] = by_type.get(op["entityType"], 0) + 1
            except OpError as error:
                result.update(success=False, status=error.status, errorCode=error.code,
                              detail=error.detail)
                results.append(result)
                if can_fail:
                    continue
                if raise_on_error:
                    return error.status, {"code": error.status, "detail": error.detail}, _NOTHING
                break
            results.append(result)
        success = all(r["success"] for r in results)
        if success or can_fail:
            tables.keep(project, work)
        else:
            counts = _NOTHING
    return 200, {"operations": results, "success": success}, counts


class BackgroundTasks:
    """Results of background batches by task id (the real server keeps them in Redis, 30 min)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[str, dict] = {}

    def add(self, project: str, result: dict) -> dict:
        """Record a finished batch; return the POST answer (``status: pending``, as recorded)."""
        task_id = uuid.uuid1().hex
        with self._lock:
            self._tasks[task_id] = {"project": project, "result": result}
        return {"id": task_id, "status": "pending", "progress": None, "result": None}

    def status(self, project: str, task_id: str) -> dict | None:
        with self._lock:
            task = self._tasks.get(task_id)
        if task is None or task["project"] != project:
            return None
        return {"id": task_id, "status": "completed", "progress": 100.0, "result": task["result"]}
