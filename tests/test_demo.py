"""The README's first command: the demo runs on the embedded store and leaves nothing running."""
from __future__ import annotations

import os
import shlex
import subprocess

from helpers import CLI


def test_demo(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATOMIC_PUBLISH_")}
    proc = subprocess.run([*CLI, "demo", "--dir", str(tmp_path / "demo")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "exactly one version published" in proc.stdout
    assert "worker worker-1 deny-listed" in proc.stdout
    assert not (tmp_path / "demo" / "store" / "server.json").exists(), "the embedded store was left running"
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path) not in ps, "a process of the demo is still running"

    # the commands it prints at its end show what it published, on the store it used
    commands = proc.stdout.split("to inspect what it published:\n", 1)[1].strip().splitlines()
    assert [c.split("atomic-publish ", 1)[1].split()[0:2] for c in commands] == [
        ["store", "start"], ["status", "--job-id"], ["audit", "--root"], ["store", "stop"]]
    outputs = []
    for command in commands:
        words = shlex.split(command)
        assignments = dict(w.split("=", 1) for w in words if "=" in w and not w.startswith("-"))
        argv = words[words.index("atomic-publish") + 1:]
        done = subprocess.run([*CLI, *argv], env=dict(env, **assignments), capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        outputs.append(done.stdout)
    assert "PUBLISHED" in outputs[1] and "v001" in outputs[1], outputs[1]
    assert "0 violation(s)" in outputs[2], outputs[2]
    assert not (tmp_path / "demo" / "store" / "server.json").exists()

    # a re-run on the same folder refuses in one line, before any work
    again = subprocess.run([*CLI, "demo", "--dir", str(tmp_path / "demo")], env=env, capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    [line] = again.stderr.strip().splitlines()
    assert "is not empty" in line and again.stdout == ""
