"""`atomic-publish demo --catalog ayon` (issue 15 item 9) as a real process: the local farm, the real wrapper,
the local AYON server in its own process, the real ayon_api client; the key never shown; nothing left running."""
from __future__ import annotations

import os
import secrets
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import CLI

ayon_api = pytest.importorskip("ayon_api")

from atomic_publish.testing import spawn_fake  # noqa: E402
from atomic_publish.testing.fake_ayon import BANNER  # noqa: E402
from atomic_publish.wrapper.demo import AYON_AOVS, AYON_KEY_PREFIX  # noqa: E402

PRODUCTS = [f"renderMain_{aov}" for aov in AYON_AOVS]


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith(("ATOMIC_PUBLISH_", "AYON_", "FAKE_AYON_"))}


def _running(tmp_path: Path) -> list[str]:
    """Processes that name ``tmp_path`` in their arguments or run in a folder under it (a farm's
    wrapper, whose arguments are rootless, runs in its worker's folder)."""
    ps = subprocess.run(["ps", "-eww", "-o", "pid,args"], capture_output=True, text=True).stdout
    found = []
    for line in ps.splitlines()[1:]:
        pid = line.split(None, 1)[0]
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            cwd = ""
        if (str(tmp_path) in line or cwd.startswith(str(tmp_path))) and "ps -eww" not in line:
            found.append(f"{line} (in {cwd})")
    return found


def _files_with(folder: Path, needle: bytes) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


def _words(command: str) -> tuple[dict, list[str]]:
    """(environment assignments, argv) of one printed command line."""
    words = shlex.split(command)
    assignments = {}
    while words and "=" in words[0] and not words[0].startswith("-"):
        name, value = words.pop(0).split("=", 1)
        assignments[name] = value
    return assignments, words


def test_demo_ayon(tmp_path: Path) -> None:
    env = _env()
    demo_dir = tmp_path / "demo"
    proc = subprocess.run([*CLI, "demo", "--catalog", "ayon", "--dir", str(demo_dir)], env=env,
                          capture_output=True, text=True, timeout=400)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "exactly one version of each of the 3 products published" in proc.stdout, out
    assert "worker worker-1 deny-listed" in proc.stdout and "deny list: worker-1\n" in proc.stdout, out
    assert "with Plugin=AtomicPublish (was Ayon)" in proc.stdout
    for product in PRODUCTS:
        assert f"product {product} (render) in /shots/sq01/sh010: 1 version(s); folders on disk ['v001']" in out
        # ftrack still works: one AssetVersion per product, published once, after the commit
        assert f"    asset {product}: version 1 is_published=True (1 component)\n" in out, out
    assert "  ftrack: 3 AssetVersion(s)\n" in out, out
    assert "(on disk, in AYON, in one batch, and in ftrack)" in out

    # the key: in no output, no file under the demo's folder (logs, farm state, store, AYON data), and the
    # 0600 secrets files the plugin wrote for each task are gone
    assert AYON_KEY_PREFIX not in out
    assert _files_with(demo_dir, AYON_KEY_PREFIX.encode()) == []
    assert _files_with(demo_dir, b"AYON_API_KEY=") == []
    assert _files_with(demo_dir / "farm", b"demo-api-key") == []  # the ftrack key is scrubbed too
    logs = list(demo_dir.rglob("*.log"))
    assert any("worker-1" in str(p) for p in logs) and (demo_dir / "ayon" / "ayon_server.log").is_file()

    # nothing left running: no store, no AYON server, no worker
    assert not (demo_dir / "store" / "server.json").exists(), "the embedded store was left running"
    assert _running(tmp_path) == [], "a process of the demo is still running"

    # the printed commands: restart the AYON server on the kept data with a key of our own, then inspect
    commands = proc.stdout.split("to inspect what it published", 1)[1].split(":\n", 1)[1].strip().splitlines()
    commands = [c.strip() for c in commands]
    assert commands[0].startswith("export AYON_API_KEY=$(") and commands[-1] == "kill $AYON_PID"
    key = secrets.token_hex(24)
    shell_env = dict(env, AYON_API_KEY=key)
    assignments, argv = _words(commands[1].split(" & ", 1)[0].replace('"$AYON_API_KEY"', key))
    assert assignments == {"FAKE_AYON_API_KEY": key} and argv[1:3] == ["-m", "atomic_publish.testing.fake_ayon"]
    server, url = spawn_fake(argv[2], argv[3:], BANNER, env=dict(shell_env, **assignments))
    try:
        outputs = []
        for command in commands[2:-1]:
            assignments, argv = _words(command)
            assert argv[0] == "atomic-publish", command
            done = subprocess.run([*CLI, *argv[1:]], env=dict(shell_env, **assignments), capture_output=True,
                                  text=True, timeout=120)
            assert done.returncode == 0, (command, done.stdout, done.stderr)
            outputs.append((argv[1], done.stdout + done.stderr))
        assert [name for name, _ in outputs] == ["store", "status", "audit", "store"]
        status, audit = outputs[1][1], outputs[2][1]
        assert "PUBLISHED" in status and "files     72" in status, status
        assert "3 published versions, 72 files" in audit and "0 violation(s)" in audit, audit
        assert key not in status + audit

        # what AYON holds, read back through ayon_api from the restarted server
        job_id = commands[3].split("--job-id ", 1)[1].split()[0]
        con = ayon_api.ServerAPI(url, token=key, timeout=10)
        try:
            folder = con.get_folder_by_path("demo", "/shots/sq01/sh010")
            work = demo_dir / "work"
            for product in PRODUCTS:
                found = con.get_product_by_name("demo", product, folder["id"])
                versions = list(con.get_versions("demo", product_ids=[found["id"]], active=None))
                assert [(v["version"], v["active"], v["data"]["atomic_publish"]["key"]) for v in versions] == [
                    (1, True, f"deadline10:{job_id}:0")], product
                [rep] = con.get_representations("demo", version_ids=[versions[0]["id"]])
                names = sorted(f["name"] for f in rep["files"])
                assert rep["name"] == "exr"
                assert names == [f"dm_sh010_{product}_v001.{1001 + i}.exr" for i in range(24)]
                for f in rep["files"]:
                    local = Path(f["path"].replace("{root[work]}", str(work)))
                    assert local.stat().st_size == f["size"] == 128 * 1024
                assert sorted(os.listdir(work / "demo/shots/sq01/sh010/publish/render" / product)) == ["v001"]
        finally:
            con.close_session()
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert not (demo_dir / "store" / "server.json").exists()


def test_demo_ayon_interrupted_stops_everything(tmp_path: Path) -> None:
    """Ctrl-C to the demo alone (its children get no signal), while a publish attempt on the farm
    hangs (a failpoint holds it inside staging, so the farm cannot finish first): the demo still
    stops the AYON server, the farm's workers, the hung attempt and the store; while it runs, no
    process shows the key in its arguments."""
    demo_dir = tmp_path / "demo"
    proc = subprocess.Popen([*CLI, "demo", "--catalog", "ayon", "--dir", str(demo_dir)],
                            env=dict(_env(), PYTHONUNBUFFERED="1", ATOMIC_PUBLISH_FAILPOINTS="stage.begin=hang"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = []
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            seen.append(line)
            if line.startswith("  farm: 3 workers"):
                break
        deadline = time.monotonic() + 90
        logs = list((demo_dir / "farm" / "workers").glob("*/worker.log"))
        while time.monotonic() < deadline and not any("failpoint stage.begin: hang" in p.read_text(errors="replace")
                                                      for p in logs):
            time.sleep(0.2)
            logs = list((demo_dir / "farm" / "workers").glob("*/worker.log"))
        running = _running(tmp_path)
        assert any("fake_ayon" in line for line in running) and any("farm.worker" in line for line in running) \
            and any(" run " in line for line in running), running  # the hung attempt among them
        ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
        assert AYON_KEY_PREFIX not in ps
        os.kill(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # the test failed before the demo ended: leave nothing behind anyway
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            subprocess.run([*CLI, "store", "stop"], env=dict(_env(), ATOMIC_PUBLISH_HOME=str(demo_dir / "store")),
                           capture_output=True, timeout=60)
    text = "".join(seen) + rest
    assert proc.returncode == 130 and "atomic-publish demo: interrupted" in text and "Traceback" not in text, text
    assert AYON_KEY_PREFIX not in text
    time.sleep(0.5)
    assert _running(tmp_path) == [], text
    assert not (demo_dir / "store" / "server.json").exists(), text
    assert _files_with(demo_dir, AYON_KEY_PREFIX.encode()) == []
