"""Is a process still there? (leases of dead owners on this host, the embedded server, farm workers)."""
from __future__ import annotations

import os


def process_alive(pid: int) -> bool:
    """True while a process with this pid exists (a zombie counts until its parent reaps it)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True
