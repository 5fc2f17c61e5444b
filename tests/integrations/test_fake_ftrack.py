"""The fake ftrack server, driven by the real, unmodified ftrack_api.Session over loopback HTTP.

These tests pin down what the future ftrack integration can rely on: the publish calls
work, state survives a restart, and each scripted fault reaches the client the way a
real outage would (ServerError, or a connection error after the server applied the change).
"""
from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path

import pytest

ftrack_api = pytest.importorskip("ftrack_api")
requests = pytest.importorskip("requests")

from atomic_publish.testing import spawn_fake
from atomic_publish.testing.fake_ftrack import (
    SCHEMAS,
    UNMANAGED_LOCATION_ID,
    FakeFtrackControl,
    FakeFtrackServer,
    parse_query,
)

USER, KEY = "publisher", "s3cret"
NS = uuid.UUID("6f1c7f52-0f7e-4d0e-9d43-0c3c1f2a9b11")
FIXTURES = Path("/work/shared/fixtures/ftrack")


def open_session(url: str, user: str = USER, key: str = KEY, **kw) -> ftrack_api.Session:
    return ftrack_api.Session(server_url=url, api_key=key, api_user=user, auto_connect_event_hub=False,
                              schema_cache_path=False, plugin_paths=[], **kw)


@pytest.fixture
def fake(tmp_path):
    with FakeFtrackServer(tmp_path / "ftrack", api_user=USER, api_key=KEY) as server:
        server.ids = server.seed_context("proj", "sh010", "comp")
        yield server


@pytest.fixture
def session(fake):
    s = open_session(fake.url)
    yield s
    s.close()


def new_version(session, ids: dict, idem_key: str, name: str = "comp_main"):
    """What the publish integration will do: Asset + AssetVersion with a deterministic id, unpublished."""
    shot = session.get("Shot", ids["shot_id"])
    asset = session.create("Asset", {"name": name, "parent": shot,
                                     "type": session.get("AssetType", ids["asset_type_id"])})
    version_id = str(uuid.uuid5(NS, idem_key))
    version = session.create("AssetVersion", {"id": version_id, "asset": asset,
                                              "task": session.get("Task", ids["task_id"]),
                                              "is_published": False, "comment": idem_key})
    return asset, version


# ----------------------------------------------------------------------------- basics


def test_session_starts_and_loads_our_schemas(fake, session):
    assert session.server_information["version"] == "dev"
    assert {"Asset", "AssetVersion", "FileComponent", "ComponentLocation", "Location", "Metadata"} <= set(session.types)
    received = fake.stats()["received"]
    assert received["query_server_information"] == 1 and received["query_schemas"] == 1


def test_publish_flow_with_deterministic_id(fake, session, tmp_path):
    _, version = new_version(session, fake.ids, "job42/task7")
    version_id = version["id"]
    session.commit()

    # The client sent our id as entity_key; the server stored it unpublished, numbered 1.
    creates = [op for r in fake.requests() for op in r["operations"]
               if op["action"] == "create" and op["entity_type"] == "AssetVersion"]
    assert creates[0]["entity_key"] == [version_id]
    (stored,) = fake.entities("AssetVersion")
    assert stored["id"] == version_id and stored["is_published"] is False and stored["version"] == 1
    assert stored["task_id"] == fake.ids["task_id"]

    version["metadata"]["atomic_publish_key"] = "job42/task7"
    session.commit()
    (meta,) = fake.entities("Metadata")
    assert meta == {"__entity_type__": "Metadata", "parent_id": version_id, "parent_type": "AssetVersion",
                    "key": "atomic_publish_key", "value": "job42/task7"}

    render = tmp_path / "comp.1001.exr"
    render.write_bytes(b"\0" * 128)
    location = session.query('Location where name is "ftrack.unmanaged"').one()
    assert location["id"] == UNMANAGED_LOCATION_ID
    component = version.create_component(str(render), data={"name": "main"}, location=location)
    session.commit()
    (stored_component,) = fake.entities("Component")
    assert stored_component["__entity_type__"] == "FileComponent"
    assert stored_component["version_id"] == version_id and stored_component["size"] == 128
    (component_location,) = fake.entities("ComponentLocation")
    assert component_location["resource_identifier"] == str(render)
    assert location.get_filesystem_path(component) == str(render)

    version["is_published"] = True
    session.commit()
    assert fake.entities("AssetVersion")[0]["is_published"] is True

    # A fresh session (another process, in real life) finds everything by id and by metadata.
    other = open_session(fake.url)
    found = other.query('AssetVersion where metadata any (key is "atomic_publish_key" and value is "job42/task7")').first()
    assert found is not None and found["id"] == version_id
    by_id = other.query(f'select is_published, version, components.name from AssetVersion where id is "{version_id}"').one()
    assert by_id["is_published"] is True and by_id["version"] == 1
    assert [c["name"] for c in by_id["components"]] == ["main"]
    assert by_id["asset"]["parent"]["name"] == "sh010"
    assert dict(by_id["metadata"]) == {"atomic_publish_key": "job42/task7"}
    other.close()


def test_create_component_with_auto_location_picks_unmanaged(fake, session, tmp_path):
    _, version = new_version(session, fake.ids, "auto")
    session.commit()
    render = tmp_path / "comp.mov"
    render.write_bytes(b"m")
    # Session.create_component defaults to location="auto" (AssetVersion.create_component to None).
    session.create_component(str(render), data={"name": "movie", "version": version})
    session.commit()
    (component_location,) = fake.entities("ComponentLocation")
    assert component_location["location_id"] == UNMANAGED_LOCATION_ID

def test_versions_are_numbered_per_asset(fake, session):
    asset, first = new_version(session, fake.ids, "a")
    second = session.create("AssetVersion", {"asset": asset, "is_published": False})
    session.commit()
    assert sorted(v["version"] for v in fake.entities("AssetVersion")) == [1, 2]
    assert {first["id"], second["id"]} == {v["id"] for v in fake.entities("AssetVersion")}


def test_metadata_update_and_query_by_any(fake, session):
    _, version = new_version(session, fake.ids, "k1")
    session.commit()
    version["metadata"]["state"] = "pending"
    session.commit()
    version["metadata"]["state"] = "done"  # an update of the Metadata entity, composite key
    session.commit()
    assert [m["value"] for m in fake.entities("Metadata")] == ["done"]
    assert session.query('AssetVersion where metadata any (key is "state" and value is "pending")').first() is None
    assert session.query('AssetVersion where metadata any (key is "state" and value is "done")').first()["id"] == version["id"]


def test_query_language_subset(fake, session):
    asset, _ = new_version(session, fake.ids, "q0")
    for _ in range(4):
        session.create("AssetVersion", {"asset": asset, "is_published": False})
    session.commit()
    versions = session.query("AssetVersion where asset.parent.name is \"sh010\"", page_size=2).all()  # paged
    assert len(versions) == 5
    ordered = session.query("select version from AssetVersion order by version desc").all()
    assert [v["version"] for v in ordered] == [5, 4, 3, 2, 1]
    page = session.query("select version from AssetVersion order by version offset 1 limit 2").all()
    assert [v["version"] for v in page] == [2, 3]
    ids = [v["id"] for v in ordered[:2]]
    assert len(session.query(f"AssetVersion where id in ({ids[0]}, \"{ids[1]}\")").all()) == 2
    assert len(session.query("AssetVersion where not version in (1, 2) and is_published is false").all()) == 3
    assert len(session.query('AssetVersion where asset has (name like "comp%")').all()) == 5
    assert session.query('AssetVersion where comment is "nope"').first() is None
    with pytest.raises(ftrack_api.exception.NoResultFoundError):
        session.query('Shot where name is "sh999"').one()
    assert session.query('Context where name is "sh010"').one().entity_type == "Shot"  # polymorphic


def test_parser_handles_what_the_client_sends():
    # session.populate() on a composite key glues the quote to "and".
    query = parse_query('select value from Metadata where (parent_id is "x"and key is "y") offset 0 limit 500')
    assert query.where == ("and", ("cmp", "parent_id", "is", "x"), ("cmp", "key", "is", "y"))
    assert (query.offset, query.limit) == (0, 500)


def test_delete_cascades_to_owned_entities(fake, session, tmp_path):
    _, version = new_version(session, fake.ids, "del")
    session.commit()
    version["metadata"]["k"] = "v"
    render = tmp_path / "f.exr"
    render.write_bytes(b"x")
    version.create_component(str(render), data={"name": "main"},
                             location=session.get("Location", UNMANAGED_LOCATION_ID))
    session.commit()
    session.delete(version)
    session.commit()
    for entity_type in ("AssetVersion", "Component", "ComponentLocation", "Metadata"):
        assert fake.entities(entity_type) == [], entity_type
    assert len(fake.entities("Asset")) == 1


def test_duplicate_id_is_rejected_and_batch_is_atomic(fake, session):
    new_version(session, fake.ids, "dup")
    session.commit()
    other = open_session(fake.url)
    new_version(other, fake.ids, "dup", name="second_asset")  # a new Asset + the same version id
    with pytest.raises(ftrack_api.exception.ServerError, match="IntegrityError"):
        other.commit()
    other.rollback()
    # All or nothing: the Asset of the failed batch was not kept either.
    assert [a["name"] for a in fake.entities("Asset")] == ["comp_main"]
    assert len(fake.entities("AssetVersion")) == 1


def test_missing_reference_is_an_integrity_error(fake, session):
    session.create("AssetVersion", {"asset_id": str(uuid.uuid4()), "is_published": False})
    with pytest.raises(ftrack_api.exception.ServerError, match="IntegrityError"):
        session.commit()
    assert fake.entities("AssetVersion") == []


# ----------------------------------------------------------------------------- auth


@pytest.mark.parametrize("user,key", [(USER, "wrong"), ("intruder", KEY)])
def test_wrong_credentials_are_rejected(fake, user, key):
    with pytest.raises(ftrack_api.exception.ServerError, match="API key is not valid"):
        open_session(fake.url, user=user, key=key)
    assert fake.stats()["rejected_auth"] == 1


def test_strict_api_gets_http_status(fake):
    answer = requests.post(fake.url + "/api", json=[{"action": "query_server_information"}],
                           headers={"ftrack-user": USER, "ftrack-api-key": "wrong", "ftrack-strict-api": "true"})
    assert answer.status_code == 401 and answer.json()["exception"] == "ServerError"
    lenient = requests.post(fake.url + "/api", json=[{"action": "query_server_information"}],
                            headers={"ftrack-user": USER, "ftrack-api-key": "wrong"})
    assert lenient.status_code == 200 and "exception" in lenient.json()


# ----------------------------------------------------------------------------- faults


def test_http_5xx_then_success(fake, session):
    fake.set_faults({"kind": "http_error", "status": 503, "retry_after": 2, "count": 2, "action": "create"})
    new_version(session, fake.ids, "5xx")
    for _ in range(2):
        with pytest.raises(ftrack_api.exception.ServerError, match="503"):
            session.commit()  # recorded operations are kept: the same batch is resent
    session.commit()
    assert len(fake.entities("AssetVersion")) == 1
    stats = fake.stats()
    assert stats["faults_fired"] == {"http_error": 2}
    assert stats["received"]["create"] == 6 and stats["applied"]["create"] == 2


def test_http_error_carries_retry_after(fake):
    fake.set_faults({"kind": "http_error", "status": 429, "retry_after": 7})
    answer = requests.post(fake.url + "/api", json=[{"action": "query_server_information"}],
                           headers={"ftrack-user": USER, "ftrack-api-key": KEY})
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "7"


def test_exception_payload_applies_nothing(fake, session):
    fake.set_faults({"kind": "exception", "exception": "ValidationError", "content": "nope",
                     "entity_type": "AssetVersion"})
    new_version(session, fake.ids, "exc")
    with pytest.raises(ftrack_api.exception.ServerError, match=r"ValidationError\(nope\)"):
        session.commit()
    assert fake.entities("AssetVersion") == [] and fake.entities("Asset") == []


def test_fault_filtered_by_entity_type(fake, session):
    fake.set_faults({"kind": "exception", "entity_type": "Metadata"})
    _, version = new_version(session, fake.ids, "filtered")
    session.commit()  # no Metadata in this batch: the fault waits
    version["metadata"]["k"] = "v"
    with pytest.raises(ftrack_api.exception.ServerError):
        session.commit()
    assert fake.entities("Metadata") == [] and len(fake.entities("AssetVersion")) == 1


def test_dropped_connection_after_apply_then_rollback_and_requery(fake, session):
    fake.set_faults({"kind": "drop_after_apply", "action": "create", "entity_type": "AssetVersion"})
    _, version = new_version(session, fake.ids, "drop")
    version_id = version["id"]
    with pytest.raises(requests.exceptions.ConnectionError):
        session.commit()
    # The client saw a failure, yet the server applied the change (and sent it once: no hidden retry).
    assert [v["id"] for v in fake.entities("AssetVersion")] == [version_id]
    assert fake.stats()["received"]["create"] == 2  # Asset + AssetVersion, one request

    # Resending blindly would be a duplicate: that is why the integration must roll back and re-query.
    with pytest.raises(ftrack_api.exception.ServerError, match="IntegrityError"):
        session.commit()
    session.rollback()
    found = session.query(f'select is_published from AssetVersion where id is "{version_id}"').first()
    assert found is not None and found["is_published"] is False


def test_dropped_connection_before_apply_changes_nothing(fake, session):
    fake.set_faults({"kind": "drop_before_apply", "action": "create"})
    new_version(session, fake.ids, "drop-before")
    with pytest.raises(requests.exceptions.ConnectionError):
        session.commit()
    assert fake.entities("AssetVersion") == []


def test_slow_answer_times_out_after_apply(fake):
    slow = open_session(fake.url, timeout=0.3)
    fake.set_faults({"kind": "delay", "seconds": 1.0, "action": "create"})
    _, version = new_version(slow, fake.ids, "slow")
    with pytest.raises(requests.exceptions.Timeout):
        slow.commit()
    assert [v["id"] for v in fake.entities("AssetVersion")] == [version["id"]]


def test_slow_answer_before_apply_within_timeout(fake, session):
    fake.set_faults({"kind": "delay", "seconds": 0.3, "when": "before", "action": "query"})
    started = time.monotonic()
    assert session.query('Shot where name is "sh010"').one()["id"] == fake.ids["shot_id"]
    assert time.monotonic() - started >= 0.3


def test_unknown_fault_kind_is_refused(fake):
    with pytest.raises(ValueError, match="unknown fault kind"):
        fake.set_faults({"kind": "http_eror"})


def test_reset(fake, session):
    new_version(session, fake.ids, "reset")
    session.commit()
    fake.set_faults({"kind": "exception", "count": None})
    fake.reset()
    assert fake.entities("AssetVersion") == [] and fake.stats()["faults_pending"] == []
    assert [loc["name"] for loc in fake.entities("Location")] == ["ftrack.unmanaged", "ftrack.origin"]


# ----------------------------------------------------------------------------- as a process


def test_state_survives_process_restart_and_http_control(tmp_path):
    state = tmp_path / "state"
    args = ["--state", str(state), "--api-user", USER, "--api-key", KEY]
    proc, url = spawn_fake("atomic_publish.testing.fake_ftrack", args, "FAKE_FTRACK_URL")
    try:
        control = FakeFtrackControl(url)
        ids = control.seed_context("proj", "sh020", "light")
        session = open_session(url)
        _, version = new_version(session, ids, "restart")
        session.commit()
        version["metadata"]["atomic_publish_key"] = "restart"
        session.commit()
        control.set_faults({"kind": "http_error", "status": 502, "action": "update"})
        version["is_published"] = True
        with pytest.raises(ftrack_api.exception.ServerError, match="502"):
            session.commit()
        assert control.stats()["faults_fired"] == {"http_error": 1}
        session.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0  # clean exit on SIGTERM
    saved = json.loads((state / "ftrack_state.json").read_text())
    assert version["id"] in json.dumps(saved["tables"]["AssetVersion"])

    proc, url = spawn_fake("atomic_publish.testing.fake_ftrack", args, "FAKE_FTRACK_URL")
    try:
        session = open_session(url)
        found = session.query('AssetVersion where metadata any (key is "atomic_publish_key" and value is "restart")').one()
        assert found["id"] == str(uuid.uuid5(NS, "restart")) and found["is_published"] is False
        assert FakeFtrackControl(url).stats()["faults_pending"] == []  # faults are not persisted
        session.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_cli_faults_and_seed_at_start(tmp_path):
    args = ["--state", str(tmp_path), "--api-user", USER, "--api-key", KEY, "--seed", "p", "s", "t",
            "--fault", json.dumps({"kind": "http_error", "status": 500, "action": "query_schemas"})]
    proc, url = spawn_fake("atomic_publish.testing.fake_ftrack", args, "FAKE_FTRACK_URL")
    try:
        with pytest.raises(ftrack_api.exception.ServerError, match="500"):
            open_session(url)
        session = open_session(url)
        assert session.query('Task where name is "t"').one()["parent"]["name"] == "s"
        session.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ----------------------------------------------------------------------------- schemas


@pytest.mark.skipif(not (FIXTURES / "query_schemas.json").exists(), reason="real-server fixtures not available")
def test_our_schemas_are_a_subset_of_the_real_ones():
    """Every attribute we declare exists on the real server with the same type or reference."""
    real = {schema["id"]: schema for schema in json.loads((FIXTURES / "query_schemas.json").read_text())}
    for ours in SCHEMAS:
        theirs = real[ours["id"]]
        assert ours["primary_key"] == theirs["primary_key"], ours["id"]
        assert ours["default_projections"] == theirs["default_projections"], ours["id"]
        for name, fragment in ours["properties"].items():
            assert name in theirs["properties"], f"{ours['id']}.{name}"
            real_fragment = theirs["properties"][name]
            for aspect in ("type", "$ref", "format"):
                assert fragment.get(aspect) == real_fragment.get(aspect), f"{ours['id']}.{name} {aspect}"
            if "items" in fragment:
                assert fragment["items"] == real_fragment["items"], f"{ours['id']}.{name} items"
    info = json.loads((FIXTURES / "query_server_information.json").read_text())
    ours = FakeFtrackServer(None).server_information
    assert set(info) == set(ours)

