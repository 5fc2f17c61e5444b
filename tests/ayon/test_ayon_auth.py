"""Connecting with the real client: the API key in ``x-api-key``, refusals as the real server
words them, and the key never written anywhere by the server."""
from __future__ import annotations

import os

import ayon_api
import requests

from conftest import API_KEY, PROJECT, SHOT, connect


def test_the_client_connects_as_a_service_user(ayon, con):
    assert con.has_valid_token
    assert con.get_server_version().startswith("1.15.17")
    assert con.get_user()["name"] == "atomic-publish"
    assert con.get_info()["user"]["data"]["isService"] is True
    # The client validated the key through GET /api/users/me, Bearer first, then x-api-key.
    paths = [(r["method"], r["path"], r["status"]) for r in ayon.requests()]
    assert ("GET", "/api/users/me", 401) in paths and ("GET", "/api/users/me", 200) in paths


def test_a_wrong_key_gets_401_invalid_api_key(ayon):
    wrong = connect(ayon.url, key="not-the-key")
    assert wrong.has_valid_token is False
    response = requests.get(f"{ayon.url}/api/projects/{PROJECT}", headers={"x-api-key": "nope"}, timeout=5)
    assert response.status_code == 401
    assert response.json() == {"code": 401, "detail": "Invalid API key"}
    # and the client, holding a refused key, reads nothing
    assert wrong.get_project(PROJECT) is None


def test_missing_or_session_tokens_are_refused_as_the_real_server_does(ayon):
    bare = requests.get(f"{ayon.url}/api/users/me", timeout=5)
    assert (bare.status_code, bare.json()["detail"]) == (401, "Access token is missing")
    short = requests.get(f"{ayon.url}/api/users/me", headers={"Authorization": "Bearer abc"}, timeout=5)
    assert short.json()["detail"] == "Access token is missing"  # not 64 characters: not a token
    token = requests.get(f"{ayon.url}/api/users/me", headers={"Authorization": "Bearer " + "a" * 64},
                         timeout=5)
    assert (token.status_code, token.json()["detail"]) == (401, "Invalid access token")
    as_apikey = requests.get(f"{ayon.url}/api/users/me", headers={"Authorization": f"ApiKey {API_KEY}"},
                             timeout=5)
    assert as_apikey.status_code == 200
    graphql = requests.post(f"{ayon.url}/graphql", json={"query": "{ project(name: \"proj\") { name } }"},
                            timeout=5)
    assert graphql.status_code == 401
    assert ayon.stats()["rejected_auth"] >= 4


def test_info_without_a_key_tells_only_the_version(ayon):
    info = requests.get(f"{ayon.url}/api/info", timeout=5).json()
    assert set(info) == {"version", "uptime", "disableFeedback", "offlineMode"}


def test_module_level_functions_use_the_environment(ayon, monkeypatch):
    monkeypatch.setenv("AYON_SERVER_URL", ayon.url)
    monkeypatch.setenv("AYON_API_KEY", API_KEY)
    ayon_api.close_connection()
    try:
        assert ayon_api.get_project(PROJECT)["name"] == PROJECT
        assert ayon_api.get_folder_by_path(PROJECT, SHOT)["name"] == "sh010"
    finally:
        ayon_api.close_connection()


def test_the_key_is_never_logged_echoed_or_stored(ayon_process):
    """Good and bad keys, REST, GraphQL and a batch: the key is in no file of the server's."""
    con = connect(ayon_process.url)
    folder = con.get_folder_by_path(PROJECT, SHOT)
    con.send_batch_operations(PROJECT, [{"type": "create", "entityType": "product",
                                         "data": {"name": "renderMain", "productType": "render",
                                                  "folderId": folder["id"]}}])
    for headers in ({"x-api-key": API_KEY + "x"}, {"Authorization": f"Bearer {API_KEY}"}):
        requests.get(f"{ayon_process.url}/api/users/me", headers=headers, timeout=5)
    answers = [requests.get(f"{ayon_process.url}/api/{p}", headers={"x-api-key": API_KEY}, timeout=5).text
               for p in ("users/me", "info", f"projects/{PROJECT}")]
    ayon_process.stop()  # flush everything it wrote
    written = []
    for root, _, files in os.walk(ayon_process.data):
        for name in files:
            written.append(open(os.path.join(root, name), encoding="utf-8", errors="replace").read())
    log = (ayon_process.data / "ayon_server.log").read_text()
    assert "[GET] /api/users/me | 200 | atomic-publish" in log
    assert "refused: Invalid API key" in log
    for text in written + answers:
        assert API_KEY not in text
        assert API_KEY[3:19] not in text  # not a part of it either
