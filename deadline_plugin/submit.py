"""`atomic-publish submit MANIFEST --out DIR` (or `--metadata PATH`): write Deadline job files for one publish.

The retry and deny-list policy is expressed in Deadline's own job-info keys (failure detection,
machine-limit list, timeout), so Deadline enforces it even if the plugin misbehaves. Every key
written here is documented in docs/deadline.md. With --deadline-command the job is submitted.
"""
from __future__ import annotations

import argparse
import os
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


def validate_manifest(path: Path):
    """The wrapper's own manifest check: an invalid manifest must never reach the farm. Returns it."""
    try:
        from atomic_publish.wrapper.errors import ManifestError
        from atomic_publish.wrapper.manifest import load_manifest
    except ImportError as error:
        raise SubmitError(f"cannot validate the manifest: the wrapper is not installed ({error})") from None
    try:
        return load_manifest(path)
    except ManifestError as error:
        raise SubmitError(f"invalid manifest {path}: {error}") from None


def missing_sources(manifest) -> list[str]:
    """Source files the manifest names that do not exist on this machine (yet: a render may still run)."""
    import os

    return [f for rep in manifest.representations for f in rep.files if not os.path.exists(f)]


def default_job_name(manifest: Path) -> str:
    """``publish <project>/<folder>/<product>`` (project, asset and subset), or after the file when unreadable."""
    import json

    try:
        data = json.loads(manifest.read_text(encoding="utf-8-sig"))
        name = f"publish {data['project']['name']}/{data['asset']}/{data['subset']}"
        return name + (f" v{int(data['version']):0>3}" if data.get("version") is not None else "")
    except (OSError, ValueError, KeyError, TypeError):
        return f"atomic-publish {manifest.stem}"


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
                    pool: str | None = None, group: str | None = None, store_id: str | None = None) -> JobFiles:
    """Copy the manifest into `out_dir` (the shared folder workers read) and write both files."""
    if not 0 <= priority <= 100:
        raise SubmitError(f"--priority {priority}: Deadline priorities are 0..100")
    manifest = manifest.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    out_dir = out_dir.resolve()
    copy = out_dir / f"manifest{manifest.suffix}"
    if copy != manifest:
        shutil.copyfile(manifest, copy)
    job_name = name or default_job_name(manifest)
    files = JobFiles(out_dir / JOB_INFO_NAME, out_dir / PLUGIN_INFO_NAME, copy)
    write_key_value_file(files.job_info, job_info_entries(
        job_name, priority, pool, group, comment=f"atomic-publish submit {manifest.name}"))
    plugin_info = {"Manifest": str(copy), **POLICY}
    if store_id:
        plugin_info["StoreId"] = store_id
    write_key_value_file(files.plugin_info, plugin_info)
    return files


def validate_metadata(path: str, project: str | None = None):
    """The wrapper's own check of an AYON/OpenPype metadata JSON (wrapper/metadata.py), with the
    studio settings of this machine ($ATOMIC_PUBLISH_SETTINGS). Returns the Publish."""
    try:
        from atomic_publish.wrapper.errors import PublishError
        from atomic_publish.wrapper.metadata import load_publish
    except ImportError as error:
        raise SubmitError(f"cannot validate the metadata: the wrapper is not installed ({error})") from None
    environ = dict(os.environ)
    if project:
        environ["AYON_PROJECT_NAME"] = project
    try:
        return load_publish(path, environ=environ)
    except PublishError as error:
        raise SubmitError(f"invalid metadata {path}: {error}") from None


def metadata_job_name(publish) -> str:
    """``publish <project>/<folder>/<product>`` of the first product, ``(+N more)`` for the others."""
    first = publish.products[0]
    folder = "/".join(p for p in (first.hierarchy, first.asset) if p)
    more = f" (+{len(publish.products) - 1} more)" if len(publish.products) > 1 else ""
    return f"publish {publish.project}/{folder}/{first.subset}{more}"


def write_metadata_job_files(publish, out_dir: Path, name: str | None = None, priority: int = 50,
                             pool: str | None = None, group: str | None = None,
                             store_id: str | None = None) -> JobFiles:
    """Copy the metadata into `out_dir` and write a job whose plugin info MetadataFile names it; the
    project goes into the job environment (AYON_PROJECT_NAME), as ayon-deadline's submitter puts it."""
    if not 0 <= priority <= 100:
        raise SubmitError(f"--priority {priority}: Deadline priorities are 0..100")
    source = Path(publish.path).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    out_dir = out_dir.resolve()
    copy = out_dir / source.name
    if copy != source:
        shutil.copyfile(source, copy)
    files = JobFiles(out_dir / JOB_INFO_NAME, out_dir / PLUGIN_INFO_NAME, copy)
    entries = job_info_entries(name or metadata_job_name(publish), priority, pool, group,
                               comment=f"atomic-publish submit --metadata {source.name}")
    entries["EnvironmentKeyValue0"] = f"AYON_PROJECT_NAME={publish.project}"
    write_key_value_file(files.job_info, entries)
    plugin_info = {"MetadataFile": str(copy), **POLICY}
    if store_id:
        plugin_info["StoreId"] = store_id
    write_key_value_file(files.plugin_info, plugin_info)
    return files


def resolve_store_id(choice: str) -> str | None:
    """``--store-id``: an id, ``none``, or ``auto``: the id of the store this machine is configured
    for (ATOMIC_PUBLISH_STORE or ATOMIC_PUBLISH_STORE_FILE), read without starting anything."""
    if choice == "none":
        return None
    if choice != "auto":
        if not re.fullmatch(r"[0-9a-f]{32}", choice):
            raise SubmitError(f"--store-id {choice!r} is not a store id (32 hex characters, as "
                              "`atomic-publish store id` prints), auto or none")
        return choice
    if not (os.environ.get("ATOMIC_PUBLISH_STORE") or os.environ.get("ATOMIC_PUBLISH_STORE_FILE")):
        return None  # no shared store configured here: the job does not check its workers' store
    from ..idempotency.store import open_store
    from ..wrapper.errors import PublishError

    try:
        store = open_store(None, ensure_indexes=False)
    except PublishError as exc:
        print(f"atomic-publish submit: warning: could not read the store's id ({exc}); the job is written "
              "without StoreId, so its workers' store is not checked (pass --store-id)", file=sys.stderr)
        return None
    try:
        return store.store_id(create=True)
    finally:
        store.close()


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
    parser.add_argument("manifest", type=Path, nargs="?", help="the publish manifest (or give --metadata)")
    parser.add_argument("--metadata", metavar="PATH",
                        help="instead of a manifest: an AYON or OpenPype 3 publish metadata JSON, as their "
                             "submitters write it (every instance one product, all under one key); checked with "
                             "$ATOMIC_PUBLISH_SETTINGS; the job's plugin info names it as MetadataFile")
    parser.add_argument("--project", metavar="NAME",
                        help="with --metadata: the project (default: $AYON_PROJECT_NAME or $AVALON_PROJECT, or "
                             "the metadata's session); written into the job environment as AYON_PROJECT_NAME")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="folder for job_info.job, plugin_info.job and the manifest copy; "
                             "must be on storage every worker can read")
    parser.add_argument("--deadline-command", metavar="PATH",
                        help="submit with this deadlinecommand and print the job id (default: write the files "
                             "only)")
    parser.add_argument("--name", help="job name (default: publish <project>/<folder>/<product> from the "
                                       "manifest's project, asset and subset)")
    parser.add_argument("--priority", type=int, default=50, help="Deadline job priority, 0..100")
    parser.add_argument("--pool", help="Deadline pool (default: none, Deadline's own default)")
    parser.add_argument("--group", help="Deadline group (default: none, Deadline's own default)")
    parser.add_argument("--format", choices=["deadline", "openjd"], default="deadline",
                        help="deadline: Deadline 10 job files; openjd: an Open Job Description job "
                             "template for AWS Deadline Cloud (DIR/template.json, a job bundle for "
                             "`deadline bundle submit DIR`)")
    parser.add_argument("--store", default="", metavar="URI",
                        help="openjd only: default of the template's Store parameter, a mongodb:// URI WITHOUT "
                             "a password (default blank: the worker's ATOMIC_PUBLISH_STORE)")
    parser.add_argument("--store-id", default="auto", metavar="ID",
                        help="the store the job belongs to, written as plugin info StoreId so that a worker on "
                             "another store refuses: an id (`atomic-publish store id`), none, or auto (the store "
                             "named by ATOMIC_PUBLISH_STORE or ATOMIC_PUBLISH_STORE_FILE here, if any)")
    parser.add_argument("--executable", default="atomic-publish", metavar="PATH",
                        help="openjd only: default of the template's AtomicPublishExecutable parameter "
                             "(default atomic-publish, found on the workers' PATH)")


def main(args: argparse.Namespace) -> int:
    """0 on success, 1 on an invalid manifest or a failed submission."""
    try:
        if getattr(args, "metadata", None) is not None or args.manifest is None:
            return _main_metadata(args)
        if getattr(args, "project", None):
            raise SubmitError("--project is for --metadata (a manifest names its project)")
        if not args.manifest.is_file():
            raise SubmitError(f"manifest {args.manifest} does not exist")
        missing = missing_sources(validate_manifest(args.manifest))
        if missing:
            print(f"atomic-publish submit: warning: {len(missing)} source file(s) do not exist on this machine "
                  f"yet (first: {missing[0]}); the job is written anyway, and each worker checks them when the "
                  "task runs", file=sys.stderr)
        if getattr(args, "format", "deadline") == "openjd":
            return _main_openjd(args)
        if getattr(args, "store", "") or getattr(args, "executable", "atomic-publish") != "atomic-publish":
            raise SubmitError("--store and --executable are for --format openjd; for Deadline 10 configure the "
                              "plugin's StoreUri and AtomicPublishExecutable (docs/deadline.md)")
        files = write_job_files(args.manifest, args.out, args.name, args.priority, args.pool, args.group,
                                resolve_store_id(getattr(args, "store_id", "auto")))
        print(f"job info:    {files.job_info}")
        print(f"plugin info: {files.plugin_info}")
        print(f"manifest:    {files.manifest}")
        if args.deadline_command:
            print(submit_with_deadlinecommand(args.deadline_command, files))
    except (SubmitError, OSError) as error:
        print(f"atomic-publish submit: {error}", file=sys.stderr)
        return 1
    return 0


def _main_metadata(args: argparse.Namespace) -> int:
    """`submit --metadata PATH`: the same checks and job keys as for a manifest, plugin info MetadataFile."""
    try:
        if args.metadata is None:
            raise SubmitError("give a manifest, or --metadata PATH")
        if args.manifest is not None:
            raise SubmitError("give a manifest or --metadata, not both")
        openjd = getattr(args, "format", "deadline") == "openjd"
        if openjd:
            _check_openjd_options(args)
        elif getattr(args, "store", "") or getattr(args, "executable", "atomic-publish") != "atomic-publish":
            raise SubmitError("--store and --executable are for --format openjd; for Deadline 10 configure the "
                              "plugin's StoreUri and AtomicPublishExecutable (docs/deadline.md)")
        publish = validate_metadata(args.metadata, getattr(args, "project", None))
        missing = [f for m in publish.products for rep in m.representations for f in rep.files
                   if not os.path.exists(f)]
        if missing:
            print(f"atomic-publish submit: warning: {len(missing)} source file(s) do not exist on this machine "
                  f"yet (first: {missing[0]}); the job is written anyway, and each worker checks them when the "
                  "task runs", file=sys.stderr)
        if openjd:
            return _main_openjd_metadata(args, publish)
        files = write_metadata_job_files(publish, args.out, args.name, args.priority, args.pool, args.group,
                                         resolve_store_id(getattr(args, "store_id", "auto")))
        print(f"job info:    {files.job_info}")
        print(f"plugin info: {files.plugin_info}")
        print(f"metadata:    {files.manifest} ({len(publish.products)} product(s): "
              f"{', '.join(m.subset for m in publish.products)})")
        if args.deadline_command:
            print(submit_with_deadlinecommand(args.deadline_command, files))
    except (SubmitError, OSError) as error:
        print(f"atomic-publish submit: {error}", file=sys.stderr)
        return 1
    return 0


def _check_openjd_options(args: argparse.Namespace) -> None:
    """Deadline 10 options have no meaning in an OpenJD template: refuse them rather than drop them."""
    unused = [opt for opt, value in (("--deadline-command", args.deadline_command), ("--pool", args.pool),
                                      ("--group", args.group)) if value]
    if unused:
        raise SubmitError(f"{', '.join(unused)}: Deadline 10 options, not used with --format openjd; "
                          "submit the template with `deadline bundle submit DIR` (see docs/deadline-cloud.md)")


def _main_openjd_metadata(args: argparse.Namespace, publish) -> int:
    """`submit --format openjd --metadata PATH`: a template whose Metadata parameter names the copy."""
    from .openjd import TemplateError, write_metadata_template

    try:
        template, metadata = write_metadata_template(publish, args.out, args.name or metadata_job_name(publish),
                                                     args.store, args.executable)
    except TemplateError as error:  # a password in --store: nothing was written
        raise SubmitError(str(error)) from None
    print(f"job template: {template}")
    print(f"metadata:     {metadata} ({len(publish.products)} product(s): "
          f"{', '.join(m.subset for m in publish.products)}; project {publish.project})")
    print(f"submit with:  deadline bundle submit {template.parent}")
    return 0


def _main_openjd(args: argparse.Namespace) -> int:
    from .openjd import TemplateError, write_template

    _check_openjd_options(args)
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
