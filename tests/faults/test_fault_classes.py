"""One test per issue-16 fault class, each the scenario that broke a guarantee, run with real
processes, real signals, real mounts and a real MongoDB-wire server; plus the fault suite's own
plumbing (failpoint lists derived from the failpoints module, the soak cleaning up on SIGTERM).

The random trials (test_fault_suite.py) draw these classes at random; here each is forced, so
that a regression names its class.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pymongo
import pytest

from atomic_publish.testing import faultsuite as fs
from atomic_publish.wrapper import failpoints

NEEDS_MOUNT = pytest.mark.skipif(bool(fs.mount_refused()),
                                 reason=f"mounting a tmpfs or a bind mount is refused here ({fs.mount_refused()}); "
                                        "the tests run as root in CI")


def _pub(trial: fs.Trial, job: str) -> fs.Publisher:
    pub = fs.Publisher(job, Path())
    pub.manifest = trial.manifest(job)
    return pub


def _attempt(trial: fs.Trial, pub: fs.Publisher, env_extra: dict | None = None, manifest: Path | None = None,
             timeout: float = 120) -> tuple[int, str]:
    env = dict(trial.env, **(env_extra or {}))
    proc = trial.start(pub, env, manifest)
    out, _ = proc.communicate(timeout=timeout)
    pub.attempts.append(proc.returncode)
    pub.outputs.append(out)
    return proc.returncode, out


# -- the failpoint lists ------------------------------------------------------------------------
def test_failpoint_lists_are_derived_from_the_failpoints_module():
    assert set(fs.HAPPY_POINTS) | set(fs.ROLLBACK_POINTS) == set(failpoints.POINTS)
    assert not set(fs.HAPPY_POINTS) & set(fs.ROLLBACK_POINTS)
    assert all(p.startswith("rollback.") for p in fs.ROLLBACK_POINTS)
    assert list(fs.HAPPY_POINTS) == [p for p in failpoints.POINTS if not p.startswith("rollback.")]  # in order
    assert fs.ACTIONS == tuple(failpoints.ACTIONS)
    assert len(fs.exhaustive_cases()) == len(failpoints.POINTS) * len(failpoints.ACTIONS)


def test_a_new_failpoint_joins_the_matrix_by_itself(monkeypatch):
    monkeypatch.setitem(failpoints.POINTS, "commit.check", "a check before COMMITTING")
    monkeypatch.setitem(failpoints.POINTS, "rollback.extra", "one more rollback step")
    cases = fs.exhaustive_cases()
    assert {("commit.check", a, False) for a in failpoints.ACTIONS} <= set(cases)
    assert {("rollback.extra", a, True) for a in failpoints.ACTIONS} <= set(cases)


# -- (a) gc beside publishers ---------------------------------------------------------------------
def test_gc_never_removes_a_committing_version(mongo_uri, tmp_path):
    """The issue's worst case: COMMITTING, then an attempt on a worker whose mount is an empty folder,
    then `gc --older-than 0s`: the only copy of the version must survive, and the next attempt on a
    good worker publishes it."""
    trial = fs.Trial(mongo_uri, tmp_path, frames=3, alias="symlink")
    try:
        pub = _pub(trial, "committing")
        code, out = _attempt(trial, pub, {"ATOMIC_PUBLISH_FAILPOINTS": "commit.begin=exit"})
        assert code == 70, out  # died just after the point of no return
        empty_mount = tmp_path / "empty-mount"
        empty_mount.mkdir()  # an NFS mount that did not come up: an empty folder where the root should be
        code, out = _attempt(trial, pub, manifest=trial.manifest(pub.job, empty_mount, name="empty"))
        assert code == fs.EXIT_WORKER_LOCAL, f"a worker that cannot see the storage must be worker-local: {out}"
        time.sleep(1.2)  # the lease of the dead attempt expires
        for root in (trial.root, trial.alias):
            code, out = trial.tool(["gc", "--older-than", "0s", "--root", str(root)])
            assert code == 0, out
        store = trial.store()
        try:
            rec = store.records.get(pub.key)
            assert rec["state"] == "COMMITTING"
        finally:
            store.client.close()
        code, out = _attempt(trial, pub)
        assert code == 0, out
        trial.check([pub])
    finally:
        trial.close()


@pytest.mark.parametrize("seed", [11, 29, 58])
def test_gc_runs_again_and_again_beside_publishers(mongo_uri, tmp_path, seed):
    classes = {"gc": {"seed": seed, "older_than": [0, 0.5], "interval": [0.02, 0.2], "alias_share": 0.5,
                      "skew_share": 0.3}, "alias": {"kind": "symlink", "attempts": {}}}
    result = fs.run_random_trial(mongo_uri, tmp_path, seed, classes=classes)
    assert result["gc_runs"] >= 2


# -- (b) clock skew -------------------------------------------------------------------------------
def _hold_the_lease(trial: fs.Trial, pub: fs.Publisher, skew: float = 0.0):
    """An attempt that took a 30 s lease and is then frozen (SIGSTOP): its lease is live for 30 s by
    the store's clock, whatever the clocks of the hosts that look at it."""
    env = dict(trial.env, ATOMIC_PUBLISH_FAULT_CLOCK_SKEW=str(skew))
    holder = trial.start(pub, env, extra=["--lease-seconds", "30"])
    for line in holder.stdout:
        if "status publishing" in line:
            os.killpg(holder.pid, signal.SIGSTOP)
            return holder
    raise AssertionError(f"the holder ended before it took the lease: {holder.communicate()[0]}")


def _release(holder) -> str:
    os.killpg(holder.pid, signal.SIGCONT)
    out, _ = holder.communicate(timeout=120)
    assert holder.returncode == 0, out
    return out


@pytest.mark.parametrize("holder_skew, taker_skew", [(0, 600), (-600, 0)],
                         ids=["a worker 10 min fast", "a holder 10 min slow"])
def test_a_skewed_clock_never_takes_a_live_lease(mongo_uri, tmp_path, holder_skew, taker_skew):
    """A fast worker would see a live lease as expired; a slow holder would write leases already
    expired. Leases are judged by the store's clock, so the second worker is busy (76) and the
    first publishes at epoch 1."""
    trial = fs.Trial(mongo_uri, tmp_path, frames=3)
    try:
        pub = _pub(trial, "skew")
        holder = _hold_the_lease(trial, pub, holder_skew)
        try:
            code, out = _attempt(trial, pub, {"ATOMIC_PUBLISH_FAULT_CLOCK_SKEW": str(taker_skew)})
        finally:
            held = _release(holder)
        assert code == fs.EXIT_BUSY, f"the worker {taker_skew:+} s off took a lease live for 30 s: {out}"
        if taker_skew:
            assert fs.CLOCK_WARNING.search(out), out
        if holder_skew:
            assert fs.CLOCK_WARNING.search(held), held
        store = trial.store()
        try:
            assert store.records.get(pub.key)["epoch"] == 1
        finally:
            store.client.close()
        pub.attempts.append(0)
        trial.check([pub])
    finally:
        trial.close()


def test_a_fast_hosts_gc_releases_no_live_lease(mongo_uri, tmp_path):
    trial = fs.Trial(mongo_uri, tmp_path, frames=3)
    try:
        pub = _pub(trial, "gcskew")
        holder = _hold_the_lease(trial, pub)
        try:
            code, out = trial.tool(["gc", "--older-than", "0s", "--root", str(trial.root)],
                                   dict(trial.env, ATOMIC_PUBLISH_FAULT_CLOCK_SKEW="900"))
            assert code == 0, out
            assert "expired lease of" not in out, f"a host 15 min fast released a live lease: {out}"
            taken, taker = _attempt(trial, pub)
        finally:
            _release(holder)
        assert taken == fs.EXIT_BUSY, f"after a fast host's gc, another worker took the live lease: {taker}"
        pub.attempts.append(0)
        trial.check([pub])
    finally:
        trial.close()


# -- (c) a full disk ------------------------------------------------------------------------------
@NEEDS_MOUNT
@pytest.mark.parametrize("when", ["before", "while staging"])
def test_a_full_disk_is_transient_and_the_publish_resumes_once_space_is_freed(mongo_uri, tmp_path, when):
    trial = fs.Trial(mongo_uri, tmp_path, frames=12, size=512 * 1024, disk="8m")
    try:
        pub = _pub(trial, "full")
        if when == "before":
            trial.ballast.fill()
            code, out = _attempt(trial, pub)
        else:
            proc = trial.start(pub)
            for line in proc.stdout:
                if "status reserved" in line:  # frozen for the few ms the ballast takes, then it stages
                    os.killpg(proc.pid, signal.SIGSTOP)
                    try:
                        trial.ballast.fill()
                    finally:
                        os.killpg(proc.pid, signal.SIGCONT)
                    break
            out, _ = proc.communicate(timeout=120)
            code = proc.returncode
            pub.attempts.append(code)
        assert fs.NO_SPACE.search(out), out
        assert code == fs.EXIT_TRANSIENT, f"a full disk must be transient: {out}"
        assert "class=transient" in out and "source" not in out.split("result", 1)[-1].split(";")[0], out
        trial.ballast.free()
        code, out = _attempt(trial, pub)
        assert code == 0, out
        trial.check([pub])
        store = trial.store()
        try:
            rec = store.records.get(pub.key)
            assert not any(a.get("outcome") == "permanent" for a in rec["attempts"]), rec["attempts"]
        finally:
            store.client.close()
    finally:
        trial.close()


@NEEDS_MOUNT
def test_random_trials_with_a_full_disk(mongo_uri, tmp_path):
    for seed in (3, 17):
        classes = {"disk": {"size": "16m", "fill_job": 0, "fill_attempt": 0, "fill_delay": 0.05, "full_for": 2.0,
                            "free_after": 2}}
        result = fs.run_random_trial(mongo_uri, tmp_path / str(seed), seed, classes=classes)
        assert result["disk"]["events"] and result["disk"]["events"][0].startswith("filled"), result


# -- (d) a publish root reachable through two paths -------------------------------------------------
@NEEDS_MOUNT
def test_a_roll_forward_through_a_bind_mount_writes_the_same_documents(mongo_uri, tmp_path):
    trial = fs.Trial(mongo_uri, tmp_path, frames=3, alias="bind")
    try:
        pub = _pub(trial, "alias")
        code, out = _attempt(trial, pub, {"ATOMIC_PUBLISH_FAILPOINTS": "commit.rename=exit"})
        assert code == 70, out
        time.sleep(1.2)
        code, out = _attempt(trial, pub, manifest=trial.manifest(pub.job, trial.alias, name="alias"))
        assert code == 0, out
        trial.check([pub])  # audits the real root and the alias; no '..' in paths or roots
        store = trial.store()
        try:
            rep = store.catalog.project("demo").find_one({"type": "representation"})
            assert all(f["path"].startswith("{root[") and "/../" not in f["path"] for f in rep["files"]), rep["files"]
        finally:
            store.client.close()
    finally:
        trial.close()


@pytest.mark.parametrize("kind", ["symlink", pytest.param("bind", marks=NEEDS_MOUNT)])
def test_gc_and_audit_through_an_alias_see_the_live_folders(mongo_uri, tmp_path, kind):
    trial = fs.Trial(mongo_uri, tmp_path, frames=3, alias=kind)
    try:
        pub = _pub(trial, "live")
        code, out = _attempt(trial, pub, {"ATOMIC_PUBLISH_FAILPOINTS": "staged=exit"})
        assert code == 70, out
        staging = [p for p in trial.root.rglob(".v*.staging-*") if p.is_dir()]
        assert staging, "the staged attempt left its staging folder"
        code, out = trial.tool(["gc", "--older-than", "0s", "--root", str(trial.alias)])
        assert code == 0, out
        assert all(p.is_dir() for p in staging), f"gc through the alias removed a live record's staging: {out}"
        code, out = trial.tool(["audit", "--root", str(trial.alias)])
        assert "belongs to no record" not in out, out
        code, out = _attempt(trial, pub)
        assert code == 0, out
        trial.check([pub])
    finally:
        trial.close()


# -- (e) a worker on a second store -----------------------------------------------------------------
@pytest.mark.parametrize("after", ["staged", "published"])
def test_a_worker_on_a_second_store_changes_nothing(mongo_uri, tmp_path, after):
    trial = fs.Trial(mongo_uri, tmp_path, frames=4)
    try:
        pub = _pub(trial, "second")
        faults = fs.Faults(trial, {"wrong_store": {"job": 0, "after_attempt": 0}}, [pub])
        faults.begin()  # reads the store id; every attempt gives it (--store-id), as the job does
        assert trial.store_id
        code, out = _attempt(trial, pub, {"ATOMIC_PUBLISH_FAILPOINTS": "staged=exit"} if after == "staged" else None)
        assert code == (70 if after == "staged" else 0), out
        faults.wrong_store(pub)
        assert faults.wrong_done and not faults.problems, faults.problems
        if after == "staged":
            code, out = _attempt(trial, pub)
            assert code == 0, out
        faults.end()
        trial.check([pub], faults)
        client = pymongo.MongoClient(mongo_uri)
        try:
            other = client[trial.other_state_db]
            assert all(other[c].count_documents({}) == 0 for c in other.list_collection_names())
        finally:
            client.close()
    finally:
        trial.close()


# -- the soak's own clean-up ---------------------------------------------------------------------
def test_the_soak_removes_its_folder_and_server_on_sigterm(tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))
    env.pop("MONGO_URI", None)
    proc = subprocess.Popen([sys.executable, "-m", "atomic_publish.testing.faultsuite", "--trials", "500",
                             "--seed", "5"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240  # its own SecantusDB starts first (slow on a loaded machine)
        work = None
        while time.monotonic() < deadline:
            found = list(tmp_path.glob("atomic-publish-faults-*"))
            if found and (found[0] / "data").exists() and any(found[0].glob("t*")):
                work = found[0]
                break
            time.sleep(0.2)
        if work is None:
            proc.send_signal(signal.SIGTERM)  # let it stop its server and remove its folder
            pytest.fail(f"the soak did not start its trials in 240 s: {proc.communicate(timeout=30)[0][-2000:]}; "
                        f"{sorted(str(p) for p in tmp_path.rglob('*'))[:20]}")
        time.sleep(1.0)  # mid-trial
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0, out
    assert not work.exists(), f"the soak left {work}: {out[-2000:]}"
    assert "interrupted" in out, out
    def leftovers() -> list[str]:
        """Processes whose command line or open files name the soak's folder (its server, an attempt
        left stopped or hung with its log open)."""
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmd = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
                files = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            except OSError:
                continue
            if str(work) in cmd or any(str(work) in f for f in files):
                found.append(f"{pid}: {cmd.replace(chr(0), ' ')}")
        return found

    deadline = time.monotonic() + 10  # the fork server kills the attempts as it sees its stdin close
    while leftovers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not leftovers(), f"processes of the soak still run: {leftovers()}"
    with open("/proc/self/mounts") as fh:
        assert str(work) not in fh.read(), "the soak left a mount behind"


# -- a zombie frozen inside a store transaction -------------------------------------------------------
@pytest.mark.parametrize("delay_ms", [3])
def test_a_worker_frozen_inside_a_store_transaction_does_not_block_the_takeover(mongo_uri, tmp_path, delay_ms):
    """SIGSTOP a few ms after the lease is taken, inside the reservation's transaction: the farm's
    next attempt must take over once the lease expires and publish while the zombie stays frozen
    (on SecantusDB the frozen transaction blocked every later write of the key for 60 s per try,
    so the random trials' "stop" plans failed after 12 attempts; found by the fault suite, seed 1068)."""
    trial = fs.Trial(mongo_uri, tmp_path, frames=2)
    try:
        pub = _pub(trial, "frozen")
        zombie = trial.start(pub)
        for line in zombie.stdout:
            if "status publishing" in line:
                time.sleep(delay_ms / 1000)
                os.killpg(zombie.pid, signal.SIGSTOP)
                break
        try:
            time.sleep(1.2)  # its 1 s lease expires
            started = time.monotonic()
            second = fs.Publisher(pub.job, pub.manifest)
            assert trial.run_until_done(second, max_attempts=2) == 0, second.outputs
            assert time.monotonic() - started < 45, f"the takeover took {time.monotonic() - started:.0f} s"
        finally:
            os.killpg(zombie.pid, signal.SIGCONT)
        out, _ = zombie.communicate(timeout=120)
        assert zombie.returncode in (fs.EXIT_TRANSIENT, fs.EXIT_BUSY), out  # it changes nothing more
        trial.check([second])
    finally:
        if zombie.poll() is None:
            os.killpg(zombie.pid, signal.SIGKILL)
        trial.close()
