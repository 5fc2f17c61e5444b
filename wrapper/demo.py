"""The README's demo: a synthetic render published on the embedded store, then retried."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
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


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", default=None, help="where to put the render and the publish root (default: a new temp folder)")


def main(args: argparse.Namespace) -> int:
    from ..idempotency import embedded

    folder = Path(args.dir or tempfile.mkdtemp(prefix="atomic-publish-demo-")).resolve()
    os.environ.setdefault("ATOMIC_PUBLISH_HOME", str(folder / "store"))
    was_running = embedded.running_uri() is not None
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps(make_render(folder), indent=1))
    job = f"demo{int(time.time())}"
    cmd = [sys.executable, "-m", "atomic_publish.wrapper.cli", "run", "--manifest", str(manifest),
           "--job-id", job, "--task-id", "0", "--worker", "demo-worker", "--json"]
    print(f"demo folder: {folder}\n")
    try:
        first = subprocess.run([*cmd], env={**os.environ, "ATOMIC_PUBLISH_FAILPOINTS": "stage.file=kill@10"},
                               capture_output=True, text=True)
        print(f"1. attempt killed with SIGKILL while staging (exit {first.returncode}), like a worker crash")
        second = subprocess.run(cmd, capture_output=True, text=True)
        out = json.loads(second.stdout.strip().splitlines()[-1])
        print(f"2. retry: {out['outcome']} v{out['version']:03} (epoch {out.get('epoch')}, "
              f"{out.get('reused_files', 0)} files reused, {out.get('copied_files', 0)} copied)")
        third = subprocess.run(cmd, capture_output=True, text=True)
        again = json.loads(third.stdout.strip().splitlines()[-1])
        print(f"3. retry again: {again['outcome']}: {again['message']}")
        versions = sorted(p.name for p in Path(out["final_dir"]).parent.iterdir())
        print(f"\nversion folders of the subset: {versions}")
        print(f"published at: {out['final_dir']}")
        print(f"record: atomic-publish status --key {out['key']}")
        ok = second.returncode == 0 and third.returncode == 0 and versions == ["v001"]
        print("\nexactly one version published" if ok else "\nUNEXPECTED: see the output above")
        return 0 if ok else 1
    finally:
        if not was_running:
            embedded.stop()
