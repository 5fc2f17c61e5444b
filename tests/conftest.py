"""Shared fixtures: a real MongoDB-wire server (SecantusDB, or $MONGO_URI), real files, real processes."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pymongo
import pytest

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "atomic_publish.wrapper.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory):
    """$MONGO_URI when set (a real mongod), else a SecantusDB server started for the session."""
    if os.environ.get("MONGO_URI"):
        yield os.environ["MONGO_URI"]
        return
    folder = tmp_path_factory.mktemp("secantus")
    (folder / "secantusd.toml").write_text("")
    port = _free_port()
    log = open(folder / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "secantus", "--config", str(folder / "secantusd.toml"),
                             "--host", "127.0.0.1", "--port", str(port), "--storage-path", str(folder / "data"),
                             "--log-level", "WARNING"], stdout=log, stderr=log, start_new_session=True)
    uri = f"mongodb://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while True:
        try:
            pymongo.MongoClient(uri, serverSelectionTimeoutMS=300).admin.command("ping")
            break
        except pymongo.errors.PyMongoError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"SecantusDB did not start; see {folder / 'server.log'}")
            time.sleep(0.1)
    yield uri
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def env(mongo_uri, tmp_path):
    """Environment for one test: its own databases on the shared server, no embedded store."""
    tag = uuid.uuid4().hex[:10]
    e = dict(os.environ)
    e.pop("ATOMIC_PUBLISH_FAILPOINTS", None)
    e.pop("ATOMIC_PUBLISH_STORE_FILE", None)
    e.update(ATOMIC_PUBLISH_STORE=mongo_uri, ATOMIC_PUBLISH_DATABASE=f"avalon_{tag}",
             ATOMIC_PUBLISH_STATE_DATABASE=f"ap_{tag}", ATOMIC_PUBLISH_HOME=str(tmp_path / "home"),
             PYTHONUNBUFFERED="1")
    yield e
    client = pymongo.MongoClient(mongo_uri)
    client.drop_database(e["ATOMIC_PUBLISH_DATABASE"])
    client.drop_database(e["ATOMIC_PUBLISH_STATE_DATABASE"])
    client.close()


@pytest.fixture
def store(env):
    from atomic_publish.idempotency.store import Store

    client = pymongo.MongoClient(env["ATOMIC_PUBLISH_STORE"], tz_aware=True)
    s = Store(client, database=env["ATOMIC_PUBLISH_DATABASE"])
    s.records = type(s.records)(client[env["ATOMIC_PUBLISH_STATE_DATABASE"]]["records"])
    s.reservations = type(s.reservations)(client[env["ATOMIC_PUBLISH_STATE_DATABASE"]]["reservations"])
    yield s
    client.close()


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


@pytest.fixture
def render(tmp_path):
    return Render(tmp_path)


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
