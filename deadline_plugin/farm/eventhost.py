"""The process an event is fired in: `python -m atomic_publish.deadline_plugin.farm.eventhost ...`.

Its own module (not imported by the farm package) so that `-m` runs it cleanly; see events.py.
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from ..resources import ensure_shim_on_path
from .events import CALLBACKS, LOG_FILE, fire_in_process
from .state import FarmState


def main(argv: list[str] | None = None) -> int:
    """Fire one event with the farm as the repository; its log lines go to stdout and events.log."""
    parser = argparse.ArgumentParser(description="fire one event of the local farm")
    parser.add_argument("--farm-dir", required=True, type=Path)
    parser.add_argument("--event", required=True, choices=sorted(CALLBACKS))
    parser.add_argument("--job-id", required=True)
    args = parser.parse_args(argv)
    ensure_shim_on_path()
    import Deadline.Scripting

    from .backend import FarmBackend

    log_path = args.farm_dir / LOG_FILE

    def log(line: str) -> None:
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        print(line, flush=True)
        with open(log_path, "a", encoding="utf-8") as stream:
            stream.write(f"{stamp}: {args.event} job {args.job_id}: {line}\n")

    Deadline.Scripting.install_backend(FarmBackend(FarmState(args.farm_dir), "event", log=log))
    fire_in_process(args.farm_dir, args.event, args.job_id, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
