"""The exit-code contract with the Deadline plugin (docs/contract.md) and the result line."""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from . import errors

EXIT_OK = 0
EXIT_TRANSIENT = 75
EXIT_BUSY = 76
EXIT_WORKER_LOCAL = 77
EXIT_PERMANENT = 78

EXIT_CODES = {
    errors.TRANSIENT: EXIT_TRANSIENT,
    errors.BUSY: EXIT_BUSY,
    errors.WORKER_LOCAL: EXIT_WORKER_LOCAL,
    errors.PERMANENT: EXIT_PERMANENT,
}

# What the farm does with each class, as said in the result line.
DECISIONS = {
    errors.TRANSIENT: "task requeued for any worker",
    errors.BUSY: "task requeued; another attempt is working on this publish",
    errors.WORKER_LOCAL: "this worker is deny-listed for the job; the task goes to another worker",
    errors.PERMANENT: "rolled back; the job fails without further retries",
}


@dataclass
class Outcome:
    """What one attempt ended with; printed as the result line and, with --json, as JSON."""

    outcome: str
    key: str | None = None
    version: int | None = None
    final_dir: str | None = None
    failure_class: str | None = None
    message: str = ""
    exit_code: int = EXIT_OK
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_error(cls, exc: errors.PublishError, key: str | None = None,
                   version: int | None = None, final_dir: str | None = None,
                   decision: str | None = None) -> "Outcome":
        cls_ = exc.failure_class
        decision = decision or DECISIONS[cls_]
        message = f"{exc.cause}; {decision}; {exc.todo}"
        return cls(outcome=cls_, key=key, version=version, final_dir=final_dir,
                   failure_class=cls_, message=message, exit_code=EXIT_CODES[cls_])

    def result_line(self) -> str:
        return (f"[atomic-publish] result {self.outcome} exit={self.exit_code} "
                f"class={self.failure_class or 'none'}: {self.message}")

    def as_json(self) -> str:
        data = asdict(self)
        data.update(data.pop("extra"))
        return json.dumps(data, sort_keys=True, default=str)

    def emit(self, as_json: bool) -> None:
        from ..idempotency.redact import scrub

        print(scrub(self.result_line()), flush=True)
        if as_json:
            print(scrub(self.as_json()), flush=True)
        sys.stdout.flush()
