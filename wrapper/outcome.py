"""The result line of an attempt; its exit codes and farm actions come from contract.py."""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from . import errors
from .contract import EXIT_CODES, EXIT_OK, FARM_ACTIONS

EXIT_TRANSIENT = EXIT_CODES[errors.TRANSIENT]
EXIT_BUSY = EXIT_CODES[errors.BUSY]
EXIT_WORKER_LOCAL = EXIT_CODES[errors.WORKER_LOCAL]
EXIT_PERMANENT = EXIT_CODES[errors.PERMANENT]

# What a farm does with each class, as the result line says it. The wrapper cannot know whether a
# farm runs it, so it says what a farm would do; the Deadline plugin adds what it did.
DECISIONS = FARM_ACTIONS

# What an attempt did about its own changes, said before the farm's action where the caller knows it.
NOTHING_WRITTEN = "nothing was written"
ROLLED_BACK = "rolled back (staging removed, version number released)"
CHANGED_NOTHING_MORE = "this attempt changed nothing more"


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
                   decision: str | None = None, done: str | None = None) -> "Outcome":
        """``done`` says what this attempt did about its changes (rolled back, nothing written);
        ``decision`` replaces the farm's action of the class when the attempt knows better."""
        cls_ = exc.failure_class
        decision = decision or DECISIONS[cls_]
        message = "; ".join(p for p in (exc.cause, done, decision, exc.todo) if p)
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
