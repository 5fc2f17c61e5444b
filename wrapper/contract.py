"""The one table of the exit-code contract: failure class -> exit code -> what the farm does.

errors.py names the classes, outcome.py prints the result line from this table, the tests
compare the Deadline plugin's own constants (it may import only the standard library and
Deadline) and docs/contract.md with it. A new class is one row here.
"""
from __future__ import annotations

from dataclasses import dataclass

TRANSIENT = "transient"
BUSY = "busy"
WORKER_LOCAL = "worker-local"
PERMANENT = "permanent"

EXIT_OK = 0


@dataclass(frozen=True)
class FailureClass:
    """One row of the contract."""

    name: str         #: the class, as in ``class=`` of the result line and ``failure_class`` of errors
    exit_code: int    #: the wrapper's exit code for it
    plugin: str       #: what the Deadline plugin does: "requeue", "deny-list" or "fail"
    farm_action: str  #: what a farm does with it, in the words of the result line


CLASSES: tuple[FailureClass, ...] = (
    FailureClass(TRANSIENT, 75, "requeue", "a farm requeues the task for any worker"),
    FailureClass(BUSY, 76, "requeue", "a farm requeues the task; another attempt is working on this publish"),
    FailureClass(WORKER_LOCAL, 77, "deny-list",
                 "a farm deny-lists this worker for the job and gives the task to another worker"),
    FailureClass(PERMANENT, 78, "fail", "a farm fails the job without further retries"),
)

BY_NAME: dict[str, FailureClass] = {c.name: c for c in CLASSES}
EXIT_CODES: dict[str, int] = {c.name: c.exit_code for c in CLASSES}
FARM_ACTIONS: dict[str, str] = {c.name: c.farm_action for c in CLASSES}
OUTCOME_OF_EXIT: dict[int, str] = {EXIT_OK: "published", **{c.exit_code: c.name for c in CLASSES}}
