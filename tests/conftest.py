"""Shared fixtures: a real MongoDB-wire server (SecantusDB, or $MONGO_URI), real files, real processes."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pymongo
import pytest

from helpers import Render

REPO = Path(__file__).resolve().parents[1]


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
    s = Store(client, database=env["ATOMIC_PUBLISH_DATABASE"], state_database=env["ATOMIC_PUBLISH_STATE_DATABASE"])
    yield s
    client.close()


@pytest.fixture
def render(tmp_path):
    return Render(tmp_path)


