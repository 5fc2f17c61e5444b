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
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ATOMIC_PUBLISH_HOME", str(folder / "store"))
    started_store = embedded.running_uri() is None
    print(f"atomic-publish demo in {folder}")
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
        worker_env = {
            "worker-1": {"ATOMIC_PUBLISH_FARM_PATH_MAPPING": f"{manifest_data['publish_root']}=>{offline}"},
            "worker-2": {"ATOMIC_PUBLISH_FARM_WORKER_DELAY": "2"},
            "worker-3": {"ATOMIC_PUBLISH_FARM_WORKER_DELAY": "2"},
        }
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
