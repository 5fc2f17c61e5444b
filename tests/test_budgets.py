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

from atomic_publish.idempotency.command_log import ENV as COMMAND_LOG, read_counts
from helpers import CLI, Render, last_json, run_cli

METADATA_CALLS = ("stat", "lstat", "fstat", "newfstatat", "statx", "open", "openat", "openat2", "creat",
                  "access", "faccessat", "faccessat2")
MAX_METADATA_PER_FILE = 5    # what `cp -r` makes per file
MAX_COMMANDS = 20            # per publish, whatever its size
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
    """(calls for 51 files - calls for 11 files) / 40: the interpreter's imports (thousands of stats,
    the same for every publish) and what each publish does once (threads started: 8 in both) are
    not spread over the files."""
    small, big = Render(tmp_path / "small", frames=11, size=4096, movie=False), \
        Render(tmp_path / "big", frames=51, size=4096, movie=False)
    env = dict(env, PYTHONDONTWRITEBYTECODE="1")  # both runs import alike: no bytecode written by either
    calls_11 = _strace_total(tmp_path, env, small.write_manifest(link_mode=link_mode, subset="small"), "budget-11")
    calls_51 = _strace_total(tmp_path, env, big.write_manifest(link_mode=link_mode, subset="big"), "budget-51")
    per_file = (calls_51 - calls_11) / 40
    assert per_file <= MAX_METADATA_PER_FILE, f"{per_file:.2f} metadata calls per published file ({link_mode})"
