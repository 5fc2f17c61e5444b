"""Process checks shared by the farm and its workers (POSIX: process groups, signals)."""
from __future__ import annotations

import os
import signal

from ...idempotency.processes import process_alive as pid_alive  # noqa: F401  (one definition)


def kill_process_group(pgid: int) -> None:
    """SIGKILL a whole process group (the wrapper and anything it started)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
