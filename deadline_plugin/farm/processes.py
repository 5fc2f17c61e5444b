"""Process checks shared by the farm and its workers (POSIX: process groups, signals)."""
from __future__ import annotations

import os
import signal


def pid_alive(pid: int) -> bool:
    """True while a process with this pid exists (a zombie counts until its parent reaps it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_process_group(pgid: int) -> None:
    """SIGKILL a whole process group (the wrapper and anything it started)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
