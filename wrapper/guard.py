"""Safe points: where an attempt may stop because of SIGTERM or a lost lease."""
from __future__ import annotations

import signal
import threading
from typing import Callable

from .errors import Interrupted


class StopGuard:
    """Turns SIGTERM (Deadline cancel, timeout or requeue; OpenJD's notify) into a stop
    at the next safe point, so the attempt records itself and releases its lease."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.signal_name = ""
        self.extra_checks: list[Callable[[], None]] = []

    def install(self) -> "StopGuard":
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            if hasattr(signal, "SIGBREAK"):  # Windows: CTRL_BREAK_EVENT
                signal.signal(signal.SIGBREAK, self._on_signal)
        return self

    def _on_signal(self, signum, _frame) -> None:
        self.signal_name = signal.Signals(signum).name
        self.stopping.set()

    def check(self) -> None:
        """Raise at a safe point when asked to stop; run the extra checks (the lease)."""
        if self.stopping.is_set():
            raise Interrupted(f"{self.signal_name or 'a stop request'} received (task cancelled, timed out "
                              "or requeued); stopped at a safe point and released the lease")
        for check in self.extra_checks:
            check()
