"""AYON end to end on the local farm (issue 15 item 8): real worker processes, real signals, the
real wrapper, the AtomicPublish plugin with ayon-deadline's job (only Plugin changed), and either
the local AYON server (started here, reached through the real ``ayon-python-api`` client by the
workers and by this test) or OpenPype's MongoDB documents.

The API key reaches the farm's plugin configuration (0600, like Monitor > Configure Plugins)
through the farm process's environment, never an argument: ``_FARM`` below reads it and adds the
``--config AyonApiKey=...`` entry inside the process, where no ``ps`` shows it.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pymongo
import pytest

from atomic_publish.deadline_plugin.jobfiles import write_key_value_file
from atomic_publish.deadline_plugin.resources import ensure_shim_on_path
from atomic_publish.idempotency.records import PUBLISHED as R_PUBLISHED
from atomic_publish.testing.fake_ayon import FakeAyonServer

ensure_shim_on_path()  # tests/deadline/test_ayon_jobs imports the Deadline API shim
from deadline.test_ayon_jobs import ayon_publish_job  # noqa: E402  the job ayon-deadline submits
from helpers import last_json, run_cli  # noqa: E402
from test_metadata import AyonRender  # noqa: E402

API_KEY = "ak-" + "0d15ea5e" * 6
PROJECT = "demo"
AOVS = ("beauty", "Z", "N")
PRODUCTS = tuple(f"renderMain_{aov}" for aov in AOVS)
FOLDER = "shots/sq01/sh010"

_FARM = ("import os, sys\n"
         "from atomic_publish.deadline_plugin.farm.cli import standalone\n"
         "key = os.environ.pop('ATOMIC_PUBLISH_TEST_AYON_KEY', '')\n"
         "sys.exit(standalone(sys.argv[1:] + (['--config', 'AyonApiKey=' + key] if key else [])))\n")


class Side:
    """What the catalogue holds, whichever it is: versions per product, another client's publish."""

    def __init__(self, name: str, tmp_path: Path, env: dict, store, ayon: AyonRender):
        self.name, self.env, self.store, self.ayon = name, env, store, ayon
        self.server = None
        if name == "ayon":
            self.server = FakeAyonServer(tmp_path / "ayon-data", api_key=API_KEY).__enter__()
            self.server.seed(PROJECT, folders=[FOLDER], tasks=["lighting"], code="dm",
                             roots={"work": {"linux": str(ayon.work), "darwin": str(ayon.work), "windows": "P:/work"}})
            import ayon_api

            self.con = ayon_api.ServerAPI(self.server.url, token=API_KEY, timeout=5)

    def close(self) -> None:
        if self.server is not None:
            self.con.close_session()
            self.server.__exit__(None, None, None)

    # -- the farm ------------------------------------------------------------------------------
    def farm_config(self) -> list[str]:
        config = ["--config", f"SettingsFile={self.ayon.settings}", "--config", f"Catalog={self.name}"]
        if self.server is not None:
            config += ["--config", f"AyonServerUrl={self.server.url}"]
        return config

    def farm_env(self) -> dict:
        env = dict(self.env)
        if self.server is not None:
            env["ATOMIC_PUBLISH_TEST_AYON_KEY"] = API_KEY
        return env

    # -- what is visible -----------------------------------------------------------------------
    def versions(self, product: str) -> list[tuple[int, str]]:
        """(number, atomic-publish key or '') of every version of the product, inactive ones too."""
        if self.server is not None:
            folder = self.con.get_folder_by_path(PROJECT, "/" + FOLDER)
            found = self.con.get_product_by_name(PROJECT, product, folder["id"])
            if found is None:
                return []
            return sorted((v["version"], ((v.get("data") or {}).get("atomic_publish") or {}).get("key", ""))
                          for v in self.con.get_versions(PROJECT, product_ids=[found["id"]], active=None))
        col = self.store.catalog.project(PROJECT)
        subset = col.find_one({"type": "subset", "name": product})
        if subset is None:
            return []
        return sorted((d["name"], ((d.get("data") or {}).get("atomic_publish") or {}).get("key", ""))
                      for d in col.find({"type": "version", "parent": subset["_id"]}))

    def entities(self) -> int:
        if self.server is not None:
            return sum(len(self.server.entities(PROJECT, t)) for t in ("product", "version", "representation"))
        return self.store.catalog.project(PROJECT).count_documents(
            {"type": {"$in": ["subset", "version", "representation"]}})

    def batches(self) -> int:
        """Batches the AYON server committed (OpenPype: version documents written)."""
        if self.server is not None:
            return self.server.stats()["batches_committed"]
        return self.store.catalog.project(PROJECT).count_documents({"type": "version"})

    def foreign(self, product: str, number: int) -> None:
        """An artist's publish of ``product`` v``number``, made with the catalogue's own client."""
        if self.server is not None:
            from ayon_api.operations import OperationsSession, new_product_entity, new_version_entity

            folder = self.con.get_folder_by_path(PROJECT, "/" + FOLDER)
            found = self.con.get_product_by_name(PROJECT, product, folder["id"])
            session = OperationsSession(con=self.con)
            if found is None:
                found = new_product_entity(product, "render", folder["id"])
                session.create_entity(PROJECT, "product", found)
            session.create_entity(PROJECT, "version", new_version_entity(number, found["id"],
                                                                         attribs={"comment": "artist publish"}))
            session.commit()
            return
        from bson import ObjectId

        col = self.store.catalog.project(PROJECT)  # as OpenPype's integrator makes them: random ids
        asset = col.find_one({"type": "asset", "name": "sh010"})
        if asset is None:
            asset = {"_id": ObjectId(), "type": "asset", "name": "sh010", "data": {"parents": ["shots", "sq01"]}}
            col.insert_one(asset)
        subset = col.find_one({"type": "subset", "name": product, "parent": asset["_id"]})
        if subset is None:
            subset = {"_id": ObjectId(), "type": "subset", "name": product, "parent": asset["_id"],
                      "data": {"family": "render"}}
            col.insert_one(subset)
        col.insert_one({"_id": ObjectId(), "type": "version", "name": number, "parent": subset["_id"],
                        "schema": "openpype:version-3.0", "data": {"author": "artist"}})


@pytest.fixture(params=["ayon", "openpype"])
def side(request, tmp_path: Path, env, store):
    ayon = AyonRender(tmp_path / "studio", aovs=AOVS)
    s = Side(request.param, tmp_path, env, store, ayon)
    yield s
    s.close()


def farm_cmd(side: Side, out: Path, job: dict, plugin_info: dict, *extra: str) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    write_key_value_file(out / "job_info.job", job)
    write_key_value_file(out / "plugin_info.job", plugin_info)
    return [sys.executable, "-c", _FARM, str(out / "job_info.job"), str(out / "plugin_info.job"), "--json",
            "--dir", str(out / "farm"), *side.farm_config(), *extra]


def run_farm(side: Side, out: Path, *extra: str, metadata: dict | None = None, timeout: float = 240):
    job, plugin_info = ayon_publish_job(side.ayon.rootless(side.ayon.write(metadata)),
                                        output_dir=str(side.ayon.publish_dir))
    started = time.monotonic()
    proc = subprocess.run(farm_cmd(side, out, job, plugin_info, *extra), env=side.farm_env(), capture_output=True,
                          text=True, timeout=timeout)
    print(f"farm run: {time.monotonic() - started:.1f} s")
    return proc, last_json(proc)


def start_farm(side: Side, out: Path, *extra: str) -> subprocess.Popen:
    job, plugin_info = ayon_publish_job(side.ayon.rootless(side.ayon.write()), output_dir=str(side.ayon.publish_dir))
    return subprocess.Popen(farm_cmd(side, out, job, plugin_info, *extra), env=side.farm_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_state(store, state: str, timeout: float = 120) -> dict:
    """The one record, once it says ``state`` (the hung attempt's lease names its pid)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = store.records.col.find_one({})
        if rec is not None and rec["state"] == state:
            return rec
        time.sleep(0.1)
    raise AssertionError(f"no record reached {state}: {store.records.col.find_one({})}")


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[str, dict]:
    stdout, stderr = proc.communicate(timeout=timeout)
    lines = [l for l in stdout.splitlines() if l.strip()]
    assert lines, stderr
    return stdout + stderr, json.loads(lines[-1])


def farm_logs(out: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted((out / "farm").rglob("*.log")))


def published_once(side: Side, out: dict, number: int = 1) -> None:
    assert out["job_status"] == "Completed", out
    key = f"deadline10:{out['job_id']}:0"
    for product in PRODUCTS:
        assert side.versions(product) == [(number, key)], product
        final = side.ayon.publish_dir / f"render/{product}/v{number:03d}"
        assert sorted(os.listdir(final)) == [".atomic-publish.json"] + [
            f"dm_sh010_{product}_v{number:03d}.{f}.exr" for f in side.ayon.frames]
    rec = side.store.records.get(key)
    assert rec["state"] == "PUBLISHED"
    assert side.store.records.col.count_documents({}) == 1


def no_secret(*texts: str) -> None:
    for text in texts:
        assert API_KEY not in text


# -- the scenarios ---------------------------------------------------------------------------------
def test_three_aovs_published_once_with_three_products(side: Side, tmp_path: Path) -> None:
    proc, out = run_farm(side, tmp_path / "job", "--workers", "2")
    published_once(side, out)
    if side.server is not None:  # what AYON's loader reads: the version's representations and their files
        for product in PRODUCTS:
            [version] = side.con.get_versions(PROJECT, product_ids=[
                side.con.get_product_by_name(PROJECT, product,
                                             side.con.get_folder_by_path(PROJECT, "/" + FOLDER)["id"])["id"]])
            [rep] = side.con.get_representations(PROJECT, version_ids=[version["id"]])
            assert rep["name"] == "exr"
            assert [f["name"] for f in rep["files"]] == [f"dm_sh010_{product}_v001.{f}.exr" for f in side.ayon.frames]
            for f in rep["files"]:
                local = Path(f["path"].replace("{root[work]}", str(side.ayon.work)))
                assert local.is_file() and local.stat().st_size == f["size"] == 4096
        assert side.server.stats()["batches_committed"] == 1  # the 3 products in one batch
    no_secret(proc.stdout, proc.stderr, farm_logs(tmp_path / "job"))


def test_worker_killed_after_staging_then_the_retry_reuses_the_files(side: Side, tmp_path: Path) -> None:
    out_dir = tmp_path / "job"
    proc, out = run_farm(side, out_dir, "--workers", "2", "--bad-worker-errors", "1",
                         "--worker-env", "worker-1:ATOMIC_PUBLISH_FAILPOINTS=staged=kill",
                         "--worker-env", "worker-2:ATOMIC_PUBLISH_FARM_WORKER_DELAY=1")
    published_once(side, out)
    # worker-1 SIGKILLs itself after staging (again, should it take the task before worker-2 is up)
    kills = out["error_reports"]
    assert kills and all(r["worker"] == "worker-1" and "killed by signal 9" in r["message"] for r in kills), kills
    rec = side.store.records.get(f"deadline10:{out['job_id']}:0")
    assert len(rec["attempts"]) == len(kills) + 1
    worker2 = (out_dir / "farm/workers/worker-2/worker.log").read_text()
    assert "status staged 9 files (0 copied, 9 reused)" in worker2, worker2[-3000:]
    assert side.batches() == (1 if side.server is not None else 3)



def kill_hung_attempts(store, state: str, proc: subprocess.Popen, then=None, worker: str = "worker-1",
                       timeout: float = 150) -> int:
    """SIGKILL every attempt of ``worker`` that hangs at ``state`` (its failpoint) until the record moves on;
    ``then()`` runs once, after the first attempt hangs and before it is killed."""
    killed, seen = 0, set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        rec = store.records.col.find_one({})
        if rec is not None and rec["state"] == R_PUBLISHED:
            break
        lease = (rec or {}).get("lease") or {}
        pid = int(lease.get("pid") or 0)
        if rec is not None and rec["state"] == state and lease.get("worker") == worker and pid and pid not in seen:
            time.sleep(0.3)  # it printed the hang line: the failpoint holds it
            if then is not None and not killed:
                then(rec)
            os.kill(pid, signal.SIGKILL)
            seen.add(pid)
            killed += 1
        time.sleep(0.1)
    return killed


def test_another_client_takes_the_next_number_between_reservation_and_commit(side: Side, tmp_path: Path,
                                                                            request) -> None:
    out_dir = tmp_path / "job"
    proc = start_farm(side, out_dir, "--workers", "2", "--bad-worker-errors", "1",
                      "--worker-env", "worker-1:ATOMIC_PUBLISH_FAILPOINTS=staged=hang",
                      "--worker-env", "worker-2:ATOMIC_PUBLISH_FARM_WORKER_DELAY=1")
    try:
        def artist_publishes(rec: dict) -> None:  # an artist publishes v001 of the Z product meanwhile
            assert int(rec["version"]) == 1
            side.foreign("renderMain_Z", 1)
        assert kill_hung_attempts(side.store, "STAGED", proc, then=artist_publishes) >= 1
        text, out = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    key = f"deadline10:{out['job_id']}:0"
    assert out["job_status"] == "Completed", text
    assert side.versions("renderMain_Z") == [(1, ""), (2, key)]  # the artist's v001 untouched
    for product in ("renderMain_beauty", "renderMain_N"):
        assert side.versions(product) == [(1, key)]
    z = side.ayon.publish_dir / "render/renderMain_Z"
    assert sorted(os.listdir(z)) == ["v002"]
    assert sorted(os.listdir(z / "v002")) == [".atomic-publish.json"] + [
        f"dm_sh010_renderMain_Z_v002.{f}.exr" for f in side.ayon.frames]
    assert ("warning: v001 of renderMain_Z was taken after it was reserved" in farm_logs(out_dir)
            and "this publish takes v002 instead (nothing was overwritten)" in farm_logs(out_dir)), text


def test_ayon_down_during_the_commit_then_back_publishes_once(tmp_path: Path, env, store) -> None:
    side = Side("ayon", tmp_path, env, store, AyonRender(tmp_path / "studio", aovs=AOVS))
    try:
        out_dir = tmp_path / "job"
        proc = start_farm(side, out_dir, "--workers", "1",
                          "--worker-env", "worker-1:ATOMIC_PUBLISH_FAILPOINTS=commit.begin=hang")
        try:
            rec = wait_for_state(store, "COMMITTING")
            side.server.outage(4.0)  # stops listening now, back with the same state in 4 s
            time.sleep(0.3)
            os.kill(int(rec["lease"]["pid"]), signal.SIGKILL)  # the retry rolls forward into the outage
            text, out = finish(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
        published_once(side, out)
        assert side.server.stats()["batches_committed"] == 1
        logs = farm_logs(out_dir)
        assert "unreachable" in logs, logs[-3000:]
    finally:
        side.close()


def test_ayon_answer_lost_after_the_batch_committed_publishes_once(tmp_path: Path, env, store) -> None:
    side = Side("ayon", tmp_path, env, store, AyonRender(tmp_path / "studio", aovs=AOVS))
    try:
        side.server.set_faults([{"kind": "http_error", "status": 503, "target": "operations", "count": 2},
                                {"kind": "drop_after_commit", "target": "operations", "count": 1}])
        proc, out = run_farm(side, tmp_path / "job", "--workers", "1")
        published_once(side, out)
        stats = side.server.stats()
        assert stats["batches_committed"] == 1 and stats["faults_pending"] == []
    finally:
        side.close()


def test_one_aov_missing_a_frame_publishes_no_product(side: Side, tmp_path: Path) -> None:
    (side.ayon.renders / "sh010_renderMain_N.1002.exr").unlink()
    before = side.entities()
    proc, out = run_farm(side, tmp_path / "job", "--workers", "2")
    assert out["job_status"] == "Failed", proc.stdout + proc.stderr
    [report] = out["error_reports"]
    assert "sh010_renderMain_N.1002.exr" in report["message"] and "permanent error" in report["message"]
    for product in PRODUCTS:
        assert side.versions(product) == []
    assert side.entities() == before
    assert side.ayon.published() == []
    if side.server is not None:
        assert side.server.stats()["batches"] == 0


def test_a_completed_job_requeued_changes_nothing(side: Side, tmp_path: Path) -> None:
    out_dir = tmp_path / "job"
    proc, out = run_farm(side, out_dir, "--workers", "1")
    published_once(side, out)
    tree, batches, entities = side.ayon.published(), side.batches(), side.entities()
    requests = side.server.stats()["batches"] if side.server is not None else None
    again = subprocess.run([sys.executable, "-c", _FARM, "--dir", str(out_dir / "farm"), "--requeue-job",
                            out["job_id"], "--resume", "--workers", "1", "--json"], env=side.farm_env(),
                           capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stdout + again.stderr
    assert last_json(again)["job_status"] == "Completed"
    published_once(side, out)
    assert (side.ayon.published(), side.batches(), side.entities()) == (tree, batches, entities)
    if side.server is not None:
        assert side.server.stats()["batches"] == requests  # not even a batch sent
    assert "already published" in again.stdout + farm_logs(out_dir)


# -- refusals: straight through `atomic-publish run --metadata` ------------------------------------
def _run_env(side: Side, key: str = API_KEY) -> dict:
    return {**side.ayon.environ(side.env), "ATOMIC_PUBLISH_CATALOG": "ayon", "AYON_SERVER_URL": side.server.url,
            "AYON_API_KEY": key}


def test_missing_ayon_folder_is_permanent_names_it_and_writes_nothing(tmp_path: Path, env, store) -> None:
    ayon = AyonRender(tmp_path / "studio", aovs=AOVS)
    side = Side("ayon", tmp_path, env, store, ayon)
    try:
        data = ayon.metadata()
        for inst in data["instances"]:
            inst["folderPath"] = "/shots/sq01/sh999"
        data["folderPath"] = "/shots/sq01/sh999"
        before = side.entities()
        proc = run_cli(["run", "--metadata", str(ayon.write(data)), "--job-id", "j1", "--task-id", "0",
                        "--worker", "w1"], _run_env(side))
        assert proc.returncode == 78, proc.stdout + proc.stderr
        assert "AYON folder /shots/sq01/sh999 does not exist in project 'demo'" in proc.stderr + proc.stdout
        assert side.entities() == before and side.server.stats()["batches"] == 0
        assert store.records.col.count_documents({}) == 0 and store.reservations.col.count_documents({}) == 0
        assert not (ayon.work / PROJECT / "shots/sq01/sh999").exists() and ayon.published() == []
    finally:
        side.close()


@pytest.mark.parametrize("where, expected_exit, cls", [("env", 77, "worker-local"), ("plugin", 78, "permanent")])
def test_refused_api_key_is_classified_with_the_fix_and_never_printed(tmp_path: Path, env, store, where,
                                                                       expected_exit, cls) -> None:
    ayon = AyonRender(tmp_path / "studio", aovs=("beauty",))
    side = Side("ayon", tmp_path, env, store, ayon)
    wrong = "ak-" + "badc0ffe" * 6
    try:
        run_env = _run_env(side, wrong)
        if where == "plugin":  # the plugin configuration's key, handed over in its 0600 secrets file
            secrets = tmp_path / "secrets"
            secrets.write_text(f"AYON_API_KEY={wrong}\n")
            os.chmod(secrets, 0o600)
            run_env.pop("AYON_API_KEY")
            run_env["ATOMIC_PUBLISH_SECRETS_FILE"] = str(secrets)
        proc = run_cli(["run", "--metadata", str(ayon.write()), "--job-id", "j1", "--task-id", "0",
                        "--worker", "w1", "--json"], run_env)
        out = last_json(proc)
        text = proc.stdout + proc.stderr
        assert proc.returncode == expected_exit, text
        assert "refused the API key" in text and "(the key is not shown)" in text
        assert out["failure_class"] == cls, out
        assert "AyonApiKey" in out["message"], out  # the fix: where the key is set
        assert wrong not in text and API_KEY not in text
        assert side.server.stats()["rejected_auth"] >= 1 and side.server.stats()["batches"] == 0
        # worker-local: the attempt is on the record (no version reserved) for the next worker; permanent: none
        assert [r["state"] for r in store.records.col.find({})] == (["NEW"] if cls == "worker-local" else [])
        assert store.reservations.col.count_documents({}) == 0 and ayon.published() == []
    finally:
        side.close()


def test_failed_job_is_rolled_back_by_the_event_plugin_with_the_ayon_catalogue(tmp_path: Path, env, store) -> None:
    """The event plugin hands SettingsFile, Catalog, AyonServerUrl and the key (0600 file) to abandon."""
    side = Side("ayon", tmp_path, env, store, AyonRender(tmp_path / "studio", aovs=AOVS))
    try:
        out_dir = tmp_path / "job"
        job, plugin_info = ayon_publish_job(side.ayon.rootless(side.ayon.write()),
                                            output_dir=str(side.ayon.publish_dir))
        job["FailureDetectionTaskErrors"] = "2"
        farm_env = {**side.farm_env(), "ATOMIC_PUBLISH_FAILPOINTS": "staged=raise"}
        proc = subprocess.run(farm_cmd(side, out_dir, job, plugin_info, "--workers", "1", "--events"),
                              env=farm_env, capture_output=True, text=True, timeout=240)
        out = last_json(proc)
        assert out["job_status"] == "Failed", proc.stdout + proc.stderr
        key = f"deadline10:{out['job_id']}:0"
        events = (out_dir / "farm").rglob("*.log")
        text = "\n".join(p.read_text(errors="replace") for p in events)
        mine = [l for l in text.splitlines() if "AtomicPublishEvents: " + key in l]
        assert mine and "-> ROLLED_BACK: rolled back" in mine[0], text[-3000:]
        assert store.records.get(key)["state"] == "ROLLED_BACK"
        assert side.ayon.published() == [] and side.entities() == 0  # every product's staging folder removed
        no_secret(proc.stdout, proc.stderr, text)
    finally:
        side.close()


def test_event_plugin_environment_carries_the_catalogue_and_the_key_privately() -> None:
    """What abandon receives from the event plugin: the AtomicPublish plugin's catalogue entries as
    environment, the API key only in the 0600 secrets file (the same WrapperSettings as the Monitor's)."""
    from atomic_publish.deadline_plugin.farm.lifecycle import load_plugin_module
    from atomic_publish.deadline_plugin.resources import events_plugin_dir

    module = load_plugin_module(events_plugin_dir() / "AtomicPublishEvents.py")

    class Config:
        def __init__(self, entries):
            self.entries = entries

        def GetConfigEntryWithDefault(self, key, default):
            return self.entries.get(key, default)

    job_plugin = Config({"SettingsFile": "/studio/atomic_publish.json", "Catalog": "ayon",
                         "AyonServerUrl": "https://ayon.studio", "AyonApiKey": API_KEY})
    settings = module.WrapperSettings(Config({}), job_plugin)
    try:
        environment = settings.Environment(True)
        assert (environment["ATOMIC_PUBLISH_SETTINGS"], environment["ATOMIC_PUBLISH_CATALOG"],
                environment["AYON_SERVER_URL"]) == ("/studio/atomic_publish.json", "ayon", "https://ayon.studio")
        assert API_KEY not in json.dumps({k: v for k, v in environment.items() if k != "ATOMIC_PUBLISH_SECRETS_FILE"})
        secrets = Path(environment["ATOMIC_PUBLISH_SECRETS_FILE"])
        assert secrets.stat().st_mode & 0o777 == 0o600
        assert secrets.read_text() == f"AYON_API_KEY={API_KEY}\n"
        assert "ATOMIC_PUBLISH_SECRETS_FILE" not in settings.Environment(False)  # status: no secrets
    finally:
        settings.RemovePrivateFiles()
