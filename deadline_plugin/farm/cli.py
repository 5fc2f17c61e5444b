"""`atomic-publish farm JOB_INFO PLUGIN_INFO ...`: run a job on a local farm and print a summary."""
from __future__ import annotations

import argparse
import sys

from ..jobfiles import JobFileError
from ...idempotency.redact import redact_uri
from .runner import DEFAULT_BAD_WORKER_ERRORS, FarmResult, parse_worker_env, run_farm

EXIT_COMPLETED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INVALID_JOB = 78  # an invalid job or plugin info file (permanent)
EXIT_NOT_FINISHED = 3


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the farm's arguments to a (sub)parser."""
    parser.description = ("Run a Deadline job (job info + plugin info) on a local farm of worker processes, "
                          "through the AtomicPublish plugin and the Deadline API shim, and print what it published.")
    parser.add_argument("job_info", nargs="?", help="job info file (Plugin=AtomicPublish)")
    parser.add_argument("plugin_info", nargs="?", help="plugin info file")
    parser.add_argument("--workers", type=int, default=3, help="number of workers")
    parser.add_argument("--store", metavar="URI",
                        help="store URI given to every worker as ATOMIC_PUBLISH_STORE (never printed)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line last")
    parser.add_argument("--dir", metavar="DIR", help="farm folder (default: a new temporary folder)")
    parser.add_argument("--worker-env", action="append", default=[], metavar="NAME:KEY=VALUE",
                        help="environment variable for one worker (repeatable), e.g. "
                             "worker-1:ATOMIC_PUBLISH_FARM_PATH_MAPPING=/x/projects=>/x/offline/projects")
    parser.add_argument("--timeout", type=float, default=600, metavar="SECONDS",
                        help="stop the farm after this long")
    parser.add_argument("--bad-worker-errors", type=int, default=DEFAULT_BAD_WORKER_ERRORS, metavar="N",
                        help="consecutive errors that mark a worker bad for the job (0 = never)")
    parser.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                        help="override an AtomicPublish plugin configuration entry (repeatable), "
                             "e.g. AtomicPublishExecutable=/path/to/atomic-publish")
    parser.add_argument("--events", action="store_true",
                        help="install the AtomicPublishEvents event plugin on this farm (rolls back the publishes "
                             "of a job failed or deleted; see docs/deadline-events.md)")
    parser.add_argument("--event-config", action="append", default=[], metavar="KEY=VALUE",
                        help="override an AtomicPublishEvents configuration entry (repeatable; implies --events)")
    admin = parser.add_argument_group("acting on an existing farm (--dir) as an admin in the Monitor")
    admin.add_argument("--fail-job", metavar="JOB_ID", help="fail the job (fires OnJobFailed)")
    admin.add_argument("--delete-job", metavar="JOB_ID", help="delete the job (fires OnJobDeleted)")
    admin.add_argument("--requeue-job", metavar="JOB_ID", help="requeue every task of the job (fires OnJobRequeued)")
    admin.add_argument("--resume", action="store_true",
                       help="start the farm's workers again and run its job to the end (after --requeue-job)")


def format_summary(result: FarmResult) -> str:
    """A Monitor-like text view of the finished job."""
    lines = [f"Job {result.job_id} \"{result.job_name}\": {result.job_status}",
             f"  farm stopped: {result.end_reason}", "  Tasks:"]
    for task in result.tasks:
        lines.append(f"    task {task['task_id']:>3}  {task['status']:<10} errors={task['errors']}"
                     f"  {task['worker'] or '-'}")
    lines.append(f"  Error reports ({len(result.error_reports)}):")
    by_worker: dict[str, list[dict]] = {}
    for report in result.error_reports:
        by_worker.setdefault(report["worker"], []).append(report)
    for worker in sorted(by_worker):
        lines.append(f"    {worker}:")
        for report in by_worker[worker]:
            lines.append(f"      {report['time']} task {report['task_id']}: {report['message']}")
    lines.append(f"  Published ({len(result.published)}):")
    for entry in result.published:
        what = (f"v{entry['version']:0>3} at {entry['final_dir']}" if entry["version"] is not None
                else entry["message"])
        lines.append(f"    task {entry['task_id']:>3}  {what} ({entry['outcome']}, {entry['worker']})")
    if result.allow_list:
        lines.append(f"  Allow list: {', '.join(result.allow_list)}")
    lines.append(f"  Deny list: {', '.join(result.deny_list) or '(none)'}")
    lines.append(f"  Bad workers: {', '.join(result.bad_workers) or '(none)'}")
    lines.append(f"  Farm folder: {result.farm_dir} (state.json, reports/, workers/*/worker.log)")
    return "\n".join(lines)


def report(result: FarmResult, as_json: bool = False) -> int:
    """Print the Monitor-like summary (and the JSON) of a farm run; its exit code by job status."""
    print(format_summary(result))
    if as_json:
        print(result.to_json())
    if result.job_status == "Completed":
        return EXIT_COMPLETED
    return EXIT_FAILED if result.job_status == "Failed" else EXIT_NOT_FINISHED


def _config_overrides(entries: list[str]) -> dict[str, str]:
    overrides = {}
    for entry in entries:
        key, sep, value = entry.partition("=")
        if not sep or not key:
            raise ValueError(f"--config {entry!r}: expected KEY=VALUE")
        overrides[key] = value
    return overrides


def main(args: argparse.Namespace) -> int:
    """Run the farm; exit 0 when the job Completed, 1 when Failed, 3 when it did not finish."""
    if args.fail_job or args.delete_job or args.requeue_job or args.resume:
        from .admin import main as admin_main

        return admin_main(args)
    if not (args.job_info and args.plugin_info):
        print("atomic-publish farm: give the job info and plugin info files (or act on a farm with --dir "
              "and --fail-job, --delete-job, --requeue-job, --resume)", file=sys.stderr)
        return EXIT_USAGE
    try:
        worker_env = parse_worker_env(args.worker_env)
        overrides = _config_overrides(args.config)
        if args.store:
            print(f"store: {redact_uri(args.store)}", flush=True)
        result = run_farm(args.job_info, args.plugin_info, workers=args.workers, store_uri=args.store,
                          worker_env=worker_env, farm_dir=args.dir, timeout=args.timeout,
                          bad_worker_errors=args.bad_worker_errors, plugin_config=overrides,
                          echo=lambda line: print(line, flush=True),
                          event_config=(_config_overrides(args.event_config)
                                        if args.events or args.event_config else None))
    except JobFileError as error:  # a job Deadline would refuse: permanent, like the wrapper's 78
        print(f"atomic-publish farm: {error}", file=sys.stderr)
        return EXIT_INVALID_JOB
    except (ValueError, FileExistsError) as error:
        print(f"atomic-publish farm: {error}", file=sys.stderr)
        return EXIT_USAGE
    return report(result, args.json)


def standalone(argv: list[str] | None = None) -> int:
    """`python -m atomic_publish.deadline_plugin.farm` until the CLI wires `farm` in."""
    parser = argparse.ArgumentParser(prog="atomic-publish farm")
    configure_parser(parser)
    return main(parser.parse_args(argv))
