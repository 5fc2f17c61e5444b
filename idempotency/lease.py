"""Keeps an attempt's lease alive while it works, and notices when it was superseded."""
from __future__ import annotations

import threading
import time

from ..wrapper.errors import PublishError, Superseded
from .records import Records


class LeaseKeeper:
    """Renews the lease every third of its duration in a background thread, while the attempt
    makes progress.

    The attempt calls ``tick()`` as it progresses (every chunk copied, every safe point). An
    attempt stalled for ``stall_seconds`` (a hung mount, a deadlock) stops being renewed, so its
    lease expires and another attempt may take over: a live thread must not keep a dead attempt's
    lease forever. The main thread calls ``check()`` at safe points: once the lease is lost (a
    newer epoch took over), the attempt must stop and change nothing more.
    """

    def __init__(self, records: Records, key: str, epoch: int, seconds: float, stall_seconds: float | None = None):
        self.records, self.key, self.epoch, self.seconds = records, key, epoch, seconds
        self.stall_seconds = stall_seconds if stall_seconds is not None else 2 * seconds
        self._last_tick = time.monotonic()
        self._stop = threading.Event()
        self.lost: Superseded | None = None
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    def __enter__(self) -> "LeaseKeeper":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def tick(self) -> None:
        """The attempt made progress (cheap: called for every chunk copied)."""
        self._last_tick = time.monotonic()

    def stalled(self) -> bool:
        return time.monotonic() - self._last_tick > self.stall_seconds

    def _run(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            if self.stalled():
                continue  # no progress: let the lease expire
            try:
                self.records.renew(self.key, self.epoch, self.seconds)
            except Superseded as exc:
                self.lost = exc
                return
            except (PublishError, Exception):  # a store blip: try again at the next tick
                continue

    def check(self) -> None:
        """A safe point: progress, and a stop if the lease was lost."""
        if self.lost is not None:
            raise self.lost
        self.tick()
