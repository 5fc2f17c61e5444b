"""The embedded default store: a local SecantusDB server (MongoDB wire protocol).

One server per data folder, shared by every process of this machine: the first
process that needs it starts it (under a file lock, detached so that it outlives
the attempt), the others find it through ``server.json``. ``stop`` ends it.
Data folder: ``$ATOMIC_PUBLISH_HOME`` or ``$XDG_DATA_HOME/atomic-publish``
(``~/.local/share/atomic-publish``).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from ..wrapper.errors import StoreConfigError, StoreUnavailable
from .processes import process_alive

START_TIMEOUT = 60.0


def home() -> Path:
    """The embedded store's data folder."""
    env = os.environ.get("ATOMIC_PUBLISH_HOME")
    if env:
        return Path(env).expanduser().resolve()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "atomic-publish"


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    import fcntl  # POSIX only: the embedded store is for single machines and tests

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "server.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _ping(uri: str, timeout_ms: int = 500) -> bool:
    import pymongo

    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms)
    try:
        client.admin.command("ping")
        return True
    except Exception:
        return False
    finally:
        client.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_state(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "server.json").read_text())
    except (OSError, ValueError):
        return None


def running_uri(folder: Path | None = None) -> str | None:
    """The URI of the embedded server when it is up, else None."""
    folder = folder or home()
    state = _read_state(folder)
    if state and process_alive(state["pid"]) and _ping(state["uri"]):
        return state["uri"]
    return None


def ensure_running(folder: Path | None = None) -> str:
    """Start the embedded server unless it already runs; returns its URI."""
    folder = folder or home()
    state = _read_state(folder)  # written only after a successful ping; the caller's connect pings again
    if state and process_alive(state["pid"]):
        return state["uri"]
    with _locked(folder):
        uri = running_uri(folder)
        if uri:
            return uri
        try:
            import secantus  # noqa: F401
        except ImportError:
            raise StoreConfigError(
                "no store given and the embedded store is not installed",
                "install it with `pip install 'atomic-publish[embedded]'`, or give --store / ATOMIC_PUBLISH_STORE") from None
        port = _free_port()
        config = folder / "secantusd.toml"  # explicit and empty: no auto-discovery of ./secantusd.toml
        if not config.exists():
            config.write_text("# settings come from atomic-publish's command line\n")
        log = open(folder / "server.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "secantus", "--config", str(config), "--host", "127.0.0.1",
             "--port", str(port), "--storage-path", str(folder / "store"), "--log-level", "WARNING"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True)
        log.close()
        uri = f"mongodb://127.0.0.1:{port}/"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StoreUnavailable(f"the embedded store exited with code {proc.returncode} at start; "
                                       f"see {folder / 'server.log'}")
            if _ping(uri, 300):
                (folder / "server.json").write_text(json.dumps({"pid": proc.pid, "uri": uri, "port": port}))
                return uri
            time.sleep(0.1)
        proc.kill()
        raise StoreUnavailable(f"the embedded store did not answer within {START_TIMEOUT:.0f} s; see {folder / 'server.log'}")


def stop(folder: Path | None = None, timeout: float = 20.0) -> bool:
    """Stop the embedded server of ``folder``; True when one was running."""
    folder = folder or home()
    with _locked(folder):
        state = _read_state(folder)
        if not state or not process_alive(state["pid"]):
            (folder / "server.json").unlink(missing_ok=True)
            return False
        pid = state["pid"]
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process_alive(pid):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.1)
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)
        (folder / "server.json").unlink(missing_ok=True)
        return True
