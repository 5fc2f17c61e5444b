"""The README's first command: the demo runs on the embedded store and leaves nothing running."""
from __future__ import annotations

import os
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
