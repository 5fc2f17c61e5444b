"""The fault suite: real publishes killed, hung, cut off and raced, then audited.

Each trial builds a render, runs attempts of the real CLI as processes the way a farm would
(retrying until the task ends: exit 0 or 78), injects faults (failpoints, SIGKILL at a random
time, SIGSTOP past the lease, a store outage through a TCP proxy, a worker that cannot see the
publish root, concurrent publishers of one subset), then checks the outcome and runs the audit.

Issue 16 added five fault classes, each drawn per trial (and per attempt where it says so) from
the trial's seed and printed in a failing trial's replay line:

* ``gc``: ``atomic-publish gc --older-than 0s..2s --root R`` (R sometimes the alias path, the
  host clock sometimes skewed) run again and again beside the publishers, rollbacks and
  roll-forwards; every run must succeed, and nothing it removes may be missed afterwards.
* ``skew``: per attempt, ``ATOMIC_PUBLISH_FAULT_CLOCK_SKEW`` minutes fast or slow; the attempt
  must behave as a correct one and say in its log that its clock is off.
* ``disk``: the publish root on a small tmpfs that a ballast file fills during an attempt and
  frees later; an attempt that met the full disk must end transient (or complete after an
  in-process retry), never permanent, never blame the source, never roll back.
* ``alias``: the publish root reachable through a second path, a bind mount (some attempts'
  manifests name the alias: a roll-forward on "another worker" that maps the root differently)
  or a symlink (for gc and audit only); audit runs over both paths, and no document's path or
  ``context.root`` may contain ``..``.
* ``wrong_store``: one worker whose state database is another store (``--store-id`` of the
  first given, as the job does) must exit worker-local and change nothing in either store or on
  disk.

The tmpfs and bind mounts need root (the tests run as root in CI); where mounting is refused the
disk class is skipped and the alias class falls back to a symlink, with one line saying so.

Every trial ends with ``atomic-publish audit`` clean over the real root and over the alias, the
right outcome, distinct versions, and nothing lost: every published file present with its
recorded size and hash and the bytes of its source.

Soak: ``python -m atomic_publish.testing.faultsuite --trials 1000 --exhaustive --seed 7`` (starts
its own SecantusDB unless ``--store`` or ``$MONGO_URI`` is given; every class is in). A failing
trial prints its seed. SIGTERM or Ctrl-C ends it cleanly: mounts undone, its server stopped and
its temporary folder (the server's data included) removed.
"""
from __future__ import annotations

import argparse
import errno
import itertools
import json
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..wrapper import failpoints as _failpoints

CLI = [sys.executable, "-m", "atomic_publish.wrapper.cli"]
LEASE_SECONDS = "1"
# Derived from the failpoints module, so that a new failpoint joins the exhaustive matrix by itself:
# the rollback points are those named rollback.*, every other point is on the happy path.
ROLLBACK_POINTS = tuple(p for p in _failpoints.POINTS if p.startswith("rollback."))
HAPPY_POINTS = tuple(p for p in _failpoints.POINTS if not p.startswith("rollback."))
ACTIONS = tuple(_failpoints.ACTIONS)
ENDING_ACTIONS = tuple(a for a in ACTIONS if a != "hang")  # the random trials' failpoints end the attempt
EXIT_TRANSIENT, EXIT_BUSY, EXIT_WORKER_LOCAL, EXIT_PERMANENT = 75, 76, 77, 78
EXIT_FAILPOINT = 70  # a failpoint's "exit" action (wrapper/failpoints.py)
NO_SPACE = re.compile(r"no space left|quota exceeded|ENOSPC|EDQUOT|errno 28\b|errno 122\b", re.IGNORECASE)
CLOCK_WARNING = re.compile(r"clock is \d+ s (behind|ahead of)")


class TrialFailed(AssertionError):
    pass


# -- mounts: a small filesystem that fills up, a second path to the same storage ---------------
_MOUNT_PROBE: list[str | None] = []


def _mount(args: list[str]) -> str | None:
    """Run ``mount ARGS``; None on success, else why it was refused."""
    try:
        r = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if r.returncode == 0 else (r.stderr.strip() or f"mount exited {r.returncode}")


def _umount(path: Path | str) -> None:
    """Lazy unmount: succeeds even while a killed attempt's files are still being closed."""
    subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def mount_refused() -> str | None:
    """None where this process may mount a tmpfs and bind mounts (root in CI); else why not."""
    if not _MOUNT_PROBE:
        probe = tempfile.mkdtemp(prefix="atomic-publish-mount-probe-")
        try:
            why = _mount(["-t", "tmpfs", "-o", "size=1m", "tmpfs", probe])
            if why is None:
                _umount(probe)
        finally:
            try:
                os.rmdir(probe)
            except OSError:
                pass
        _MOUNT_PROBE.append(why)
    return _MOUNT_PROBE[0]


def unmount_below(folder: Path | str) -> None:
    """Undo every mount below ``folder`` (deepest first): what an interrupted soak left."""
    folder = os.path.realpath(folder)
    try:
        with open("/proc/self/mounts") as fh:
            points = [line.split()[1].replace("\\040", " ") for line in fh]
    except OSError:
        return
    for point in sorted((p for p in points if p.startswith(folder + os.sep)), key=len, reverse=True):
        _umount(point)


class Ballast:
    """A file that fills the filesystem of the publish root to the last byte, and frees it again."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        self.full = False
        self.events: list[str] = []

    def fill(self, unless: Callable[[], bool] = lambda: False) -> None:
        """Fill the filesystem, unless ``unless()`` says no (checked under the lock, so that a fill
        racing the end of the trial cannot leave the disk full after the final free)."""
        with self.lock:
            if self.full or unless():
                return
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            written = 0
            try:
                for size in (1 << 20, 1 << 12, 1):  # big blocks, then what is left of the last page
                    block = b"\xff" * size
                    try:
                        while True:
                            written += os.write(fd, block)
                    except OSError as exc:
                        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                            raise
            finally:
                os.close(fd)
            self.full = True
            self.events.append(f"filled ({written} bytes)")

    def free(self, why: str = "") -> None:
        with self.lock:
            if not self.full:
                return
            os.unlink(self.path)
            self.full = False
            self.events.append(f"freed{' ' + why if why else ''}")


# -- attempts ---------------------------------------------------------------------------------
@dataclass
class Publisher:
    """One key (a Deadline job's task) publishing into the shared subset."""

    job: str
    manifest: Path
    plan: dict[str, Any] = field(default_factory=dict)
    attempts: list[int] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)  # of the attempts that ended (not hung, not stopped)

    @property
    def key(self) -> str:
        return f"deadline10:{self.job}:0"


def _last_output(pub: "Publisher", chars: int = 2500) -> str:
    """The end of the publisher's last attempt's output, for a failure message (the trial's folder
    is removed with the soak, and a replay may not meet the same timing again)."""
    if not pub.outputs:
        return ""
    return f"\n--- last attempt's output (its end) ---\n{pub.outputs[-1][-chars:].rstrip()}\n---"


class Trial:
    """One isolated world: its own databases, folders and webhook receiver.

    ``disk``: the publish root lives on a tmpfs of that size (e.g. "16m") with a ``ballast``
    beside it. ``alias``: "bind" (a bind mount of the root) or "symlink" (a symlink to it, for
    gc and audit only: a manifest naming a symlinked root is refused by design)."""

    def __init__(self, store_uri: str, workdir: Path, rollback: bool = False, frames: int = 4,
                 size: int = 8192, disk: str | None = None, alias: str | None = None):
        from .webhook_receiver import WebhookReceiver

        self.uri, self.dir, self.rollback = store_uri, workdir, rollback
        tag = uuid.uuid4().hex[:10]
        self.db, self.state_db = f"avalon_{tag}", f"ap_{tag}"
        self.other_state_db = f"ap_{tag}_other"  # the second store of the wrong-store class
        self.store_id: str | None = None  # given to every attempt (--store-id) once set
        self.mounts: list[Path] = []
        self.ballast: Ballast | None = None
        self.alias: Path | None = None
        self.alias_kind = alias
        self.gc_lock = threading.Lock()  # held by each gc run, and by a check that needs gc to wait
        self.renders = workdir / "renders"
        self.storage = workdir / "storage"
        self.renders.mkdir(parents=True)
        self.storage.mkdir()
        try:
            if disk:
                why = _mount(["-t", "tmpfs", "-o", f"size={disk}", "tmpfs", str(self.storage)])
                if why:
                    raise TrialFailed(f"cannot mount a {disk} tmpfs at {self.storage}: {why}")
                self.mounts.append(self.storage)
                self.ballast = Ballast(self.storage / "ballast")
            self.root = self.storage / "projects"
            self.root.mkdir()
            if alias == "bind":
                self.alias = workdir / "alias"
                self.alias.mkdir()
                why = _mount(["--bind", str(self.root), str(self.alias)])
                if why:
                    raise TrialFailed(f"cannot bind-mount {self.root} at {self.alias}: {why}")
                self.mounts.append(self.alias)
            elif alias == "symlink":
                self.alias = workdir / "alias"
                os.symlink(self.root, self.alias)
        except BaseException:
            self._unmount()
            raise
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
                        ATOMIC_PUBLISH_STATE_DATABASE=self.state_db, PYTHONUNBUFFERED="1",
                        ATOMIC_PUBLISH_HERO="render")  # hero versions on: the hero.* failpoints fire (issue 14)
        self._numbers = itertools.count(1)

    def _unmount(self) -> None:
        for point in reversed(self.mounts):
            _umount(point)
        self.mounts.clear()

    def close(self) -> None:
        import pymongo

        try:
            self.hook.stop()
            client = pymongo.MongoClient(self.uri, socketTimeoutMS=30000, serverSelectionTimeoutMS=10000)
            try:
                for name in (self.db, self.state_db, self.other_state_db):
                    client.drop_database(name)
            except pymongo.errors.PyMongoError as exc:  # never hang the suite on its own clean-up
                print(f"note: could not drop the databases of {self.dir}: {exc}", flush=True)
            finally:
                client.close()
        finally:
            self._unmount()

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

    # -- processes -------------------------------------------------------------------------
    def command(self, pub: Publisher, manifest: Path | None = None, extra: list[str] | None = None) -> list[str]:
        argv = [*CLI, "run", "--manifest", str(manifest or pub.manifest), "--submitted-manifest", str(pub.manifest),
                "--job-id", pub.job, "--task-id", "0", "--worker", f"w-{uuid.uuid4().hex[:4]}",
                "--lease-seconds", LEASE_SECONDS, "--retry-budget", "20"]
        if self.store_id:
            argv += ["--store-id", self.store_id]
        return argv + list(extra or ())  # a repeated option (--lease-seconds 30) overrides the default

    def start(self, pub: Publisher, env: dict[str, str] | None = None, manifest: Path | None = None,
              extra: list[str] | None = None):
        number = next(self._numbers)  # concurrent publishers (threads) must never share an output file
        argv = self.command(pub, manifest, extra)[len(CLI):]
        return fork_server().spawn(argv, env or self.env, self.dir / f"attempt-{number}.log")

    def tool(self, argv: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> tuple[int, str]:
        """Run another command of the CLI (gc, audit, store id) as a real process: (exit code, output)."""
        number = next(self._numbers)
        proc = fork_server().spawn(argv, env or self.env, self.dir / f"{argv[0]}-{number}.log")
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal(proc, signal.SIGKILL)
            raise TrialFailed(f"`atomic-publish {' '.join(argv)}` did not end in {timeout:.0f} s") from None
        return proc.returncode, out

    def read_store_id(self) -> str:
        """``atomic-publish store id``: the id the job records (as `atomic-publish submit` would)."""
        code, out = self.tool(["store", "id"])
        lines = [ln.strip() for ln in out.splitlines() if ln.strip() and not ln.startswith("[atomic-publish]")]
        if code != 0 or not lines or not re.fullmatch(r"[0-9A-Za-z_.:-]{8,}", lines[-1]):
            raise TrialFailed(f"`atomic-publish store id` exited {code}: {out.strip()[-300:]}")
        return lines[-1]

    def run_until_done(self, pub: Publisher, first: dict[str, Any] | None = None, max_attempts: int = 12,
                       rng: random.Random | None = None, proxy_env: dict[str, str] | None = None,
                       faults: "Faults | None" = None) -> int:
        """Retry like the farm until the task ends (0 or 78); the first attempt carries the fault plan,
        ``faults`` the issue-16 classes (clock skew, alias manifest, full disk, wrong store)."""
        first = first or {}
        frozen: list = []  # a stopped or hung attempt of this publisher
        try:
            return self._attempts_until_done(pub, first, max_attempts, proxy_env, faults, frozen)
        finally:
            for proc in frozen:  # the trial failed with it still frozen: a stopped attempt can hold the
                if proc.poll() is None:  # store's locks, and must not outlive its trial
                    _signal(proc, signal.SIGKILL)

    def _attempts_until_done(self, pub: Publisher, first: dict[str, Any], max_attempts: int,
                             proxy_env: dict[str, str] | None, faults: "Faults | None", frozen: list) -> int:
        hung = None
        for i in range(max_attempts):
            env = dict(self.env)
            manifest = faults.before_attempt(self, pub, i, env) if faults else None
            if i == 0:
                if first.get("failpoints"):
                    env["ATOMIC_PUBLISH_FAILPOINTS"] = first["failpoints"]
                if first.get("worker_local"):
                    manifest = self.manifest(pub.job, self.dir / "not-mounted", name="mapped")
                if proxy_env:
                    env.update(proxy_env)
            proc = self.start(pub, env, manifest)
            if faults:
                faults.started(self, pub, i)
            if i == 0 and first.get("kill_after") is not None:
                threading.Timer(first["kill_after"], _signal, (proc, signal.SIGKILL)).start()
            if i == 0 and first.get("stop_after") is not None:
                time.sleep(first["stop_after"])
                _signal(proc, signal.SIGSTOP)
                hung = proc
                frozen.append(proc)
                pub.attempts.append(-int(signal.SIGSTOP))
                continue
            if i == 0 and first.get("failpoints", "").find("=hang") >= 0:
                hung = proc
                frozen.append(proc)
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
            pub.outputs.append(out)
            if faults:
                faults.after_attempt(self, pub, i, proc.returncode, out)
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

    def audit(self, root: Path) -> None:
        """``atomic-publish audit --root ROOT --json``, a real process: exit 0 and no violation."""
        code, out = self.tool(["audit", "--root", str(root), "--json"])
        data = None
        for line in reversed(out.splitlines()):
            if line.startswith("{"):
                try:
                    data = json.loads(line)
                except ValueError:
                    pass
                break
        if code != 0 or not data or not data.get("ok"):
            found = "; ".join(f"inv {v['invariant']} {v['key']}: {v['detail']}" for v in (data or {}).get("violations", []))
            raise TrialFailed(f"audit --root {root} exited {code}: {found or out.strip()[-600:]}")

    def check(self, pubs: list[Publisher], faults: "Faults | None" = None) -> None:
        if faults and faults.problems:
            raise TrialFailed("; ".join(faults.problems))
        self.audit(self.root)
        if self.alias is not None:  # another path to the same storage must read exactly the same
            self.audit(self.alias)
        store = self.store()
        try:
            versions = []
            for pub in pubs:
                rec = store.records.get(pub.key)
                expected = "ROLLED_BACK" if self.rollback else "PUBLISHED"
                if rec is None or rec["state"] != expected:
                    raise TrialFailed(f"{pub.job}: record {rec and rec['state']}, expected {expected} "
                                      f"(attempts {pub.attempts}; {rec and rec.get('error')}){_last_output(pub)}")
                if pub.attempts[-1] != (78 if self.rollback else 0):
                    raise TrialFailed(f"{pub.job}: last exit {pub.attempts[-1]}{_last_output(pub)}")
                if self.rollback and NO_SPACE.search(json.dumps((rec.get("error") or {}), default=str)):
                    raise TrialFailed(f"{pub.job}: rolled back because of a full disk: {rec.get('error')}")
                if not self.rollback:
                    versions.append(rec["version"])
                    self.check_nothing_lost(store, pub, rec)
            if len(set(versions)) != len(versions):
                raise TrialFailed(f"two publishers share a version number: {versions}")
            self.check_hero(store, max(versions) if versions else 0)
            docs = store.catalog.project("demo").count_documents({"type": "version"})
            if docs != len(versions):
                raise TrialFailed(f"{docs} version documents for {len(versions)} published keys")
            for rep in store.catalog.project("demo").find({"type": "representation"}):
                paths = [f.get("path", "") for f in rep.get("files") or []]
                roots = json.dumps((rep.get("context") or {}).get("root"), default=str)
                if any(".." in p.replace("\\", "/").split("/") for p in paths) or ".." in roots:
                    raise TrialFailed(f"representation {rep['_id']} has '..' in its paths or roots "
                                      f"(files {paths}, context.root {roots}): not the same documents on "
                                      "every worker")
            deliveries = self.hook.deliveries()
            per_key: dict[tuple[str, str], int] = {}
            for d in deliveries:
                per_key[(d["body"]["key"], d["path"] + d["body"]["event"])] = \
                    per_key.get((d["body"]["key"], d["path"] + d["body"]["event"]), 0) + 1
            if any(n > 1 for n in per_key.values()):
                raise TrialFailed(f"a webhook event was delivered twice: {per_key}")
            if not self.rollback:
                for pub in pubs:
                    if per_key.get((pub.key, "/trackerpublish.committed")) != 1:
                        raise TrialFailed(f"{pub.key}: tracker saw no commit ({per_key})")
        finally:
            store.client.close()

    def check_hero(self, store, highest: int) -> None:
        """The product's hero mirrors the highest published version, in the store, on disk and in the
        catalogue, and nobody holds it (a rolled-back trial never made one); audit checked the files."""
        from ..wrapper.catalogs.base import Subject
        from ..wrapper.hero_swap import read_hero_marker

        doc = store.heroes.get("demo", "sh010", "renderCompMain")
        if not highest:
            if doc is not None:
                raise TrialFailed(f"nothing was published, but the store names hero v{doc.get('version')}")
            return
        marker = read_hero_marker((doc or {}).get("hero_dir") or "") or {}
        hero = store.catalog.hero_of(Subject("demo", "dm", "sh010", "shots/sq01", "renderCompMain", "render"))
        seen = ((doc or {}).get("version"), marker.get("version"), hero.number if hero else None)
        if seen != (highest, highest, highest) or (doc or {}).get("holder"):
            raise TrialFailed(f"hero (store, folder, catalogue) is {seen}, held by {(doc or {}).get('holder')}; "
                              f"the highest published version is {highest}")

    def check_nothing_lost(self, store, pub: Publisher, rec: dict[str, Any]) -> None:
        """Every file of a published version on disk with its recorded size and hash, and the bytes of
        its source (the renders of these trials never change)."""
        from ..wrapper.audit import _path_of
        from ..wrapper.staging import _hash_file

        version = store.catalog.project("demo").find_one({"type": "version", "data.atomic_publish.key": pub.key})
        if version is None:
            raise TrialFailed(f"{pub.key}: PUBLISHED without a version document")
        found = []
        for rep in store.catalog.project("demo").find({"type": "representation", "parent": version["_id"]}):
            for f in rep.get("files") or []:
                path = _path_of(f["path"], (rep.get("context") or {}).get("root") or {})
                try:
                    size = os.stat(path).st_size
                except OSError as exc:
                    raise TrialFailed(f"{pub.key} v{rec['version']}: published file {path} lost ({exc})") from None
                digest = _hash_file(path)
                if size != f.get("size") or (f.get("hash") and digest != f["hash"]):
                    raise TrialFailed(f"{pub.key}: published file {path} is {size} bytes {digest}, recorded "
                                      f"{f.get('size')} {f.get('hash')}")
                found.append(digest)
        sources = sorted(_hash_file(p) for p in self.files)
        if sorted(found) != sources:
            raise TrialFailed(f"{pub.key}: the published files are not the render's ({len(found)} files, "
                              f"{len(sources)} sources, contents differ)")


# -- the issue-16 fault classes -----------------------------------------------------------------
MAX_ATTEMPTS = 12


def draw_classes(rng: random.Random, jobs: list[str]) -> dict[str, Any]:
    """The issue-16 classes of one trial, drawn from its seed (every value is in the replay line)."""
    c: dict[str, Any] = {}
    if rng.random() < 0.4:
        c["gc"] = {"seed": rng.randrange(2 ** 31), "older_than": rng.choice([[0], [0, 0.5], [0, 1, 2], [2]]),
                   "interval": [0.05, round(rng.uniform(0.2, 0.8), 2)], "alias_share": 0.5, "skew_share": 0.3}
    if rng.random() < 0.35:
        c["skew"] = {job: {i: round(rng.choice((-1, 1)) * rng.uniform(120, 900), 1)
                           for i in range(MAX_ATTEMPTS) if rng.random() < 0.5} for job in jobs}
    if rng.random() < 0.2:
        c["disk"] = {"size": "16m", "fill_job": rng.randrange(len(jobs)), "fill_attempt": rng.choice([0, 0, 1]),
                     "fill_delay": round(rng.uniform(0.0, 0.3), 2), "full_for": round(rng.uniform(0.3, 4.0), 2),
                     "free_after": rng.randint(1, 3)}  # attempts that met the full disk (a farm admin frees space)
    if rng.random() < 0.3:
        c["alias"] = {"kind": "bind" if rng.random() < 0.7 else "symlink",
                      "attempts": {job: [i for i in range(MAX_ATTEMPTS) if rng.random() < 0.4] for job in jobs}}
    if rng.random() < 0.15:
        c["wrong_store"] = {"job": rng.randrange(len(jobs)), "after_attempt": rng.choice([0, 1])}
    refused = mount_refused() if ("disk" in c or (c.get("alias") or {}).get("kind") == "bind") else None
    if refused:  # the same seed draws the same classes everywhere; what cannot run here is said
        if "disk" in c:
            c["disk"] = {"skipped": f"mount refused: {refused}"}
        if (c.get("alias") or {}).get("kind") == "bind":
            c["alias"] = {"kind": "symlink", "attempts": {}, "note": f"bind mount refused: {refused}"}
    return c


class GcRunner(threading.Thread):
    """`atomic-publish gc --older-than 0s..2s --root R` again and again until stopped, then once more."""

    def __init__(self, trial: Trial, cfg: dict[str, Any]):
        super().__init__(daemon=True, name="gc")
        self.trial, self.cfg = trial, cfg
        self.rng = random.Random(cfg["seed"])
        self.halt = threading.Event()
        self.runs: list[dict[str, Any]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while True:
                with self.trial.gc_lock:
                    self.runs.append(self.once())
                if self.halt.wait(self.rng.uniform(*self.cfg["interval"])):
                    break
            with self.trial.gc_lock:  # and once after every publisher ended
                self.runs.append(self.once())
        except BaseException as exc:  # reported by the trial
            self.error = exc

    def once(self) -> dict[str, Any]:
        t = self.trial
        older = self.rng.choice(self.cfg["older_than"])
        root = t.alias if t.alias is not None and self.rng.random() < self.cfg["alias_share"] else t.root
        skew = round(self.rng.choice((-1, 1)) * self.rng.uniform(120, 900), 1) \
            if self.rng.random() < self.cfg["skew_share"] else 0.0
        env = dict(t.env)
        if skew:
            env["ATOMIC_PUBLISH_FAULT_CLOCK_SKEW"] = str(skew)
        argv = ["gc", "--older-than", f"{older}s", "--root", str(root)]
        code, out = t.tool(argv, env, timeout=120)
        return {"argv": argv, "skew": skew, "code": code, "out": out}

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=300)

    def problems(self) -> list[str]:
        found = [f"gc did not run ({self.error!r})" if self.error else ""]
        if not self.runs:
            found.append("gc never ran")
        for r in self.runs:
            if r["code"] != 0:
                found.append(f"`atomic-publish {' '.join(r['argv'])}` (clock skew {r['skew']} s) exited "
                             f"{r['code']}: {r['out'].strip()[-300:]}")
        return [f for f in found if f]


class Faults:
    """Applies a trial's drawn classes to its attempts and collects what each class must not produce."""

    def __init__(self, trial: Trial, classes: dict[str, Any], pubs: list[Publisher]):
        self.trial, self.classes, self.pubs = trial, classes, pubs
        self.problems: list[str] = []
        self.index = {p.job: i for i, p in enumerate(pubs)}
        self.disk = classes.get("disk") if "size" in (classes.get("disk") or {}) else None
        self.disk_met = 0
        self.fill_timer: threading.Timer | None = None
        self.free_timer: threading.Timer | None = None
        self.wrong = classes.get("wrong_store")
        self.wrong_done = False
        self.clock_warned = 0
        self.gc = GcRunner(trial, classes["gc"]) if "gc" in classes else None
        self.ended = False

    # what a trial's attempts see
    def skew(self, pub: Publisher, i: int) -> float:
        return float(((self.classes.get("skew") or {}).get(pub.job) or {}).get(i, 0.0))

    def before_attempt(self, trial: Trial, pub: Publisher, i: int, env: dict[str, str]) -> Path | None:
        skew = self.skew(pub, i)
        if skew:
            env["ATOMIC_PUBLISH_FAULT_CLOCK_SKEW"] = str(skew)
        alias = self.classes.get("alias") or {}
        if alias.get("kind") == "bind" and i in (alias.get("attempts") or {}).get(pub.job, []):
            return trial.manifest(pub.job, trial.alias, name="alias")  # "another worker" mapping the root there
        return None

    def started(self, trial: Trial, pub: Publisher, i: int) -> None:
        d = self.disk
        if d and self.index[pub.job] == d["fill_job"] and i == d["fill_attempt"] and self.fill_timer is None:
            self.fill_timer = threading.Timer(d["fill_delay"], self._fill)
            self.fill_timer.daemon = True
            self.fill_timer.start()

    def _fill(self) -> None:
        self.trial.ballast.fill(unless=lambda: self.ended)
        if self.ended:
            return
        self.free_timer = threading.Timer(self.disk["full_for"], self.trial.ballast.free, ("on time",))
        self.free_timer.daemon = True
        self.free_timer.start()

    def after_attempt(self, trial: Trial, pub: Publisher, i: int, code: int, out: str) -> None:
        result = next((ln for ln in reversed(out.splitlines()) if ln.startswith("[atomic-publish] result ")), "")
        if self.disk and NO_SPACE.search(out):
            self.disk_met += 1
            if self.disk_met >= self.disk["free_after"]:  # space freed before the farm's limit of failed attempts
                self.trial.ballast.free(f"after {self.disk_met} attempt(s) met it")
            final = "class=permanent" in result or "class=worker-local" in result
            blamed = NO_SPACE.search(result) or re.search(r"\bsource\b", result.split(":", 1)[-1])
            # a rollback trial's gate refuses on purpose (78): that ending is not the disk's doing; nor
            # is a death by signal (the plan's kill failpoint, a SIGKILL at a random time) or the plan's
            # exit failpoint reached after the disk was met (exit 70, seed 70677): the fault injected
            planned_exit = code == EXIT_FAILPOINT and i == 0 and "=exit" in (pub.plan.get("failpoints") or "")
            if (final and blamed) or (code >= 0 and code not in (0, EXIT_TRANSIENT, EXIT_BUSY)
                                      and not trial.rollback and not planned_exit):
                self.problems.append(f"{pub.job} attempt {i + 1} met the full disk and exited {code}, not transient "
                                     f"(nor completed after freeing): {result or out.strip()[-300:]}")
        skew = self.skew(pub, i)
        if abs(skew) >= 60 and "[atomic-publish] status publishing " in out:  # it connected and took the lease
            if CLOCK_WARNING.search(out):
                self.clock_warned += 1
            else:
                self.problems.append(f"{pub.job} attempt {i + 1} ran {skew:+.0f} s off the store's clock and its "
                                     "log does not say so")
        if self.wrong and not self.wrong_done and self.index[pub.job] == self.wrong["job"] \
                and i == self.wrong["after_attempt"] and code not in (0, 78) and not pub.plan.get("stop_after") \
                and "=hang" not in pub.plan.get("failpoints", ""):
            self.wrong_store(pub)  # mid-publish: the first store's staging is on disk

    def publisher_done(self, pub: Publisher) -> None:
        if self.wrong and not self.wrong_done and self.index[pub.job] == self.wrong["job"]:
            self.wrong_store(pub)  # the publish ended first: a late worker on the wrong store

    # the wrong-store class
    def _snapshot(self, pub: Publisher) -> dict[str, Any]:
        import pymongo

        from ..idempotency.keys import short_hash

        t = self.trial
        client = pymongo.MongoClient(t.uri, tz_aware=True)
        try:
            state = client[t.state_db]
            rec = state["records"].find_one({"_id": pub.key}) or {}
            cat = client[t.db]
            versions = list(cat["demo"].find({"type": "version", "data.atomic_publish.key": pub.key}))
            reps = list(cat["demo"].find({"type": "representation", "parent": {"$in": [v["_id"] for v in versions]}}))
            other = client[t.other_state_db]
            snap = {"record": {k: v for k, v in rec.items() if k not in ("lease", "updated_at")},
                    "reservations": sorted(map(repr, state["reservations"].find({"key": pub.key}))),
                    "staged": sorted(map(repr, state["staged_files"].find({"key": pub.key}))),
                    "catalogue": sorted(map(repr, versions + reps)),
                    "second_store_documents": {c: other[c].count_documents({}) for c in other.list_collection_names()}}
        finally:
            client.close()
        from ..wrapper.hero_swap import LEFTOVER_RE

        tag = short_hash(pub.key)
        disk = []
        for folder, dirs, files in os.walk(t.root):
            # the product's hero and what its moves keep beside it (named with the hash of the publish
            # that moved it) are the product's, not this key's: another publisher of the product moves
            # the hero and retires the previous content meanwhile (seed 40258)
            dirs[:] = [d for d in dirs if not LEFTOVER_RE.match(d)]
            rel = os.path.relpath(folder, t.root)
            marker = os.path.join(folder, ".atomic-publish.json")
            mine = tag in rel or (os.path.isfile(marker) and pub.key in open(marker, errors="replace").read())
            for name in dirs + files:
                path = os.path.join(folder, name)
                if mine or tag in name:
                    st = os.lstat(path)
                    size = 0 if stat.S_ISDIR(st.st_mode) else st.st_size
                    disk.append((os.path.join(rel, name), size, st.st_mtime_ns, st.st_ino))
        snap["disk"] = sorted(disk)
        return snap

    def wrong_store(self, pub: Publisher) -> None:
        """One worker on another store, given the job's --store-id: worker-local, and nothing changes."""
        self.wrong_done = True
        t = self.trial
        with t.gc_lock:  # gc would (rightly) change this key's folders meanwhile
            before = self._snapshot(pub)
            env = dict(t.env, ATOMIC_PUBLISH_STATE_DATABASE=t.other_state_db)
            proc = t.start(pub, env)
            out, _ = proc.communicate(timeout=120)
            after = self._snapshot(pub)
        if proc.returncode != EXIT_WORKER_LOCAL:
            self.problems.append(f"a worker on a second store exited {proc.returncode}, not worker-local "
                                 f"({EXIT_WORKER_LOCAL}): {out.strip()[-400:]}")
        elif "StoreUri" not in out and "ATOMIC_PUBLISH_STORE" not in out:
            self.problems.append(f"a worker on a second store does not name the setting to fix: {out.strip()[-300:]}")
        if any(after["second_store_documents"].values()):
            self.problems.append(f"a worker on a second store wrote into it: {after['second_store_documents']}")
        for part in ("record", "reservations", "staged", "catalogue", "disk"):
            if before[part] != after[part]:
                self.problems.append(f"a worker on a second store changed the first store's {part} of {pub.key}")

    # the trial's frame
    def begin(self) -> None:
        if self.wrong:
            self.trial.store_id = self.trial.read_store_id()
        if self.gc:
            self.gc.start()

    def end(self) -> None:
        """After every publisher ended: stop gc (after one last run), free the disk, collect problems."""
        if self.ended:
            return
        self.ended = True
        for timer in (self.fill_timer, self.free_timer):
            if timer is not None:
                timer.cancel()
        if self.trial.ballast is not None:
            self.trial.ballast.free("at the end")
        if self.gc:
            self.gc.stop()
            self.problems.extend(self.gc.problems())

    def summary(self) -> dict[str, Any]:
        s: dict[str, Any] = {}
        if self.gc:
            s["gc_runs"] = len(self.gc.runs)
        if self.disk:
            s["disk"] = {"met": self.disk_met, "events": list(self.trial.ballast.events)}
        if "skew" in self.classes:
            s["clock_warnings"] = self.clock_warned
        if self.wrong:
            s["wrong_store_checked"] = self.wrong_done
        return s


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
_STOPPING = threading.Event()  # set on SIGTERM: no attempt may start any more


def fork_server() -> ForkServer:
    """One fork server per process (concurrent publishers in a trial share it)."""
    global _SERVER
    with _SERVER_LOCK:
        if _STOPPING.is_set():  # a publisher or gc thread of the trial being interrupted
            raise TrialFailed("the soak is stopping: no new attempt")
        if _SERVER is None or _SERVER.proc.poll() is not None:
            _SERVER = ForkServer()
        return _SERVER


def close_fork_server() -> None:
    """End the fork server; it kills the attempts still running (stopped or hung) as it goes."""
    global _SERVER
    with _SERVER_LOCK:
        server, _SERVER = _SERVER, None
    if server is not None and server.proc.poll() is None:
        try:
            server.close()
        except (OSError, subprocess.TimeoutExpired):
            server.proc.kill()


def _signal(proc, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# -- the two suites --------------------------------------------------------------------------
def exhaustive_cases() -> list[tuple[str, str, bool]]:
    """(failpoint, action, rollback scenario): every failpoint with every action, read from the
    failpoints module when called (a rollback.* point runs in the rollback scenario)."""
    points, actions = _failpoints.POINTS, _failpoints.ACTIONS
    cases = [(p, a, False) for p in points if not p.startswith("rollback.") for a in actions]
    cases += [(p, a, True) for p in points if p.startswith("rollback.") for a in actions]
    return cases


# failpoints that fire only once the product has earlier versions: how many publish first, clean
# (hero.emptied: the third hero move empties the first hero's kept content)
PRIOR_PUBLISHES = {"hero.emptied": 2}


def run_exhaustive_case(uri: str, workdir: Path, point: str, action: str, rollback: bool) -> list[int]:
    trial = Trial(uri, workdir, rollback=rollback)
    try:
        name = "job-" + point.replace(".", "-") + "-" + action
        priors = [Publisher(f"{name}-prior{i}", Path()) for i in range(PRIOR_PUBLISHES.get(point, 0))]
        for prior in priors:
            prior.manifest = trial.manifest(prior.job)
            if trial.run_until_done(prior) != 0:
                raise TrialFailed(f"{point}={action}: the clean publish {prior.job} before it failed: {prior.attempts}")
        pub = Publisher(name, Path())
        pub.manifest = trial.manifest(pub.job)
        trial.run_until_done(pub, {"failpoints": f"{point}={action}"})
        trial.check([*priors, pub])
        return pub.attempts
    finally:
        trial.close()


OUTAGES = os.environ.get("ATOMIC_PUBLISH_FAULT_OUTAGES", "1") != "0"


def random_plan(rng: random.Random, points: tuple[str, ...]) -> dict[str, Any]:
    kind = rng.choice(["none", "failpoint", "failpoint", "two-failpoints", "kill", "stop", "worker-local",
                       "outage"])
    if kind == "failpoint":
        return {"failpoints": f"{rng.choice(points)}={rng.choice(ENDING_ACTIONS)}@{rng.randint(1, 2)}"}
    if kind == "two-failpoints":
        a, b = rng.sample(points, 2)
        return {"failpoints": f"{a}={rng.choice(ENDING_ACTIONS)}@{rng.randint(1, 3)},{b}=raise"}
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


def run_random_trial(uri: str, workdir: Path, seed: int, only: set[str] | None = None,
                     classes: dict[str, Any] | None = None) -> dict[str, Any]:
    """One seeded trial; raises TrialFailed naming the seed. ``only``: keep just these issue-16 classes
    (the draws stay the same, so a failing class can be replayed alone); ``classes``: use these
    instead of the drawn ones (the dedicated tests of each class)."""
    from .tcp_proxy import TcpProxy

    rng = random.Random(seed)
    rollback = rng.random() < 0.2
    frames = rng.randint(1, 8)
    points = HAPPY_POINTS + (ROLLBACK_POINTS if rollback else ())
    pubs = [Publisher(f"s{seed}-j{i}", Path()) for i in range(rng.choice([1, 1, 2, 3]))]
    plans = [random_plan(rng, points) for _ in pubs]
    drawn = draw_classes(rng, [p.job for p in pubs])
    classes = drawn if classes is None else classes
    if only is not None:
        classes = {k: v for k, v in classes.items() if k in only}
    replay = (f"replay: python -m atomic_publish.testing.faultsuite --seed {seed} --trials 1; plans {plans}; "
              f"classes {json.dumps(classes, sort_keys=True)}")
    proxy = None
    trial = None
    faults = None
    try:
        disk = (classes.get("disk") or {}).get("size")
        trial = Trial(uri, workdir, rollback=rollback, frames=frames, disk=disk,
                      alias=(classes.get("alias") or {}).get("kind"))
        for pub, plan in zip(pubs, plans):
            pub.manifest = trial.manifest(pub.job)
            pub.plan = plan
        faults = Faults(trial, classes, pubs)
        proxy_env = None
        outage = next((p for p in plans if "outage" in p), None)
        if outage:
            host, port = uri.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
            proxy = TcpProxy(host, int(port))
            proxy_env = {"ATOMIC_PUBLISH_STORE": f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true"
                                                 "&serverSelectionTimeoutMS=2000"}
            threading.Timer(outage["outage_at"], proxy.outage, (outage["outage"],)).start()
        errors: list[BaseException] = []
        faults.begin()

        def go(pub: Publisher, plan: dict[str, Any]) -> None:
            try:
                trial.run_until_done(pub, plan, proxy_env=proxy_env if "outage" in plan else None, faults=faults)
                faults.publisher_done(pub)
            except BaseException as exc:  # reported below with the seed
                errors.append(exc)

        threads = [threading.Thread(target=go, args=(p, plan), daemon=True) for p, plan in zip(pubs, plans)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        faults.end()
        if errors:
            raise errors[0]
        trial.check(pubs, faults)
        return {"seed": seed, "rollback": rollback, "plans": plans, "classes": classes,
                "attempts": [p.attempts for p in pubs], **faults.summary()}
    except TrialFailed as exc:
        seen = f"; attempts {[p.attempts for p in pubs]}" + (f"; {faults.summary()}" if faults else "")
        raise TrialFailed(f"trial seed {seed} failed ({replay}): {exc}{seen}") from None
    finally:
        if faults is not None:
            faults.end()
        if proxy:
            proxy.close()
        if trial is not None:
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


def _interrupted(signum, _frame):
    """SIGTERM: end the attempts first (closing the fork server's stdin kills them, a stopped zombie
    included, which could otherwise hold a store lock the clean-up waits for), then unwind."""
    _STOPPING.set()
    server = _SERVER
    if server is not None:
        try:
            server.proc.stdin.close()
        except Exception:  # mid-write from another thread: it is closed either way
            pass
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m atomic_publish.testing.faultsuite", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=200, help="random trials (default 200)")
    p.add_argument("--seed", type=int, default=1, help="first seed; trial i uses seed+i")
    p.add_argument("--exhaustive", action="store_true", help="also run every failpoint with every action")
    p.add_argument("--only", default=None, metavar="CLASSES",
                   help="keep only these issue-16 classes in the random trials (comma-separated: gc, skew, disk, "
                        "alias, wrong_store; 'none' for none), to replay one class of a failing seed alone")
    p.add_argument("--store", default=os.environ.get("MONGO_URI"))
    args = p.parse_args(argv)
    only = None if args.only is None else {c.strip() for c in args.only.split(",") if c.strip() not in ("", "none")}
    signal.signal(signal.SIGTERM, _interrupted)  # the finally below removes the data folder, as on Ctrl-C
    work = Path(tempfile.mkdtemp(prefix="atomic-publish-faults-"))
    server = None
    failures = 0
    started = time.monotonic()
    try:
        uri = args.store
        if not uri:
            server, uri = _start_server(work)
        why = mount_refused()
        if why:
            print(f"note: mounting is refused here ({why}): the full-disk class is skipped and the path alias is "
                  "a symlink only", flush=True)
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
                run_random_trial(uri, work / f"t{seed}", seed, only)
            except TrialFailed as exc:
                failures += 1
                print(f"FAIL {exc}", flush=True)
            if (i + 1) % 50 == 0:
                print(f"{i + 1} trials, {failures} failed, {time.monotonic() - started:.0f} s", flush=True)
        print(f"done: {args.trials} random trials{' + exhaustive' if args.exhaustive else ''}, "
              f"{failures} failed, {time.monotonic() - started:.0f} s", flush=True)
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc or 'SIGINT'}) after {time.monotonic() - started:.0f} s, {failures} failed; "
              f"removing {work}", flush=True)
        failures = failures or 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
        close_fork_server()  # and with it every attempt still running (a stopped zombie, a hung one)
        unmount_below(work)
        if server:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
