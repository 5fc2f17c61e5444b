"""What the hero tests share: a publish of the render as a real process, and what the hero holds."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from helpers import publish

HERO_MARKER = ".atomic-publish-hero.json"


def hero_env(env: dict, types: str = "render") -> dict:
    return {**env, "ATOMIC_PUBLISH_HERO": types}


def publish_version(render, env: dict, job: str, comment: str | None = None, **fields) -> dict:
    """One publish of ``render`` (new frame content each time) as a real process; its JSON outcome."""
    for f in render.frames:
        f.write_bytes(os.urandom(4096) + job.encode())
    manifest = render.write_manifest(f"manifest-{job}.json", comment=comment or job, **fields)
    proc, out = publish(manifest, env, job)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def hero_folder(render) -> Path:
    return render.publish_root / "demo" / "shots" / "sq01" / "sh010" / "publish" / "render" / "renderCompMain" / "hero"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def hero_state(folder: Path) -> tuple[int, dict[str, str]]:
    """(the version the hero marker names, {file name: content hash}) of the hero folder."""
    marker = json.loads((folder / HERO_MARKER).read_text())
    files = {p.name: digest(p) for p in folder.iterdir() if p.name != HERO_MARKER}
    return int(marker["version"]), files


def version_files(render, number: int) -> dict[str, str]:
    """{hero name: content hash} of version ``number``'s folder, as the hero must mirror it."""
    folder = hero_folder(render).parent / f"v{number:0>3}"
    out = {}
    for p in folder.iterdir():
        if p.name.startswith(".atomic-publish"):
            continue
        out[p.name.replace(f"_v{number:0>3}", "_hero")] = digest(p)
    return out
