"""What an admin does to a job in the Deadline Monitor, on the local farm: fail, delete or requeue it,
and run the workers of a stopped farm again (after a requeue).

Each change is one transaction of the farm state; the event it causes (OnJobFailed, OnJobDeleted,
OnJobRequeued) is fired from this process, as the Monitor fires it, with this process's
environment unless ``env`` is given. A worker rendering a task of the job notices within a
fraction of a second and stops the render (SIGTERM, then SIGKILL), as Deadline's Worker does.
Used by `atomic-publish farm --dir FARM --fail-job ID` (and the other options) and by the tests.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

from .events import dispatch_pending
from .runner import Farm, FarmResult, collect_result, parse_worker_env
from .state import FarmState

ACTIONS = {"fail": "fail_job", "delete": "delete_job", "requeue": "requeue_job"}


def _act(action: str, farm_dir: str | os.PathLike[str], job_id: str, env: dict[str, str] | None,
         echo: Callable[[str], None]) -> list[str]:
    state = FarmState(farm_dir)
    getattr(state, ACTIONS[action])(job_id)
    echo(f"job {job_id}: {action} (as in the Monitor)")
    return dispatch_pending(farm_dir, job_id, env, echo)


def fail_job(farm_dir: str | os.PathLike[str], job_id: str, env: dict[str, str] | None = None,
             echo: Callable[[str], None] = lambda line: None) -> list[str]:
    """Mark the job Failed and fire OnJobFailed here; returns the event's log lines."""
    return _act("fail", farm_dir, job_id, env, echo)


def delete_job(farm_dir: str | os.PathLike[str], job_id: str, env: dict[str, str] | None = None,
               echo: Callable[[str], None] = lambda line: None) -> list[str]:
    """Delete the job and fire OnJobDeleted here; returns the event's log lines."""
    return _act("delete", farm_dir, job_id, env, echo)


def requeue_job(farm_dir: str | os.PathLike[str], job_id: str, env: dict[str, str] | None = None,
                echo: Callable[[str], None] = lambda line: None) -> list[str]:
    """Requeue every task of the job (completed ones too) and fire OnJobRequeued here."""
    return _act("requeue", farm_dir, job_id, env, echo)


def resume_farm(farm_dir: str | os.PathLike[str], workers: int = 3, store_uri: str | None = None,
                worker_env: dict[str, dict[str, str]] | None = None, timeout: float = 600,
                echo: Callable[[str], None] = lambda line: None) -> FarmResult:
    """Start workers on a farm folder whose workers stopped, run its job to the end, report."""
    folder = Path(farm_dir).resolve()
    state = FarmState(folder)
    jobs = list(state.read()["jobs"])
    if len(jobs) != 1:
        raise ValueError(f"{folder} holds {len(jobs)} jobs; a farm folder holds one")
    state.reopen()
    farm = Farm(folder, workers, worker_env or {}, store_uri)
    echo(f"farm folder: {folder}: {workers} worker(s) started again")
    try:
        farm.start()
        reason = farm.wait(timeout)
    finally:
        farm.stop()
    return collect_result(folder, jobs[0], reason, {name: p.returncode for name, p in farm.processes.items()})


def main(args: argparse.Namespace) -> int:
    """`atomic-publish farm --dir FARM --fail-job ID | --delete-job ID | --requeue-job ID | --resume`."""
    from .cli import EXIT_USAGE, report

    chosen = [name for name in ("fail_job", "delete_job", "requeue_job") if getattr(args, name)]
    if not args.dir or not (Path(args.dir) / "state.json").is_file():
        print("atomic-publish farm: --fail-job, --delete-job, --requeue-job and --resume act on an existing "
              "farm: give its folder with --dir", file=sys.stderr)
        return EXIT_USAGE
    if args.job_info or args.plugin_info or len(chosen) + bool(args.resume) > 1 and not (
            chosen == ["requeue_job"] and args.resume):
        print("atomic-publish farm: give one of --fail-job, --delete-job, --requeue-job (with --resume to run "
              "the requeued job), and no job files", file=sys.stderr)
        return EXIT_USAGE
    echo = lambda line: print(line, flush=True)  # noqa: E731
    try:
        for name in chosen:
            _act(name[:-len("_job")], args.dir, getattr(args, name), None, echo)
        if not args.resume:
            return 0
        result = resume_farm(args.dir, workers=args.workers, store_uri=args.store,
                             worker_env=parse_worker_env(args.worker_env), timeout=args.timeout, echo=echo)
    except (KeyError, ValueError) as error:
        print(f"atomic-publish farm: {str(error).strip(chr(39))}", file=sys.stderr)
        return EXIT_USAGE
    return report(result, args.json)
