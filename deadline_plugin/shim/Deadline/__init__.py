"""A small, faithful stand-in for Thinkbox Deadline 10's in-worker scripting API.

Only the names AtomicPublish.py and the local farm use, with Deadline's names and semantics.
Never installed as a top-level package (it would clash with PyPI `deadline` on case-insensitive
filesystems): the local farm and the tests put its parent folder on sys.path.
Repository calls (`Deadline.Scripting.RepositoryUtils`) act on a backend object that the local farm
installs with `Deadline.Scripting.install_backend`; without one they raise a clear error.
"""

SHIM = True
"""Lets code tell the shim from a real Deadline (which has no such attribute)."""
