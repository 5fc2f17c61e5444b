"""Progress and status lines on stdout in the fixed format the Deadline plugin parses."""
from __future__ import annotations

import sys
import time

PREFIX = "[atomic-publish]"
MIB = 1024 * 1024


def status(text: str) -> None:
    print(f"{PREFIX} status {text}", flush=True)


def info(text: str) -> None:
    print(f"{PREFIX} {text}", flush=True)


class Progress:
    """``[atomic-publish] progress 42.5% staged 12/40 files, 96.0/320.0 MiB``, at most twice a second."""

    def __init__(self, total_files: int, total_bytes: int, interval: float = 0.5):
        self.total_files, self.total_bytes = total_files, total_bytes
        self.files = self.bytes = 0
        self.interval = interval
        self._last = 0.0

    def advance(self, nbytes: int) -> None:
        self.files += 1
        self.bytes += nbytes
        now = time.monotonic()
        if now - self._last >= self.interval or self.files == self.total_files:
            self._last = now
            self.emit()

    def emit(self) -> None:
        if self.total_bytes:
            pct = 100.0 * self.bytes / self.total_bytes
        else:
            pct = 100.0 * self.files / max(self.total_files, 1)
        sys.stdout.write(f"{PREFIX} progress {pct:.1f}% staged {self.files}/{self.total_files} files, "
                         f"{self.bytes / MIB:.1f}/{self.total_bytes / MIB:.1f} MiB\n")
        sys.stdout.flush()
