"""`atomic-publish submit MANIFEST --out DIR`: write Deadline job files for one publish.

The retry and deny-list policy is expressed in Deadline's own job-info keys (failure detection,
machine-limit list, timeout), so Deadline enforces it even if the plugin misbehaves. Every key
written here is documented in docs/deadline.md. With --deadline-command the job is submitted.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .jobfiles import write_key_value_file

JOB_INFO_NAME = "job_info.job"
PLUGIN_INFO_NAME = "plugin_info.job"
TASK_ERROR_LIMIT = 8
JOB_ERROR_LIMIT = 16
TASK_TIMEOUT_SECONDS = 3600
DEADLINECOMMAND_TIMEOUT_SECONDS = 300

POLICY = {  # plugin-info policy keys; values are the wrapper's documented defaults (contract.md)
    "OnPermanentError": "fail-job",
    "ProtectPublished": "True",
    "RetryAttempts": "5",
    "RetryBudgetSeconds": "60",
    "MaxKeyAttempts": "6",
    "MaxFailingWorkers": "3",
}


class SubmitError(Exception):
    """A submission that cannot go ahead; the message says why and what to do."""


@dataclass
class JobFiles:
    """What submit wrote."""

    job_info: Path
    plugin_info: Path
    manifest: Path


def validate_manifest(path: Path) -> None:
    """The wrapper's own manifest check: an invalid manifest must never reach the farm."""
    try:
        from atomic_publish.wrapper.errors import ManifestError
        from atomic_publish.wrapper.manifest import load_manifest
    except ImportError as error:
        raise SubmitError(f"cannot validate the manifest: the wrapper is not installed ({error})") from None
    try:
        load_manifest(path)
    except ManifestError as error:
        raise SubmitError(f"invalid manifest {path}: {error}") from None


def job_info_entries(name: str, priority: int, pool: str | None, group: str | None,
                     comment: str) -> dict[str, object]:
    """Deadline job-info keys; see docs/deadline.md for why each value."""
    entries: dict[str, object] = {
        "Plugin": "AtomicPublish",
        "Name": name,
        "Comment": comment,
        "Frames": "0",
        "ChunkSize": 1,
        "Priority": priority,
        "ConcurrentTasks": 1,
        "OverrideTaskFailureDetection": True,
        "FailureDetectionTaskErrors": TASK_ERROR_LIMIT,
        "OverrideJobFailureDetection": True,
        "FailureDetectionJobErrors": JOB_ERROR_LIMIT,
        "MachineLimit": 0,
        "Blacklist": "",
        "TaskTimeoutSeconds": TASK_TIMEOUT_SECONDS,
        "OnTaskTimeout": "Error",
    }
    if pool:
        entries["Pool"] = pool
    if group:
        entries["Group"] = group
    return entries


def write_job_files(manifest: Path, out_dir: Path, name: str | None = None, priority: int = 50,
                    pool: str | None = None, group: str | None = None) -> JobFiles:
    """Copy the manifest into `out_dir` (the shared folder workers read) and write both files."""
    if not 0 <= priority <= 100:
        raise SubmitError(f"--priority {priority}: Deadline priorities are 0..100")
    manifest = manifest.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    out_dir = out_dir.resolve()
    copy = out_dir / f"manifest{manifest.suffix}"
    if copy != manifest:
        shutil.copyfile(manifest, copy)
    job_name = name or f"atomic-publish {manifest.stem}"
    files = JobFiles(out_dir / JOB_INFO_NAME, out_dir / PLUGIN_INFO_NAME, copy)
    write_key_value_file(files.job_info, job_info_entries(
        job_name, priority, pool, group, comment=f"atomic-publish submit {manifest.name}"))
    write_key_value_file(files.plugin_info, {"Manifest": str(copy), **POLICY})
    return files


def submit_with_deadlinecommand(deadline_command: str, files: JobFiles) -> str:
    """Run `deadlinecommand JOB_INFO PLUGIN_INFO` (no shell) and return the JobID it prints."""
    argv = [deadline_command, str(files.job_info), str(files.plugin_info)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, errors="replace",
                              timeout=DEADLINECOMMAND_TIMEOUT_SECONDS)
    except FileNotFoundError:
        raise SubmitError(f"deadlinecommand not found at {deadline_command}: pass the full path, "
                          "e.g. /opt/Thinkbox/Deadline10/bin/deadlinecommand") from None
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SubmitError(f"could not run {deadline_command}: {error}") from None
    output = (done.stdout or "") + (done.stderr or "")
    match = re.search(r"^JobID=(\S+)\s*$", done.stdout or "", re.MULTILINE)
    if done.returncode != 0 or not match:
        problem = f"exited with {done.returncode}" if done.returncode != 0 else "printed no JobID= line"
        raise SubmitError(f"deadlinecommand {problem}; the job was probably not submitted. "
                          f"Its output:\n{output.strip() or '(nothing)'}")
    return match.group(1)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add submit's arguments to a (sub)parser."""
    parser.description = "Write Deadline job files for one publish manifest (and submit them)."
    parser.add_argument("manifest", type=Path, help="the publish manifest")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="folder for job_info.job, plugin_info.job and the manifest copy; "
                             "must be on storage every worker can read")
    parser.add_argument("--deadline-command", metavar="PATH",
                        help="submit with this deadlinecommand and print the job id")
    parser.add_argument("--name", help="job name (default: atomic-publish <manifest name>)")
    parser.add_argument("--priority", type=int, default=50, help="0..100 (default 50)")
    parser.add_argument("--pool", help="Deadline pool")
    parser.add_argument("--group", help="Deadline group")
    parser.add_argument("--format", choices=["deadline", "openjd"], default="deadline",
                        help="deadline: Deadline 10 job files (default); openjd: an Open Job Description job "
                             "template for AWS Deadline Cloud (DIR/template.json, a job bundle for "
                             "`deadline bundle submit DIR`)")
    parser.add_argument("--store", default="", metavar="URI",
                        help="openjd only: default of the template's Store parameter, a mongodb:// URI WITHOUT "
                             "a password (default blank: the worker's ATOMIC_PUBLISH_STORE)")
    parser.add_argument("--executable", default="atomic-publish", metavar="PATH",
                        help="openjd only: default of the template's AtomicPublishExecutable parameter "
                             "(default atomic-publish, found on the workers' PATH)")


def main(args: argparse.Namespace) -> int:
    """0 on success, 1 on an invalid manifest or a failed submission."""
    try:
        if not args.manifest.is_file():
            raise SubmitError(f"manifest {args.manifest} does not exist")
        validate_manifest(args.manifest)
        if getattr(args, "format", "deadline") == "openjd":
            return _main_openjd(args)
        if getattr(args, "store", "") or getattr(args, "executable", "atomic-publish") != "atomic-publish":
            raise SubmitError("--store and --executable are for --format openjd; for Deadline 10 configure the "
                              "plugin's StoreUri and AtomicPublishExecutable (docs/deadline.md)")
        files = write_job_files(args.manifest, args.out, args.name, args.priority, args.pool, args.group)
        print(f"job info:    {files.job_info}")
        print(f"plugin info: {files.plugin_info}")
        print(f"manifest:    {files.manifest}")
        if args.deadline_command:
            print(submit_with_deadlinecommand(args.deadline_command, files))
    except (SubmitError, OSError) as error:
        print(f"atomic-publish submit: {error}", file=sys.stderr)
        return 1
    return 0


def _main_openjd(args: argparse.Namespace) -> int:
    from .openjd import TemplateError, write_template

    unused = [opt for opt, value in (("--deadline-command", args.deadline_command), ("--pool", args.pool),
                                      ("--group", args.group)) if value]
    if unused:
        raise SubmitError(f"{', '.join(unused)}: Deadline 10 options, not used with --format openjd; "
                          "submit the template with `deadline bundle submit DIR` (see docs/deadline-cloud.md)")
    try:
        template, manifest = write_template(args.manifest, args.out, args.name, args.store, args.executable)
    except TemplateError as error:
        raise SubmitError(f"--store: {error}") from None
    print(f"job template: {template}")
    print(f"manifest:     {manifest}")
    print(f"submit with:  deadline bundle submit {template.parent}")
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="atomic-publish submit")
    configure_parser(_parser)
    sys.exit(main(_parser.parse_args()))
