"""A test surface: log every MongoDB command this process sends, to count store round trips.

``ATOMIC_PUBLISH_COMMAND_LOG=FILE`` makes :func:`install_from_env` register a pymongo
``CommandListener`` before the client is made; each command started appends one line
``<command name> <database> <collection>`` to FILE (collection "-" for commands without one). The benchmark and ``tests/test_budgets.py`` count the
lines: a publish has a fixed budget of commands (on network storage each one is a round trip,
0.2 to 1 ms on a LAN, tens of ms across sites).

The line is written with one ``os.write`` on an ``O_APPEND`` descriptor, so it survives the
wrapper's ``os._exit`` (no buffer to flush) and lines of concurrent threads never interleave.
Unset, nothing is registered and nothing is paid.
"""
from __future__ import annotations

import os

ENV = "ATOMIC_PUBLISH_COMMAND_LOG"
_installed = False


def install_from_env() -> bool:
    """Register the listener once per process when ``ATOMIC_PUBLISH_COMMAND_LOG`` is set."""
    global _installed
    path = os.environ.get(ENV)
    if not path or _installed:
        return _installed
    from pymongo import monitoring

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    class _Log(monitoring.CommandListener):
        def started(self, event: monitoring.CommandStartedEvent) -> None:
            target = event.command.get(event.command_name)
            collection = target if isinstance(target, str) and target else "-"
            os.write(fd, f"{event.command_name} {event.database_name} {collection}\n".encode())

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            pass

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            pass

    monitoring.register(_Log())
    _installed = True
    return True


def staged_saves(path: str) -> int:
    """How many of the logged commands saved staging progress (one per checkpoint batch)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return sum(1 for line in fh if line.split()[:1] == ["update"] and line.split()[-1] == "staged_files")
    except FileNotFoundError:
        return 0


def read_counts(path: str) -> list[str]:
    """The command names logged in ``path`` (one per round trip), in order; [] when absent."""
    try:
        with open(path, encoding="utf-8") as fh:
            return [line.split()[0] for line in fh if line.strip()]
    except FileNotFoundError:
        return []
