"""Fixtures for the local AYON server tests: the server in-process or as a process, and the
real, unmodified ``ayon-python-api`` client connected to it."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

try:
    import ayon_api
except ImportError as exc:  # pragma: no cover - an install problem, said plainly
    raise ImportError("tests/ayon need ayon-python-api 1.2.25: .venv/bin/pip install --no-deps "
                      "'ayon-python-api==1.2.25' (see pyproject.toml, extra 'ayon')") from exc

from atomic_publish.testing import spawn_fake
from atomic_publish.testing.fake_ayon import BANNER, FakeAyonControl, FakeAyonServer

#: A key long enough to look real, and unlike anything else in the logs.
API_KEY = "ak-" + "7f3c9e1d" * 6
PROJECT = "proj"
SHOT = "/sq01/sh010"
REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO.parent / "shared" / "fixtures" / "ayon"


def connect(url: str, key: str = API_KEY, **kwargs) -> ayon_api.ServerAPI:
    """The real client, as a studio tool would make it (a short timeout keeps fault tests quick)."""
    kwargs.setdefault("timeout", 5)
    return ayon_api.ServerAPI(url, token=key, **kwargs)


@pytest.fixture
def ayon(tmp_path):
    """An in-process server with a seeded project (folder /sq01/sh010, task comp)."""
    with FakeAyonServer(tmp_path / "ayon", api_key=API_KEY) as server:
        server.ids = server.seed(PROJECT, folders=[SHOT], tasks=["comp"])
        yield server


@pytest.fixture
def con(ayon):
    connection = connect(ayon.url)
    yield connection
    connection.close_session()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AyonProcess:
    """The server as its own process (``python -m atomic_publish.testing.fake_ayon``)."""

    def __init__(self, data: Path, port: int):
        self.data, self.port = data, port
        self.key_file = data.parent / "ayon-key"
        self.key_file.write_text(API_KEY)
        os.chmod(self.key_file, 0o600)
        self.proc = None
        self.url = f"http://127.0.0.1:{port}"
        self.stderr_path = data.parent / "ayon-stderr.txt"

    def start(self) -> "AyonProcess":
        self.proc, url = spawn_fake("atomic_publish.testing.fake_ayon",
                                    ["--data", str(self.data), "--port", str(self.port),
                                     "--api-key-file", str(self.key_file)], BANNER)
        assert url == self.url
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    @property
    def control(self) -> FakeAyonControl:
        return FakeAyonControl(self.url)


@pytest.fixture
def ayon_process(tmp_path):
    server = AyonProcess(tmp_path / "ayon", free_port()).start()
    server.control.seed(PROJECT, folders=[SHOT], tasks=["comp"])
    yield server
    server.stop()
