"""The fake webhook receiver over real loopback HTTP: delivery, dedup by Idempotency-Key, faults, persistence.

Uses only the standard library as the sender, so it runs without the ftrack extra.
"""
from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request

import pytest
from atomic_publish.testing import spawn_fake
from atomic_publish.testing.webhook_receiver import WebhookControl, WebhookReceiver

EVENT = {"event": "published", "version_id": "9b0c", "files": 3}


def post(url: str, body, key: str | None = None, token: str | None = None, timeout: float = 5.0):
    """POST JSON; return (status, headers, decoded body). Connection errors propagate."""
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, dict(answer.headers), json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read() or b"null")


def is_refused(url: str) -> bool:
    try:
        post(url, {}, timeout=1)
    except (urllib.error.URLError, ConnectionError) as error:
        reason = getattr(error, "reason", error)
        return isinstance(reason, ConnectionRefusedError)
    return False


@pytest.fixture
def hook(tmp_path):
    with WebhookReceiver(tmp_path / "hook") as receiver:
        yield receiver


def test_delivery_is_recorded(hook):
    status, _, answer = post(hook.url + "/publish", EVENT, key="k1")
    assert status == 200 and answer == {"received": True, "seq": 1, "idempotency_key": "k1"}
    (delivery,) = hook.deliveries()
    assert delivery["path"] == "/publish" and delivery["body"] == EVENT and delivery["idempotency_key"] == "k1"
    assert delivery["headers"]["Idempotency-Key"] == "k1"


def test_repeated_key_returns_first_answer_and_counts_a_duplicate(hook):
    first = post(hook.url + "/publish", EVENT, key="k1")
    again = post(hook.url + "/publish", EVENT, key="k1")
    assert again[0] == 200 and again[2] == first[2]
    assert again[1].get("Idempotent-Replayed") == "true"
    assert len(hook.deliveries()) == 1
    assert hook.stats()["deliveries"] == 1 and hook.stats()["duplicates"] == 1
    post(hook.url + "/publish", EVENT, key="k2")
    post(hook.url + "/publish", EVENT)  # no key: every request is a delivery
    post(hook.url + "/publish", EVENT)
    assert len(hook.deliveries()) == 4


def test_same_key_with_other_payload_is_a_conflict(hook):
    post(hook.url + "/publish", EVENT, key="k1")
    status, _, answer = post(hook.url + "/publish", {**EVENT, "files": 4}, key="k1")
    assert status == 422 and "different payload" in answer["error"]
    assert len(hook.deliveries()) == 1 and hook.stats()["conflicts"] == 1


@pytest.mark.parametrize("status", [503, 429])
def test_errors_twice_then_success(hook, status):
    hook.set_faults({"kind": "http_error", "status": status, "retry_after": 0, "count": 2})
    answers = []
    for _ in range(3):
        code, headers, _ = post(hook.url + "/publish", EVENT, key="k1")
        answers.append(code)
        if code != 200:
            assert headers["Retry-After"] == "0"
            time.sleep(float(headers["Retry-After"]))
    assert answers == [status, status, 200]
    assert len(hook.deliveries()) == 1
    assert hook.stats()["failed"] == 2 and hook.stats()["faults_fired"] == {"http_error": 2}


def test_down_then_up(hook):
    url = hook.url
    hook.set_faults({"kind": "down"})
    assert is_refused(url)
    hook.start()  # same port again
    assert post(url + "/publish", EVENT, key="k1")[0] == 200
    hook.go_down(seconds=0.3)  # comes back by itself
    assert is_refused(url)
    time.sleep(0.6)
    assert post(url + "/publish", EVENT, key="k1")[0] == 200
    assert len(hook.deliveries()) == 1


def test_dropped_answer_then_retry_is_deduplicated(hook):
    hook.set_faults({"kind": "drop_after_record"})
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        post(hook.url + "/publish", EVENT, key="k1")
    status, headers, _ = post(hook.url + "/publish", EVENT, key="k1")  # the sender retries
    assert status == 200 and headers.get("Idempotent-Replayed") == "true"
    assert len(hook.deliveries()) == 1


def test_slow_answer(hook):
    hook.set_faults({"kind": "delay", "seconds": 0.5})
    with pytest.raises((urllib.error.URLError, TimeoutError)):
        post(hook.url + "/publish", EVENT, key="k1", timeout=0.2)
    time.sleep(0.5)
    assert len(hook.deliveries()) == 1  # delivered although the sender gave up


def test_bearer_token(tmp_path):
    with WebhookReceiver(tmp_path, token="t0k") as hook:
        assert post(hook.url + "/publish", EVENT, key="k1")[0] == 401
        assert post(hook.url + "/publish", EVENT, key="k1", token="wrong")[0] == 401
        assert post(hook.url + "/publish", EVENT, key="k1", token="t0k")[0] == 200
        (delivery,) = hook.deliveries()
        assert "Authorization" not in delivery["headers"]  # secrets are not written to disk
        assert hook.stats()["rejected"] == 2


def test_unknown_fault_kind_is_refused(hook):
    with pytest.raises(ValueError, match="unknown fault kind"):
        hook.set_faults({"kind": "503"})


def test_persistence_across_process_restart(tmp_path):
    args = ["--state", str(tmp_path / "state"), "--token", "t0k"]
    proc, url = spawn_fake("atomic_publish.testing.webhook_receiver", args, "WEBHOOK_URL")
    try:
        control = WebhookControl(url)
        control.set_faults({"kind": "http_error", "status": 503, "retry_after": 1})
        assert post(url + "/publish", EVENT, key="k1", token="t0k")[0] == 503
        assert post(url + "/publish", EVENT, key="k1", token="t0k")[0] == 200
        assert control.stats()["failed"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    proc, url = spawn_fake("atomic_publish.testing.webhook_receiver", args, "WEBHOOK_URL")
    try:
        control = WebhookControl(url)
        assert [d["idempotency_key"] for d in control.deliveries()] == ["k1"]
        status, headers, answer = post(url + "/publish", EVENT, key="k1", token="t0k")
        assert status == 200 and headers.get("Idempotent-Replayed") == "true" and answer["seq"] == 1
        assert len(control.deliveries()) == 1
        control.set_faults({"kind": "down", "seconds": 0.3})  # over HTTP, down needs a comeback time
        time.sleep(0.1)
        assert is_refused(url)
        time.sleep(0.5)
        assert post(url + "/publish", EVENT, key="k2", token="t0k")[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
