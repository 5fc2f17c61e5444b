"""Scripted faults and restarts: what the real client sees, and what the server kept."""
from __future__ import annotations

import time
import uuid

import pytest
import requests
from ayon_api.exceptions import FailedOperations, HTTPRequestError, ServerError
from ayon_api.operations import OperationsSession, new_product_entity, new_version_entity

from conftest import API_KEY, PROJECT, SHOT, connect


def eid(*names: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, "faults:" + "/".join(names)).hex


def commit_product(con, folder_id: str, name: str = "renderMain") -> str:
    """One batch with a product and its v001, committed the way every studio tool does."""
    session = OperationsSession(con=con)
    product = new_product_entity(name, "render", folder_id, entity_id=eid(name))
    session.create_entity(PROJECT, "product", product)
    session.create_entity(PROJECT, "version", new_version_entity(1, product["id"], entity_id=eid(name, "v1")))
    session.commit()
    return product["id"]


@pytest.fixture
def shot(ayon):
    return ayon.ids["folders"][SHOT]


def test_a_503_is_retried_by_the_client_and_commits_once(ayon, con, shot):
    ayon.set_faults({"kind": "http_error", "status": 503, "count": 1})
    commit_product(con, shot)
    stats = ayon.stats()
    assert stats["faults_fired"] == {"http_error": 1}
    assert (stats["batches"], stats["batches_committed"], stats["created"]) == (1, 1, 2)


def test_a_500_reaches_the_caller_and_changes_nothing(ayon, con, shot):
    ayon.set_faults({"kind": "http_error", "status": 500, "count": 1})
    with pytest.raises(HTTPRequestError):
        commit_product(con, shot)
    assert ayon.entities(PROJECT, "product") == [] and ayon.stats()["batches"] == 0
    commit_product(con, shot)  # the fault fired once
    assert len(ayon.entities(PROJECT, "version")) == 1


def test_a_connection_dropped_after_the_commit_leaves_the_entities(ayon, con, shot):
    """The client retries the POST it saw fail: the replay is refused with 409, and the
    entities of the first attempt exist, once: the case a caller must settle by reading."""
    ayon.set_faults({"kind": "drop_after_commit", "count": 1})
    with pytest.raises(FailedOperations, match="already exists"):
        commit_product(con, shot)
    assert [p["id"] for p in ayon.entities(PROJECT, "product")] == [eid("renderMain")]
    assert con.get_version_by_id(PROJECT, eid("renderMain", "v1"))["version"] == 1
    stats = ayon.stats()
    assert (stats["batches"], stats["batches_committed"], stats["batches_failed"]) == (2, 1, 1)
    assert stats["created_by_type"] == {"product": 1, "version": 1}


def test_a_connection_dropped_before_the_batch_runs_changes_nothing(ayon, con, shot):
    ayon.set_faults({"kind": "drop_before", "count": 3})  # every attempt the client makes
    with pytest.raises(ServerError, match="Unable to connect"):
        commit_product(con, shot)
    assert ayon.entities(PROJECT, "product") == [] and ayon.stats()["faults_fired"] == {"drop_before": 3}


def test_a_dropped_poll_is_asked_again(ayon, con, shot):
    ayon.set_faults({"kind": "drop_after_commit", "target": "poll", "count": 1})
    commit_product(con, shot)
    assert ayon.stats()["polls"] == 2 and ayon.stats()["batches"] == 1


def test_slow_answers(ayon, con, shot):
    ayon.set_faults({"kind": "delay", "seconds": 1.2, "target": "graphql", "count": 1})
    start = time.monotonic()
    assert con.get_folder_by_path(PROJECT, SHOT)["id"] == shot
    assert time.monotonic() - start >= 1.2


def test_unknown_fault_kinds_and_targets_are_refused(ayon):
    with pytest.raises(ValueError):
        ayon.set_faults({"kind": "explode"})
    with pytest.raises(ValueError):
        ayon.set_faults({"kind": "delay", "target": "everything"})


def test_a_restart_keeps_every_entity(ayon_process):
    con = connect(ayon_process.url)
    shot = con.get_folder_by_path(PROJECT, SHOT)["id"]
    product = commit_product(con, shot)
    ayon_process.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(ayon_process.url, timeout=2)
    ayon_process.start()
    again = connect(ayon_process.url)
    assert again.get_product_by_name(PROJECT, "renderMain", shot)["id"] == product
    assert [v["version"] for v in again.get_versions(PROJECT, product_ids=[product])] == [1]
    assert ayon_process.control.stats()["batches"] == 0  # counters start again with the process


def test_server_down_during_a_commit_then_back(ayon_process):
    con = connect(ayon_process.url)
    shot = con.get_folder_by_path(PROJECT, SHOT)["id"]
    ayon_process.control.outage(2.0)
    time.sleep(0.3)
    with pytest.raises(ServerError, match="Unable to connect"):
        commit_product(con, shot)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            requests.get(ayon_process.url, timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.2)
    commit_product(con, shot)
    assert [p["name"] for p in ayon_process.control.entities(PROJECT, "product")] == ["renderMain"]
    stats = ayon_process.control.stats()
    assert (stats["batches"], stats["batches_committed"]) == (1, 1)


def test_the_process_takes_faults_at_start(tmp_path):
    from atomic_publish.testing import spawn_fake
    from atomic_publish.testing.fake_ayon import BANNER, FakeAyonControl

    key_file = tmp_path / "key"
    key_file.write_text(API_KEY)
    proc, url = spawn_fake("atomic_publish.testing.fake_ayon",
                           ["--data", str(tmp_path / "d"), "--api-key-file", str(key_file),
                            "--seed", PROJECT, SHOT, "comp",
                            "--fault", '{"kind": "http_error", "status": 502, "target": "rest", "count": 1}'],
                           BANNER)
    try:
        assert FakeAyonControl(url).stats()["faults_pending"][0]["status"] == 502
        response = requests.get(f"{url}/api/projects/{PROJECT}", headers={"x-api-key": API_KEY}, timeout=5)
        assert response.status_code == 502
        assert connect(url).get_folder_by_path(PROJECT, SHOT)["name"] == "sh010"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_without_retries_the_caller_sees_the_connection_error_but_the_entities_exist(ayon, shot):
    con = connect(ayon.url, max_retries=1)
    ayon.set_faults({"kind": "drop_after_commit", "count": 1})
    with pytest.raises(ServerError, match="Unable to connect"):
        commit_product(con, shot)
    assert con.get_version_by_id(PROJECT, eid("renderMain", "v1"))["version"] == 1
    assert ayon.stats()["batches_committed"] == 1
