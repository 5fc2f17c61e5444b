"""Named failpoints at every durable step, for the fault suite (docs/design.md section 6).

Enabled with ``ATOMIC_PUBLISH_FAILPOINTS=NAME=ACTION[@N],...`` where ACTION is
``raise``, ``exit``, ``kill`` (SIGKILL to itself) or ``hang``; ``@N`` fires on the Nth
hit only. Disabled, ``hit()`` is one dict lookup. A test surface, never a production behaviour.
"""
from __future__ import annotations

import os
import signal
import sys
import time

from .errors import TransientError

# name -> the step it guards
POINTS: dict[str, str] = {
    "lease.acquired": "after the lease is taken, before anything else is written",
    "reserve.after": "after the version number is reserved",
    "stage.begin": "after the staging directory is created",
    "stage.file": "after each file is staged and verified (before its progress is saved)",
    "stage.checkpoint": "after a batch of staging progress is saved in the staging folder's journal",
    "staged": "after every file is verified and the record says STAGED",
    "integrate.prepare": "after each gate integration is prepared and its receipt saved",
    "commit.begin": "after the record says COMMITTING (point of no return)",
    "commit.rename": "after the staging folder is renamed into place",
    "commit.documents": "after the documents are inserted",
    "integrate.commit": "after each gate integration is committed (e.g. ftrack is_published) and saved",
    "hero.claimed": "after the product's hero is claimed in the store (hero versions on)",
    "hero.staged": "after the new hero content is built beside the hero folder",
    "hero.swapped": "after the new hero content is swapped into the hero folder",
    "hero.emptied": "after a content folder beside the hero is emptied, before the store records it",
    "hero.catalog": "after the catalogue's hero entry points at the new version",
    "hero.done": "after the store records the new hero and the hold is released",
    "commit.published": "after the record says PUBLISHED, before the attempt ends",
    "rollback.begin": "after the record says ROLLING_BACK",
    "rollback.compensate": "after each prepared integration is compensated",
    "rollback.staging": "after the staging folders are removed",
    "rollback.reservation": "after the reservation is released",
}
ACTIONS = ("raise", "exit", "kill", "hang")


class FailpointError(TransientError):
    default_todo = "this is an injected fault (ATOMIC_PUBLISH_FAILPOINTS); unset it in production"


def _parse(spec: str) -> dict[str, tuple[str, int | None]]:
    table: dict[str, tuple[str, int | None]] = {}
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        name, _, action = entry.partition("=")
        nth = None
        if "@" in action:
            action, _, n = action.partition("@")
            nth = int(n)
        if name not in POINTS or action not in ACTIONS:
            raise ValueError(f"ATOMIC_PUBLISH_FAILPOINTS entry {entry!r}: unknown failpoint or action "
                             f"(see `atomic-publish failpoints`)")
        table[name] = (action, nth)
    return table


_TABLE = _parse(os.environ.get("ATOMIC_PUBLISH_FAILPOINTS", ""))
_HITS: dict[str, int] = {}


def configure(spec: str) -> None:
    """Replace the table (a process forked from a warm parent re-reads its environment)."""
    global _TABLE
    _TABLE = _parse(spec)
    _HITS.clear()


def hit(name: str) -> None:
    """Fire the failpoint ``name`` when it is enabled and due."""
    if not _TABLE or name not in _TABLE:
        return
    action, nth = _TABLE[name]
    _HITS[name] = _HITS.get(name, 0) + 1
    if nth is not None and _HITS[name] != nth:
        return
    sys.stdout.flush()
    if action == "raise":
        raise FailpointError(f"failpoint {name} fired (injected fault)")
    if action == "exit":
        os._exit(70)
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    print(f"[atomic-publish] failpoint {name}: hang", flush=True)
    while True:  # hang: until the process is killed (no progress: its lease is no longer renewed)
        time.sleep(3600)
