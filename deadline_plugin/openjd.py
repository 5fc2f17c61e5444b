"""`atomic-publish submit --format openjd`: an Open Job Description job template for AWS Deadline Cloud.

One step, `Publish`, with no task parameter space: one task per job, whose task parameters are
always `{}`. Its key is `openjd:<job id>:Publish:<sha256("{}")[:16]>`, the job id being
$DEADLINE_JOB_ID (set by the Deadline Cloud worker agent) or, for local runs (`openjd run`), the
`JobId` parameter; never the session id, since a retry runs in a new session.

From an AYON or OpenPype 3 publish metadata JSON (`submit --format openjd --metadata PATH`) the
template takes a `Metadata` parameter instead of `Manifest` and runs `run --metadata`, like the
Deadline 10 job's plugin info MetadataFile; its `Project` parameter reaches the wrapper as
AYON_PROJECT_NAME through a job environment (where ayon-deadline's job environment puts it), and
the worker resolves the rootless paths with its studio settings ($ATOMIC_PUBLISH_SETTINGS, e.g.
from a queue environment, like the store).

The template is written as `template.json` so that the folder is a Deadline Cloud job bundle
(`deadline bundle submit DIR`). It holds no secret: the `Store` parameter is a URI without a
password (blank: the worker's `ATOMIC_PUBLISH_STORE` or `ATOMIC_PUBLISH_STORE_FILE`, e.g. set by a
queue environment). See docs/deadline-cloud.md.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

TEMPLATE_NAME = "template.json"
STEP_NAME = "Publish"
TASK_PARAMETERS = "{}"  # the Publish step has no parameter space: one task, no task parameters
NOTIFY_PERIOD_SECONDS = 120  # SIGTERM -> SIGKILL; the wrapper stops after the files being copied
TIMEOUT_SECONDS = 3600  # like Deadline 10's TaskTimeoutSeconds: a hung publish is cancelled (SIGTERM)
POLICY_ARGS = [  # the same policy as the Deadline 10 submission (submit.POLICY)
    "--protect-published=yes", "--retry-attempts=5", "--retry-budget=60",
    "--max-key-attempts=6", "--max-failing-workers=3",
]


class TemplateError(ValueError):
    """A template that must not be written (e.g. a password in the store URI)."""


def _manifest_input(manifest: str) -> tuple[list[dict], list[str], list[dict]]:
    """(parameters, run arguments, job environments) of a template that publishes a manifest."""
    parameter = {"name": "Manifest", "type": "PATH", "objectType": "FILE", "dataFlow": "IN", "default": manifest,
                 "description": "The publish manifest (JSON). Its render files and publish root must be visible "
                                "to the workers at the paths it names.",
                 "userInterface": {"control": "CHOOSE_INPUT_FILE", "label": "Manifest"}}
    return [parameter], ["--manifest={{Param.Manifest}}"], []


def _metadata_input(metadata: str, project: str) -> tuple[list[dict], list[str], list[dict]]:
    """(parameters, run arguments, job environments) of a template that publishes an AYON or
    OpenPype 3 metadata JSON: the project travels as AYON_PROJECT_NAME, as in ayon-deadline's job."""
    if not project:
        raise TemplateError("the metadata's project is unknown; give --project")
    parameters = [
        {"name": "Metadata", "type": "PATH", "objectType": "FILE", "dataFlow": "IN", "default": metadata,
         "description": "The AYON or OpenPype 3 publish metadata JSON ({product}_metadata.json) as their "
                        "submitters write it: every instance one product, all published under one key. The "
                        "worker resolves its rootless paths with its studio settings ($ATOMIC_PUBLISH_SETTINGS).",
         "userInterface": {"control": "CHOOSE_INPUT_FILE", "label": "Publish metadata"}},
        {"name": "Project", "type": "STRING", "default": project, "minLength": 1, "maxLength": 256,
         "description": "The AYON / OpenPype project of the publish (AYON_PROJECT_NAME in the job's environment).",
         "userInterface": {"control": "LINE_EDIT", "label": "Project"}},
    ]
    environment = {"name": "AtomicPublishProject", "variables": {"AYON_PROJECT_NAME": "{{Param.Project}}"}}
    return parameters, ["--metadata={{Param.Metadata}}"], [environment]


def job_template(manifest: str, name: str, store: str = "", executable: str = "atomic-publish", *,
                 metadata: str | None = None, project: str = "") -> dict:
    """The job template (specification jobtemplate-2023-09) as a JSON-ready dict. ``manifest`` is the
    default of the Manifest parameter, relative to the template's folder (as OpenJD and job bundles want);
    with ``metadata`` (the same, for a metadata JSON) the template publishes that instead."""
    from atomic_publish.idempotency.redact import redact_uri

    if store and redact_uri(store) != store:
        raise TemplateError("the store URI carries a password: job parameters are visible in the job and its "
                            "logs; give a URI without one and put the credentials in the worker's or queue's "
                            "environment (ATOMIC_PUBLISH_STORE or ATOMIC_PUBLISH_STORE_FILE)")
    inputs, input_args, environments = (_metadata_input(metadata, project) if metadata is not None
                                        else _manifest_input(manifest))
    what = "every product of one publish metadata JSON" if metadata is not None else "one manifest"
    template: dict = {
        "specificationVersion": "jobtemplate-2023-09",
        "name": name[:128],
        "description": f"atomic-publish: publish {what} exactly once (a retry resumes the same publish).",
        "parameterDefinitions": [
            *inputs,
            {"name": "Store", "type": "STRING", "default": store, "maxLength": 2048,
             "description": "mongodb:// URI of the publish store WITHOUT a password. Blank: the worker's "
                            "ATOMIC_PUBLISH_STORE or ATOMIC_PUBLISH_STORE_FILE (set it in a queue "
                            "environment; credentials come from there, never from a job parameter).",
             "userInterface": {"control": "LINE_EDIT", "label": "Store URI (no password)"}},
            {"name": "JobId", "type": "STRING", "default": "", "maxLength": 256,
             "description": "Leave blank on Deadline Cloud (the key uses $DEADLINE_JOB_ID). For local runs "
                            "(openjd run) a stable id: every run with the same id is the same publish.",
             "userInterface": {"control": "HIDDEN"}},
            {"name": "AtomicPublishExecutable", "type": "STRING", "default": executable, "minLength": 1,
             "description": "The atomic-publish executable on the workers (a name on PATH or a full path).",
             "userInterface": {"control": "LINE_EDIT", "label": "atomic-publish executable"}},
        ],
        "steps": [{
            "name": STEP_NAME,
            "script": {"actions": {"onRun": {
                "command": "{{Param.AtomicPublishExecutable}}",
                # Empty --store / --openjd-job-id values fall back to the worker's environment
                # ($ATOMIC_PUBLISH_STORE(_FILE), $DEADLINE_JOB_ID) in the wrapper.
                "args": ["run", *input_args, f"--openjd-step={STEP_NAME}",
                         f"--openjd-task-params={TASK_PARAMETERS}", "--openjd-job-id={{Param.JobId}}",
                         "--store={{Param.Store}}", *POLICY_ARGS],
                "timeout": TIMEOUT_SECONDS,
                "cancelation": {"mode": "NOTIFY_THEN_TERMINATE", "notifyPeriodInSeconds": NOTIFY_PERIOD_SECONDS},
            }}},
        }],
    }
    if environments:
        template["jobEnvironments"] = environments
    return template


def write_template(manifest: Path, out_dir: Path, name: str | None = None, store: str = "",
                   executable: str = "atomic-publish") -> tuple[Path, Path]:
    """Copy the manifest into `out_dir` and write `template.json` there; returns (template, manifest copy)."""
    manifest = manifest.resolve()
    job_template("", "check", store)  # refuse a password before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)
    out_dir = out_dir.resolve()
    copy = out_dir / f"manifest{manifest.suffix}"
    template = job_template(copy.name, name or f"atomic-publish {manifest.stem}", store, executable)
    if copy != manifest:
        shutil.copyfile(manifest, copy)
    path = out_dir / TEMPLATE_NAME
    path.write_text(json.dumps(template, indent=2) + "\n", encoding="utf-8")
    return path, copy


def write_metadata_template(publish, out_dir: Path, name: str | None = None, store: str = "",
                            executable: str = "atomic-publish") -> tuple[Path, Path]:
    """Copy the metadata JSON of ``publish`` (wrapper.metadata.Publish, validated) into `out_dir` and
    write `template.json` there; returns (template, metadata copy)."""
    source = Path(publish.path).resolve()
    job_template("", "check", store, metadata="", project=publish.project)  # refuse before writing anything
    out_dir.mkdir(parents=True, exist_ok=True)
    out_dir = out_dir.resolve()
    copy = out_dir / source.name
    template = job_template("", name or f"atomic-publish {source.stem}", store, executable, metadata=copy.name,
                            project=publish.project)
    if copy != source:
        shutil.copyfile(source, copy)
    path = out_dir / TEMPLATE_NAME
    path.write_text(json.dumps(template, indent=2) + "\n", encoding="utf-8")
    return path, copy
