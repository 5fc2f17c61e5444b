"""The fault suite: real publishes killed, hung, cut off and raced, then audited.

Each trial builds a render, runs attempts of the real CLI as processes the way a farm would
(retrying until the task ends: exit 0 or 78), injects faults (failpoints, SIGKILL at a random
time, SIGSTOP past the lease, a store outage through a TCP proxy, a worker that cannot see the
publish root, concurrent publishers of one subset), then checks the outcome and runs the audit.

Soak: ``python -m atomic_publish.testing.faultsuite --trials 1000 --seed 7`` (starts its own
SecantusDB unless ``--store`` or ``$MONGO_URI`` is given). A failing trial prints its seed.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLI = [sys.executable, "-m", "atomic_publish.wrapper.cli"]
LEASE_SECONDS = "1"
HAPPY_POINTS = ("lease.acquired", "reserve.after", "stage.begin", "stage.file", "stage.checkpoint", "staged",
                "integrate.prepare", "commit.begin", "commit.rename", "commit.documents", "integrate.commit",
                "commit.published")
ROLLBACK_POINTS = ("rollback.begin", "rollback.compensate", "rollback.staging", "rollback.reservation")
ACTIONS = ("raise", "exit", "kill", "hang")


class TrialFailed(AssertionError):
    pass


@dataclass
class Attempt:
    code: int
    stdout: str


@dataclass
class Publisher:
    """One key (a Deadline job's task) publishing into the shared subset."""

    job: str
    manifest: Path
    plan: dict[str, Any] = field(default_factory=dict)
    attempts: list[int] = field(default_factory=list)


class Trial:
    """One isolated world: its own databases, folders and webhook receiver."""

    def __init__(self, store_uri: str, workdir: Path, rollback: bool = False, frames: int = 4,
                 size: int = 8192):
        from .webhook_receiver import WebhookReceiver

        self.uri, self.dir, self.rollback = store_uri, workdir, rollback
        tag = uuid.uuid4().hex[:10]
        self.db, self.state_db = f"avalon_{tag}", f"ap_{tag}"
        self.renders = workdir / "renders"
        self.root = workdir / "projects"
        self.renders.mkdir(parents=True)
        self.root.mkdir()
        self.files = []
        for i in range(frames):
            path = self.renders / f"comp.{1001 + i}.exr"
            path.write_bytes(os.urandom(size))
            self.files.append(str(path))
        self.hook = WebhookReceiver(workdir / "hook")
        self.hook.start()
        if rollback:
            self.hook.set_faults({"kind": "http_error", "status": 422, "path": "/review", "count": None})
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ATOMIC_PUBLISH_")}
        self.env.update(ATOMIC_PUBLISH_STORE=self.uri, ATOMIC_PUBLISH_DATABASE=self.db,
                        ATOMIC_PUBLISH_STATE_DATABASE=self.state_db, PYTHONUNBUFFERED="1")
        self._numbers = itertools.count(1)

    def close(self) -> None:
        import pymongo

        self.hook.stop()
        client = pymongo.MongoClient(self.uri)
        client.drop_database(self.db)
        client.drop_database(self.state_db)
        client.close()

    def manifest(self, job: str, publish_root: Path | None = None, name: str = "manifest") -> Path:
        integrations = [{"name": "webhook", "id": "tracker", "phase": "gate",
                         "settings": {"url": self.hook.url + "/tracker"}}]
        if self.rollback:
            integrations.append({"name": "webhook", "id": "review", "phase": "gate",
                                 "settings": {"url": self.hook.url + "/review"}})
        data = {"project": {"name": "demo", "code": "dm"}, "asset": "sh010", "hierarchy": "shots/sq01",
                "task": "comp", "subset": "renderCompMain", "family": "render",
                "publish_root": str(publish_root or self.root),
                "representations": [{"name": "exr", "files": self.files}], "comment": job,
                "integrations": integrations}
        path = self.dir / f"{name}-{job}.json"
        path.write_text(json.dumps(data))
        return path

    # -- attempts --------------------------------------------------------------------------
    def command(self, pub: Publisher, manifest: Path | None = None) -> list[str]:
        return [*CLI, "run", "--manifest", str(manifest or pub.manifest), "--submitted-manifest", str(pub.manifest),
                "--job-id", pub.job, "--task-id", "0", "--worker", f"w-{uuid.uuid4().hex[:4]}",
                "--lease-seconds", LEASE_SECONDS, "--retry-budget", "20"]

    def start(self, pub: Publisher, env: dict[str, str] | None = None, manifest: Path | None = None):
        number = next(self._numbers)  # concurrent publishers (threads) must never share an output file
        argv = self.command(pub, manifest)[len(CLI):]
        return fork_server().spawn(argv, env or self.env, self.dir / f"attempt-{number}.log")

    def run_until_done(self, pub: Publisher, first: dict[str, Any] | None = None, max_attempts: int = 12,
                       rng: random.Random | None = None, proxy_env: dict[str, str] | None = None) -> int:
        """Retry like the farm until the task ends (0 or 78); the first attempt carries the fault plan."""
        first = first or {}
        hung = None
        for i in range(max_attempts):
            env = dict(self.env)
            manifest = None
            if i == 0:
                if first.get("failpoints"):
                    env["ATOMIC_PUBLISH_FAILPOINTS"] = first["failpoints"]
                if first.get("worker_local"):
                    manifest = self.manifest(pub.job, self.dir / "not-mounted", name="mapped")
                if proxy_env:
                    env.update(proxy_env)
            proc = self.start(pub, env, manifest)
            if i == 0 and first.get("kill_after") is not None:
                threading.Timer(first["kill_after"], _signal, (proc, signal.SIGKILL)).start()
            if i == 0 and first.get("stop_after") is not None:
                time.sleep(first["stop_after"])
                _signal(proc, signal.SIGSTOP)
                hung = proc
                pub.attempts.append(-int(signal.SIGSTOP))
                continue
            if i == 0 and first.get("failpoints", "").find("=hang") >= 0:
                hung = proc
                guard = threading.Timer(60, _signal, (proc, signal.SIGKILL))
                guard.start()
                for line in proc.stdout:  # until it hangs at the failpoint (or ends without reaching it)
                    if "[atomic-publish] failpoint " in line:
                        break
                guard.cancel()
                if proc.poll() is None:
                    pub.attempts.append(-1000)  # hanging: the farm gives the task to another worker
                    continue
                hung = None
            try:
                out, _ = proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                _signal(proc, signal.SIGKILL)
                raise TrialFailed(f"attempt {i + 1} of {pub.job} did not end in 120 s") from None
            pub.attempts.append(proc.returncode)
            if proc.returncode in (0, 78):
                break
            if proc.returncode == 76:
                time.sleep(0.3)
        else:
            raise TrialFailed(f"{pub.job} did not finish in {max_attempts} attempts: {pub.attempts}")
        if hung is not None:
            if first.get("stop_after") is not None:   # the zombie wakes up and must change nothing
                _signal(hung, signal.SIGCONT)
                hung.communicate(timeout=60)
            else:
                _signal(hung, signal.SIGKILL)
                hung.communicate(timeout=30)
        return pub.attempts[-1]

    # -- checks ------------------------------------------------------------------------------
    def store(self):
        import pymongo

        from ..idempotency.store import Store

        return Store(pymongo.MongoClient(self.uri, tz_aware=True), database=self.db, state_database=self.state_db)

    def check(self, pubs: list[Publisher]) -> None:
        from ..wrapper.audit import Auditor

        store = self.store()
        try:
            report = Auditor(store, [str(self.root)]).run()
            if report.violations:
                raise TrialFailed("audit: " + "; ".join(f"inv {v.invariant} {v.key}: {v.detail}"
                                                        for v in report.violations))
            versions = []
            for pub in pubs:
                rec = store.records.get(f"deadline10:{pub.job}:0")
                expected = "ROLLED_BACK" if self.rollback else "PUBLISHED"
                if rec is None or rec["state"] != expected:
                    raise TrialFailed(f"{pub.job}: record {rec and rec['state']}, expected {expected} "
                                      f"(attempts {pub.attempts})")
                if pub.attempts[-1] != (78 if self.rollback else 0):
                    raise TrialFailed(f"{pub.job}: last exit {pub.attempts[-1]}")
                if not self.rollback:
                    versions.append(rec["version"])
            if len(set(versions)) != len(versions):
                raise TrialFailed(f"two publishers share a version number: {versions}")
            docs = store.catalog.project("demo").count_documents({"type": "version"})
            if docs != len(versions):
                raise TrialFailed(f"{docs} version documents for {len(versions)} published keys")
            deliveries = self.hook.deliveries()
            per_key: dict[tuple[str, str], int] = {}
            for d in deliveries:
                per_key[(d["body"]["key"], d["path"] + d["body"]["event"])] = \
                    per_key.get((d["body"]["key"], d["path"] + d["body"]["event"]), 0) + 1
            if any(n > 1 for n in per_key.values()):
                raise TrialFailed(f"a webhook event was delivered twice: {per_key}")
            if not self.rollback:
                for pub in pubs:
                    key = f"deadline10:{pub.job}:0"
                    if per_key.get((key, "/trackerpublish.committed")) != 1:
                        raise TrialFailed(f"{key}: tracker saw no commit ({per_key})")
        finally:
            store.client.close()


class ForkServer:
    """Starts attempts through ``forkserver`` (one warm, single-threaded parent)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "atomic_publish.testing.forkserver"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._lock = threading.Lock()
        json.loads(self.proc.stdout.readline())  # {"ready": pid}

    def spawn(self, argv: list[str], env: dict[str, str], out: Path) -> "Forked":
        out.touch()
        with self._lock:
            self.proc.stdin.write(json.dumps({"argv": argv, "env": env, "out": str(out)}) + "\n")
            self.proc.stdin.flush()
            pid = json.loads(self.proc.stdout.readline())["pid"]
        return Forked(pid, out)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


class Forked:
    """The Popen-like view of a forked attempt: pid, poll, communicate, stdout lines."""

    def __init__(self, pid: int, out: Path):
        self.pid, self.out, self.returncode = pid, out, None

    def poll(self) -> int | None:
        rc = Path(str(self.out) + ".rc")
        if self.returncode is None and rc.exists():
            self.returncode = int(rc.read_text())
        return self.returncode

    def communicate(self, timeout: float = 120) -> tuple[str, None]:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("attempt", timeout)
            time.sleep(0.01)
        return self.out.read_text(errors="replace"), None

    @property
    def stdout(self):
        """Lines as they are written, until the process ends."""
        with open(self.out, errors="replace") as fh:
            while True:
                line = fh.readline()
                if line:
                    yield line
                elif self.poll() is not None:
                    return
                else:
                    time.sleep(0.01)


_SERVER: ForkServer | None = None
_SERVER_LOCK = threading.Lock()


def fork_server() -> ForkServer:
    """One fork server per process (concurrent publishers in a trial share it)."""
    global _SERVER
    with _SERVER_LOCK:
        if _SERVER is None or _SERVER.proc.poll() is not None:
            _SERVER = ForkServer()
        return _SERVER


def _signal(proc, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# -- the two suites --------------------------------------------------------------------------
def exhaustive_cases() -> list[tuple[str, str, bool]]:
    """(failpoint, action, rollback scenario): every failpoint with every action."""
    cases = [(p, a, False) for p in HAPPY_POINTS for a in ACTIONS]
    cases += [(p, a, True) for p in ROLLBACK_POINTS for a in ACTIONS]
    return cases


def run_exhaustive_case(uri: str, workdir: Path, point: str, action: str, rollback: bool) -> list[int]:
    trial = Trial(uri, workdir, rollback=rollback)
    try:
        pub = Publisher("job-" + point.replace(".", "-") + "-" + action, Path())
        pub.manifest = trial.manifest(pub.job)
        trial.run_until_done(pub, {"failpoints": f"{point}={action}"})
        trial.check([pub])
        return pub.attempts
    finally:
        trial.close()


OUTAGES = os.environ.get("ATOMIC_PUBLISH_FAULT_OUTAGES", "1") != "0"


def random_plan(rng: random.Random, points: tuple[str, ...]) -> dict[str, Any]:
    kind = rng.choice(["none", "failpoint", "failpoint", "two-failpoints", "kill", "stop", "worker-local",
                       "outage"])
    if kind == "failpoint":
        return {"failpoints": f"{rng.choice(points)}={rng.choice(ACTIONS[:3])}@{rng.randint(1, 2)}"}
    if kind == "two-failpoints":
        a, b = rng.sample(points, 2)
        return {"failpoints": f"{a}={rng.choice(ACTIONS[:3])}@{rng.randint(1, 3)},{b}=raise"}
    if kind == "kill":
        return {"kill_after": rng.uniform(0.05, 1.2)}
    if kind == "stop":
        return {"stop_after": rng.uniform(0.3, 0.9)}
    if kind == "worker-local":
        return {"worker_local": True}
    if kind == "outage":
        outage, at = rng.uniform(0.5, 3.0), rng.uniform(0.0, 0.8)
        return {"outage": outage, "outage_at": at} if OUTAGES else {"kill_after": at + 0.05}
    return {}


def run_random_trial(uri: str, workdir: Path, seed: int) -> dict[str, Any]:
    """One seeded trial; raises TrialFailed naming the seed."""
    from .tcp_proxy import TcpProxy

    rng = random.Random(seed)
    rollback = rng.random() < 0.2
    trial = Trial(uri, workdir, rollback=rollback, frames=rng.randint(1, 8))
    points = HAPPY_POINTS + (ROLLBACK_POINTS if rollback else ())
    pubs = [Publisher(f"s{seed}-j{i}", Path()) for i in range(rng.choice([1, 1, 2, 3]))]
    plans = [random_plan(rng, points) for _ in pubs]
    proxy = None
    try:
        for pub in pubs:
            pub.manifest = trial.manifest(pub.job)
        proxy_env = None
        outage = next((p for p in plans if "outage" in p), None)
        if outage:
            host, port = uri.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
            proxy = TcpProxy(host, int(port))
            proxy_env = {"ATOMIC_PUBLISH_STORE": f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true"
                                                 "&serverSelectionTimeoutMS=2000"}
            threading.Timer(outage["outage_at"], proxy.outage, (outage["outage"],)).start()
        errors: list[BaseException] = []

        def go(pub: Publisher, plan: dict[str, Any]) -> None:
            try:
                trial.run_until_done(pub, plan, proxy_env=proxy_env if "outage" in plan else None)
            except BaseException as exc:  # reported below with the seed
                errors.append(exc)

        threads = [threading.Thread(target=go, args=(p, plan)) for p, plan in zip(pubs, plans)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        trial.check(pubs)
        return {"seed": seed, "rollback": rollback, "plans": plans, "attempts": [p.attempts for p in pubs]}
    except TrialFailed as exc:
        raise TrialFailed(f"trial seed {seed} failed (replay: python -m atomic_publish.testing.faultsuite "
                          f"--seed {seed} --trials 1): {exc}; plans {plans}") from None
    finally:
        if proxy:
            proxy.close()
        trial.close()


def _start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    import socket

    import pymongo

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (folder / "secantusd.toml").write_text("")
    proc = subprocess.Popen([sys.executable, "-m", "secantus", "--config", str(folder / "secantusd.toml"),
                             "--host", "127.0.0.1", "--port", str(port), "--storage-path", str(folder / "data"),
                             "--log-level", "WARNING"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    uri = f"mongodb://127.0.0.1:{port}/"
    for _ in range(600):
        try:
            pymongo.MongoClient(uri, serverSelectionTimeoutMS=200).admin.command("ping")
            return proc, uri
        except pymongo.errors.PyMongoError:
            time.sleep(0.1)
    raise RuntimeError("SecantusDB did not start")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m atomic_publish.testing.faultsuite", description=__doc__)
    p.add_argument("--trials", type=int, default=200, help="random trials (default 200)")
    p.add_argument("--seed", type=int, default=1, help="first seed; trial i uses seed+i")
    p.add_argument("--exhaustive", action="store_true", help="also run every failpoint with every action")
    p.add_argument("--store", default=os.environ.get("MONGO_URI"))
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="atomic-publish-faults-"))
    server = None
    uri = args.store
    if not uri:
        server, uri = _start_server(work)
    failures = 0
    started = time.monotonic()
    try:
        if args.exhaustive:
            for i, (point, action, rollback) in enumerate(exhaustive_cases()):
                try:
                    run_exhaustive_case(uri, work / f"x{i}", point, action, rollback)
                except TrialFailed as exc:
                    failures += 1
                    print(f"FAIL {point}={action}: {exc}", flush=True)
            print(f"exhaustive: {len(exhaustive_cases())} cases, {failures} failed, "
                  f"{time.monotonic() - started:.0f} s", flush=True)
        for i in range(args.trials):
            seed = args.seed + i
            try:
                run_random_trial(uri, work / f"t{seed}", seed)
            except TrialFailed as exc:
                failures += 1
                print(f"FAIL {exc}", flush=True)
            if (i + 1) % 50 == 0:
                print(f"{i + 1} trials, {failures} failed, {time.monotonic() - started:.0f} s", flush=True)
        print(f"done: {args.trials} random trials{' + exhaustive' if args.exhaustive else ''}, "
              f"{failures} failed, {time.monotonic() - started:.0f} s", flush=True)
    finally:
        if server:
            server.terminate()
            server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
