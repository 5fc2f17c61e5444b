"""A store that refuses or never answers fails fast, in one line: which store (password masked),
what failed, what to check; the driver's own text goes to stderr, never into the result line."""
from __future__ import annotations

import socket
import time
from contextlib import contextmanager
from typing import Iterator

import pytest

from helpers import Render, run_cli

PASSWORD = "hunter22-store"


@pytest.fixture
def render(tmp_path) -> Render:
    return Render(tmp_path, frames=2)


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def silent_server() -> Iterator[int]:
    """A local socket that accepts TCP connections (the kernel's backlog) and never says a word."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield s.getsockname()[1]


def _run(render: Render, env: dict, store: str, *extra: str, timeout: float = 60):
    env = dict(env, ATOMIC_PUBLISH_STORE=store)
    started = time.monotonic()
    proc = run_cli(["run", "--manifest", str(render.write_manifest()), "--job-id", "job1", "--task-id", "0",
                    *extra], env, timeout=timeout)
    return proc, time.monotonic() - started


def _result_lines(proc) -> list[str]:
    return [line for line in proc.stdout.splitlines() if line.startswith("[atomic-publish] result ")]


def _assert_one_short_line(proc, *expected: str) -> str:
    [line] = _result_lines(proc)
    for text in expected:
        assert text in line, line
    assert PASSWORD not in proc.stdout + proc.stderr
    assert "Topology" not in line and "configured timeouts" not in line, line
    assert len(line) < 420, line
    assert "retry connect" not in proc.stdout, proc.stdout  # not retried in-process: the farm requeues
    return line


def test_refused_port_fails_at_once(render, env, closed_port):
    uri = f"mongodb://pub:{PASSWORD}@127.0.0.1:{closed_port}/"
    proc, took = _run(render, env, uri)
    assert proc.returncode == 75, proc.stdout + proc.stderr
    line = _assert_one_short_line(
        proc, f"cannot reach the store mongodb://pub:***@127.0.0.1:{closed_port}/: connection refused",
        "nothing was written", "a farm requeues the task", "check that the store server runs")
    assert line.startswith("[atomic-publish] result transient exit=75 class=transient: ")
    assert took < 5.0, f"a refused store took {took:.1f} s"


def test_silent_server_fails_within_the_default_timeout(render, env):
    with silent_server() as port:
        proc, took = _run(render, env, f"mongodb://pub:{PASSWORD}@127.0.0.1:{port}/")
    assert proc.returncode == 75, proc.stdout + proc.stderr
    _assert_one_short_line(proc, f"cannot reach the store mongodb://pub:***@127.0.0.1:{port}/",
                           "did not answer as MongoDB within 5 s", "whether it needs TLS")
    assert took < 5.0 + 4.0, f"the default 5 s timeout took {took:.1f} s"  # generous: interpreter start-up
    # the driver's own words: "... timed out" when the connect times out first, "No servers found
    # yet, Timeout: 5.0s" when server selection does (pymongo 4.6 on a loaded machine)
    assert "[atomic-publish] store error details" in proc.stderr
    assert "timed out" in proc.stderr or "Timeout: 5.0s" in proc.stderr, proc.stderr


@pytest.mark.parametrize("how", ["option", "env"])
def test_timeout_is_configurable(render, env, how):
    with silent_server() as port:
        if how == "option":
            proc, took = _run(render, env, f"mongodb://127.0.0.1:{port}/", "--store-timeout", "1")
        else:
            proc, took = _run(render, dict(env, ATOMIC_PUBLISH_STORE_TIMEOUT="1"), f"mongodb://127.0.0.1:{port}/")
    assert proc.returncode == 75, proc.stdout + proc.stderr
    _assert_one_short_line(proc, "within 1 s")
    assert took < 1.0 + 3.5, f"a 1 s timeout took {took:.1f} s"


def test_bad_timeout_setting_names_it(render, env, closed_port):
    proc, _ = _run(render, dict(env, ATOMIC_PUBLISH_STORE_TIMEOUT="soon"), f"mongodb://127.0.0.1:{closed_port}/")
    assert proc.returncode == 78, proc.stdout + proc.stderr
    _assert_one_short_line(proc, "ATOMIC_PUBLISH_STORE_TIMEOUT='soon' is not a number of seconds")
    proc = run_cli(["run", "--manifest", str(render.write_manifest()), "--job-id", "j", "--task-id", "0",
                    "--store-timeout", "-3"], env)
    assert proc.returncode == 78
    _assert_one_short_line(proc, "argument --store-timeout: '-3' is not a number of seconds above 0")


def test_unknown_host_says_dns(render, env):
    proc, took = _run(render, env, "mongodb://atomic-publish-no-such-host.invalid:27017/")
    assert proc.returncode == 75, proc.stdout + proc.stderr
    _assert_one_short_line(proc, "DNS lookup failed", "check the host name")
    assert took < 9.0


@pytest.mark.parametrize("command", [["status", "--job-id", "job1"], ["audit"], ["gc", "--dry-run"]])
def test_maintenance_commands_say_it_in_one_line(env, closed_port, command):
    started = time.monotonic()
    proc = run_cli(command, dict(env, ATOMIC_PUBLISH_STORE=f"mongodb://pub:{PASSWORD}@127.0.0.1:{closed_port}/"))
    assert time.monotonic() - started < 5.0
    assert proc.returncode != 0
    [line] = [l for l in proc.stderr.splitlines() if l.startswith("atomic-publish ")]
    assert f"mongodb://pub:***@127.0.0.1:{closed_port}/: connection refused" in line, proc.stderr
    assert PASSWORD not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
