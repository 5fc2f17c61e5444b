"""AYON / OpenPype 3 publish metadata as input (issue 15 item 1): load_publish, the studio settings,
and `atomic-publish run --metadata` with a real store and real files, bad input included.

The metadata is built the way ayon-deadline's submit_publish_job.py writes it (keys from
shared/reference/ayon_farm.md 1.4: one instance per AOV, rootless stagingDir, basenames in files).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from atomic_publish.wrapper.errors import WorkerLocalError
from atomic_publish.wrapper.layout import plan_files, version_dir
from atomic_publish.wrapper.metadata import MetadataError, load_publish, parse_publish
from atomic_publish.wrapper.studio_settings import (SettingsError, export_catalog_settings, load_settings, map_template,
                                                     parse_settings)
from helpers import last_json, run_cli

AYON_TEMPLATE = ("{root[work]}/{project[name]}/{hierarchy}/{folder[name]}/publish/{product[type]}/"
                 "{product[name]}/{@version}")
FOLDER = "/shots/sq01/sh010"


class AyonRender:
    """A multi-AOV render under a work root, the studio settings for it, and its metadata JSON."""

    def __init__(self, root: Path, aovs: tuple[str, ...] = ("beauty",), frames: int = 3, project: str = "demo"):
        self.root, self.project, self.aovs = root, project, aovs
        self.work = root / "work"
        self.rel = f"{project}/shots/sq01/sh010/work/lighting/renders/renderMain"
        self.renders = self.work / self.rel
        self.renders.mkdir(parents=True)
        self.frames = [1001 + i for i in range(frames)]
        for aov in aovs:
            for f in self.frames:
                (self.renders / f"sh010_renderMain_{aov}.{f}.exr").write_bytes(os.urandom(4096))
        self.settings = root / "studio_settings.json"
        self.settings.write_text(json.dumps({"roots": {"work": {"linux": str(self.work), "darwin": str(self.work),
                                                                "windows": "P:/work"}},
                                             "publish_template": AYON_TEMPLATE, "project_codes": {project: "dm"}}))
        self.publish_dir = self.work / project / "shots/sq01/sh010/publish"

    def instance(self, aov: str) -> dict:
        staging = "{root[work]}/" + self.rel
        return {
            "productType": "render", "productBaseType": "render", "productName": f"renderMain_{aov}",
            "task": "lighting", "families": ["render.farm", "render"], "folderPath": FOLDER,
            "frameStart": self.frames[0], "frameEnd": self.frames[-1], "handleStart": 0, "handleEnd": 0,
            "frameStartHandle": self.frames[0], "frameEndHandle": self.frames[-1], "comment": "lighting pass",
            "fps": 25.0, "source": "{root[work]}/demo/shots/sq01/sh010/work/lighting/sh010_lighting_v012.ma",
            "extendFrames": False, "overrideExistingFrame": False, "pixelAspect": 1.0, "resolutionWidth": 1920,
            "resolutionHeight": 1080, "multipartExr": False, "jobBatchName": "sh010_lighting_v012.ma",
            "useSequenceForReview": True, "inputVersions": [], "colorspace": "ACEScg", "hasExplicitFrames": False,
            "reuseLastVersion": False, "stagingDir_persistent": False, "productGroup": "renderMain", "aov": aov,
            "review": aov == "beauty", "deadline": {"serverName": "default", "url": "http://deadline:8081"},
            "representations": [{
                "name": "exr", "ext": "exr", "stagingDir": staging, "fps": 25.0,
                "files": [f"sh010_renderMain_{aov}.{f}.exr" for f in self.frames],
                "frameStart": self.frames[0], "frameEnd": self.frames[-1],
                "tags": ["review"] if aov == "beauty" else [],
                "colorspaceData": {"colorspace": "ACEScg", "config": {"path": "/ocio/config.ocio",
                                                                      "template": "{root[work]}/ocio/config.ocio"}},
            }],
        }

    def metadata(self, **top) -> dict:
        data = {"folderPath": FOLDER, "frameStart": self.frames[0], "frameEnd": self.frames[-1], "fps": 25.0,
                "source": "{root[work]}/demo/shots/sq01/sh010/work/lighting/sh010_lighting_v012.ma",
                "user": "jane", "version": 12, "intent": None, "comment": "lighting pass",
                "job": {"_id": "65f0c0ffee0000000000beef", "Props": {"Batch": "sh010_lighting_v012.ma", "User": "jane",
                                                                     "Env": {"FTRACK_API_KEY": "do-not-print-me"}}},
                "instances": [self.instance(aov) for aov in self.aovs],
                "deadline_publish_job_id": "65f0c0ffee0000000000f00d"}
        data.update(top)
        return data

    def write(self, data: dict | str | None = None) -> Path:
        """The metadata next to the renders, named like create_metadata_path names it."""
        path = self.renders / "renderMain_metadata.json"
        path.write_text(data if isinstance(data, str) else json.dumps(data or self.metadata(), indent=4,
                                                                       sort_keys=True))
        return path

    def rootless(self, path: Path) -> str:
        return "{root[work]}/" + str(path.relative_to(self.work))

    def environ(self, base: dict | None = None) -> dict:
        env = dict(base or {})
        env.update(ATOMIC_PUBLISH_SETTINGS=str(self.settings), AYON_PROJECT_NAME=self.project,
                   AYON_FOLDER_PATH=FOLDER, AYON_TASK_NAME="lighting", AYON_PUBLISH_JOB="1", AYON_RENDER_JOB="0")
        return env

    def published(self) -> list[str]:
        """Every path under the publish folder of the shot, relative, sorted."""
        if not self.publish_dir.exists():
            return []
        return sorted(str(p.relative_to(self.publish_dir)) for p in self.publish_dir.rglob("*"))


@pytest.fixture
def ayon(tmp_path: Path) -> AyonRender:
    return AyonRender(tmp_path, aovs=("beauty", "Z", "N"))


# -- load_publish --------------------------------------------------------------------------------
def test_ayon_metadata_gives_one_validated_manifest_per_instance(ayon: AyonRender) -> None:
    pub = load_publish(str(ayon.write()), environ=ayon.environ())
    assert pub.source_format == "ayon" and pub.project == "demo"
    assert [m.subset for m in pub.products] == ["renderMain_beauty", "renderMain_Z", "renderMain_N"]
    m = pub.products[1]
    assert (m.project_name, m.project_code, m.asset, m.hierarchy, m.task, m.family, m.version) == \
        ("demo", "dm", "sh010", "shots/sq01", "lighting", "render", None)
    assert m.publish_root == str(ayon.work) and m.author == "jane" and m.comment == "lighting pass"
    assert m.representations[0].files == tuple(str(ayon.renders / f"sh010_renderMain_Z.{f}.exr") for f in ayon.frames)
    assert version_dir(m, 7) == str(ayon.publish_dir / "render/renderMain_Z/v007")
    assert [p.name for p in plan_files(m, 1)][0] == "dm_sh010_renderMain_Z_v001.1001.exr"
    # what AYON's integrator writes into the version, kept for the AYON catalogue
    assert m.version_data == {"families": ["render", "render.farm"], "frameStart": 1001, "frameEnd": 1003,
                              "handleStart": 0, "handleEnd": 0, "frameStartHandle": 1001, "frameEndHandle": 1003,
                              "fps": 25.0, "pixelAspect": 1.0, "resolutionWidth": 1920, "resolutionHeight": 1080,
                              "colorspace": "ACEScg", "source": m.source, "comment": "lighting pass"}
    assert pub.products[0].representations[0].data["tags"] == ["review"]
    assert m.representations[0].data["colorspaceData"]["colorspace"] == "ACEScg"
    assert m.representations[0].data["stagingDir"] == "{root[work]}/" + ayon.rel
    # the job's ids and names, never its environment (it holds the submitter's FTRACK_API_KEY)
    assert (pub.job.render_job_id, pub.job.publish_job_id, pub.job.batch_name, pub.job.user) == \
        ("65f0c0ffee0000000000beef", "65f0c0ffee0000000000f00d", "sh010_lighting_v012.ma", "jane")
    assert "do-not-print-me" not in repr(pub) and all("do-not-print-me" not in p.canonical() for p in pub.products)
    assert pub.canonical() == json.dumps(ayon.metadata(), sort_keys=True, separators=(",", ":"))
    assert pub.json_path(2, "representations[0].files[1]") == "instances[2].representations[0].files[1]"
    assert pub.json_path(0, "subset") == "instances[0].productName"


def test_rootless_metadata_path_is_resolved_with_the_settings_roots(ayon: AyonRender) -> None:
    path = ayon.write()
    pub = load_publish(ayon.rootless(path), environ=ayon.environ())
    assert pub.path == str(path) and len(pub.products) == 3


def test_openpype3_metadata(ayon: AyonRender) -> None:
    inst = {"family": "render", "subset": "renderCompMain", "asset": "sh010", "families": ["render"],
            "frameStart": 1001, "frameEnd": 1003, "fps": 24,
            "representations": [
                {"name": "exr", "ext": "exr", "files": [f"sh010_renderMain_beauty.{f}.exr" for f in ayon.frames],
                 "stagingDir": "{root[work]}/" + ayon.rel},
                {"name": "mov", "ext": "mov", "files": "sh010_renderMain_beauty.1001.exr",  # one file: a string
                 "stagingDir": str(ayon.renders), "tags": ["review"]},
                {"name": "png", "ext": "png", "files": ["x.png"], "stagingDir": "{root[work]}/x", "tags": ["delete"]}]}
    data = {"asset": "sh010", "user": "joe", "comment": "", "version": 3, "intent": {"value": "wip", "label": "WIP"},
            "job": None, "session": {"AVALON_PROJECT": "demo", "AVALON_ASSET": "sh010", "AVALON_TASK": "comp"},
            "instances": [inst]}
    pub = parse_publish(data, load_settings(str(ayon.settings)), environ={})
    assert pub.source_format == "openpype3" and pub.project == "demo" and pub.job.render_job_id is None
    [m] = pub.products
    assert (m.subset, m.asset, m.hierarchy, m.task, m.author) == ("renderCompMain", "sh010", "", None, "joe")
    assert [r.name for r in m.representations] == ["exr", "mov"]  # tagged delete: not integrated, as in AYON
    assert m.representations[1].files == (str(ayon.renders / "sh010_renderMain_beauty.1001.exr"),)
    assert m.version_data["intent"] == "wip"
    assert pub.json_path(0, "representations[1].files[0]") == "instances[0].representations[1].files"


def test_a_manifest_goes_through_load_publish_too(render) -> None:
    pub = load_publish(str(render.write_manifest()), environ={})
    assert pub.source_format == "manifest" and [m.subset for m in pub.products] == ["renderCompMain"]
    assert pub.json_path(0, "subset") == "subset"


def test_pinned_version_and_follow_workfile_version(ayon: AyonRender) -> None:
    data = ayon.metadata()
    data["instances"][0]["version"] = 12  # ayon-core pins it when the source instance is not v001
    pub = parse_publish(data, load_settings(str(ayon.settings)), environ=ayon.environ())
    assert [m.version for m in pub.products] == [12, None, None]
    settings = json.loads(ayon.settings.read_text())
    pub = parse_publish(ayon.metadata(), parse_settings({**settings, "follow_workfile_version": True}),
                        environ=ayon.environ())
    assert [m.version for m in pub.products] == [12, 12, 12]


def test_unused_keys_are_accepted(ayon: AyonRender) -> None:
    data = ayon.metadata(audio="/x.wav", someFutureKey={"a": 1})
    data["instances"][0]["someFutureKey"] = [1, 2]
    data["instances"][0]["representations"][0]["someFutureKey"] = None
    assert len(parse_publish(data, load_settings(str(ayon.settings)), environ=ayon.environ()).products) == 3


BAD_METADATA = [  # (change, the JSON path and problem in the one line)
    (lambda d: d.pop("instances"), "metadata field instances: is required"),
    (lambda d: d.update(instances=[]), "metadata field instances: is an empty list"),
    (lambda d: d["instances"][1].pop("productName"), "metadata field instances[1].productName: is required"),
    (lambda d: d["instances"][1].update(productName=7), "metadata field instances[1].productName: is an integer, "
                                                        "not a string"),
    (lambda d: d["instances"][2].update(productName="beauty/../../x"), "metadata field instances[2].productName: "
                                                                       "'beauty/../../x' is not allowed"),
    (lambda d: d["instances"][0]["representations"][0].update(stagingDir="{root[plates]}/sh010"),
     "metadata field instances[0].representations[0].stagingDir: names root 'plates', which the studio settings"),
    (lambda d: d["instances"][1]["representations"][0].update(files={"a": 1}),
     "metadata field instances[1].representations[0].files: is an object: neither a list of file names nor a file name"),
    (lambda d: d["instances"][1]["representations"][0].update(files=7),
     "metadata field instances[1].representations[0].files: is an integer: neither a list"),
    (lambda d: d["instances"][2].update(productName="renderMain_beauty"),
     "metadata field instances[2].productName: 'renderMain_beauty' in /shots/sq01/sh010 is also the product of "
     "instances[0]"),
    (lambda d: d["instances"][0]["representations"][0].pop("files"),
     "metadata field instances[0].representations[0].files: is required"),
    (lambda d: d["instances"][0]["representations"][0].update(files=[]),
     "metadata field instances[0].representations[0].files: is an empty list"),
    (lambda d: d["instances"][0]["representations"][0]["files"].append("sh010_renderMain_beauty.1001.exr"),
     "metadata field instances[0].representations[0].files[3]: frame 1001 appears twice"),
    (lambda d: d["instances"][1].update(representations=None),
     "metadata field instances[1].representations: is null, not a list"),
    (lambda d: d["instances"][0].update(frameStart="1001"),
     "metadata field instances[0].frameStart: is a string, not an integer or null"),
    (lambda d: d["instances"][0].pop("folderPath") and d.pop("folderPath"),
     "metadata field instances[0].folderPath: is required"),
    (lambda d: d["instances"][0]["representations"][0].update(stagingDir="renders/sh010"),
     "metadata field instances[0].representations[0].stagingDir: 'renders/sh010' is neither rootless"),
]


@pytest.mark.parametrize("change, expected", BAD_METADATA, ids=[e.split(":")[0].split()[-1] + str(i)
                                                                 for i, (_, e) in enumerate(BAD_METADATA)])
def test_bad_metadata_is_refused_with_its_json_path(ayon: AyonRender, change, expected: str) -> None:
    data = ayon.metadata()
    change(data)
    env = ayon.environ()
    env.pop("AYON_FOLDER_PATH")  # so that a missing folderPath is missing everywhere
    with pytest.raises(MetadataError) as caught:
        parse_publish(data, load_settings(str(ayon.settings)), environ=env)
    assert str(caught.value).startswith(expected), str(caught.value)
    assert "\n" not in str(caught.value)


def test_an_unmapped_windows_staging_dir_is_worker_local(ayon: AyonRender) -> None:
    data = ayon.metadata()
    data["instances"][1]["representations"][0]["stagingDir"] = "P:\\work\\renders"
    with pytest.raises(WorkerLocalError, match=r"instances\[1\]\.representations\[0\]\.stagingDir 'P:.*"
                                               "is a Windows path, unmapped on this worker"):
        parse_publish(data, load_settings(str(ayon.settings)), environ=ayon.environ())


def test_no_project_anywhere_is_refused(ayon: AyonRender) -> None:
    env = ayon.environ()
    env.pop("AYON_PROJECT_NAME")
    with pytest.raises(MetadataError, match=r"^metadata field \(job environment\) AYON_PROJECT_NAME: is not set"):
        parse_publish(ayon.metadata(), load_settings(str(ayon.settings)), environ=env)


def test_metadata_without_studio_settings_is_refused(ayon: AyonRender) -> None:
    with pytest.raises(SettingsError, match="needs the studio settings .* ATOMIC_PUBLISH_SETTINGS"):
        load_publish(str(ayon.write()), environ={"AYON_PROJECT_NAME": "demo"})
    with pytest.raises(MetadataError, match=r"^argument --metadata: '\{root\[work\]\}/x.json' is rootless"):
        load_publish("{root[work]}/x.json", environ={})


# -- the studio settings -------------------------------------------------------------------------
def test_ayon_and_openpype_templates_map_to_layout_fields() -> None:
    assert map_template(AYON_TEMPLATE) == ("{root[work]}/{project[name]}/{hierarchy}/{asset}/publish/{family}/"
                                           "{subset}/v{version:0>3}")
    assert map_template("{root[work]}/{project[name]}/{hierarchy}/{asset}/publish/{family}/{subset}/{@version}",
                        "v{version:0>4}").endswith("/{subset}/v{version:0>4}")
    assert map_template("{root[publish]}/{project[code]}/{task[name]}/v{version:0>3}") == \
        "{root[publish]}/{project[code]}/{task}/v{version:0>3}"
    assert map_template("{root[work]}/{project[name]}/{folder[path]}/publish/{product[name]}/{@version}") == \
        "{root[work]}/{project[name]}/{hierarchy}/{asset}/publish/{subset}/v{version:0>3}"


SETTINGS = {"roots": {"work": {"linux": "/mnt/work"}}, "publish_template": AYON_TEMPLATE}


@pytest.mark.parametrize("change, expected", [
    (lambda s: s.pop("roots"), "field roots: is required"),
    (lambda s: s.update(publish_template="{root[work]}/{folder[type]}/{@version}"),
     "field publish_template: field {folder[type]} is not supported"),
    (lambda s: s.update(publish_template="{root[work]}/{folder[name]}<_{variant}>/{@version}"),
     "field publish_template: optional parts <...> are not supported"),
    (lambda s: s.update(publish_template="{root[work]}/{product[name]}"), "field publish_template: must contain "
                                                                          "{version}"),
    (lambda s: s.update(publish_template="{root[proj]}/{product[name]}/{@version}"),
     "field publish_template: names root 'proj', which roots does not declare"),
    (lambda s: s.update(publish_template="/mnt/p/{product[name]}/{@version}"), "field publish_root: is required"),
    (lambda s: s.update(link_mode="symlink"), "field link_mode: 'symlink' is not one of ['copy', 'hardlink']"),
    (lambda s: s.update(catalog="shotgrid"), "field catalog: 'shotgrid' is not one of ['openpype', 'ayon']"),
    (lambda s: s.update(ayon_api_key="x"), "field (top level): unknown field(s) 'ayon_api_key'"),
    (lambda s: s.update(integrations=[{"phase": "gate"}]), "field integrations[0]: 'name' is a required property"),
    (lambda s: s["roots"].update(work={"linux": "/mnt/work", "amiga": "DH0:"}), "field roots.work: unknown field(s)"),
])
def test_bad_settings_are_refused_with_the_field(tmp_path: Path, change, expected: str) -> None:
    data = json.loads(json.dumps(SETTINGS))
    change(data)
    path = tmp_path / "s.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SettingsError) as caught:
        load_settings(str(path), environ={})
    assert str(caught.value) == f"studio settings {path} {expected}" or \
        str(caught.value).startswith(f"studio settings {path} {expected}"), str(caught.value)


def test_settings_file_defaults_overrides_and_absence(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({**SETTINGS, "catalog": "ayon", "ayon_server_url": "https://ayon.studio"}))
    s = load_settings(str(path), environ={})
    assert (s.publish_root, s.link_mode, s.verify, s.catalog, s.ayon_server_url, s.version_status) == \
        ("{root[work]}", "copy", "size", "ayon", "https://ayon.studio", None)
    s = load_settings(environ={"ATOMIC_PUBLISH_SETTINGS": str(path), "ATOMIC_PUBLISH_CATALOG": "openpype",
                               "AYON_SERVER_URL": "http://other:5000"})
    assert (s.catalog, s.ayon_server_url) == ("openpype", "http://other:5000")
    assert load_settings(environ={}) is None
    # the catalogues read the environment: the file's values go there unless it already says
    environ = {"AYON_SERVER_URL": "http://from-the-job:5000"}
    assert export_catalog_settings(load_settings(str(path), environ={}), environ) == ["ATOMIC_PUBLISH_CATALOG"]
    assert environ == {"AYON_SERVER_URL": "http://from-the-job:5000", "ATOMIC_PUBLISH_CATALOG": "ayon"}
    with pytest.raises(WorkerLocalError, match="is not readable on this worker"):
        load_settings(str(tmp_path / "missing.json"), environ={})
    path.write_text("{nope")
    with pytest.raises(SettingsError, match=r"^studio settings .*s.json: is not valid JSON"):
        load_settings(str(path), environ={})


# -- atomic-publish run --metadata: the bad-input list of the issue, end to end ------------------
def _run(path: str, env: dict, job: str = "job1", *extra: str):
    proc = run_cli(["run", "--metadata", path, "--job-id", job, "--task-id", "0", "--worker", "test-worker",
                    "--json", *extra], env)
    return proc, last_json(proc)


def _assert_no_trace(ayon: AyonRender, store) -> None:
    assert ayon.published() == []
    assert store.records.col.count_documents({}) == 0
    assert store.reservations.col.count_documents({}) == 0
    assert store.catalog.db.list_collection_names() == []


def _one_result_line(proc) -> str:
    lines = [line for line in proc.stdout.splitlines() if line.startswith("[atomic-publish] result ")]
    assert len(lines) == 1, proc.stdout
    return lines[0]


RUN_BAD = [
    ("not JSON", None, "argument --metadata: is not valid JSON"),
    ("no instances", lambda d: d.pop("instances"), "metadata field instances: is required"),
    ("no product name", lambda d: d["instances"][1].pop("productName"),
     "metadata field instances[1].productName: is required"),
    ("unknown root", lambda d: d["instances"][2]["representations"][0].update(stagingDir="{root[plates]}/x"),
     "metadata field instances[2].representations[0].stagingDir: names root 'plates'"),
    ("files neither list nor string", lambda d: d["instances"][1]["representations"][0].update(files={"f": 1}),
     "metadata field instances[1].representations[0].files: is an object: neither a list of file names nor a "
     "file name"),
    ("same product twice", lambda d: d["instances"][1].update(productName="renderMain_beauty"),
     "metadata field instances[1].productName: 'renderMain_beauty' in /shots/sq01/sh010 is also the product of "
     "instances[0]"),
    ("representation without files", lambda d: d["instances"][0]["representations"][0].pop("files"),
     "metadata field instances[0].representations[0].files: is required"),
]


@pytest.mark.parametrize("case, change, expected", RUN_BAD, ids=[c for c, _, _ in RUN_BAD])
def test_run_metadata_bad_input_exit_78_one_line_no_trace(ayon: AyonRender, env, store, case, change, expected):
    if change is None:
        path = ayon.write("{\"instances\": [")
    else:
        data = ayon.metadata()
        change(data)
        path = ayon.write(data)
    proc, out = _run(str(path), ayon.environ(env))
    assert proc.returncode == 78, proc.stdout + proc.stderr
    line = _one_result_line(proc)
    assert expected in line, line
    assert "nothing was written" in line and "do-not-print-me" not in proc.stdout + proc.stderr
    _assert_no_trace(ayon, store)


def test_run_metadata_representation_files_missing_on_disk(ayon: AyonRender, env, store) -> None:
    """Listed but not rendered (one AOV lost a frame): permanent, nothing of any product written."""
    (ayon.renders / "sh010_renderMain_N.1002.exr").unlink()
    proc, out = _run(str(ayon.write()), ayon.environ(env))
    assert proc.returncode == 78, proc.stdout + proc.stderr
    line = _one_result_line(proc)
    assert "sh010_renderMain_N.1002.exr" in line, line
    _assert_no_trace(ayon, store)


def test_run_metadata_with_unreadable_settings_is_worker_local(ayon: AyonRender, env, store) -> None:
    environ = ayon.environ(env)
    environ["ATOMIC_PUBLISH_SETTINGS"] = str(ayon.root / "not-mounted" / "settings.json")
    proc, out = _run(ayon.rootless(ayon.write()), environ)
    assert proc.returncode == 77, proc.stdout + proc.stderr
    assert "is not readable on this worker" in _one_result_line(proc)
    _assert_no_trace(ayon, store)


def test_run_usage_metadata_and_manifest_are_exclusive(ayon: AyonRender, env, render) -> None:
    proc = run_cli(["run", "--metadata", str(ayon.write()), "--manifest", str(render.write_manifest()),
                    "--job-id", "j", "--task-id", "0"], ayon.environ(env))
    assert proc.returncode == 78 and "argument --manifest: not allowed with argument --metadata" in proc.stdout
    proc = run_cli(["run", "--job-id", "j", "--task-id", "0"], env)
    assert proc.returncode == 78 and "one of the arguments --manifest --metadata is required" in proc.stdout
    proc = run_cli(["run", "--manifest", str(render.write_manifest()), "--submitted-metadata", "/x.json",
                    "--job-id", "j", "--task-id", "0"], env)
    assert proc.returncode == 78 and "argument --submitted-metadata: is for --metadata" in proc.stdout


# -- and a good one ----------------------------------------------------------------------------
def test_run_metadata_one_instance_publishes_once(tmp_path: Path, env, store) -> None:
    ayon = AyonRender(tmp_path, aovs=("beauty",))
    path = ayon.write()
    environ = ayon.environ(env)
    proc, out = _run(ayon.rootless(path), environ, "job1", "--submitted-metadata", ayon.rootless(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out["version"] == 1 and out["final_dir"] == str(ayon.publish_dir / "render/renderMain_beauty/v001")
    assert sorted(os.listdir(out["final_dir"])) == [".atomic-publish.json"] + [
        f"dm_sh010_renderMain_beauty_v001.{f}.exr" for f in ayon.frames]
    assert store.catalog.project("demo").count_documents({"type": "version"}) == 1
    proc, again = _run(str(path), environ)  # a requeue: the same key, nothing new
    assert proc.returncode == 0 and again["version"] == 1, proc.stdout
    assert store.catalog.project("demo").count_documents({"type": "version"}) == 1
    assert "do-not-print-me" not in json.dumps(list(store.records.col.find({}, {"_id": 0})), default=str)


def test_run_metadata_three_aovs_publish_together(ayon: AyonRender, env, store) -> None:
    proc, out = _run(str(ayon.write()), ayon.environ(env))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    versions = store.catalog.project("demo").count_documents({"type": "version"})
    assert versions == 3, proc.stdout
    for aov in ayon.aovs:
        assert (ayon.publish_dir / f"render/renderMain_{aov}/v001/dm_sh010_renderMain_{aov}_v001.1003.exr").is_file()
