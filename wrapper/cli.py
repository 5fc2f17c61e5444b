"""The ``atomic-publish`` command line."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable



def _cmd_run(args: argparse.Namespace) -> int:
    from .escalation import Limits
    from .guard import StopGuard
    from .publish import Policy, Request, run
    from .retry import RetryPolicy

    guard = StopGuard().install()
    policy = Policy(lease_seconds=args.lease_seconds, threads=args.threads,
                    protect_published=args.protect_published == "yes",
                    retry=RetryPolicy(attempts=args.retry_attempts, budget=args.retry_budget),
                    limits=Limits(max_key_attempts=args.max_key_attempts,
                                  max_failing_workers=args.max_failing_workers))
    openjd = None
    if args.openjd_step is not None:
        job_id = args.openjd_job_id or os.environ.get("DEADLINE_JOB_ID", "")
        try:
            params = json.loads(args.openjd_task_params or "{}")
        except ValueError:
            params = None
        openjd = {"job_id": job_id, "step": args.openjd_step, "task_parameters": params}
        args.job_id, args.task_id = job_id, args.openjd_step
    elif args.job_id is None or args.task_id is None:
        from .errors import ManifestError
        from .outcome import Outcome

        outcome = Outcome.from_error(ManifestError("arguments", "give --job-id and --task-id (Deadline 10), or "
                                                   "--openjd-step (Open Job Description)", "fix the job submission"),
                                     decision="nothing was written; the job fails without retries")
        outcome.emit(args.json)
        return outcome.exit_code
    outcome = run(Request(manifest_path=args.manifest, job_id=args.job_id, task_id=args.task_id, openjd=openjd,
                          worker=args.worker, store_uri=args.store, policy=policy,
                          submitted_manifest_path=args.submitted_manifest), guard)
    outcome.emit(args.json)
    return outcome.exit_code


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _status_view(rec: dict[str, Any], files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return _jsonable({
        "key": rec["_id"], "state": rec["state"], "job_id": rec.get("job_id"), "task_id": rec.get("task_id"),
        "version": rec.get("version"), "epoch": rec.get("epoch"), "lease": rec.get("lease"),
        "final_dir": rec.get("final_dir"), "staging_dir": rec.get("staging_dir"),
        "fingerprint": rec.get("fingerprint"), "subset": rec.get("subset"),
        "files": {"count": len(files), "bytes": sum(f.get("size", 0) for f in files.values()),
                  "names": sorted(f.get("name", "?") for f in files.values())},
        "attempts": rec.get("attempts") or [], "error": rec.get("error"),
        "created_at": rec.get("created_at"), "updated_at": rec.get("updated_at"),
    })


def _cmd_status(args: argparse.Namespace) -> int:
    from .cliutil import open_store_for

    store = open_store_for("status", args.store)
    if store is None:
        return 1
    try:
        recs = [store.records.get(args.key)] if args.key else store.records.find_by_job(args.job_id)
        recs = [r for r in recs if r]
        if not recs:
            print(f"atomic-publish status: no record for {'key ' + args.key if args.key else 'job ' + args.job_id}",
                  file=sys.stderr)
            return 1
        views = [_status_view(r, store.staged.of_key(r["_id"])) for r in recs]
        if args.json:
            print(json.dumps(views[0] if args.key else views, sort_keys=True))
            return 0
        for v in views:
            lease = v["lease"]
            print(f"{v['key']}\n  state     {v['state']}\n  version   {v['version']}\n  epoch     {v['epoch']}\n"
                  f"  lease     {('held by ' + lease['worker'] + ' until ' + lease['expires_at']) if lease else 'free'}\n"
                  f"  final     {v['final_dir']}\n  files     {v['files']['count']} ({v['files']['bytes']} bytes)")
            for a in v["attempts"]:
                print(f"  attempt   epoch {a['epoch']} {a['worker']}@{a['host']} {a['start']} -> "
                      f"{a.get('outcome') or 'running/crashed'}{': ' + a['message'] if a.get('message') else ''}")
        return 0
    finally:
        store.close()


def _cmd_store(args: argparse.Namespace) -> int:
    from ..idempotency import embedded

    if args.action == "start":
        print(embedded.ensure_running())
    elif args.action == "stop":
        print("stopped" if embedded.stop() else "not running")
    else:
        uri = embedded.running_uri()
        print(f"running at {uri} (data in {embedded.home()})" if uri else f"not running (data in {embedded.home()})")
    return 0


def _cmd_failpoints(args: argparse.Namespace) -> int:
    from .failpoints import ACTIONS, POINTS

    width = max(map(len, POINTS))
    for name, step in POINTS.items():
        print(f"{name:<{width}}  {step}")
    print(f"\nactions: {', '.join(ACTIONS)}; e.g. ATOMIC_PUBLISH_FAILPOINTS='stage.file=kill@3'")
    return 0


def _report_usage_errors_as_results(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """A bad `run` command line is a permanent failure of the job submission: exit 78 with a result line."""

    def error(message: str):
        from .errors import ManifestError
        from .outcome import Outcome

        outcome = Outcome.from_error(ManifestError("arguments", message, "fix the job submission"),
                                     decision="nothing was written; the job fails without retries")
        outcome.emit("--json" in argv)
        sys.exit(outcome.exit_code)

    parser.error = error  # type: ignore[method-assign]
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        for sub in getattr(action, "choices", {}).values():
            sub.error = error  # type: ignore[method-assign]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number of at least 1")
    return value


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atomic-publish",
                                     description="Exactly-once, all-or-nothing publishing on a Deadline farm.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run one publish attempt")
    p.add_argument("--manifest", required=True, help="path of the publish manifest (JSON)")
    p.add_argument("--submitted-manifest", default=None,
                   help="the manifest as submitted, before Deadline path mapping: its canonical JSON is the "
                        "fingerprint, the same on every worker (default: --manifest)")
    p.add_argument("--job-id", help="Deadline JobId (part of the idempotency key)")
    p.add_argument("--task-id", help="Deadline TaskId (part of the idempotency key)")
    p.add_argument("--openjd-step", help="Open Job Description: the step name (key = job id + step + task parameters)")
    p.add_argument("--openjd-task-params", help="Open Job Description: the task's parameter values as a JSON object")
    p.add_argument("--openjd-job-id", help="Open Job Description: the job id (default: $DEADLINE_JOB_ID)")
    p.add_argument("--worker", default=None, help="worker name for the lease and history (default: host name)")
    p.add_argument("--store", default=None, help="mongodb:// URI (default: $ATOMIC_PUBLISH_STORE or the embedded store)")
    p.add_argument("--lease-seconds", type=float, default=60.0, help="lease duration, renewed while working")
    p.add_argument("--threads", type=int, default=8, help="parallel file copies (default 8)")
    p.add_argument("--retry-attempts", type=_positive_int, default=5,
                   help="in-process tries of one operation that can blip (default 5)")
    p.add_argument("--retry-budget", type=float, default=60.0,
                   help="seconds the in-process retries of one operation may take (default 60)")
    p.add_argument("--max-key-attempts", type=_positive_int, default=6,
                   help="failed attempts of this publish across the farm before it is permanent (default 6)")
    p.add_argument("--max-failing-workers", type=_positive_int, default=3,
                   help="distinct workers failing with the same error before it is permanent (default 3)")
    p.add_argument("--protect-published", choices=["yes", "no"], default="no",
                   help="make the published files and folder read-only after the commit (default no; "
                        "atomic-publish submit turns it on)")
    p.add_argument("--on-permanent-error", choices=["fail-job", "fail-task"], default="fail-job",
                   help="what the Deadline plugin does on a permanent error (the wrapper rolls back either way)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("status", help="show the record of a publish")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--key")
    g.add_argument("--job-id")
    p.add_argument("--store", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("store", help="start, stop or show the embedded store")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.set_defaults(func=_cmd_store)

    p = sub.add_parser("failpoints", help="list the failpoints of the fault suite")
    p.set_defaults(func=_cmd_failpoints)

    for name, module in EXTRA_COMMANDS:
        if command in (None, name):
            _add_extra(sub, name, module)
        else:  # imported only when used: keeps `run` starting fast
            sub.add_parser(name, help=EXTRA_HELP.get(name))
    return parser


EXTRA_HELP = {
    "submit": "write Deadline job files for one publish (and submit them)",
    "farm": "run a job on a local Deadline-like farm",
    "deliver": "deliver pending notifications of published versions",
    "audit": "check every invariant across the store and the publish roots",
    "gc": "remove what abandoned attempts left behind",
    "abandon": "roll back the unfinished publishes of a job failed or deleted in Deadline",
    "demo": "the README's demo",
}

# Commands implemented elsewhere: (name, "module path"); each module has configure_parser(p) and main(args).
EXTRA_COMMANDS: list[tuple[str, str]] = [
    ("submit", "atomic_publish.deadline_plugin.submit"),
    ("farm", "atomic_publish.deadline_plugin.farm"),
    ("deliver", "atomic_publish.wrapper.deliver"),
    ("audit", "atomic_publish.wrapper.audit"),
    ("gc", "atomic_publish.wrapper.gc"),
    ("abandon", "atomic_publish.wrapper.abandon"),
    ("demo", "atomic_publish.wrapper.demo"),
]


def _add_extra(sub, name: str, module: str) -> None:
    import importlib

    mod = importlib.import_module(module)
    p = sub.add_parser(name, help=EXTRA_HELP.get(name))
    mod.configure_parser(p)
    p.set_defaults(func=mod.main)


def main(argv: list[str] | None = None) -> int:
    from_console = argv is None
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command)
    if command == "run":  # the farm reads a result, not argparse's usage text and exit 2
        _report_usage_errors_as_results(parser, argv)
    args = parser.parse_args(argv)
    if getattr(args, "worker", "x") is None:
        import socket
        args.worker = socket.gethostname()
    if getattr(args, "worker", None):
        os.environ["ATOMIC_PUBLISH_WORKER"] = args.worker
    from .secrets import load_secrets_file

    try:
        load_secrets_file()
    except OSError as exc:
        print(f"atomic-publish: cannot read ATOMIC_PUBLISH_SECRETS_FILE: {exc.strerror}; the Deadline plugin "
              "writes it for each task: check the job's data folder", file=sys.stderr)
        return 75
    func: Callable[[argparse.Namespace], int] = args.func
    code = func(args)
    if from_console and command == "run":
        # Everything durable is written and acknowledged: skip pymongo's exit hook, which joins its
        # monitor threads in 0.5 s steps (half a second of every attempt otherwise).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":  # python -m atomic_publish.wrapper.cli
    sys.exit(main())
