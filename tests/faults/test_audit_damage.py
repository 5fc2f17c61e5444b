"""`atomic-publish audit` detects each damage the issue-16 bugs caused (issue 16 item 11).

Each test builds the state a bug left, with real attempts (failpoints, real processes) and then
the damage itself done to the store or the disk the way the bug did it, and expects the
violation from a real `atomic-publish audit` process. The last one checks the other direction:
audit given another path to the same storage (a symlink or a bind mount of the root) reports
nothing extra on a healthy tree.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pymongo
import pytest

from atomic_publish.testing import faultsuite as fs
from atomic_publish.idempotency.records import utcnow

NEEDS_MOUNT = pytest.mark.skipif(bool(fs.mount_refused()),
                                 reason=f"mounting a bind mount is refused here ({fs.mount_refused()}); the tests "
                                        "run as root in CI")


def _pub(trial: fs.Trial, job: str, **manifest_fields) -> fs.Publisher:
    pub = fs.Publisher(job, Path())
    pub.manifest = trial.manifest(job)
    if manifest_fields:
        data = json.loads(pub.manifest.read_text())
        data.update(manifest_fields)
        pub.manifest.write_text(json.dumps(data))
    return pub


def _attempt(trial: fs.Trial, pub: fs.Publisher, failpoints: str | None = None) -> tuple[int, str]:
    env = dict(trial.env)
    if failpoints:
        env["ATOMIC_PUBLISH_FAILPOINTS"] = failpoints
    proc = trial.start(pub, env)
    out, _ = proc.communicate(timeout=120)
    return proc.returncode, out


def _audit(trial: fs.Trial, root: Path, *extra: str) -> tuple[int, dict]:
    code, out = trial.tool(["audit", "--root", str(root), "--json", *extra])
    line = next(ln for ln in reversed(out.splitlines()) if ln.startswith("{"))
    return code, json.loads(line)


def _record(trial: fs.Trial, key: str) -> dict:
    store = trial.store()
    try:
        return store.records.get(key)
    finally:
        store.client.close()


@pytest.fixture
def trial(mongo_uri, tmp_path):
    t = fs.Trial(mongo_uri, tmp_path / "world", frames=3)
    yield t
    t.close()


@pytest.mark.parametrize("died_at", ["commit.begin", "commit.rename"])
def test_a_committing_version_whose_files_are_gone_is_reported_lost(trial, died_at):
    """What gc did: COMMITTING, and the only copy (the staging folder, or the final folder once
    renamed) removed. Invariant 7: the version can no longer roll forward; audit must say so."""
    pub = _pub(trial, "lost")
    code, out = _attempt(trial, pub, f"{died_at}=exit")
    assert code == 70, out
    rec = _record(trial, pub.key)
    assert rec["state"] == "COMMITTING", rec["state"]
    code, clean = _audit(trial, trial.root)
    assert code == 0 and clean["ok"], clean  # healthy: a roll-forward would finish it
    doomed = [f for f in trial.root.rglob("*") if f.is_dir() and (".staging-" in f.name or f.name.startswith("v0"))]
    assert doomed, "the attempt left neither a staging nor a final folder"
    for folder in doomed:
        shutil.rmtree(folder)
    code, report = _audit(trial, trial.root)
    assert code == 1, report
    lost = [v for v in report["violations"] if v["invariant"] == 7 and v["key"] == pub.key]
    assert lost, f"a COMMITTING version without its files is not reported: {report['violations']}"
    assert "lost" in lost[0]["detail"] or "neither" in lost[0]["detail"], lost[0]


def test_a_reservation_inserted_after_the_rollback_is_reported(trial):
    """What a zombie did: a rolled-back key's reservation written after the rollback released it
    (invariants 3 and 9): the number stays blocked forever."""
    trial.rollback = True
    trial.hook.set_faults({"kind": "http_error", "status": 422, "path": "/review", "count": None})
    pub = _pub(trial, "zombie")
    code, out = _attempt(trial, pub)
    assert code == fs.EXIT_PERMANENT, out
    assert _record(trial, pub.key)["state"] == "ROLLED_BACK"
    code, clean = _audit(trial, trial.root)
    assert code == 0 and clean["ok"], clean
    client = pymongo.MongoClient(trial.uri, tz_aware=True)
    try:
        rec = client[trial.state_db]["records"].find_one({"_id": pub.key})
        client[trial.state_db]["reservations"].insert_one(
            {"project": "demo", "asset": "sh010", "subset": "renderCompMain", "version": 1, "key": pub.key,
             "state": "reserved", "epoch": rec["epoch"], "created_at": utcnow()})
    finally:
        client.close()
    code, report = _audit(trial, trial.root)
    assert code == 1, report
    assert any(v["invariant"] in (3, 9) and v["key"] == pub.key and "reservation" in v["detail"]
               for v in report["violations"]), report["violations"]


@pytest.mark.parametrize("audit_mode", [(), ("--no-hash",)], ids=["hashes", "no-hash"])
def test_a_hardlinked_file_rewritten_keeping_size_and_mtime_is_reported(trial, audit_mode):
    """verify=size in hardlink mode records no hash to compare: a render rewritten in place (the
    published file is the same inode) with its size and dates put back must still be found: the
    change time (ctime), which no user can set back, is later than the commit's."""
    pub = _pub(trial, "linked", link_mode="hardlink", verify="size")
    code, out = _attempt(trial, pub)
    assert code == 0, out
    code, clean = _audit(trial, trial.root, *audit_mode)
    assert code == 0 and clean["ok"], clean
    published = sorted(p for p in trial.root.rglob("*.exr")  # the version's files, not the hero's links
                       if ".staging-" not in str(p) and "hero" not in p.parent.name)
    assert any(os.stat(p).st_nlink > 1 for p in published), "hardlink mode did not link"
    victim = next(p for p in published if os.stat(p).st_nlink > 1)
    before = os.stat(victim)
    time.sleep(0.05)
    with open(victim, "r+b") as fh:  # a re-render over the same file: same size, other bytes
        fh.write(os.urandom(before.st_size))
    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))  # dates put back
    after = os.stat(victim)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    code, report = _audit(trial, trial.root, *audit_mode)
    assert code == 1, report
    assert any(v["invariant"] == 5 and v["key"] == pub.key and str(victim) in v["detail"]
               for v in report["violations"]), report["violations"]


@pytest.mark.parametrize("kind", ["symlink", pytest.param("bind", marks=NEEDS_MOUNT)])
def test_audit_through_an_alias_of_the_root_reports_nothing_extra(mongo_uri, tmp_path, kind):
    """A healthy tree (two published versions, one unfinished publish with its staging folder, one
    COMMITTING version waiting for its roll-forward) reads the same through another path."""
    trial = fs.Trial(mongo_uri, tmp_path / "world", frames=3, alias=kind)
    try:
        for job in ("a", "b"):
            code, out = _attempt(trial, _pub(trial, job))
            assert code == 0, out
        code, out = _attempt(trial, _pub(trial, "unfinished"), "staged=exit")
        assert code == 70, out
        code, out = _attempt(trial, _pub(trial, "committing"), "commit.begin=exit")
        assert code == 70, out
        code_real, real = _audit(trial, trial.root)
        code_alias, alias = _audit(trial, trial.alias)
        assert code_real == 0 and real["violations"] == [], real
        assert code_alias == 0 and alias["violations"] == [], f"audit --root {trial.alias} ({kind}): {alias}"
        assert alias["checked"] == real["checked"], (alias["checked"], real["checked"])
    finally:
        trial.close()
