"""AYON / OpenPype publish jobs as their submitters write them, with only Plugin=AtomicPublish
changed (issue 15 item 6): the plugin under the shim with a stand-in wrapper, then the local farm
with the real wrapper and a real store.

Job keys from shared/reference/ayon_farm.md 1.3 and ayon-deadline's submit_publish_job.py /
addon.py (submit_ayon_plugin_job: Arguments = subprocess.list2cmdline(args), the path quoted by
the submitter itself; plugin info Version, Arguments, SingleFrameOnly).
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
from pathlib import Path

import pytest

import Deadline.Scripting

from atomic_publish.deadline_plugin.farm.backend import FarmBackend
from atomic_publish.deadline_plugin.farm.jobmodel import build_job_record
from atomic_publish.deadline_plugin.farm.lifecycle import run_simple_task
from atomic_publish.deadline_plugin.farm.state import FarmState
from atomic_publish.deadline_plugin.jobfiles import parse_key_value_text, write_key_value_file
from atomic_publish.deadline_plugin.resources import plugin_dir

from helpers import last_json, run_cli
from test_metadata import AyonRender

PLUGIN = plugin_dir() / "AtomicPublish.py"
API_KEY = "ayon-service-key-0123456789abcdef"
RENDER_JOB_ID = "65f0c0ffee0000000000beef"
_numbers = itertools.count()


def ayon_publish_job(metadata_path: str, product: str = "renderMain_beauty", output_dir: str = "/out",
                     plugin: str = "AtomicPublish", openpype: bool = False) -> tuple[dict, dict]:
    """(job info, plugin info) of the publish job ayon-deadline (or OpenPype 3) submits, Plugin changed."""
    args = ["--headless", "publish", '"{}"'.format(metadata_path), "--targets", "deadline", "--targets", "farm"]
    if openpype:
        env = {"AVALON_PROJECT": "demo", "AVALON_ASSET": "sh010", "AVALON_TASK": "lighting",
               "OPENPYPE_USERNAME": "jane", "OPENPYPE_LOG_NO_COLORS": "1", "OPENPYPE_PUBLISH_JOB": "1",
               "OPENPYPE_RENDER_JOB": "0", "OPENPYPE_REMOTE_PUBLISH": "0", "AVALON_DB": "avalon"}
    else:
        env = {"AYON_PROJECT_NAME": "demo", "AYON_FOLDER_PATH": "/shots/sq01/sh010", "AYON_TASK_NAME": "lighting",
               "AYON_USERNAME": "jane", "AYON_LOG_NO_COLORS": "1", "AYON_IN_TESTS": "0", "AYON_PUBLISH_JOB": "1",
               "AYON_RENDER_JOB": "0", "AYON_REMOTE_PUBLISH": "0", "AYON_BUNDLE_NAME": "studio-2026",
               "AYON_DEFAULT_SETTINGS_VARIANT": "production"}
    job = {"Plugin": plugin, "Name": f"Publish - {product}", "BatchName": "sh010_lighting_v012.ma",
           "UserName": "jane", "Department": "lighting", "Priority": 50, "InitialStatus": "Active",
           "Pool": "publish", "Group": "publish", "ChunkSize": 1, "JobDependencies": RENDER_JOB_ID,
           "Comment": "lighting pass", "OutputDirectory0": output_dir}
    for i, (key, value) in enumerate(sorted(env.items())):
        job[f"EnvironmentKeyValue{i}"] = f"{key}={value}"
    plugin_info = {"Version": "1.0.0", "Arguments": subprocess.list2cmdline(args), "SingleFrameOnly": "True"}
    return job, plugin_info


def _text(entries: dict) -> str:
    return "".join(f"{k}={v}\n" for k, v in entries.items())


@pytest.fixture
def run_task(tmp_path: Path, standin: Path, monkeypatch: pytest.MonkeyPatch):
    """run_task(job, plugin_info, config=, env=) -> (outcome, job record): one task under the shim."""
    def run(job: dict, plugin_info: dict, config: dict | None = None, env: dict | None = None):
        monkeypatch.setenv("STANDIN_EXIT", "0")
        state = FarmState.create(tmp_path / f"farm{next(_numbers)}", {"bad_worker_errors": 3})
        record = build_job_record(parse_key_value_text(_text(job)), parse_key_value_text(_text(plugin_info)))
        state.add_job(record)
        state.register_worker("worker-1", os.getpid())
        job_id, task = state.dequeue("worker-1")
        log: list[str] = []
        Deadline.Scripting.install_backend(FarmBackend(state, "worker-1", log=log.append, environ=env or {}))
        try:
            outcome = run_simple_task(PLUGIN, state.get_job(job_id), task, "worker-1", tmp_path / "jobsData" / job_id,
                                      {"AtomicPublishExecutable": str(standin), "StoreUri": "", **(config or {})},
                                      sink=log.append)
        finally:
            Deadline.Scripting.install_backend(None)
        return outcome, state.get_job(job_id)
    return run


# -- the plugin under the shim ---------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["--headless", "publish", '"{root[work]}/a b/x_metadata.json"', "--targets", "farm"],
    ["publish", "C:\\proj\\renders\\", 'say "hi"', "tab\there", "", "a\\\\\"b"],
    ["publish", '\\\\server\\share\\x.json', "--use-staging"],
])
def test_split_arguments_undoes_list2cmdline(argv: list[str]) -> None:
    """ayon-deadline joins the launcher's arguments with subprocess.list2cmdline; the plugin must
    read back exactly those arguments (CommandLineToArgvW rules)."""
    from atomic_publish.deadline_plugin.farm.lifecycle import load_plugin_module

    module = load_plugin_module(PLUGIN)
    assert module.SplitArguments(subprocess.list2cmdline(argv)) == argv


def test_rootless_metadata_in_arguments_becomes_run_metadata(run_task, calls, tmp_path) -> None:
    rootless = "{root[work]}/demo/shots/sq01/sh010/work/lighting/renders/renderMain/renderMain_metadata.json"
    job, plugin_info = ayon_publish_job(rootless)
    outcome, record = run_task(job, plugin_info)
    assert outcome.ok, outcome.log
    argv = calls()[0]["argv"]
    assert argv == ["run", f"--metadata={rootless}", f"--submitted-metadata={rootless}",
                    f"--job-id={record['job_id']}", "--task-id=0", "--worker=worker-1"]
    assert f"INFO: AtomicPublish: publish metadata {rootless}, from the job's Arguments" in outcome.log
    assert ("INFO: AtomicPublish: publish job of AYON_PROJECT_NAME=demo, AYON_FOLDER_PATH=/shots/sq01/sh010, "
            "AYON_TASK_NAME=lighting (job environment)") in outcome.log


def test_openpype3_job_with_an_absolute_path_is_path_mapped(run_task, calls, tmp_path) -> None:
    """The metadata path and every absolute stagingDir inside go through Deadline path mapping; the
    submitted file stays untouched (its content is the fingerprint)."""
    shared = tmp_path / "mnt" / "work"
    shared.mkdir(parents=True)
    data = {"asset": "sh010", "user": "jane", "comment": "", "version": 3, "job": None, "session": {},
            "instances": [{"family": "render", "subset": "renderMain", "representations": [
                {"name": "exr", "files": ["a.1001.exr", "a.1002.exr"], "stagingDir": "P:\\work\\renders"},
                {"name": "mov", "files": "a.mov", "stagingDir": "{root[work]}/renders"}]}]}
    (shared / "renderMain_metadata.json").write_text(json.dumps(data))
    job, plugin_info = ayon_publish_job("P:\\work\\renderMain_metadata.json", openpype=True)
    outcome, record = run_task(job, plugin_info, env={"ATOMIC_PUBLISH_FARM_PATH_MAPPING": f"P:/work=>{shared}"})
    assert outcome.ok, outcome.log
    argv = calls()[0]["argv"]
    copy = Path(argv[1].split("=", 1)[1])
    assert argv[0] == "run" and argv[1].startswith("--metadata=") and copy.parent.name == record["job_id"]
    assert argv[2] == f"--submitted-metadata={shared / 'renderMain_metadata.json'}"
    mapped = json.loads(copy.read_text())
    assert [r["stagingDir"] for r in mapped["instances"][0]["representations"]] == \
        [f"{shared}/renders", "{root[work]}/renders"]
    assert json.loads((shared / "renderMain_metadata.json").read_text()) == data


def test_metadata_file_key_for_new_submitters(run_task, calls, tmp_path) -> None:
    path = tmp_path / "x_metadata.json"
    path.write_text(json.dumps({"instances": []}))
    outcome, _ = run_task({"Plugin": "AtomicPublish", "Name": "publish"}, {"MetadataFile": str(path)})
    argv = calls()[0]["argv"]
    assert argv[1] == f"--metadata={Path(argv[1].split('=', 1)[1])}" and argv[1].endswith(".mapped.json")
    assert argv[2] == f"--submitted-metadata={path}"


@pytest.mark.parametrize("arguments, problem", [
    ("--headless extractenvironments /tmp/env.json", "has no `publish <metadata path>` command"),
    ("--headless publish --targets farm", "names no metadata file after `publish`"),
    ("--headless publish a_metadata.json b_metadata.json --targets farm", "names 2 metadata files"),
])
def test_arguments_without_one_metadata_path_fail_without_running(run_task, calls, arguments, problem) -> None:
    outcome, _ = run_task({"Plugin": "AtomicPublish"}, {"Arguments": arguments})
    assert not outcome.ok and calls() == []
    assert outcome.message.startswith(f"AtomicPublish: plugin info Arguments {problem}"), outcome.message


def test_a_render_job_is_refused(run_task, calls) -> None:
    job, plugin_info = ayon_publish_job("{root[work]}/x_metadata.json")
    job.update({k: v.replace("AYON_RENDER_JOB=0", "AYON_RENDER_JOB=1") for k, v in job.items()
                if k.startswith("EnvironmentKeyValue")})
    outcome, _ = run_task(job, plugin_info)
    assert not outcome.ok and calls() == []
    assert "AYON_RENDER_JOB=1: this is a render job, not a publish job" in outcome.message


def test_settings_catalogue_and_ayon_key_reach_the_wrapper_the_key_privately(run_task, calls, tmp_path) -> None:
    job, plugin_info = ayon_publish_job("{root[work]}/x_metadata.json")
    outcome, record = run_task(job, plugin_info, config={
        "SettingsFile": "/studio/pipeline/atomic_publish.json", "Catalog": "ayon",
        "AyonServerUrl": "https://ayon.studio", "AyonApiKey": API_KEY},
        env={"ATOMIC_PUBLISH_FARM_PATH_MAPPING": f"/studio/pipeline=>{tmp_path}/pipeline"})
    assert outcome.ok, outcome.log
    log = "\n".join(outcome.log)
    assert (f"INFO: Setting Process Environment Variable ATOMIC_PUBLISH_SETTINGS to "
            f"{tmp_path}/pipeline/atomic_publish.json") in log
    assert "Setting Process Environment Variable ATOMIC_PUBLISH_CATALOG to ayon" in log
    assert "Setting Process Environment Variable AYON_SERVER_URL to https://ayon.studio" in log
    assert "integration settings AYON_API_KEY from the plugin configuration, passed to the wrapper in a 0600 file" in log
    everything = "\n".join([*calls()[0]["argv"], log, outcome.message, json.dumps(record)])
    assert API_KEY not in everything


# -- the local farm, the real wrapper, a real store -------------------------------------------------
def _farm(ayon: AyonRender, env: dict, out: Path, job: dict, plugin_info: dict, *extra: str):
    out.mkdir(parents=True, exist_ok=True)
    write_key_value_file(out / "job_info.job", job)
    write_key_value_file(out / "plugin_info.job", plugin_info)
    proc = run_cli(["farm", str(out / "job_info.job"), str(out / "plugin_info.job"), "--json", "--dir",
                    str(out / "farm"), "--workers", "2", "--config", f"SettingsFile={ayon.settings}", *extra],
                   env, timeout=240)
    return proc, last_json(proc)


def test_one_instance_ayon_job_publishes_through_the_farm(tmp_path: Path, env, store) -> None:
    ayon = AyonRender(tmp_path / "studio", aovs=("beauty",))
    metadata = ayon.write()
    job, plugin_info = ayon_publish_job(ayon.rootless(metadata), output_dir=str(ayon.publish_dir))
    proc, out = _farm(ayon, env, tmp_path / "job", job, plugin_info)
    assert out["job_status"] == "Completed", proc.stdout + proc.stderr
    final = ayon.publish_dir / "render/renderMain_beauty/v001"
    assert [(p["version"], p["final_dir"]) for p in out["published"]] == [(1, str(final))]
    assert sorted(os.listdir(final)) == [".atomic-publish.json"] + [
        f"dm_sh010_renderMain_beauty_v001.{f}.exr" for f in ayon.frames]
    assert store.catalog.project("demo").count_documents({"type": "version"}) == 1
    rec = store.records.get(f"deadline10:{out['job_id']}:0")
    assert rec["state"] == "PUBLISHED"
    assert "do-not-print-me" not in proc.stdout + proc.stderr + json.dumps(rec, default=str)


def test_three_aov_ayon_job_publishes_every_product_under_one_key(tmp_path: Path, env, store) -> None:
    ayon = AyonRender(tmp_path / "studio", aovs=("beauty", "Z", "N"))
    job, plugin_info = ayon_publish_job(ayon.rootless(ayon.write()), output_dir=str(ayon.publish_dir))
    proc, out = _farm(ayon, env, tmp_path / "job", job, plugin_info)
    assert out["job_status"] == "Completed", proc.stdout + proc.stderr
    for aov in ayon.aovs:
        final = ayon.publish_dir / f"render/renderMain_{aov}/v001"
        assert sorted(os.listdir(final)) == [".atomic-publish.json"] + [
            f"dm_sh010_renderMain_{aov}_v001.{f}.exr" for f in ayon.frames]
    assert store.catalog.project("demo").count_documents({"type": "version"}) == 3
    assert store.records.col.count_documents({}) == 1  # one publish, one key, three products


def test_openpype_style_job_with_a_missing_frame_fails_and_publishes_nothing(tmp_path: Path, env, store) -> None:
    ayon = AyonRender(tmp_path / "studio", aovs=("beauty", "Z"))
    (ayon.renders / "sh010_renderMain_Z.1002.exr").unlink()
    job, plugin_info = ayon_publish_job(ayon.rootless(ayon.write()), openpype=True)
    proc, out = _farm(ayon, env, tmp_path / "job", job, plugin_info)
    assert out["job_status"] == "Failed", proc.stdout + proc.stderr
    assert len(out["error_reports"]) == 1, out
    [report] = out["error_reports"]
    assert "sh010_renderMain_Z.1002.exr" in report["message"] and "permanent error, job" in report["message"]
    assert ayon.published() == [] and store.records.col.count_documents({}) == 0
    assert store.catalog.db.list_collection_names() == []


# -- atomic-publish submit --metadata ---------------------------------------------------------------
def test_submit_metadata_writes_a_job_that_publishes_it(tmp_path: Path, env, store) -> None:
    from atomic_publish.deadline_plugin.jobfiles import read_job_info, read_plugin_info

    ayon = AyonRender(tmp_path / "studio", aovs=("beauty", "Z"))
    environ = {**env, "ATOMIC_PUBLISH_SETTINGS": str(ayon.settings)}
    out = tmp_path / "job"
    proc = run_cli(["submit", "--metadata", ayon.rootless(ayon.write()), "--project", "demo", "--out", str(out)],
                   environ, check=True)
    assert "2 product(s): renderMain_beauty, renderMain_Z" in proc.stdout
    job, plugin = read_job_info(out / "job_info.job"), read_plugin_info(out / "plugin_info.job")
    assert job["Plugin"] == "AtomicPublish" and job["Name"] == "publish demo/shots/sq01/sh010/renderMain_beauty (+1 more)"
    assert job["EnvironmentKeyValue0"] == "AYON_PROJECT_NAME=demo"
    assert plugin["MetadataFile"] == str(out / "renderMain_metadata.json") and "Manifest" not in plugin
    proc = run_cli(["farm", str(out / "job_info.job"), str(out / "plugin_info.job"), "--json", "--dir",
                    str(out / "farm"), "--workers", "1"], environ, timeout=240)
    result = last_json(proc)
    assert result["job_status"] == "Completed", proc.stdout + proc.stderr
    assert store.catalog.project("demo").count_documents({"type": "version"}) == 2


def test_submit_refuses_bad_metadata_and_writes_no_job(tmp_path: Path, env) -> None:
    ayon = AyonRender(tmp_path / "studio", aovs=("beauty",))
    data = ayon.metadata()
    data["instances"][0]["representations"][0]["files"] = 3
    out = tmp_path / "job"
    proc = run_cli(["submit", "--metadata", str(ayon.write(data)), "--out", str(out)],
                   {**env, "ATOMIC_PUBLISH_SETTINGS": str(ayon.settings), "AYON_PROJECT_NAME": "demo"})
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"atomic-publish submit: invalid metadata {ayon.renders / 'renderMain_metadata.json'}: metadata field "
        "instances[0].representations[0].files: is an integer: neither a list of file names nor a file name"]
    assert not out.exists()
