"""Fixtures for the Deadline-side tests: the shim on sys.path, a stand-in wrapper, job files."""
from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from atomic_publish.deadline_plugin.resources import ensure_shim_on_path
from atomic_publish.wrapper.contract import CLASSES

ensure_shim_on_path()


def _literal(table: dict) -> str:
    """A dict as Python source, braces doubled for STANDIN.format."""
    return repr(table).replace("{", "{{").replace("}", "}}")


# A stand-in for `atomic-publish run`: prints the contract's lines and exits with a chosen code.
#   STANDIN_EXIT            codes by invocation number across all workers, e.g. "75,0" (last repeats)
#   STANDIN_EXIT_<WORKER>   same, for one worker (worker-1 -> STANDIN_EXIT_WORKER_1)
#   STANDIN_SLEEP           seconds to sleep before the result line
#   STANDIN_RECORD          folder: one JSON line per invocation in calls.jsonl (argv, pid, store file)
STANDIN = r'''#!{python}
import fcntl, json, os, signal, sys, time
argv = sys.argv[1:]
worker = next((a.split("=", 1)[1] for a in argv if a.startswith("--worker=")), "")
record = os.environ.get("STANDIN_RECORD", "")
count = 0
if record:
    with open(os.path.join(record, "calls.jsonl"), "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        count = len(f.readlines())
        store_file = os.environ.get("ATOMIC_PUBLISH_STORE_FILE", "")
        entry = {{"argv": argv, "pid": os.getpid(), "worker": worker, "store_file": store_file,
                 "store_mode": oct(os.stat(store_file).st_mode & 0o777) if store_file else "",
                 "store_content": open(store_file).read() if store_file else "",
                 "store_env": os.environ.get("ATOMIC_PUBLISH_STORE", "")}}
        f.write(json.dumps(entry) + "\n")
codes = os.environ.get("STANDIN_EXIT_" + worker.upper().replace("-", "_")) or os.environ.get("STANDIN_EXIT", "0")
codes = [int(c) for c in codes.split(",")]
code = codes[min(count, len(codes) - 1)]
print("[atomic-publish] status starting on " + worker, flush=True)
print("[atomic-publish] progress 42.5% staged 1/2 files, 1.0/2.0 MiB", flush=True)
time.sleep(float(os.environ.get("STANDIN_SLEEP", "0")))
if code < 0:
    os.kill(os.getpid(), -code)
outcome = @OUTCOMES@.get(code, "crash")
klass = @CLASSES@.get(code, "unknown")
print("[atomic-publish] result %s exit=%d class=%s: stand-in outcome %s on %s" % (outcome, code, klass, outcome, worker), flush=True)
sys.exit(code)
'''
# The stand-in's outcome and class per exit code come from the wrapper's one contract table.
STANDIN = (STANDIN.replace("@OUTCOMES@", _literal({0: "published", **{c.exit_code: c.name for c in CLASSES}}))
           .replace("@CLASSES@", _literal({0: "-", **{c.exit_code: c.name for c in CLASSES}})))


@pytest.fixture
def standin(tmp_path: Path) -> Path:
    path = tmp_path / "bin" / "atomic-publish"
    path.parent.mkdir()
    path.write_text(STANDIN.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def record_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "record"
    folder.mkdir()
    monkeypatch.setenv("STANDIN_RECORD", str(folder))
    return folder


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "shared" / "manifest.json"
    path.parent.mkdir()
    path.write_text('{"root": "/x/projects/show/shot"}\n')
    return path


def _write_job(folder: Path, manifest: Path, job_extra: str = "", plugin_extra: str = "") -> tuple[Path, Path]:
    job = folder / "job_info.job"
    frames = "" if "Frames=" in job_extra else "Frames=0\n"
    job.write_text("Plugin=AtomicPublish\nName=test publish\n" + frames + job_extra)
    plugin = folder / "plugin_info.job"
    plugin.write_text(f"Manifest={manifest}\n" + plugin_extra)
    return job, plugin


@pytest.fixture
def write_job(tmp_path: Path, manifest: Path):
    """write_job(job_extra="", plugin_extra="") -> (job_info path, plugin_info path)."""
    return lambda job_extra="", plugin_extra="": _write_job(tmp_path, manifest, job_extra, plugin_extra)


@pytest.fixture
def calls(record_dir: Path):
    """calls() -> the stand-in's invocations so far (argv, pid, worker, store file...)."""
    def read() -> list[dict]:
        path = record_dir / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return read


@pytest.fixture(autouse=True)
def _clean_standin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("STANDIN_", "ATOMIC_PUBLISH_")):
            monkeypatch.delenv(key)
