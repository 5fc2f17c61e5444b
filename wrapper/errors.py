"""Every failure the wrapper reports, each carrying its class and what to do.

The class decides the farm's action (the table in contract.py); the message is the
one line a farm admin reads in the Deadline Monitor.
"""
from __future__ import annotations

from .contract import BUSY, PERMANENT, TRANSIENT, WORKER_LOCAL  # noqa: F401  (the class names, re-exported)


class PublishError(Exception):
    """Base of every classified failure.

    ``cause`` says what failed, ``todo`` what the reader should do about it.
    """

    failure_class = TRANSIENT
    default_todo = "the farm will retry; if it keeps failing, read the task log"

    def __init__(self, cause: str, todo: str | None = None):
        super().__init__(cause)
        self.cause = cause
        self.todo = todo or self.default_todo

    def __str__(self) -> str:
        return self.cause


class TransientError(PublishError):
    failure_class = TRANSIENT


class WorkerLocalError(PublishError):
    failure_class = WORKER_LOCAL
    default_todo = "fix the mount or permissions on this worker"


class PermanentError(PublishError):
    failure_class = PERMANENT
    default_todo = "fix the job and resubmit it"


class BusyError(PublishError):
    failure_class = BUSY
    default_todo = "nothing: the farm requeues the task and it resumes when the other attempt ends"


class ManifestError(PermanentError):
    """The manifest (or another user input) is invalid; names the field and the problem.

    A field that starts with "-" is a command-line argument (``--task-id``, the file that
    ``--manifest`` names) and is reported as one, not as a manifest field."""

    default_todo = "fix the manifest and resubmit the job"

    def __init__(self, field: str, problem: str, todo: str | None = None):
        self.field = field
        self.problem = problem
        where = "argument" if field.startswith("-") else "manifest field"
        super().__init__(f"{where} {field}: {problem}", todo)


class ArgumentError(ManifestError):
    """A bad command line (a ManifestError, so that every caller that refuses bad input catches it)."""

    default_todo = "fix the job submission"

    def __init__(self, argument: str, problem: str, todo: str | None = None):
        super().__init__(argument, problem, todo)
        if not argument.startswith("-"):  # no single argument: argparse's "the following arguments are required"
            self.cause = f"command line: {problem}"


class SourceError(PermanentError):
    default_todo = "check the render output and resubmit the job"


class SourceUnreachable(WorkerLocalError):
    default_todo = "check that the render storage is mounted and readable on this worker"


class DestinationError(PermanentError):
    default_todo = "fix the template or publish root in the manifest and resubmit"


class PublishRootUnavailable(WorkerLocalError):
    default_todo = "mount the publish root on this worker or fix its permissions"


class VersionConflict(PermanentError):
    default_todo = "pin another version number, or leave version empty to take the next free one, and resubmit"


class FingerprintMismatch(PermanentError):
    default_todo = ("a job's task must always publish the same manifest; submit a new job "
                    "for a changed manifest")


class RolledBack(PermanentError):
    default_todo = "fix the cause and submit a new job (a rolled-back publish never resumes)"


class LeaseHeld(BusyError):
    """Another live attempt holds the lease on this key."""


class Superseded(BusyError):
    """This attempt lost its lease (a newer epoch took over): it must change nothing more."""

    default_todo = "nothing: a newer attempt owns this publish"


class Interrupted(TransientError):
    """SIGTERM (task cancel, timeout or requeue) stopped the attempt at a safe point."""

    default_todo = "nothing: the next attempt resumes where this one stopped"


class StoreUnavailable(TransientError):
    default_todo = "check that the MongoDB store is reachable from this worker"


class StoreConfigError(PermanentError):
    default_todo = "fix the store URI or its credentials (plugin configuration StoreUri or ATOMIC_PUBLISH_STORE)"


class StoreNotRunning(StoreConfigError):
    """No store given and the embedded one is not running: a read-only command starts nothing."""

    default_todo = ("start the embedded store with `atomic-publish store start`, or point at a store with "
                    "--store URI or ATOMIC_PUBLISH_STORE")


class StoreMismatch(WorkerLocalError):
    """The worker reached another store than the one the job was submitted for (issue 16)."""

    default_todo = "set StoreUri in the AtomicPublish plugin configuration (or ATOMIC_PUBLISH_STORE on this worker)"


class StagingTaken(WorkerLocalError):
    """This epoch's staging folder already exists: another store's attempt (same key, same epoch
    number) or a stale copy owns it, so staging must not write into it."""

    default_todo = ("check that every worker uses the farm's one store (StoreUri), then requeue; "
                    "`atomic-publish audit --root` lists the folder")


class StorageInvisible(WorkerLocalError):
    """A roll-forward worker cannot see the version's files (an empty mountpoint, a missing
    publish root): another worker must finish the commit."""

    default_todo = "mount the publish storage on this worker; the farm moves the task to another worker"


class StorageFull(TransientError):
    """No space (or quota) left on the publish storage: transient however often it happens, since
    freeing space is what fixes it; never escalated to permanent, never rolled back (issue 16)."""

    default_todo = "free space on the publish storage (or raise the quota); the next attempt resumes"


# -- the catalogue (wrapper/catalogs): where versions become visible (issue 15) -----------------

class CatalogUnavailable(TransientError):
    """The catalogue (the AYON server, OpenPype's MongoDB) did not answer, or answered 5xx: the
    publish resumes when it is back, nothing of the batch became visible."""

    default_todo = "check that the catalogue server is reachable from this worker; the publish resumes when it answers"


class CatalogRefused(PermanentError):
    """The catalogue refused what the publish asks (a missing folder or task, an unknown status,
    a 4xx other than authentication): another attempt would be refused the same way."""

    default_todo = "fix the publish's folder, task or status (or the catalogue's settings) and resubmit the job"


class CatalogAuthRefused(PermanentError):
    """The catalogue refused the farm's credentials (the API key of the plugin configuration):
    every worker holds the same key, so no retry helps. The key is never part of the message."""

    default_todo = ("set a valid API key of an AYON service user in the AtomicPublish plugin configuration "
                    "(AyonApiKey), then requeue the job")


class CatalogAuthRefusedHere(WorkerLocalError):
    """The catalogue refused the credentials this worker's own environment gives (``AYON_API_KEY``
    set on the worker): another worker may hold a valid one."""

    default_todo = ("fix AYON_API_KEY in this worker's environment (or remove it to use the plugin "
                    "configuration's AyonApiKey); the farm moves the task to another worker")


class CatalogNumberTaken(TransientError):
    """Another client of the catalogue created version ``number`` of the product between the
    reservation and the commit; nothing is visible yet, so the core takes the next free number."""

    default_todo = "nothing: the next attempt takes the next free version number"

    def __init__(self, cause: str, number: int, product: str = "", todo: str | None = None):
        super().__init__(cause, todo)
        self.number = number
        self.product = product


class NumberTakenAtCommit(PermanentError):
    """Another catalogue client took a version's number in the moment between the last look and
    the commit: past the point of no return nothing is renumbered, so a person settles it."""

    default_todo = "remove or renumber the other client's version, then requeue the task: it rolls forward"
