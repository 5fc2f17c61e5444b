"""`atomic-publish abandon --job-id JOB`: roll back the unfinished publishes of a job the farm gave up on.

A job an admin fails or deletes in the Deadline Monitor never runs another attempt, so nothing
would finish or undo its publishes: the AtomicPublishEvents event plugin runs this command from
OnJobFailed and OnJobDeleted. For every record of the job: PUBLISHED and ROLLED_BACK are left as
they are; COMMITTING is past the point of no return and is left to roll forward (design
invariant 7: nothing ever removes its files); anything earlier is rolled back by the same code as
an attempt's permanent failure (`Attempt.abandon`), after taking the lease the way every attempt
takes it, so a live attempt is never disturbed (busy: exit 76, run it again later).
"""
from __future__ import annotations

import argparse
import json
import socket
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from ..idempotency import records as R
from .outcome import EXIT_CODES, EXIT_OK
from .errors import BUSY, TRANSIENT, PublishError

LINE = "[atomic-publish] abandon"
BUSY_POLL_SECONDS = 0.5


@dataclass
class KeyResult:
    """What abandon did to one key (one line of output, one entry of --json)."""

    key: str
    task_id: str
    before: str
    after: str
    action: str  # rolled-back | already-rolled-back | already-published | left-to-roll-forward | busy | failed
    message: str

    def line(self) -> str:
        return f"{LINE} {self.key} task {self.task_id} {self.before} -> {self.after}: {self.message}"

    @property
    def settled(self) -> bool:
        return self.action not in ("busy", "failed")


def configure_parser(p: argparse.ArgumentParser) -> None:
    from .cliutil import add_store_options

    p.description = ("Roll back every unfinished publish of a Deadline job that was failed or deleted "
                     "(never a COMMITTING or PUBLISHED one); the AtomicPublishEvents event plugin runs it.")
    p.add_argument("--job-id", required=True, help="Deadline JobId whose publishes to abandon")
    p.add_argument("--reason", default=None,
                   help="why, saved in each rolled-back record (default: 'job JOB was failed or deleted in Deadline')")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="how long to wait for a live attempt to let go of its lease before reporting the key "
                        "busy (default 0: report it at once)")
    add_store_options(p, "the store whose records to roll back (a stopped embedded store is not started)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the lines")


def _manifest_and_integrations(rec: dict[str, Any]):
    """The canonical manifest the record was published with, and its integrations (for compensation)."""
    from . import integrate
    from .errors import ManifestError
    from .manifest import parse_manifest

    text = rec.get("manifest_json")
    if not text:
        raise ManifestError("manifest_json", "the record holds no manifest (written by an older atomic-publish)",
                            "roll it back by hand, or let `atomic-publish gc` clean its staging folders")
    manifest = parse_manifest(json.loads(text))
    return manifest, integrate.build(manifest)


def _outcome_of(store, rec: dict[str, Any], reason: str, worker: str):
    """Run Attempt.abandon for one record: the publish machinery's lease and rollback."""
    from .guard import StopGuard
    from .publish import Attempt, Request

    from .manifest import parse_manifest

    manifest, integrations = _manifest_and_integrations(rec)
    # every product of the publish (invariant 10): the rollback removes each one's staging folder
    products = [manifest] + [parse_manifest(json.loads(view["manifest_json"]))
                             for view in R.product_views(rec)[1:] if view.get("manifest_json")]
    req = Request(manifest_path="(the record's manifest_json)", job_id=str(rec.get("job_id")),
                  task_id=str(rec.get("task_id")), worker=worker)
    return Attempt(store, manifest, rec["_id"], rec["fingerprint"], req, StopGuard(), integrations,
                   products).abandon(reason)


def _left_alone(rec: dict[str, Any], before: str) -> KeyResult | None:
    """The states abandon never changes, with what they mean; None when the key may be rolled back."""
    key, task = rec["_id"], str(rec.get("task_id"))
    if before == R.PUBLISHED:
        return KeyResult(key, task, before, before, "already-published",
                         f"already published, left as it is (version {rec.get('version')} at {rec.get('final_dir')})")
    if before == R.COMMITTING:
        return KeyResult(key, task, before, before, "left-to-roll-forward",
                         "past the point of no return: left to roll forward (nothing removed; requeue the job "
                         "or run the task again and the next attempt finishes the publish)")
    if before == R.ROLLED_BACK:
        reason = (rec.get("error") or {}).get("message") or "an earlier failure"
        return KeyResult(key, task, before, before, "already-rolled-back", f"already rolled back ({reason})")
    return None


def abandon_record(store, rec: dict[str, Any], reason: str, wait: float, worker: str) -> KeyResult:
    """Abandon one key; waits up to ``wait`` seconds while a live attempt holds it."""
    key, task, before = rec["_id"], str(rec.get("task_id")), rec["state"]
    alone = _left_alone(rec, before)
    if alone is not None:
        return alone
    deadline = time.monotonic() + max(0.0, wait)
    while True:
        try:
            outcome = _outcome_of(store, rec, reason, worker)
        except PublishError as exc:  # the record's manifest cannot be rebuilt here
            return KeyResult(key, task, before, before, "failed", f"{exc.cause}; left as it is; {exc.todo}")
        if outcome.failure_class != BUSY or time.monotonic() >= deadline:
            break
        time.sleep(BUSY_POLL_SECONDS)
    now = store.records.get(key) or rec
    after = now["state"]
    if outcome.outcome == "rolled-back":
        version = now.get("version")
        released = f", version {version} released" if version is not None else ""
        return KeyResult(key, task, before, after, "rolled-back",
                         f"rolled back (staging folders removed{released}): {(now.get('error') or {}).get('message') or reason}")
    if outcome.failure_class is None:  # it reached COMMITTING, PUBLISHED or ROLLED_BACK meanwhile
        settled = _left_alone(now, after)
        if settled is not None:
            settled.before = before
            return settled
    # The farm's advice in the message (requeue, retry) is not what happens here: say what to do instead.
    cause = outcome.message.split("; left as it is", 1)[0].split("; the rollback stopped midway", 1)[0]
    again = f"run `atomic-publish abandon --job-id {rec.get('job_id')}` again"
    if outcome.failure_class == BUSY:
        return KeyResult(key, task, before, after, "busy",
                         f"{cause}; left as it is: {again} once that attempt has ended")
    stopped = "the rollback stopped midway" if after == R.ROLLING_BACK else "nothing was changed"
    return KeyResult(key, task, before, after, "failed", f"{cause}; {stopped}: {again} to finish it")


def abandon_job(store, job_id: str, reason: str, wait: float = 0.0,
                say: Callable[[KeyResult], None] = lambda result: None) -> list[KeyResult]:
    """Abandon every key of ``job_id``, in task order; ``say`` gets each result as it is known."""
    worker = f"abandon@{socket.gethostname()}"
    results = []
    for rec in store.records.find_by_job(job_id):
        result = abandon_record(store, rec, reason, wait, worker)
        say(result)
        results.append(result)
    return results


def exit_code(results: list[KeyResult]) -> int:
    """0 when every key is settled; busy (76) when a live attempt kept one; transient (75) otherwise."""
    if all(r.settled for r in results):
        return EXIT_OK
    if any(r.action == "failed" for r in results):
        return EXIT_CODES[TRANSIENT]
    return EXIT_CODES[BUSY]


def main(args: argparse.Namespace) -> int:
    from ..idempotency.redact import scrub
    from .cliutil import open_store_for

    reason = args.reason or f"job {args.job_id} was failed or deleted in Deadline"
    store = open_store_for("abandon", args.store, chosen_catalog=True)  # the catalogue `run` published into
    if store is None:
        return EXIT_CODES[TRANSIENT]
    try:
        say = (lambda result: None) if args.json else (lambda result: print(scrub(result.line()), flush=True))
        results = abandon_job(store, args.job_id, reason, args.wait, say)
    finally:
        store.close()
    code = exit_code(results)
    if args.json:
        print(scrub(json.dumps({"job_id": args.job_id, "reason": reason, "exit_code": code,
                                "keys": [asdict(r) for r in results]}, sort_keys=True)))
    elif not results:
        print(f"{LINE} job {args.job_id}: no publish record, nothing to roll back", flush=True)
    else:
        counts: dict[str, int] = {}
        for r in results:
            counts[r.action] = counts.get(r.action, 0) + 1
        print(f"{LINE} job {args.job_id}: " + ", ".join(f"{n} {a}" for a, n in sorted(counts.items())), flush=True)
    return code
