"""When a failure that looked transient or worker-local has become permanent.

Reads the attempt history of the record: too many failed attempts of one key, the same
worker-local error on too many distinct workers, or the same unexpected error twice.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import PERMANENT, TRANSIENT, WORKER_LOCAL, PermanentError, PublishError, StorageFull

FAILED = (TRANSIENT, WORKER_LOCAL)


@dataclass(frozen=True)
class Limits:
    max_key_attempts: int = 6      # failed attempts of one publish across the farm
    max_failing_workers: int = 3   # distinct workers failing with the same error


class Escalated(PermanentError):
    default_todo = "fix the cause named above, then submit a new job"


def error_type(exc: PublishError) -> str:
    """A stable signature of an error: its class name (the cause text names workers and paths)."""
    return type(exc).__name__ + (":" + exc.cause.split(":")[0][len("unexpected "):]
                                 if exc.cause.startswith("unexpected ") else "")


def escalate(exc: PublishError, history: list[dict[str, Any]], worker: str, limits: Limits) -> PublishError:
    """Return ``exc`` unchanged, or an Escalated (permanent) error when a limit is reached.

    ``history`` is the record's attempts before this one.
    """
    if exc.failure_class not in FAILED or isinstance(exc, StorageFull):
        return exc  # a full disk is fixed by freeing space, not by giving up: never permanent
    failed = [a for a in history if a.get("outcome") in FAILED and a.get("error_type") != "StorageFull"]
    count = len(failed) + 1
    sig = error_type(exc)
    if count >= limits.max_key_attempts:
        return Escalated(f"this publish failed {count} times (limit {limits.max_key_attempts}, "
                         f"setting MaxKeyAttempts); last error: {exc.cause}")
    if exc.failure_class == WORKER_LOCAL:
        workers = sorted({a.get("worker") for a in failed if a.get("error_type") == sig} | {worker})
        if len(workers) >= limits.max_failing_workers:
            return Escalated(f"{len(workers)} workers ({', '.join(workers)}) failed with the same error, so it is "
                             f"not local to one worker (limit {limits.max_failing_workers}, setting "
                             f"MaxFailingWorkers): {exc.cause}")
    if sig.startswith("TransientError:") and any(a.get("error_type") == sig for a in failed):
        return Escalated(f"the same unexpected error happened twice: {exc.cause}",
                         "report it with the task logs; it is not retried further")
    return exc


__all__ = ["Limits", "Escalated", "escalate", "error_type", "PERMANENT"]
