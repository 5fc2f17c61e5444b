"""`atomic-publish audit` (and abandon) with the AYON catalogue (issue 15): the catalogue is chosen
as `run` chooses it (the studio settings file's ``catalog``/``ayon_server_url``, or the plugin's
environment), the local AYON server is read through the real ``ayon-python-api`` client.

A healthy publish of 3 products audits clean; a version deleted on the server, a representation's
file missing, and a rolled-back key whose version was created behind its back are each reported
with their invariant.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from atomic_publish.testing.fake_ayon import FakeAyonServer
from helpers import last_json, run_cli
from test_metadata import AyonRender

API_KEY = "ak-" + "a0d17ca7" * 6
PROJECT = "demo"
AOVS = ("beauty", "Z", "N")


class Studio:
    def __init__(self, tmp_path: Path, env: dict):
        import ayon_api

        self.render = AyonRender(tmp_path / "studio", aovs=AOVS)
        self.server = FakeAyonServer(tmp_path / "ayon", api_key=API_KEY).__enter__()
        self.server.seed(PROJECT, folders=["shots/sq01/sh010"], tasks=["lighting"], code="dm",
                         roots={"work": {"linux": str(self.render.work), "windows": "P:/work"}})
        settings = json.loads(self.render.settings.read_text())  # the catalogue comes from the settings file
        settings.update(catalog="ayon", ayon_server_url=self.server.url)
        self.render.settings.write_text(json.dumps(settings))
        self.env = {**self.render.environ(env), "AYON_API_KEY": API_KEY}
        self.env.pop("ATOMIC_PUBLISH_CATALOG", None)
        self.con = ayon_api.ServerAPI(self.server.url, token=API_KEY, timeout=5)

    def close(self) -> None:
        self.con.close_session()
        self.server.__exit__(None, None, None)

    def publish(self, job: str = "j1", failpoints: str = "") -> dict:
        env = {**self.env, "ATOMIC_PUBLISH_FAILPOINTS": failpoints} if failpoints else self.env
        proc = run_cli(["run", "--metadata", str(self.render.write()), "--job-id", job, "--task-id", "0",
                        "--worker", "w1", "--json"], env)
        if proc.returncode == 70:  # a failpoint's exit: no result line
            return {"exit_code": 70}
        return last_json(proc)

    def audit(self) -> tuple[int, dict, str]:
        proc = run_cli(["audit", "--json", "--root", str(self.render.work)], self.env)
        return proc.returncode, last_json(proc), proc.stdout + proc.stderr

    def version(self, product: str) -> dict:
        folder = self.con.get_folder_by_path(PROJECT, "/shots/sq01/sh010")
        found = self.con.get_product_by_name(PROJECT, product, folder["id"])
        [version] = self.con.get_versions(PROJECT, product_ids=[found["id"]], active=None)
        return version


@pytest.fixture
def studio(tmp_path: Path, env):
    s = Studio(tmp_path, env)
    yield s
    s.close()


def test_healthy_ayon_publish_audits_clean(studio: Studio) -> None:
    assert studio.publish()["outcome"] == "published"
    code, report, text = studio.audit()
    assert (code, report["violations"]) == (0, []), text
    assert report["checked"]["versions"] == 3 and report["checked"]["files"] == 9 and report["checked"]["records"] == 1
    assert API_KEY not in text


def test_a_version_deleted_on_the_server_is_reported(studio: Studio) -> None:
    from ayon_api.operations import OperationsSession

    assert studio.publish()["outcome"] == "published"
    version = studio.version("renderMain_Z")
    session = OperationsSession(con=studio.con)
    for rep in studio.con.get_representations(PROJECT, version_ids=[version["id"]]):
        session.delete_entity(PROJECT, "representation", rep["id"])
    session.delete_entity(PROJECT, "version", version["id"])
    session.commit()
    code, report, text = studio.audit()
    assert code == 1, text
    [v] = report["violations"]
    assert v["invariant"] == 2 and v["key"] == "deadline10:j1:0"
    assert "demo /shots/sq01/sh010 renderMain_Z of the published key has 0 versions in the ayon catalogue" in v["detail"]


def test_a_missing_representation_file_is_reported(studio: Studio) -> None:
    assert studio.publish()["outcome"] == "published"
    gone = studio.render.publish_dir / "render/renderMain_N/v001/dm_sh010_renderMain_N_v001.1002.exr"
    os.chmod(gone.parent, 0o755)  # ProtectPublished may have made it read-only
    gone.unlink()
    code, report, text = studio.audit()
    assert code == 1, text
    [v] = report["violations"]
    assert v["invariant"] == 2 and f"published file {gone} is missing" in v["detail"]
    assert "{root[work]}/demo/shots/sq01/sh010/publish/render/renderMain_N/v001/" in v["detail"]


def test_a_rolled_back_key_with_a_version_made_behind_its_back_is_reported(studio: Studio) -> None:
    from ayon_api.operations import OperationsSession, new_product_entity, new_version_entity

    out = studio.publish(failpoints="staged=exit")  # staged, then the worker dies
    assert out["exit_code"] == 70, out
    abandon = run_cli(["abandon", "--job-id", "j1", "--reason", "cancelled"], studio.env)  # AYON catalogue here too
    assert abandon.returncode == 0, abandon.stdout + abandon.stderr
    code, report, text = studio.audit()
    assert (code, report["violations"]) == (0, []), text  # rolled back cleanly: nothing in AYON
    folder = studio.con.get_folder_by_path(PROJECT, "/shots/sq01/sh010")
    session = OperationsSession(con=studio.con)  # someone recreates its version by hand, with the key's marker
    product = new_product_entity("renderMain_beauty", "render", folder["id"])
    session.create_entity(PROJECT, "product", product)
    session.create_entity(PROJECT, "version", new_version_entity(
        1, product["id"], data={"atomic_publish": {"key": "deadline10:j1:0"}}))
    session.commit()
    code, report, text = studio.audit()
    assert code == 1, text
    [v] = report["violations"]
    assert v["invariant"] == 3 and v["key"] == "deadline10:j1:0"
    assert "rolled-back key has version v001 of demo /shots/sq01/sh010 renderMain_beauty in the ayon catalogue" \
        in v["detail"]



def test_a_catalogue_file_whose_rootless_path_points_elsewhere_is_reported(studio: Studio) -> None:
    """The catalogue's rootless path is what AYON's loader opens: one that leads out of the version's
    folder (here into another product's, a file of the same name and size there) is reported, even though
    the version's folder itself holds every file."""
    from ayon_api.operations import OperationsSession

    assert studio.publish()["outcome"] == "published"
    version = studio.version("renderMain_Z")
    [rep] = studio.con.get_representations(PROJECT, version_ids=[version["id"]])
    files = sorted(rep["files"], key=lambda f: f["path"])
    good = files[1]["path"]
    wrong = good.replace("/renderMain_Z/v001/", "/renderMain_N/v001/")
    twin = studio.render.publish_dir / "render/renderMain_N/v001" / good.rsplit("/", 1)[1]
    os.chmod(twin.parent, 0o755)
    twin.write_bytes(os.urandom(files[1]["size"]))  # same name and size, in the wrong folder
    files[1] = {**files[1], "path": wrong}
    session = OperationsSession(con=studio.con)
    session.update_entity(PROJECT, "representation", rep["id"], {"files": files})
    session.commit()
    [changed] = studio.con.get_representations(PROJECT, version_ids=[version["id"]])
    assert wrong in [f["path"] for f in changed["files"]]

    code, report, text = studio.audit()
    assert code == 1, text
    [v] = report["violations"]
    final = studio.render.publish_dir / "render/renderMain_Z/v001"
    assert v["invariant"] == 2 and v["key"] == "deadline10:j1:0"
    assert f"renderMain_Z: the ayon catalogue lists {wrong}, which is {twin}, outside the version's folder {final}" \
        in v["detail"], v


def test_a_catalogue_file_is_resolved_with_this_hosts_roots(studio: Studio, tmp_path: Path) -> None:
    """This host reaches the storage through another mount: the studio settings' roots (the worker's
    path-mapped view) resolve the catalogue's rootless paths, so the audit finds the files there."""
    assert studio.publish()["outcome"] == "published"
    mount = tmp_path / "other-mount"
    mount.symlink_to(studio.render.work)
    settings = json.loads(studio.render.settings.read_text())
    settings["roots"]["work"]["linux"] = str(mount)
    here = tmp_path / "host-settings.json"
    here.write_text(json.dumps(settings))
    env = {**studio.env, "ATOMIC_PUBLISH_SETTINGS": str(here)}
    proc = run_cli(["audit", "--json", "--root", str(studio.render.work)], env)
    report = last_json(proc)
    assert (proc.returncode, report["violations"]) == (0, []), proc.stdout + proc.stderr
    assert report["checked"]["files"] == 9
    os.unlink(mount)  # the mount gone on this host: every file the catalogue lists is missing from here
    proc = run_cli(["audit", "--json", "--root", str(studio.render.work)], env)
    report = last_json(proc)
    assert proc.returncode == 1 and len(report["violations"]) == 9, proc.stdout
    assert all(str(mount) in v["detail"] for v in report["violations"])
