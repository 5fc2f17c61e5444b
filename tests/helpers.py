"""Helpers of the tests: a synthetic render with its manifest, and the CLI as a real process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "atomic_publish.wrapper.cli"]


class Render:
    """A synthetic render on disk and a manifest describing it."""

    def __init__(self, root: Path, frames: int = 3, size: int = 64 * 1024, movie: bool = True):
        self.root = root
        self.renders = root / "renders"
        self.publish_root = root / "projects"
        self.renders.mkdir(parents=True, exist_ok=True)
        self.publish_root.mkdir(parents=True, exist_ok=True)
        self.frames = [self.renders / f"comp.{1001 + i}.exr" for i in range(frames)]
        for i, f in enumerate(self.frames):
            f.write_bytes(os.urandom(size))
        self.movie = self.renders / "comp.mov"
        if movie:
            self.movie.write_bytes(os.urandom(size))
        self.has_movie = movie

    def manifest(self, **overrides) -> dict:
        reps = [{"name": "exr", "files": [str(f) for f in self.frames]}]
        if self.has_movie:
            reps.append({"name": "mov", "files": [str(self.movie)]})
        data = {"project": {"name": "demo", "code": "dm"}, "asset": "sh010", "hierarchy": "shots/sq01",
                "task": "comp", "subset": "renderCompMain", "family": "render", "version": None,
                "publish_root": str(self.publish_root), "representations": reps,
                "author": "jane", "comment": "first comp", "source": "/work/sh010/comp_v012.nk"}
        data.update(overrides)
        return data

    def write_manifest(self, name: str = "manifest.json", **overrides) -> Path:
        path = self.root / name
        path.write_text(json.dumps(self.manifest(**overrides)))
        return path

    def tree(self) -> list[str]:
        """Every path under the publish root, relative, sorted."""
        return sorted(str(p.relative_to(self.publish_root)) for p in self.publish_root.rglob("*"))


def run_cli(args: list[str], env: dict, timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def last_json(proc: subprocess.CompletedProcess) -> dict:
    lines = [l for l in proc.stdout.splitlines() if l.strip()]
    assert lines, f"no output; stderr: {proc.stderr}"
    return json.loads(lines[-1])


def publish(manifest: Path, env: dict, job: str = "job1", task: str = "0", *extra: str,
            timeout: float = 120) -> tuple[subprocess.CompletedProcess, dict]:
    proc = run_cli(["run", "--manifest", str(manifest), "--job-id", job, "--task-id", task,
                    "--worker", "test-worker", "--json", *extra], env, timeout=timeout)
    return proc, last_json(proc)


def staged_so_far(store, key: str) -> dict:
    """The verified files of a publish as a retry sees them: the store's entries (saved once an
    epoch has staged every file) and the journals of the staging folders its record lists."""
    from atomic_publish.wrapper.progress_journal import with_journals

    rec = store.records.get(key)
    return with_journals(store.staged.of_key(key), rec) if rec else store.staged.of_key(key)


def run_killed_at(manifest: Path, env: dict, job: str, failpoints: str) -> subprocess.CompletedProcess:
    """One attempt of ``job`` (task 0, worker w1) with ``ATOMIC_PUBLISH_FAILPOINTS=failpoints``,
    e.g. ``stage.checkpoint=kill@1``; the caller checks how it ended."""
    return subprocess.run([*CLI, "run", "--manifest", str(manifest), "--job-id", job, "--task-id", "0",
                           "--worker", "w1"], env=dict(env, ATOMIC_PUBLISH_FAILPOINTS=failpoints),
                          capture_output=True, text=True, timeout=120)


def submit_and_farm(manifest: Path, out: Path, env: dict, *farm_args: str, submit_args: tuple[str, ...] = (),
                    timeout: float = 240) -> tuple[subprocess.CompletedProcess, dict]:
    """`atomic-publish submit` then `atomic-publish farm --json`; returns the farm's process and JSON."""
    run_cli(["submit", str(manifest), "--out", str(out), *submit_args], env, check=True)
    proc = run_cli(["farm", str(out / "job_info.job"), str(out / "plugin_info.job"), "--json",
                    "--dir", str(out / "farm"), *farm_args], env, timeout=timeout)
    return proc, last_json(proc)


def delayed(*workers: str, seconds: float = 0.5) -> list[str]:
    """--worker-env arguments that bring ``workers`` online later than worker-1.

    Short on purpose: a worker-1 that fails every attempt (~0.4 s each) must not use up
    MaxKeyAttempts (6) on its own before the others are there."""
    args: list[str] = []
    for w in workers:
        args += ["--worker-env", f"{w}:ATOMIC_PUBLISH_FARM_WORKER_DELAY={seconds}"]
    return args
