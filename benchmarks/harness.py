"""The benchmark bench: a temporary folder, its own store and databases, and timed processes.

Every wrapper run is a real ``atomic-publish run`` process (the console script of this
interpreter's environment), timed wall-clock from spawn to reap; its peak RSS is the
child's ``ru_maxrss`` from ``os.wait4``. Stdout lines are time-stamped as they arrive,
which gives the phases of a publish from the wrapper's own status lines.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
KIB = 1024
# what strace counts as metadata calls: every one is a round trip on NFS or SMB
METADATA_CALLS = ("stat", "lstat", "fstat", "newfstatat", "statx", "open", "openat", "openat2", "creat",
                  "access", "faccessat", "faccessat2")


def log(text: str) -> None:
    """Progress of the benchmark itself: always on stderr (stdout is the table or the JSON)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- statistics ----------------------------------------------------------------------------
def summary(samples: Iterable[float]) -> dict[str, Any]:
    values = [float(v) for v in samples]
    if not values:
        return {"n": 0, "samples": [], "median": None, "min": None, "max": None, "spread_pct": None}
    med = statistics.median(values)
    lo, hi = min(values), max(values)
    return {"n": len(values), "samples": [round(v, 4) for v in values], "median": round(med, 4),
            "min": round(lo, 4), "max": round(hi, 4),
            "spread_pct": round(100.0 * (hi - lo) / med, 1) if med else None}


# -- machine -------------------------------------------------------------------------------
def _meminfo_total() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _filesystem_of(path: str) -> dict[str, str]:
    """Mount point, type and device of ``path`` (the longest /proc/mounts prefix)."""
    real = os.path.realpath(path)
    best = {"mount": "?", "type": "?", "device": "?"}
    best_len = -1
    try:
        with open("/proc/mounts") as fh:
            for line in fh:
                dev, mnt, fstype = line.split()[:3]
                mnt = mnt.replace("\\040", " ")
                inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
                if inside and len(mnt) > best_len:
                    best, best_len = {"mount": mnt, "type": fstype, "device": dev}, len(mnt)
    except OSError:
        pass
    return best


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def machine(temp_dir: str) -> dict[str, Any]:
    fs = _filesystem_of(temp_dir)
    usage = shutil.disk_usage(temp_dir)
    return {
        "cores": os.cpu_count(), "cpu": _cpu_model(),
        "ram_bytes": _meminfo_total(), "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})",
        "temp_dir": temp_dir, "filesystem": fs, "disk_free_bytes": usage.free,
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "inherited_PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE"),
    }


# -- processes -----------------------------------------------------------------------------
@dataclass
class Proc:
    """One timed child process."""

    argv: list[str]
    popen: subprocess.Popen
    start: float
    lines: list[tuple[float, str]] = field(default_factory=list)
    stderr_path: str = ""
    reader: threading.Thread | None = None
    wall: float = 0.0
    exit_code: int | None = None
    signal: int | None = None
    maxrss_bytes: int = 0

    @property
    def stdout(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def stderr(self) -> str:
        try:
            return Path(self.stderr_path).read_text(errors="replace")
        except OSError:
            return ""

    def result(self) -> dict[str, Any] | None:
        """The wrapper's JSON outcome (last stdout line), if any."""
        for _, line in reversed(self.lines):
            if line.strip():
                try:
                    value = json.loads(line)
                except ValueError:
                    return None
                return value if isinstance(value, dict) else None
        return None

    def phases(self) -> dict[str, float]:
        """Seconds from spawn to each wrapper status line, and the phase durations."""
        marks: dict[str, float] = {}
        for t, line in self.lines:
            if line.startswith("[atomic-publish] status "):
                word = line.split()[2]
                marks.setdefault(word, t)
            elif line.startswith("[atomic-publish] progress ") and "progress" not in marks:
                marks["progress"] = t
            elif line.startswith("[atomic-publish] result "):
                marks["result"] = t
        out: dict[str, float] = {}
        if "publishing" in marks:
            out["start_to_lease"] = marks["publishing"]          # interpreter, imports, store lookup, connect, indexes, read, lease
        if "publishing" in marks and "reserved" in marks:
            out["reserve"] = marks["reserved"] - marks["publishing"]
        if "reserved" in marks and "staged" in marks:
            out["stage"] = marks["staged"] - marks["reserved"]
        if "staged" in marks and "published" in marks:
            out["commit"] = marks["published"] - marks["staged"]  # COMMITTING, rename, documents, PUBLISHED
        if "published" in marks:
            out["end"] = self.wall - marks["published"]            # deliver, result line, close, interpreter exit
        return out


class Runner:
    """Starts and reaps child processes; remembers the live ones so that they can be killed."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.live: dict[int, Proc] = {}

    def spawn(self, argv: list[str], env: dict[str, str], cwd: str | None = None) -> Proc:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        err_path = str(self.log_dir / f"stderr-{uuid.uuid4().hex[:10]}.log")
        with open(err_path, "wb") as err:
            start = time.perf_counter()
            popen = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=err, close_fds=True)
        proc = Proc(argv=argv, popen=popen, start=start, stderr_path=err_path)

        def read() -> None:
            assert popen.stdout is not None
            for raw in popen.stdout:
                proc.lines.append((time.perf_counter() - start, raw.decode("utf-8", "replace").rstrip("\n")))
            popen.stdout.close()

        proc.reader = threading.Thread(target=read, daemon=True)
        proc.reader.start()
        self.live[popen.pid] = proc
        return proc

    def wait(self, proc: Proc) -> Proc:
        """Reap ``proc`` with os.wait4: wall time and the child's peak RSS."""
        _, status, usage = os.wait4(proc.popen.pid, 0)
        proc.wall = time.perf_counter() - proc.start
        self.live.pop(proc.popen.pid, None)
        proc.popen.returncode = os.waitstatus_to_exitcode(status)  # tell Popen it is reaped
        if os.WIFSIGNALED(status):
            proc.signal = os.WTERMSIG(status)
        else:
            proc.exit_code = os.WEXITSTATUS(status)
        proc.maxrss_bytes = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        if proc.reader is not None:
            proc.reader.join(timeout=30)
        return proc

    def run(self, argv: list[str], env: dict[str, str], cwd: str | None = None) -> Proc:
        return self.wait(self.spawn(argv, env, cwd))

    def kill_all(self) -> None:
        """Kill (by pid) every child this runner started that is still running."""
        for pid, proc in list(self.live.items()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.wait(proc)
            except ChildProcessError:
                self.live.pop(pid, None)


# -- the bench -------------------------------------------------------------------------------
def cli_argv() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m``."""
    script = Path(sys.executable).parent / "atomic-publish"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "atomic_publish.wrapper.cli"]


class Bench:
    """A temporary folder with sources, a publish root, an embedded store home (or a given
    store), unique databases; runs wrapper attempts and baselines in it."""

    def __init__(self, parent: str | None = None, store_uri: str | None = None, keep: bool = False,
                 profile_dir: str | None = None):
        self.root = Path(tempfile.mkdtemp(prefix="atomic-publish-bench-", dir=parent))
        self.data = self.root / "data"
        self.publish_root = self.root / "projects"
        self.scratch = self.root / "scratch"
        self.home = self.root / "home"
        for d in (self.data, self.publish_root, self.scratch, self.home):
            d.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self.store_uri = store_uri
        self.profile_dir = Path(profile_dir).resolve() if profile_dir else None
        tag = uuid.uuid4().hex[:10]
        self.database = f"bench_{tag}_avalon"
        self.state_database = f"bench_{tag}_state"
        self.runner = Runner(self.root / "logs")
        self.cli = cli_argv()
        self.env = self._env()
        self.store_pid: int | None = None
        self._jobs = 0
        self.wrapper_runs = 0

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("ATOMIC_PUBLISH_STORE", "ATOMIC_PUBLISH_STORE_FILE", "ATOMIC_PUBLISH_FAILPOINTS",
                            "ATOMIC_PUBLISH_HOME", "ATOMIC_PUBLISH_DATABASE", "ATOMIC_PUBLISH_STATE_DATABASE")}
        # A worker's installation has bytecode caches; this environment may forbid writing them
        # (PYTHONDONTWRITEBYTECODE), which would recompile every module of the wrapper in every
        # run. Cache the bytecode in the temporary folder instead (the warm-up run fills it), so
        # that nothing is written into the source tree.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(self.root / "pycache")
        env["ATOMIC_PUBLISH_HOME"] = str(self.home)
        env["ATOMIC_PUBLISH_DATABASE"] = self.database
        env["ATOMIC_PUBLISH_STATE_DATABASE"] = self.state_database
        if self.store_uri:
            env["ATOMIC_PUBLISH_STORE"] = self.store_uri  # through the environment: not visible in `ps`
        return env

    # store ---------------------------------------------------------------------------------
    def start_store(self) -> str:
        if self.store_uri:
            return "given store (--store)"
        proc = self.runner.run([*self.cli, "store", "start"], self.env)
        if proc.exit_code != 0:
            raise RuntimeError(f"`atomic-publish store start` failed: {proc.stdout}\n{proc.stderr()}")
        try:
            self.store_pid = json.loads((self.home / "server.json").read_text())["pid"]
        except (OSError, ValueError, KeyError):
            self.store_pid = None
        return proc.stdout.strip().splitlines()[-1] if proc.lines else "?"

    def stop_store(self) -> None:
        if self.store_uri:
            self._drop_databases()
            return
        proc = self.runner.run([*self.cli, "store", "stop"], self.env)
        if proc.exit_code != 0:
            log(f"`atomic-publish store stop` failed: {proc.stdout} {proc.stderr()}")
        if self.store_pid:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(self.store_pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                log(f"the embedded store (pid {self.store_pid}) is still alive after stop; killing it")
                try:
                    os.kill(self.store_pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _drop_databases(self) -> None:
        try:
            import pymongo

            client = pymongo.MongoClient(self.store_uri, serverSelectionTimeoutMS=5000)
            try:
                for name in (self.database, self.state_database):
                    client.drop_database(name)
            finally:
                client.close()
        except Exception as exc:  # noqa: BLE001 - cleanup only
            log(f"could not drop the benchmark databases {self.database}, {self.state_database}: {exc}")

    def close(self) -> None:
        self.runner.kill_all()
        try:
            self.stop_store()
        finally:
            if not self.keep:
                shutil.rmtree(self.root, ignore_errors=True)

    # data ----------------------------------------------------------------------------------
    def make_files(self, name: str, count: int, size: int, ext: str = "exr", first_frame: int = 1001) -> list[str]:
        """``count`` distinct files of ``size`` bytes (one random block, a distinct header each)."""
        folder = self.data / name
        folder.mkdir(parents=True, exist_ok=True)
        block = bytearray(os.urandom(size))
        width = max(4, len(str(first_frame + count)))
        paths = []
        for i in range(count):
            path = folder / f"{name}.{first_frame + i:0{width}d}.{ext}"
            header = f"{name}:{i}:".encode()[:size]
            block[:len(header)] = header
            with open(path, "wb") as fh:
                fh.write(block)
            paths.append(str(path))
        return paths

    def manifest(self, name: str, subset: str, files: list[str], project: str = "bench", **overrides: Any) -> Path:
        rep = "exr" if len(files) > 1 else os.path.splitext(files[0])[1].lstrip(".") or "bin"
        data = {"project": {"name": project, "code": "bn"}, "asset": "sh010", "hierarchy": "shots/sq01",
                "task": "comp", "subset": subset, "family": "render", "version": None,
                "publish_root": str(self.publish_root),
                "representations": [{"name": rep, "files": files}],
                "author": "bench", "comment": "benchmark", "source": "/bench/none.nk",
                "link_mode": "copy", "verify": "size"}
        data.update(overrides)
        path = self.root / f"manifest-{name}.json"
        path.write_text(json.dumps(data))
        return path

    def job_id(self, prefix: str) -> str:
        self._jobs += 1
        return f"bench-{prefix}-{self._jobs:04d}-{uuid.uuid4().hex[:6]}"

    # runs ----------------------------------------------------------------------------------
    def publish_argv(self, manifest: Path, job: str) -> list[str]:
        args = ["run", "--manifest", str(manifest), "--job-id", job, "--task-id", "0",
                "--worker", "bench", "--json"]
        if self.profile_dir is not None:
            self.profile_dir.mkdir(parents=True, exist_ok=True)
            out = self.profile_dir / f"{job}.prof"
            # main() with an argument list returns instead of leaving through os._exit, so the profile is written
            # every thread gets its own profile (the copy threads, the checkpoint flusher, the lease
            # keeper): DIR/<job>.prof for the main thread, DIR/<job>.<thread name>.prof for the others
            code = ("import cProfile, sys, threading; from atomic_publish.wrapper.cli import main; "
                    "run = threading.Thread.run\n"
                    "def profiled(self):\n"
                    "    p = cProfile.Profile(); p.enable()\n"
                    "    try: run(self)\n"
                    f"    finally: p.disable(); p.dump_stats({str(out)[:-5]!r} + '.' + self.name + '.prof')\n"
                    "threading.Thread.run = profiled\n"
                    f"p = cProfile.Profile(); rc = p.runcall(main, sys.argv[1:]); p.dump_stats({str(out)!r}); "
                    "sys.exit(rc)")
            return [sys.executable, "-c", code, *args]
        return [*self.cli, *args]

    def publish_spawn(self, manifest: Path, job: str, env_extra: dict[str, str] | None = None) -> Proc:
        env = {**self.env, **(env_extra or {})}
        self.wrapper_runs += 1
        return self.runner.spawn(self.publish_argv(manifest, job), env)

    def publish(self, manifest: Path, job: str, env_extra: dict[str, str] | None = None,
                expect_ok: bool = True) -> Proc:
        proc = self.runner.wait(self.publish_spawn(manifest, job, env_extra))
        if expect_ok:
            self.check_published(proc)
        return proc

    @staticmethod
    def check_published(proc: Proc) -> dict[str, Any]:
        res = proc.result()
        if proc.exit_code != 0 or not res or res.get("outcome") != "published":
            raise RuntimeError(f"publish failed (exit {proc.exit_code}, signal {proc.signal}):\n"
                               f"{proc.stdout[-3000:]}\n{proc.stderr()[-3000:]}")
        return res

    def status(self, job: str) -> dict[str, Any]:
        proc = self.runner.run([*self.cli, "status", "--key", f"deadline10:{job}:0", "--json"], self.env)
        if proc.exit_code != 0:
            raise RuntimeError(f"status failed: {proc.stdout} {proc.stderr()}")
        return json.loads(proc.lines[-1][1])

    def cp_baseline(self, source_dir: Path) -> Proc:
        """The honest baseline: ``cp -r SRC DST && sync -f DST`` into a new folder on the same
        filesystem (``sync -f`` is syncfs(2): every dirty page of that filesystem, once)."""
        settle()
        dst = self.scratch / f"cp-{uuid.uuid4().hex[:8]}"
        proc = self.runner.run(["sh", "-c", 'cp -r -- "$1" "$2" && sync -f -- "$2"', "sh", str(source_dir),
                                str(dst)], self.env)
        if proc.exit_code != 0:
            raise RuntimeError(f"baseline copy failed: {proc.stderr()}")
        shutil.rmtree(dst, ignore_errors=True)
        settle()
        return proc

    def strace_counts(self, argv: list[str], env: dict[str, str] | None = None) -> dict[str, int] | None:
        """Metadata system calls of ``argv`` and its threads (``strace -c -f``): the stat family,
        open and access. None when strace is not installed."""
        if not shutil.which("strace"):
            return None
        out = self.root / f"strace-{uuid.uuid4().hex[:8]}.txt"
        proc = self.runner.run(["strace", "-c", "-f", "-e", f"trace={','.join(METADATA_CALLS)}", "-o", str(out),
                                "--", *argv], env or self.env)
        if proc.exit_code != 0:
            raise RuntimeError(f"strace of {argv[:3]} failed (exit {proc.exit_code}): {proc.stderr()[-500:]}")
        counts: dict[str, int] = {}
        for line in out.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 5 and parts[-1] in METADATA_CALLS and parts[3].isdigit():
                counts[parts[-1]] = int(parts[3])
        return counts

    def publish_signalled(self, manifest: Path, job: str, signum: int, fraction: float,
                          total_files: int) -> Proc:
        """Start a publish and send ``signum`` once ``fraction`` of its files are in the staging folder."""
        proc = self.publish_spawn(manifest, job)
        want = max(1, int(total_files * fraction))
        deadline = time.monotonic() + 600
        sent = False
        while proc.popen.poll() is None and time.monotonic() < deadline:
            folders = [p for p in self.publish_root.rglob(".*.staging-*") if p.is_dir()]
            done = sum(sum(1 for e in os.scandir(f) if not e.name.startswith(".")) for f in folders)
            if done > want:  # the newest file may still be copying: more than `want` means `want` are done
                os.kill(proc.popen.pid, signum)
                sent = True
                break
            time.sleep(0.005)
        self.runner.wait(proc)
        if not sent:
            raise RuntimeError(f"the publish ended before {want} of {total_files} files were staged")
        return proc

    def python_pass(self) -> Proc:
        return self.runner.run([sys.executable, "-c", "pass"], self.env)

    def remove_published(self, *results: dict[str, Any] | None) -> None:
        """Delete published version folders (keeps disk use flat), then flush the deletions."""
        for res in results:
            if res and res.get("final_dir"):
                shutil.rmtree(res["final_dir"], ignore_errors=True)
        settle()


def settle() -> None:
    """Flush dirty pages before the next measurement, so that one run's writeback does not
    land in the next run's time."""
    os.sync()
