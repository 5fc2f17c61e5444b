"""The ``atomic-publish`` command line."""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any, Callable



def _cmd_run(args: argparse.Namespace) -> int:
    from .escalation import Limits
    from .guard import StopGuard
    from .memory import fix_mmap_threshold
    from .publish import Policy, Request, run
    from .retry import RetryPolicy

    fix_mmap_threshold()  # before any thread: big transient buffers go back to the OS (memory.py)
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
        from .errors import ArgumentError
        from .outcome import NOTHING_WRITTEN, Outcome

        if args.job_id is None and args.task_id is None:
            exc = ArgumentError("", "give --job-id and --task-id (Deadline 10), or --openjd-step (Open Job Description)")
        else:
            missing, given = ("--job-id", "--task-id") if args.job_id is None else ("--task-id", "--job-id")
            exc = ArgumentError(missing, f"is required with {given} (Deadline 10)")
        outcome = Outcome.from_error(exc, done=NOTHING_WRITTEN)
        outcome.emit(args.json)
        return outcome.exit_code
    try:
        from .studio_settings import export_catalog_settings, load_settings

        export_catalog_settings(load_settings())  # the settings file's catalogue, unless the plugin set one
        submitted_metadata = _submitted_metadata(args)
    except Exception as exc:  # a PublishError: bad settings or a root this worker lacks
        from .classify import classify
        from .outcome import NOTHING_WRITTEN, Outcome

        outcome = Outcome.from_error(classify(exc), done=NOTHING_WRITTEN)
        outcome.emit(args.json)
        return outcome.exit_code
    outcome = run(Request(manifest_path=args.manifest or "", job_id=args.job_id, task_id=args.task_id, openjd=openjd,
                          worker=args.worker, store_uri=args.store, policy=policy,
                          submitted_manifest_path=args.submitted_manifest,
                          store_id=args.store_id or os.environ.get("ATOMIC_PUBLISH_STORE_ID") or None,
                          metadata_path=args.metadata, submitted_metadata_path=submitted_metadata), guard)
    outcome.emit(args.json)
    return outcome.exit_code


def _submitted_metadata(args: argparse.Namespace) -> str | None:
    """--submitted-metadata on this worker: ayon-deadline's job names it rootless ({root[work]}/...),
    resolved with the studio settings' roots (wrapper/metadata.py)."""
    if args.metadata is None:
        if args.submitted_metadata is not None:
            from .errors import ArgumentError

            raise ArgumentError("--submitted-metadata", "is for --metadata (use --submitted-manifest with --manifest)")
        return None
    if args.submitted_metadata is None:
        return None
    from .metadata import resolve_path
    from .studio_settings import load_settings

    path = args.submitted_metadata
    return resolve_path(path, load_settings() if path.strip().startswith("{root[") else None, "--submitted-metadata")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _staged_so_far(store: Any, rec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The verified files of a publish: the store's entries, and while it stages, its journals."""
    from ..idempotency import records as R
    from .progress_journal import with_journals

    files = store.staged.of_key(rec["_id"])
    return with_journals(files, rec) if rec.get("state") in (R.RESERVED, R.STAGING) else files


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


def _version_and_folder(view: dict[str, Any]) -> tuple[str, str]:
    """What ``status`` says of the version: a number and folder exist only once PUBLISHED (or on the way)."""
    number, folder, state = view["version"], view["final_dir"], view["state"]
    if number is None:
        return "none reserved yet", "none yet"
    if state == "ROLLED_BACK":
        return f"v{number:0>3} released (rolled back, never published)", f"none (was to be at {folder})"
    if state == "ROLLING_BACK":
        return f"v{number:0>3} being released (rolling back)", f"none (was to be at {folder})"
    if state == "PUBLISHED":
        return f"v{number:0>3}", folder
    if state == "COMMITTING":
        return f"v{number:0>3} being committed", f"{folder} (being committed)"
    return f"v{number:0>3} reserved", f"{folder} (not yet published)"


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
        views = [_status_view(r, _staged_so_far(store, r)) for r in recs]
        if args.json:
            print(json.dumps(views[0] if args.key else views, sort_keys=True))
            return 0
        for v in views:
            lease = v["lease"]
            version, final = _version_and_folder(v)
            print(f"{v['key']}\n  state     {v['state']}\n  version   {version}\n  epoch     {v['epoch']}\n"
                  f"  lease     {('held by ' + lease['worker'] + ' until ' + lease['expires_at']) if lease else 'free'}\n"
                  f"  final     {final}\n  files     {v['files']['count']} ({v['files']['bytes']} bytes)")
            for a in v["attempts"]:
                print(f"  attempt   epoch {a['epoch']} {a['worker']}@{a['host']} {a['start']} -> "
                      f"{a.get('outcome') or 'running/crashed'}{': ' + a['message'] if a.get('message') else ''}")
        return 0
    finally:
        store.close()


def _cmd_store(args: argparse.Namespace) -> int:
    from ..idempotency import embedded

    if args.action in ("id", "reindex"):
        from .cliutil import open_store_for

        store = open_store_for(f"store {args.action}", args.store)
        if store is None:
            return 2
        try:
            if args.action == "id":
                print(store.store_id(create=True))
            else:
                store.reindex()
                print("indexes made: " + ("none missing" if not store.missing_indexes() else
                                          ", ".join(store.missing_indexes()) + " still missing"))
        finally:
            store.close()
        return 0
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
        from .errors import ArgumentError
        from .outcome import NOTHING_WRITTEN, Outcome

        named = re.match(r"argument (\S+?)(?:/\S+)?: (.*)", message, re.DOTALL)
        exc = ArgumentError(named[1], named[2]) if named else ArgumentError("", message)
        outcome = Outcome.from_error(exc, done=NOTHING_WRITTEN)
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


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("atomic-publish")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown (not installed)"


class _VersionAction(argparse.Action):
    """``--version``, reading the installed version only when asked (importlib.metadata costs
    about 15 ms of every start otherwise)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        parser._print_message(f"{parser.prog} {_version()}\n", sys.stdout)
        parser.exit()


def _add_command(sub, name: str, summary: str) -> argparse.ArgumentParser:
    """A subcommand whose description is its one-sentence summary, with the shared help format."""
    from .cliutil import HelpFormatter

    return sub.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".",
                          formatter_class=HelpFormatter)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    from .cliutil import HelpFormatter, add_store_options

    parser = argparse.ArgumentParser(prog="atomic-publish", formatter_class=HelpFormatter,
                                     description="Exactly-once, all-or-nothing publishing on a Deadline farm.")
    parser.add_argument("--version", action=_VersionAction, help="print the installed version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _add_command(sub, "run", HELP["run"])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", metavar="PATH", help="path of the publish manifest (JSON)")
    source.add_argument("--metadata", metavar="PATH",
                        help="an AYON or OpenPype 3 publish metadata JSON ({product}_metadata.json), as their "
                             "submitters write it, instead of a manifest: every instance is one product, all "
                             "published under one key; may be rootless ({root[work]}/...); roots and template from "
                             "$ATOMIC_PUBLISH_SETTINGS (docs/ayon-openpype.md)")
    p.add_argument("--submitted-manifest", default=None, metavar="PATH",
                   help="the manifest as submitted, before Deadline path mapping: its canonical JSON is the "
                        "fingerprint, the same on every worker (default: --manifest)")
    p.add_argument("--submitted-metadata", default=None, metavar="PATH",
                   help="with --metadata: the metadata as submitted, before Deadline path mapping (its canonical "
                        "JSON is the fingerprint; default: --metadata)")
    p.add_argument("--job-id", help="Deadline JobId, part of the idempotency key (with --task-id; or give "
                                    "--openjd-step)")
    p.add_argument("--task-id", help="Deadline TaskId, part of the idempotency key (with --job-id)")
    p.add_argument("--openjd-step", metavar="STEP",
                   help="Open Job Description: the step name (key = job id + step + task parameters)")
    p.add_argument("--openjd-task-params", metavar="JSON",
                   help="Open Job Description: the task's parameter values as a JSON object (default: {})")
    p.add_argument("--openjd-job-id", metavar="JOBID",
                   help="Open Job Description: the job id (default: $DEADLINE_JOB_ID)")
    p.add_argument("--worker", default=None, metavar="NAME",
                   help="worker name for the lease and history (default: this host's name)")
    add_store_options(p)
    p.add_argument("--store-id", default=None, metavar="ID",
                   help="the id of the store the job was submitted for (plugin info StoreId; "
                        "$ATOMIC_PUBLISH_STORE_ID): a worker that reaches another store refuses, as worker-local "
                        "(default: not checked)")
    p.add_argument("--lease-seconds", type=float, default=60.0, metavar="SECONDS",
                   help="lease duration, renewed while working")
    p.add_argument("--threads", type=int, default=8, metavar="N", help="parallel file copies")
    p.add_argument("--retry-attempts", type=_positive_int, default=5, metavar="N",
                   help="in-process tries of one operation that can blip")
    p.add_argument("--retry-budget", type=float, default=60.0, metavar="SECONDS",
                   help="seconds the in-process retries of one operation may take")
    p.add_argument("--max-key-attempts", type=_positive_int, default=6, metavar="N",
                   help="failed attempts of this publish across the farm before it is permanent")
    p.add_argument("--max-failing-workers", type=_positive_int, default=3, metavar="N",
                   help="distinct workers failing with the same error before it is permanent")
    p.add_argument("--protect-published", choices=["yes", "no"], default="no",
                   help="make the published files and folder read-only after the commit "
                        "(atomic-publish submit turns it on)")
    p.add_argument("--on-permanent-error", choices=["fail-job", "fail-task"], default="fail-job",
                   help="what the Deadline plugin does on a permanent error (the wrapper rolls back either way)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=_cmd_run)

    p = _add_command(sub, "status", HELP["status"])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--key", help="one publish, by its idempotency key, e.g. deadline10:<JobId>:<TaskId> "
                                 "(give --key or --job-id)")
    g.add_argument("--job-id", help="every publish of one Deadline job (give --key or --job-id)")
    add_store_options(p, "the store to read (never started by this command)")
    p.add_argument("--json", action="store_true", help="print the records as JSON instead of text")
    p.set_defaults(func=_cmd_status)

    p = _add_command(sub, "store", HELP["store"])
    p.add_argument("action", choices=["start", "stop", "status", "id", "reindex"],
                   help="start the embedded store (in the background), stop it, say whether it runs, print "
                        "the id of the store (--store, or the environment's; a job's StoreId), or create its "
                        "indexes again (what `audit` asks for when one is missing)")
    add_store_options(p, "with `id` or `reindex`: the store to use (never started by this command)")
    p.set_defaults(func=_cmd_store)

    p = _add_command(sub, "failpoints", HELP["failpoints"])
    p.set_defaults(func=_cmd_failpoints)

    for name, module in EXTRA_COMMANDS:
        if command in (None, name):
            _add_extra(sub, name, module)
        else:  # imported only when used: keeps `run` starting fast
            _add_command(sub, name, HELP[name])
    return parser


# One sentence per command: its `--help` line in the command list and its description.
HELP = {
    "run": "run one publish attempt of a farm task and print its result line",
    "status": "show the record of a publish: state, version, folder, attempts",
    "store": "start, stop or show the embedded store (a local MongoDB-compatible server)",
    "failpoints": "list the failpoints the fault suite can trigger",
    "submit": "write Deadline job files for one publish manifest, and submit them with --deadline-command",
    "farm": "run a Deadline job on a local farm of worker processes and print what it published",
    "deliver": "deliver the pending notifications of published versions",
    "audit": "check every invariant across the store and the publish roots, changing nothing",
    "gc": "remove what abandoned attempts left behind (staging folders, expired leases, reservations)",
    "abandon": "roll back the unfinished publishes of a job the farm gave up on (failed or deleted)",
    "demo": "publish a synthetic render through a local farm on the embedded store (the README's demo)",
}
EXTRA_HELP = {name: HELP[name] for name in ("submit", "farm", "deliver", "audit", "gc", "abandon", "demo")}

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
    p = _add_command(sub, name, HELP[name])
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
    if getattr(args, "store_timeout", None) is not None:  # read where the store is opened (idempotency/reach.py)
        os.environ["ATOMIC_PUBLISH_STORE_TIMEOUT"] = str(args.store_timeout)
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
