"""One clock for the whole farm: the store's (docs/design.md, invariant 8).

Leases, record times and `gc`'s ages are judged by the store's clock, never by each worker's
own: a worker ten minutes fast would otherwise steal live leases, one ten minutes slow would
write leases that are already expired, and a fast host's `gc` would release live ones.

Every process measures once, when it connects, how far its own clock is from the store's
(the store's ``hello`` answer carries its ``localTime``; the round trip is part of the
connection check, so this costs no extra command) and from then on reads ``now()`` =
local clock + that offset. The offset is exact to half a round trip plus the store's
millisecond resolution, far below any lease.

``ATOMIC_PUBLISH_FAULT_CLOCK_SKEW`` (seconds, may be negative) shifts this process's local
clock: a test surface for the fault suite, like the failpoints, never a production setting.
"""
from __future__ import annotations

import datetime as dt
import os
import sys
import time

WARN_SECONDS = 30.0  # a worker clock further off than this is told so in its log

_offset = 0.0        # store clock minus local clock, in seconds
_calibrated = False


def _skew() -> float:
    try:
        return float(os.environ.get("ATOMIC_PUBLISH_FAULT_CLOCK_SKEW") or 0.0)
    except ValueError:
        return 0.0


def local_now() -> dt.datetime:
    """This host's own clock (with the fault suite's skew, if any)."""
    return dt.datetime.fromtimestamp(time.time() + _skew(), dt.timezone.utc)


def now() -> dt.datetime:
    """The store's clock, as well as this process can tell it."""
    return local_now() + dt.timedelta(seconds=_offset)


def offset() -> float:
    return _offset


def calibrate(store_time: dt.datetime, sent: dt.datetime, received: dt.datetime, where: str = "the store") -> float:
    """Set the offset from one answer of the store: ``store_time`` was read between ``sent``
    and ``received`` (local clock). Warns once when this host's clock is far off."""
    global _offset, _calibrated
    if store_time.tzinfo is None:
        store_time = store_time.replace(tzinfo=dt.timezone.utc)
    midpoint = sent + (received - sent) / 2
    _offset = (store_time - midpoint).total_seconds()
    _calibrated = True
    if abs(_offset) > WARN_SECONDS:
        direction = "behind" if _offset > 0 else "ahead of"
        print(f"[atomic-publish] warning: this host's clock is {abs(_offset):.0f} s {direction} the clock of "
              f"{where}; leases and ages are judged by the store's clock, so nothing breaks, but fix this "
              "host's time synchronisation (NTP): file dates it writes will be off", file=sys.stderr, flush=True)
    return _offset


def calibrate_client(client, where: str = "the store") -> None:
    """Ask the store for its time (``hello``) and calibrate; also proves the store answers."""
    sent = local_now()
    answer = client.admin.command("hello")
    received = local_now()
    store_time = answer.get("localTime")
    if isinstance(store_time, dt.datetime):
        calibrate(store_time, sent, received, where)


def age_seconds(ts: dt.datetime | None) -> float:
    """How long ago ``ts`` (a time written by ``now()``) was, by the store's clock."""
    if ts is None:
        return float("inf")
    ts = ts if ts.tzinfo else ts.replace(tzinfo=dt.timezone.utc)
    return (now() - ts).total_seconds()


__all__ = ["now", "local_now", "offset", "calibrate", "calibrate_client", "age_seconds", "WARN_SECONDS"]
