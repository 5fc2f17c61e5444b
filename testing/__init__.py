"""Local fakes of the external services atomic-publish talks to, for tests.

* :mod:`atomic_publish.testing.fake_ftrack` -- an ftrack server speaking the real
  ``POST /api`` wire protocol, so that the unmodified ``ftrack_api.Session`` can be used.
* :mod:`atomic_publish.testing.webhook_receiver` -- an HTTP endpoint recording webhook
  deliveries, deduplicated by ``Idempotency-Key``.
* :mod:`atomic_publish.testing.fake_ayon` -- an AYON server for the unmodified
  ``ayon-python-api`` client (operations batches, GraphQL reads, REST GETs).

Both fakes share the small helpers in this module: atomic JSON persistence (so that
state survives a restart of the fake, the way a real service keeps its data), a book
of scripted faults, a threaded loopback server that can be started from Python, and a
way to run a fake as a separate process (to test crash and restart behaviour).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = [
    "FakeControl",
    "FaultBook",
    "LoopbackServer",
    "atomic_write_json",
    "read_json",
    "serve_until_signal",
    "spawn_fake",
]


# --------------------------------------------------------------------------- persistence


def atomic_write_json(path: Path, data: Any) -> None:
    """Write *data* to *path* so that a reader never sees a half-written file.

    A temp file in the same folder is fsynced and then renamed over the target: a
    crash of the fake leaves either the old or the new state, never a torn one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_json(path: Path, default: Any) -> Any:
    """Return the JSON in *path*, or *default* when the file does not exist yet."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return default


# --------------------------------------------------------------------------- faults


class FaultBook:
    """Thread-safe list of scripted faults, each firing for its next ``count`` matches.

    A fault is a plain dict (so it can travel as JSON over the control endpoint) with
    at least ``kind``. ``count`` is how many matching requests it fires for (``None``
    means forever). Each fake decides what "matching" means through the predicate it
    passes to :meth:`take`; this class only does the bookkeeping, so both fakes count
    faults the same way.
    """

    def __init__(self, faults: Iterable[dict] | None = None, kinds: Iterable[str] = ()):
        self._lock = threading.Lock()
        self._kinds = set(kinds)
        self._faults: list[dict] = []
        self.fired: dict[str, int] = {}
        if faults:
            self.add(faults)

    def add(self, faults: Iterable[dict] | dict) -> None:
        """Append faults; raise ValueError for an unknown kind (a typo must not pass silently)."""
        if isinstance(faults, dict):
            faults = [faults]
        checked = []
        for fault in faults:
            fault = dict(fault)
            if self._kinds and fault.get("kind") not in self._kinds:
                raise ValueError(f"unknown fault kind {fault.get('kind')!r}; known: {sorted(self._kinds)}")
            fault.setdefault("count", 1)
            checked.append(fault)
        with self._lock:
            self._faults.extend(checked)

    def replace(self, faults: Iterable[dict] | dict) -> None:
        """Drop all pending faults and install *faults* instead."""
        self.clear()
        self.add(faults)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[dict]:
        with self._lock:
            return [dict(f) for f in self._faults]

    def take(self, kind: str, matches: Callable[[dict], bool]) -> dict | None:
        """Consume one firing of the first pending fault of *kind* accepted by *matches*."""
        with self._lock:
            for fault in self._faults:
                if fault["kind"] != kind or not matches(fault):
                    continue
                if fault["count"] is not None:
                    fault["count"] -= 1
                    if fault["count"] <= 0:
                        self._faults.remove(fault)
                self.fired[kind] = self.fired.get(kind, 0) + 1
                return dict(fault)
        return None


# --------------------------------------------------------------------------- serving


class _QuietHTTPServer(ThreadingHTTPServer):
    """Does not print a traceback when a client hung up first (timeouts are scripted here)."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class LoopbackServer:
    """A ThreadingHTTPServer on 127.0.0.1 run in a background thread.

    Subclasses provide :meth:`_make_handler`. The port is kept across
    :meth:`stop`/:meth:`start` so that a client configured with :attr:`url` can
    reconnect after a simulated outage.
    """

    def __init__(self, port: int = 0):
        self._port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _make_handler(self) -> type:
        raise NotImplementedError

    def start(self) -> LoopbackServer:
        """Start listening (idempotent) and return self."""
        if self._httpd is not None:
            return self
        httpd = _QuietHTTPServer(("127.0.0.1", self._port), self._make_handler())
        self._httpd = httpd
        self._port = httpd.server_address[1]
        # A short poll interval makes stop() quick (shutdown waits for the next poll).
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening; connections are refused until :meth:`start` is called again."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._httpd is not None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (valid once started)."""
        return f"http://127.0.0.1:{self._port}"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def serve_until_signal(server: LoopbackServer, banner: str) -> int:
    """Start *server*, print one ``banner=URL`` line, and block until SIGTERM/SIGINT.

    The one line on stdout is the readiness signal a parent process waits for.
    """
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    print(f"{banner}={server.url}", flush=True)
    stop.wait()
    server.stop()
    return 0


def spawn_fake(module: str, args: list[str], banner: str, timeout: float = 20.0,
               env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """Run ``python -m <module> <args>`` and return (process, url) once it printed its banner.

    Used by tests that kill and restart a fake to prove that its state survives.
    The caller owns the process: terminate() it and wait().
    """
    # stderr goes to a file, not a pipe: nobody drains it while the fake runs, and a
    # full pipe would block the fake.
    errors = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE,
                            stderr=errors, text=True, env=env)
    deadline = time.monotonic() + timeout
    found: list[str] = []

    def _read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.startswith(banner + "="):
                found.append(line.strip().split("=", 1)[1])
                return

    reader = threading.Thread(target=_read, daemon=True)
    reader.start()
    reader.join(max(0.0, deadline - time.monotonic()))
    if not found:
        proc.kill()
        proc.wait(timeout=5)
        errors.seek(0)
        raise RuntimeError(f"{module} did not print {banner}= within {timeout}s; stderr:\n{errors.read()}")
    errors.close()  # the child keeps its own descriptor
    return proc, found[0]


class FakeControl:
    """Steer a fake running in another process through its ``/_fake/*`` JSON endpoints."""

    def __init__(self, url: str, timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        import urllib.request

        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return json.loads(response.read())
