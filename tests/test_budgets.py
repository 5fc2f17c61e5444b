"""Fixed budgets of round trips (issue 18): metadata calls per published file and MongoDB
commands per publish. Both are counts, not timings: deterministic, so a later change cannot
quietly add round trips (on NFS, SMB and a remote store every one of them is a network trip).

Metadata calls are counted with ``strace -c -f`` (every thread; stat family, open, access) when
strace is installed, as the benchmark counts them: a Python-level wrapper of ``os`` would miss
the calls made inside ``open()``, ``os.path`` and C extensions. CI installs strace (.ci/run).
MongoDB commands are counted by pymongo's command monitoring in the wrapper process
(``ATOMIC_PUBLISH_COMMAND_LOG``, idempotency/command_log.py).
"""
from __future__ import annotations

import os
import shutil

import pytest

from atomic_publish.idempotency.command_log import ENV as COMMAND_LOG, read_counts, staged_saves
from helpers import CLI, Render, last_json, run_cli

METADATA_CALLS = ("stat", "lstat", "fstat", "newfstatat", "statx", "open", "openat", "openat2", "creat",
                  "access", "faccessat", "faccessat2")
MAX_METADATA_PER_FILE = 5    # what `cp -r` makes per file
# per publish (a new version of an existing subset, staging within one checkpoint batch), what
# issue 18 asks for: hello, the record read, the store's meta document (the indexes' generation and
# the store id), the record insert, asset, subset and highest version (remembered for the rest of
# the publish), STAGING with the reservation (its fence, the insert), one checkpoint (its fence, the
# save), STAGED, the version re-check before COMMITTING, COMMITTING, the documents transaction (one
# query: our version, another's of our number, the subset still there; one insert; the commit),
# the reservation marked committed, PUBLISHED with the attempt closed, endSessions. See
# docs/performance.md.
MAX_COMMANDS = 20
MAX_COMMANDS_ALREADY = 3     # to answer "already published"


def _run_args(manifest, job: str) -> list[str]:
    return ["run", "--manifest", str(manifest), "--job-id", job, "--task-id", "0", "--worker", "w1", "--json"]


def _strace_total(tmp_path, env, manifest, job: str) -> int:
    out = tmp_path / f"strace-{job}.txt"
    import subprocess

    proc = subprocess.run(["strace", "-c", "-f", "-e", f"trace={','.join(METADATA_CALLS)}", "-o", str(out), "--",
                           *CLI, *_run_args(manifest, job)], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert last_json(proc)["outcome"] == "published"
    total = 0
    for line in out.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[-1] in METADATA_CALLS and parts[3].isdigit():
            total += int(parts[3])
    return total


@pytest.mark.skipif(shutil.which("strace") is None,
                    reason="strace is not installed (Debian: apt-get install -y strace; .ci/run installs it)")
@pytest.mark.parametrize("link_mode", ["copy", "hardlink"])
def test_metadata_calls_per_published_file(tmp_path, env, link_mode):
    """(calls for 91 files - calls for 11 files) / 80: the interpreter's imports (thousands of stats,
    the same for every publish) and what each publish does once (threads started: 8 in both) are
    not spread over the files. A few calls that differ once between the two runs (one more
    checkpoint batch, a module imported on one path) move the figure by hundredths; one more call
    per file moves it by one, which is what the bound catches."""
    small, big = Render(tmp_path / "small", frames=11, size=4096, movie=False), \
        Render(tmp_path / "big", frames=91, size=4096, movie=False)
    env = dict(env, PYTHONDONTWRITEBYTECODE="1")  # both runs import alike: no bytecode written by either
    calls_11 = _strace_total(tmp_path, env, small.write_manifest(link_mode=link_mode, subset="small"), "budget-11")
    calls_91 = _strace_total(tmp_path, env, big.write_manifest(link_mode=link_mode, subset="big"), "budget-91")
    per_file = (calls_91 - calls_11) / 80
    assert per_file < MAX_METADATA_PER_FILE + 0.1, f"{per_file:.3f} metadata calls per published file ({link_mode})"


def _commands(tmp_path, env, manifest, job: str, expect: str, label: str) -> list[str]:
    log = tmp_path / f"commands-{label}.log"
    proc = run_cli(_run_args(manifest, job), dict(env, **{COMMAND_LOG: str(log)}), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert last_json(proc)["outcome"] == expect
    names = read_counts(str(log))
    assert names, "the command log is empty: the listener was not registered"
    return names


@pytest.mark.parametrize("files", [1, 2000])
def test_mongodb_commands_per_publish(tmp_path, env, files):
    """A new version of an existing subset (the everyday publish): at most MAX_COMMANDS for any
    number of files. Staging checkpoints every 0.5 s or 512 files into the staging folder's journal,
    not the store: 2,000 files make several batches, and the store still sees one save."""
    render = Render(tmp_path, frames=files, size=1024, movie=False)
    manifest = render.write_manifest()
    _commands(tmp_path, env, manifest, "first", "published", "first")  # v001 makes the subset and the index
    names = _commands(tmp_path, env, manifest, "cmd", "published", "publish")
    assert staged_saves(str(tmp_path / "commands-publish.log")) == 1
    assert len(names) <= MAX_COMMANDS, f"{len(names)} commands for {files} files: {names}"
    final = next(render.publish_root.rglob("v002"))
    assert not (final / ".atomic-publish-progress.bson").exists()  # the journal never reaches a version


def test_mongodb_commands_to_answer_already_published(tmp_path, env):
    render = Render(tmp_path, frames=3, size=1024, movie=False)
    manifest = render.write_manifest()
    _commands(tmp_path, env, manifest, "cmd", "published", "publish")
    again = _commands(tmp_path, env, manifest, "cmd", "already-published", "retry")
    assert len(again) <= MAX_COMMANDS_ALREADY, f"{len(again)} commands to answer already-published: {again}"
    assert again[:2] == ["hello", "find"]  # the connection's hello, the record: nothing else but the goodbye
