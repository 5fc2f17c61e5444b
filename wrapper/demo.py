"""The README's demo: a synthetic render published through the local farm on the embedded store.

Worker-1 cannot reach the publish root (its path mapping points at a mount that does not
exist): the farm deny-lists it and another worker publishes exactly one version.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any


def make_render(folder: Path, frames: int = 24, size: int = 256 * 1024) -> dict:
    """A frame sequence plus a movie file, and the manifest that publishes them."""
    renders = folder / "renders" / "sh010"
    publish_root = folder / "projects"
    renders.mkdir(parents=True, exist_ok=True)
    publish_root.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(frames):
        path = renders / f"comp.{1001 + i}.exr"
        path.write_bytes(os.urandom(size))
        files.append(str(path))
    movie = renders / "comp.mov"
    movie.write_bytes(os.urandom(size * 4))
    return {"project": {"name": "demo", "code": "dm"}, "asset": "sh010", "hierarchy": "shots/sq01",
            "task": "comp", "subset": "renderCompMain", "family": "render", "version": None,
            "publish_root": str(publish_root),
            "representations": [{"name": "exr", "files": files}, {"name": "mov", "files": [str(movie)]}],
            "author": "jane", "comment": "demo publish", "source": "/work/sh010/comp_v012.nk"}


def _unusable(folder: Path) -> str | None:
    """Why the demo cannot use ``folder`` (checked before any work), or None. A folder that already holds
    files (an earlier demo's render, store and farm) is refused: the demo's claims are about a fresh run."""
    if folder.exists() and not folder.is_dir():
        return "is a file, not a folder; give a new or empty folder"
    if folder.is_dir() and any(folder.iterdir()):
        return ("is not empty (an earlier demo run?); give a new or empty folder, or remove this one "
                "(stop its store first: ATOMIC_PUBLISH_HOME=" + shlex.quote(str(folder / "store")) +
                " atomic-publish store stop)")
    return None


def inspect_commands(job_id: str, publish_root: str, started_store: bool, uri: str) -> str:
    """The exact commands that show what the demo published, on the store it used."""
    home = shlex.quote(str(Path(os.environ["ATOMIC_PUBLISH_HOME"])))
    root = shlex.quote(publish_root)
    if started_store:  # the demo stops the store it started: start it again to look
        env = f"ATOMIC_PUBLISH_HOME={home} "
        lines = [f"{env}atomic-publish store start", f"{env}atomic-publish status --job-id {job_id}",
                 f"{env}atomic-publish audit --root {root}", f"{env}atomic-publish store stop"]
    else:  # it was running before the demo and still is
        store = f"--store {shlex.quote(uri)}"
        lines = [f"atomic-publish status --job-id {job_id} {store}", f"atomic-publish audit --root {root} {store}"]
    return "\nto inspect what it published:\n" + "\n".join(f"  {line}" for line in lines)


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", default=None,
                   help="a new or empty folder for the render, the publish root, the job files, the store "
                        "and the farm (default: a new temporary folder)")
    p.add_argument("--catalog", choices=("openpype", "ayon"), default="openpype",
                   help="openpype (default): a manifest publish into OpenPype's documents on the embedded "
                        "store, with ftrack; ayon: ayon-deadline's publish job (Plugin=AtomicPublish) with a "
                        "3-AOV metadata JSON, into a local AYON server (needs ayon-python-api), with ftrack "
                        "for every product")


def main(args: argparse.Namespace) -> int:
    from ..deadline_plugin.farm import run_farm
    from ..deadline_plugin.submit import write_job_files
    from ..idempotency import embedded
    from ..idempotency.store import Store
    from ..idempotency.connection import connect
    from ..testing.fake_ftrack import FakeFtrackServer

    folder = Path(args.dir or tempfile.mkdtemp(prefix="atomic-publish-demo-")).resolve()
    refusal = _unusable(folder)
    if refusal:
        print(f"atomic-publish demo: --dir {folder} {refusal}", file=sys.stderr)
        return 2
    if getattr(args, "catalog", "openpype") == "ayon":
        try:
            import ayon_api  # noqa: F401  checked before any work
        except ImportError:
            print("atomic-publish demo: --catalog ayon needs ayon-python-api: "
                  "pip install --no-deps 'ayon-python-api==1.2.25' (docs/fakes.md)", file=sys.stderr)
            return 2
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ATOMIC_PUBLISH_HOME", str(folder / "store"))
    started_store = embedded.running_uri() is None
    print(f"atomic-publish demo in {folder}")
    if getattr(args, "catalog", "openpype") == "ayon":
        try:
            try:
                uri = embedded.ensure_running()
                print(f"  embedded store (SecantusDB) at {uri}, data in {embedded.home()}")
                return ayon_story(folder, uri, started_store)
            finally:
                if started_store:
                    embedded.stop()
        except KeyboardInterrupt:  # everything it started is stopped by now (the finally clauses)
            print(f"\natomic-publish demo: interrupted; the farm, the local AYON server and the store it started "
                  f"are stopped; what it wrote so far stays in {folder}", file=sys.stderr)
            return 130
    ftrack = FakeFtrackServer(folder / "ftrack", api_user="demo", api_key="demo-api-key")
    try:
        uri = embedded.ensure_running()
        print(f"  embedded store (SecantusDB) at {uri}, data in {embedded.home()}")
        ftrack.start()
        ftrack.seed_context("demo", "sh010", "comp")
        print(f"  local ftrack server (atomic_publish.testing.fake_ftrack) at {ftrack.url}")
        manifest_data = make_render(folder)
        manifest_data["integrations"] = [{"name": "ftrack", "phase": "gate", "settings": {"asset_type": "render"}}]
        manifest = folder / "manifest.json"
        manifest.write_text(json.dumps(manifest_data, indent=1))
        frames = len(manifest_data["representations"][0]["files"])
        print(f"  synthetic render: {frames} EXR frames and a movie in {folder / 'renders' / 'sh010'}")
        files = write_job_files(manifest, folder / "job", name="Publish - renderCompMain")
        print(f"  job files: {files.job_info} and {files.plugin_info}")
        offline = folder / "offline" / "projects"
        worker_env = story_workers(manifest_data["publish_root"], offline)
        print("  farm: 3 workers; worker-1 maps the publish root to a mount that does not exist, "
              "worker-2 and worker-3 come online 2 s later\n")
        result = run_farm(files.job_info, files.plugin_info, workers=3, store_uri=uri, worker_env=worker_env,
                          farm_dir=folder / "farm", timeout=300,
                          plugin_config={"FtrackServer": ftrack.url, "FtrackApiUser": "demo",
                                         "FtrackApiKey": "demo-api-key"})
        for report in result.error_reports:
            print(f"  error report from {report['worker']}:\n    {report['message']}\n")
        [task] = result.tasks
        print(f"  job {result.job_id}: {result.job_status}; task 0 {task['status']} on {task['worker']} "
              f"after {task['errors']} error(s); deny list: {', '.join(result.deny_list) or '(none)'}")
        store = Store(connect(uri))
        try:
            rec = store.records.get(f"deadline10:{result.job_id}:0") or {}
            versions = store.catalog.project("demo").count_documents({"type": "version"})
        finally:
            store.close()
        subset_dir = Path(rec.get("final_dir") or folder).parent
        on_disk = sorted(p.name for p in subset_dir.iterdir()) if rec.get("final_dir") else []
        print(f"  record {rec.get('_id')}: {rec.get('state')}, version {rec.get('version')}, "
              f"{len(rec.get('attempts') or [])} attempts")
        print(f"  version folders on disk: {on_disk}; version documents in MongoDB: {versions}")
        if rec.get("final_dir"):
            names = sorted(p.name for p in Path(rec["final_dir"]).iterdir())
            print(f"  published at {rec['final_dir']}:\n    {names[1]} ... {names[-1]} ({len(names) - 1} files)")
        asset_versions = ftrack.entities("AssetVersion")
        print(f"  ftrack: {len(asset_versions)} AssetVersion for renderCompMain, "
              + ", ".join(f"version {v['version']} is_published={v['is_published']}" for v in asset_versions))
        ok = (result.job_status == "Completed" and result.deny_list == ["worker-1"] and on_disk == ["v001"]
              and versions == 1 and [v["is_published"] for v in asset_versions] == [True])
        print("\nexactly one version published (on disk, in MongoDB and in ftrack); the worker that could "
              "not reach the publish root was deny-listed" if ok else "\nUNEXPECTED outcome: see the farm folder " + result.farm_dir)
        print(inspect_commands(result.job_id, manifest_data["publish_root"], started_store, uri))
        return 0 if ok else 1
    finally:
        ftrack.stop()
        if started_store:
            embedded.stop()


# -- --catalog ayon: ayon-deadline's publish job, only Plugin changed, into a local AYON server -----------
AYON_PROJECT, AYON_CODE, AYON_FOLDER, AYON_TASK = "demo", "dm", "/shots/sq01/sh010", "lighting"
AYON_AOVS = ("beauty", "Z", "N")
AYON_TEMPLATE = "{root[work]}/{project[name]}/{hierarchy}/{folder[name]}/publish/{product[type]}/{product[name]}/{@version}"
#: Every key the demo generates starts with this (the rest is random): tests look for it in files and logs.
AYON_KEY_PREFIX = "apdemo-ayon-"
#: The AYON story's integrations, in its studio settings: ftrack as a gate for every product of the publish.
FTRACK_INTEGRATIONS = [{"name": "ftrack", "phase": "gate", "settings": {"asset_type": "render"}}]


def make_ayon_render(work: Path, frames: int = 24, size: int = 128 * 1024) -> Path:
    """A 3-AOV render under the work root and its ``renderMain_metadata.json``, written as ayon-deadline's
    ``submit_publish_job.py`` writes it (rootless paths, the instance keys ayon-core's collectors read)."""
    rel = f"{AYON_PROJECT}/shots/sq01/sh010/work/{AYON_TASK}/renders/renderMain"
    renders = work / rel
    renders.mkdir(parents=True, exist_ok=True)
    numbers = [1001 + i for i in range(frames)]
    for aov in AYON_AOVS:
        for f in numbers:
            (renders / f"sh010_renderMain_{aov}.{f}.exr").write_bytes(os.urandom(size))
    source = "{root[work]}/" + f"{AYON_PROJECT}/shots/sq01/sh010/work/{AYON_TASK}/sh010_lighting_v012.ma"

    def instance(aov: str) -> dict:
        return {"productType": "render", "productBaseType": "render", "productName": f"renderMain_{aov}",
                "task": AYON_TASK, "families": ["render.farm", "render"], "folderPath": AYON_FOLDER,
                "frameStart": numbers[0], "frameEnd": numbers[-1], "handleStart": 0, "handleEnd": 0,
                "frameStartHandle": numbers[0], "frameEndHandle": numbers[-1], "comment": "lighting pass",
                "fps": 25.0, "source": source, "extendFrames": False, "overrideExistingFrame": False,
                "pixelAspect": 1.0, "resolutionWidth": 1920, "resolutionHeight": 1080, "multipartExr": False,
                "jobBatchName": "sh010_lighting_v012.ma", "useSequenceForReview": True, "inputVersions": [],
                "colorspace": "ACEScg", "hasExplicitFrames": False, "reuseLastVersion": False,
                "stagingDir_persistent": False, "productGroup": "renderMain", "aov": aov, "review": aov == "beauty",
                "deadline": {"serverName": "default", "url": "http://deadline:8081"},
                "representations": [{"name": "exr", "ext": "exr", "stagingDir": "{root[work]}/" + rel, "fps": 25.0,
                                     "files": [f"sh010_renderMain_{aov}.{f}.exr" for f in numbers],
                                     "frameStart": numbers[0], "frameEnd": numbers[-1],
                                     "tags": ["review"] if aov == "beauty" else [],
                                     "colorspaceData": {"colorspace": "ACEScg"}}]}

    metadata = {"folderPath": AYON_FOLDER, "frameStart": numbers[0], "frameEnd": numbers[-1], "fps": 25.0,
                "source": source, "user": "jane", "version": 12, "intent": None, "comment": "lighting pass",
                "job": {"_id": "65f0c0ffee0000000000beef",
                        "Props": {"Batch": "sh010_lighting_v012.ma", "User": "jane"}},
                "instances": [instance(aov) for aov in AYON_AOVS],
                "deadline_publish_job_id": "65f0c0ffee0000000000f00d"}
    path = renders / "renderMain_metadata.json"
    path.write_text(json.dumps(metadata, indent=4, sort_keys=True))
    return path


def ayon_publish_job(rootless_metadata: str, output_dir: str) -> tuple[dict, dict]:
    """(job info, plugin info) as ayon-deadline's ``DeadlineAddon.submit_ayon_plugin_job`` writes the publish
    job, with ``Plugin=AtomicPublish`` the one change."""
    import subprocess

    env = {"AYON_PROJECT_NAME": AYON_PROJECT, "AYON_FOLDER_PATH": AYON_FOLDER, "AYON_TASK_NAME": AYON_TASK,
           "AYON_USERNAME": "jane", "AYON_LOG_NO_COLORS": "1", "AYON_IN_TESTS": "0", "AYON_PUBLISH_JOB": "1",
           "AYON_RENDER_JOB": "0", "AYON_REMOTE_PUBLISH": "0", "AYON_BUNDLE_NAME": "studio-2026",
           "AYON_DEFAULT_SETTINGS_VARIANT": "production"}
    job = {"Plugin": "AtomicPublish",  # was "Ayon": the one change
           "Name": "Publish - renderMain_beauty", "BatchName": "sh010_lighting_v012.ma", "UserName": "jane",
           "Department": "lighting", "Priority": 50, "InitialStatus": "Active", "Pool": "publish",
           "Group": "publish", "ChunkSize": 1, "Comment": "lighting pass", "OutputDirectory0": output_dir}
    for i, (key, value) in enumerate(sorted(env.items())):
        job[f"EnvironmentKeyValue{i}"] = f"{key}={value}"
    args = ["--headless", "publish", '"{}"'.format(rootless_metadata), "--targets", "deadline", "--targets", "farm"]
    return job, {"Version": "1.0.0", "Arguments": subprocess.list2cmdline(args), "SingleFrameOnly": "True"}


def start_ayon_server(data: Path, api_key: str, port: int = 0):
    """The local AYON server in its own process (``python -m atomic_publish.testing.fake_ayon``), its data
    in ``data``; the key in its environment, never in its arguments. Returns (process, url)."""
    from ..testing import spawn_fake
    from ..testing.fake_ayon import BANNER

    data.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, FAKE_AYON_API_KEY=api_key)
    return spawn_fake("atomic_publish.testing.fake_ayon", ["--data", str(data), "--port", str(port)], BANNER,
                      env=env)


def story_workers(share: Any, offline: Any) -> dict[str, dict[str, str]]:
    """The demo's three workers: worker-1 maps ``share`` to a mount that does not exist (so it is
    deny-listed), worker-2 and worker-3 come online 2 s later and publish."""
    return {"worker-1": {"ATOMIC_PUBLISH_FARM_PATH_MAPPING": f"{share}=>{offline}"},
            "worker-2": {"ATOMIC_PUBLISH_FARM_WORKER_DELAY": "2"},
            "worker-3": {"ATOMIC_PUBLISH_FARM_WORKER_DELAY": "2"}}


def stop_process(proc) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except Exception:  # noqa: BLE001  (also KeyboardInterrupt: kill it, whatever happens)
        proc.kill()
        proc.wait(timeout=10)


def ayon_holdings(con, work: Path) -> list[dict]:
    """What AYON holds for the demo's products, read back through ayon_api: per product its versions
    (number, status, active, atomic-publish key) and each version's representations and files."""
    folder = con.get_folder_by_path(AYON_PROJECT, AYON_FOLDER)
    out = []
    for aov in AYON_AOVS:
        name = f"renderMain_{aov}"
        product = con.get_product_by_name(AYON_PROJECT, name, folder["id"]) if folder else None
        entry = {"product": name, "type": (product or {}).get("productType"), "versions": []}
        if product is not None:
            for v in sorted(con.get_versions(AYON_PROJECT, product_ids=[product["id"]], active=None),
                            key=lambda v: v["version"]):
                reps = []
                for rep in con.get_representations(AYON_PROJECT, version_ids=[v["id"]]):
                    files = sorted(rep.get("files") or [], key=lambda f: f["path"])
                    on_disk = [Path(f["path"].replace("{root[work]}", str(work))) for f in files]
                    intact = all(p.is_file() and p.stat().st_size == f["size"] for p, f in zip(on_disk, files))
                    reps.append({"name": rep["name"], "files": [f["path"] for f in files], "intact": intact})
                entry["versions"].append({"version": v["version"], "status": v.get("status"),
                                          "active": v.get("active", True),
                                          "key": ((v.get("data") or {}).get("atomic_publish") or {}).get("key", ""),
                                          "representations": reps})
        out.append(entry)
    return out


def ftrack_holdings(ftrack) -> dict[str, list[dict]]:
    """What the local ftrack server holds, per Asset (one per product): its AssetVersions' number,
    is_published and number of components."""
    assets = {a["id"]: a["name"] for a in ftrack.entities("Asset")}
    components: dict[str, int] = {}
    for c in ftrack.entities("Component"):
        components[c["version_id"]] = components.get(c["version_id"], 0) + 1
    out: dict[str, list[dict]] = {}
    for av in sorted(ftrack.entities("AssetVersion"), key=lambda v: v["version"]):
        out.setdefault(assets.get(av["asset_id"], "?"), []).append(
            {"version": av["version"], "is_published": av["is_published"], "components": components.get(av["id"], 0)})
    return out


def ayon_inspect_commands(job_id: str, folder: Path, settings: Path, url: str, started_store: bool,
                          uri: str) -> str:
    """The commands that show what the demo published, once the demo has stopped its servers: restart the
    local AYON server on the kept data (on the same port, with a key of your own: the server keeps none)."""
    home = shlex.quote(str(Path(os.environ["ATOMIC_PUBLISH_HOME"])))
    port = url.rsplit(":", 1)[1].strip("/")
    data = shlex.quote(str(folder / "ayon"))
    root = shlex.quote(str(folder / "work"))
    env = f"ATOMIC_PUBLISH_HOME={home} " if started_store else ""
    store = "" if started_store else f" --store {shlex.quote(uri)}"
    ayon_env = (f"ATOMIC_PUBLISH_SETTINGS={shlex.quote(str(settings))} ATOMIC_PUBLISH_CATALOG=ayon "
                f"AYON_SERVER_URL={url} ")
    lines = ["export AYON_API_KEY=$(" + shlex.quote(sys.executable) + " -c 'import secrets; print(secrets.token_hex(24))')",
             f"FAKE_AYON_API_KEY=\"$AYON_API_KEY\" {shlex.quote(sys.executable)} -m atomic_publish.testing.fake_ayon "
             f"--data {data} --port {port} & AYON_PID=$!"]
    if started_store:
        lines.append(f"{env}atomic-publish store start")
    lines += [f"{env}atomic-publish status --job-id {job_id}{store}",
              f"{env}{ayon_env}atomic-publish audit --root {root}{store}"]
    if started_store:
        lines.append(f"{env}atomic-publish store stop")
    lines.append("kill $AYON_PID")
    return ("\nto inspect what it published (the demo stopped its store and its AYON server; the server comes "
            "back with every entity on the kept data, and accepts the key it is started with):\n"
            + "\n".join(f"  {line}" for line in lines))


def ayon_story(folder: Path, uri: str, started_store: bool) -> int:
    """--catalog ayon: the local AYON server, seeded; ayon-deadline's publish job (only Plugin changed) with a
    3-AOV metadata JSON on the local farm with Catalog=ayon; worker-1 deny-listed; one version per product."""
    import secrets

    import ayon_api

    from ..deadline_plugin.farm import run_farm
    from ..deadline_plugin.farm.pluginconfig import read_config, write_config
    from ..deadline_plugin.jobfiles import write_key_value_file
    from ..idempotency.connection import connect
    from ..idempotency.store import Store
    from ..testing.fake_ayon import FakeAyonControl
    from ..testing.fake_ftrack import FakeFtrackServer

    api_key = AYON_KEY_PREFIX + secrets.token_hex(24)  # never printed, never in a job file or an argument
    work = folder / "work"
    server = con = None
    farm_dir = folder / "farm"
    ftrack = FakeFtrackServer(folder / "ftrack", api_user="demo", api_key="demo-api-key")
    try:
        server, url = start_ayon_server(folder / "ayon", api_key)
        roots = {"work": {"linux": str(work), "darwin": str(work), "windows": "P:/work"}}
        FakeAyonControl(url).seed(AYON_PROJECT, folders=[AYON_FOLDER.strip("/")], tasks=[AYON_TASK],
                                  code=AYON_CODE, roots=roots)
        print(f"  local AYON server (python -m atomic_publish.testing.fake_ayon, pid {server.pid}) at {url}, "
              f"data in {folder / 'ayon'}; project {AYON_PROJECT!r} seeded with its anatomy roots, "
              f"folder {AYON_FOLDER} and task {AYON_TASK!r}")
        ftrack.start()
        ftrack.seed_context(AYON_PROJECT, AYON_FOLDER.rsplit("/", 1)[1], AYON_TASK)
        print(f"  local ftrack server (atomic_publish.testing.fake_ftrack) at {ftrack.url}, shot sh010 and task "
              f"{AYON_TASK!r} seeded")
        metadata = make_ayon_render(work)
        settings = work / "pipeline" / "atomic_publish.json"  # the studio settings, on the project share
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps({"roots": roots, "publish_template": AYON_TEMPLATE,
                                        "project_codes": {AYON_PROJECT: AYON_CODE}, "catalog": "ayon",
                                        "ayon_server_url": url, "integrations": FTRACK_INTEGRATIONS}, indent=1))
        rootless = "{root[work]}/" + str(metadata.relative_to(work))
        print(f"  synthetic render: {len(AYON_AOVS)} AOVs ({', '.join(AYON_AOVS)}) of 24 EXR frames in "
              f"{metadata.parent}\n  metadata as ayon-deadline writes it: {rootless}\n  studio settings: {settings}")
        publish_dir = work / AYON_PROJECT / "shots/sq01/sh010/publish"
        job, plugin_info = ayon_publish_job(rootless, str(publish_dir / "render/renderMain_beauty/v001"))
        (folder / "job").mkdir()
        job_info_path, plugin_info_path = folder / "job" / "job_info.job", folder / "job" / "plugin_info.job"
        write_key_value_file(job_info_path, job)
        write_key_value_file(plugin_info_path, plugin_info)
        print(f"  job files: ayon-deadline's publish job with Plugin=AtomicPublish (was Ayon), nothing else "
              f"changed: {job_info_path} and {plugin_info_path}")
        print("  ftrack: a gate integration in the studio settings, for every product: one AssetVersion per "
              "product, created unpublished before the commit and published after it")
        offline = folder / "offline" / "work"
        worker_env = story_workers(work, offline)
        print("  farm: 3 workers, plugin configuration Catalog=ayon, AyonServerUrl, AyonApiKey (a random key, "
              "handed to each task in a 0600 secrets file), SettingsFile, FtrackServer/FtrackApiUser/FtrackApiKey; "
              "worker-1 maps the project share (the "
              "publish root and the studio settings) to a mount that does not exist, worker-2 and worker-3 come "
              "online 2 s later\n")
        try:
            result = run_farm(job_info_path, plugin_info_path, workers=3, store_uri=uri, worker_env=worker_env,
                              farm_dir=farm_dir, timeout=300,
                              plugin_config={"SettingsFile": str(settings), "Catalog": "ayon",
                                             "AyonServerUrl": url, "AyonApiKey": api_key,
                                             "FtrackServer": ftrack.url, "FtrackApiUser": "demo",
                                             "FtrackApiKey": "demo-api-key"})
        finally:  # the farm is stopped: its plugin configuration keeps everything but the keys
            if (farm_dir / "AtomicPublish.config").is_file():
                config = read_config(farm_dir)
                config.pop("AyonApiKey", None)
                config.pop("FtrackApiKey", None)
                write_config(farm_dir, config)
        for report in result.error_reports:
            print(f"  error report from {report['worker']}:\n    {report['message']}\n")
        [task] = result.tasks
        print(f"  job {result.job_id}: {result.job_status}; task 0 {task['status']} on {task['worker']} "
              f"after {task['errors']} error(s); deny list: {', '.join(result.deny_list) or '(none)'}")
        key = f"deadline10:{result.job_id}:0"
        store = Store(connect(uri))
        try:
            rec = store.records.get(key) or {}
        finally:
            store.close()
        print(f"  record {rec.get('_id')}: {rec.get('state')}, {len(rec.get('attempts') or [])} attempts")
        con = ayon_api.ServerAPI(url, token=api_key, timeout=10)
        holdings = ayon_holdings(con, work)
        batches = FakeAyonControl(url).stats()["batches_committed"]
        print(f"  AYON (read back through ayon_api from {url}): {batches} operations batch committed")
        ok = result.job_status == "Completed" and result.deny_list == ["worker-1"] and batches == 1
        for entry in holdings:
            on_disk = sorted(p.name for p in (publish_dir / "render" / entry["product"]).iterdir()) \
                if (publish_dir / "render" / entry["product"]).is_dir() else []
            print(f"    product {entry['product']} ({entry['type']}) in {AYON_FOLDER}: "
                  f"{len(entry['versions'])} version(s); folders on disk {on_disk}")
            for v in entry["versions"]:
                print(f"      version {v['version']} status {v['status']!r} active={v['active']} key {v['key']}")
                for rep in v["representations"]:
                    files = rep["files"]
                    print(f"        representation {rep['name']}: {len(files)} files, on disk and of the sizes "
                          f"AYON records: {rep['intact']}\n          {files[0]}\n          ... {files[-1]}")
            ok = ok and on_disk == ["v001"] and [(v["version"], v["key"], v["active"]) for v in entry["versions"]] \
                == [(1, key, True)] and [(r["name"], len(r["files"]), r["intact"])
                                          for r in entry["versions"][0]["representations"]] == [("exr", 24, True)]
        published_in_ftrack = ftrack_holdings(ftrack)
        print(f"  ftrack: {sum(len(v) for v in published_in_ftrack.values())} AssetVersion(s)")
        for product in (f"renderMain_{aov}" for aov in AYON_AOVS):
            versions = published_in_ftrack.get(product, [])
            print(f"    asset {product}: " + (", ".join(f"version {v['version']} is_published={v['is_published']} "
                                                          f"({v['components']} component)" for v in versions)
                                               or "no AssetVersion"))
            ok = ok and [(v["version"], v["is_published"]) for v in versions] == [(1, True)]
        ok = ok and rec.get("state") == "PUBLISHED"
        print(f"\nexactly one version of each of the {len(AYON_AOVS)} products published (on disk, in AYON, "
              "in one batch, and in ftrack); the worker that could not reach the project share was deny-listed" if ok
              else "\nUNEXPECTED outcome: see the farm folder " + result.farm_dir)
        print(ayon_inspect_commands(result.job_id, folder, settings, url, started_store, uri))
        return 0 if ok else 1
    finally:
        if con is not None:
            con.close_session()
        ftrack.stop()
        stop_process(server)
