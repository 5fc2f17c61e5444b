"""Keeps an attempt's lease alive while it works, and notices when it was superseded."""
from __future__ import annotations

import threading

from ..wrapper.errors import PublishError, Superseded
from .records import Records


class LeaseKeeper:
    """Renews the lease every third of its duration in a background thread.

    The main thread calls ``check()`` at safe points: once the lease is lost (a newer
    epoch took over), the attempt must stop and change nothing more.
    """

    def __init__(self, records: Records, key: str, epoch: int, seconds: float):
        self.records, self.key, self.epoch, self.seconds = records, key, epoch, seconds
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

    def _run(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                self.records.renew(self.key, self.epoch, self.seconds)
            except Superseded as exc:
                self.lost = exc
                return
            except (PublishError, Exception):  # a store blip: try again at the next tick
                continue

    def check(self) -> None:
        if self.lost is not None:
            raise self.lost
