"""Machinery of the hostile-input corpus: one line per case, all cases run as real processes.

A case is data: an id, a ``setup`` that mutates a fresh synthetic render and returns the manifest
to write (a dict -> JSON, ``bytes``/``str`` -> written as is), the exit code expected, the exact
error fragment expected in the wrapper's message and, for a case the product does not handle
yet, ``needs`` (what is missing; the test is then a strict xfail).

Every case gets its own folder and its own databases on the shared MongoDB-wire server. The
wrapper processes of a corpus run concurrently (the suite must stay fast on 2 cores); each
test then checks one case's outcome: exit code, message, result line, and no trace (the whole
case folder unchanged, no record, no reservation, no catalog collection).
"""
from __future__ import annotations

import copy
import json
import os
import stat
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pymongo
import pytest

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from helpers import Render  # noqa: E402

PARALLEL = 3
NOTHING_WRITTEN = "nothing was written; a farm fails the job without further retries"

Setup = Callable[[Render, dict], Any]


@dataclass(frozen=True)
class Case:
    id: str
    setup: Setup
    exit: int
    message: str
    needs: str | None = None
    job: str = "job1"
    task: str = "0"
    env: dict[str, str] = field(default_factory=dict)


def C(id: str, setup: Setup, exit: int, message: str, needs: str | None = None, **kw: Any) -> Case:
    """One corpus line."""
    return Case(id, setup, exit, message, needs, **kw)


# -- setup builders: each returns a setup function -------------------------------------------------
def m(**overrides: Any) -> Setup:
    """The render's valid manifest with top-level fields replaced."""
    def setup(render: Render, data: dict) -> dict:
        data.update(copy.deepcopy(overrides))
        return data
    return setup


def drop(*path: Any) -> Setup:
    """The manifest without the field at ``path`` (keys and list indexes)."""
    def setup(render: Render, data: dict) -> dict:
        node = data
        for p in path[:-1]:
            node = node[p]
        del node[path[-1]]
        return data
    return setup


def put(*path: Any, value: Any) -> Setup:
    """The manifest with the field at ``path`` set to ``value``."""
    def setup(render: Render, data: dict) -> dict:
        node = data
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = copy.deepcopy(value)
        return data
    return setup


def raw(blob: bytes | str) -> Setup:
    """A manifest file with exactly these bytes."""
    return lambda render, data: blob


def fn(f: Callable[[Render, dict], Any]) -> Setup:
    """Any other setup (filesystem changes); returns the manifest."""
    return f


def then(*setups: Setup) -> Setup:
    def setup(render: Render, data: dict) -> Any:
        for s in setups:
            data = s(render, data)
        return data
    return setup


def params(cases: list[Case]) -> list[Any]:
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    return [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=f"needs: {c.needs}")]
                         if c.needs else []) for c in cases]


# -- running ---------------------------------------------------------------------------------------
def snapshot(root: Path) -> list[tuple[str, str, Any]]:
    """Everything under ``root`` (not following symlinks): path, kind, size or link target."""
    out = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            p = os.path.join(folder, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISLNK(st.st_mode):
                out.append((rel, "link", os.readlink(p)))
            elif stat.S_ISDIR(st.st_mode):
                out.append((rel, "dir", None))
            elif stat.S_ISREG(st.st_mode):
                out.append((rel, "file", st.st_size))
            else:
                out.append((rel, "special", stat.S_IFMT(st.st_mode)))
    return sorted(out)


def case_env(mongo_uri: str, home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    tag = uuid.uuid4().hex[:10]
    e = {k: v for k, v in os.environ.items() if not k.startswith(("ATOMIC_PUBLISH_", "STANDIN_"))}
    e.update(ATOMIC_PUBLISH_STORE=mongo_uri, ATOMIC_PUBLISH_DATABASE=f"avalon_{tag}",
             ATOMIC_PUBLISH_STATE_DATABASE=f"ap_{tag}", ATOMIC_PUBLISH_HOME=str(home),
             PYTHONUNBUFFERED="1")
    e.update(extra or {})
    return e


@dataclass
class Result:
    case: Case
    root: Path
    returncode: int | None
    stdout: str
    stderr: str
    before: list
    after: list
    records: int
    reservations: int
    collections: list[str]
    error: str | None = None

    @property
    def out(self) -> dict:
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        try:
            return json.loads(lines[-1])
        except (IndexError, ValueError):
            return {"message": f"(no JSON) exit={self.returncode}\n{self.stdout}\n{self.stderr}"}

    def result_lines(self) -> list[str]:
        return [line for line in self.stdout.splitlines() if line.startswith("[atomic-publish] result ")]

    def describe(self) -> str:
        return f"exit={self.returncode}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr[-3000:]}"


def write_manifest(render: Render, manifest: Any) -> Path:
    path = render.root / "manifest.json"
    if isinstance(manifest, bytes):
        path.write_bytes(manifest)
    elif isinstance(manifest, str):
        path.write_bytes(manifest.encode("utf-8", "surrogatepass"))
    else:
        path.write_text(json.dumps(manifest))  # ensure_ascii: control chars and surrogates as escapes
    return path


ZYGOTE = Path(__file__).resolve().parent / "zygote.py"


def run_many(requests: list[dict], parallel: int = PARALLEL, timeout: float = 60.0) -> list[int | None]:
    """Run CLI command lines as forked real processes (see zygote.py); returns their exit codes."""
    if not requests:
        return []
    proc = subprocess.run([sys.executable, str(ZYGOTE), str(parallel), str(timeout)],
                          input=json.dumps(requests), capture_output=True, text=True,
                          timeout=timeout * len(requests) + 60)
    assert proc.returncode == 0, f"zygote failed: {proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


def prepare_case(case: Case, folder: Path, mongo_uri: str) -> dict:
    """Set the case up on disk; returns its run request (or an error)."""
    render = Render(folder)
    try:
        manifest = case.setup(render, render.manifest())
        path = write_manifest(render, manifest)
    except Exception as exc:  # a broken setup is a failure of that case only
        return {"error": f"setup failed: {exc!r}"}
    env = case_env(mongo_uri, folder.parent / f"{folder.name}.home", case.env)
    argv = ["run", "--manifest", str(path), "--job-id", case.job, "--task-id", case.task,
            "--worker", "hostile-worker", "--json"]
    return {"argv": argv, "env": env, "cwd": str(folder), "stdout": str(folder.parent / f"{folder.name}.out"),
            "stderr": str(folder.parent / f"{folder.name}.err"), "before": snapshot(folder)}


def collect(case: Case, folder: Path, req: dict, code: int | None, client: pymongo.MongoClient) -> Result:
    if "error" in req:
        return Result(case, folder, None, "", "", [], [], 0, 0, [], error=req["error"])
    env = req["env"]
    state = client[env["ATOMIC_PUBLISH_STATE_DATABASE"]]
    records = state["records"].count_documents({})
    reservations = state["reservations"].count_documents({})
    collections = client[env["ATOMIC_PUBLISH_DATABASE"]].list_collection_names()
    client.drop_database(env["ATOMIC_PUBLISH_DATABASE"])
    client.drop_database(env["ATOMIC_PUBLISH_STATE_DATABASE"])
    stdout = Path(req["stdout"]).read_text(errors="replace")
    stderr = Path(req["stderr"]).read_text(errors="replace")
    return Result(case, folder, code, stdout, stderr, req["before"], snapshot(folder),
                  records, reservations, collections)


def run_corpus(cases: list[Case], base: Path, mongo_uri: str) -> dict[str, Result]:
    folders = [base / f"c{i:03d}" for i in range(len(cases))]
    reqs = [prepare_case(c, f, mongo_uri) for c, f in zip(cases, folders)]
    runnable = [r for r in reqs if "error" not in r]
    codes = iter(run_many([{k: r[k] for k in ("argv", "env", "cwd", "stdout", "stderr")} for r in runnable]))
    client = pymongo.MongoClient(mongo_uri)
    try:
        return {c.id: collect(c, f, r, None if "error" in r else next(codes), client)
                for c, f, r in zip(cases, folders, reqs)}
    finally:
        client.close()


def check_result(r: Result) -> None:
    """The contract of a bad input: exit code, exact error, one result line, no trace."""
    assert r.error is None, r.error
    assert r.returncode == r.case.exit, r.describe()
    message = r.out.get("message", "")
    assert r.case.message in message, f"expected {r.case.message!r} in:\n{message}\n{r.describe()}"
    assert len(r.result_lines()) == 1, r.describe()
    assert NOTHING_WRITTEN in r.result_lines()[0], r.describe()
    assert r.after == r.before, f"files changed:\nbefore {r.before}\nafter  {r.after}"
    assert (r.records, r.reservations, r.collections) == (0, 0, []), \
        f"store not clean: {r.records} record(s), {r.reservations} reservation(s), {r.collections}"
