"""A local webhook endpoint that records deliveries and deduplicates by ``Idempotency-Key``.

Why: atomic-publish notifies downstream systems exactly once, and "exactly once" over
HTTP means "at least once, deduplicated by the receiver". This fake is that receiver,
following the IETF Idempotency-Key draft: the first request with a key is a delivery,
a repeat of the key gets the first answer back and is counted as a duplicate. It keeps
deliveries on disk (a restart keeps them, like a real service) and can script the
failures a sender must cope with: 503/429 with Retry-After, being down (refusing
connections), slow answers, and a dropped connection after recording the delivery.

In-process::

    with WebhookReceiver(state_dir) as hook:
        requests.post(hook.url + "/hook", json={...}, headers={"Idempotency-Key": "k"})
        assert len(hook.deliveries()) == 1

As a process: ``python -m atomic_publish.testing.webhook_receiver --state DIR`` prints
``WEBHOOK_URL=http://127.0.0.1:PORT`` once listening and exits on SIGTERM.
"""
from __future__ import annotations

import argparse
import copy
import datetime as _dt
import hashlib
import json
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from atomic_publish.testing import FakeControl, FaultBook, LoopbackServer, atomic_write_json, read_json, serve_until_signal

__all__ = ["WebhookControl", "WebhookReceiver", "main"]

FAULT_KINDS = ("http_error", "down", "delay", "drop_after_record")
STATE_FILE = "webhook_state.json"


class WebhookReceiver(LoopbackServer):
    """Records POSTed JSON on any path except ``/_fake/*`` (the control endpoints).

    *token*, when given, is required as ``Authorization: Bearer <token>`` (else 401).
    *faults* are fault dicts (see :meth:`set_faults`) active from the start.
    """

    def __init__(self, state_dir: str | Path | None, port: int = 0, token: str | None = None,
                 faults: Iterable[dict] | None = None):
        super().__init__(port)
        self.token = token
        self.state_path = Path(state_dir) / STATE_FILE if state_dir is not None else None
        self.faults = FaultBook(kinds=FAULT_KINDS)
        self._lock = threading.RLock()
        self._state = self._load()
        self._stats = {"requests": 0, "deliveries": 0, "duplicates": 0, "conflicts": 0, "rejected": 0, "failed": 0}
        self._down_timer: threading.Timer | None = None
        if faults:
            self.set_faults(faults)

    def _make_handler(self) -> type:
        return type("WebhookHandler", (_WebhookHandler,), {"receiver": self})

    # -- persistence ---------------------------------------------------------------

    def _load(self) -> dict:
        state = read_json(self.state_path, None) if self.state_path else None
        return state or {"deliveries": [], "answers": {}}

    def _save(self) -> None:
        if self.state_path:
            atomic_write_json(self.state_path, self._state)

    # -- public API ----------------------------------------------------------------

    def stop(self) -> None:
        """Stop listening, and cancel a pending automatic comeback (see :meth:`go_down`)."""
        self._cancel_comeback()
        super().stop()

    def _cancel_comeback(self) -> None:
        timer, self._down_timer = self._down_timer, None
        if timer is not None:
            timer.cancel()

    def deliveries(self) -> list[dict]:
        """Recorded deliveries, oldest first: path, headers, body, key, received_at."""
        with self._lock:
            return copy.deepcopy(self._state["deliveries"])

    def stats(self) -> dict:
        """requests seen, deliveries recorded, duplicates answered, rejected (401), failed (faults)."""
        with self._lock:
            out = dict(self._stats)
        out["faults_fired"] = dict(self.faults.fired)
        out["faults_pending"] = self.faults.pending()
        return out

    def set_faults(self, faults: Iterable[dict] | dict, replace: bool = True) -> None:
        """Script faults. Each is a dict with ``kind`` in :data:`FAULT_KINDS` and optionally:

        * ``http_error``: ``status`` (503), ``retry_after`` seconds, ``count`` requests.
        * ``down``: stop listening now (connections refused); ``seconds`` to come back
          by itself (else call :meth:`start`). Over HTTP ``seconds`` is required,
          since the control endpoint goes down too.
        * ``delay``: ``seconds`` before answering, ``count`` requests.
        * ``drop_after_record``: record the delivery, then close without answering.
        ``count`` defaults to 1; ``None`` means forever. ``path`` limits a fault to one path.
        """
        faults = [faults] if isinstance(faults, dict) else list(faults)
        down = [f for f in faults if f.get("kind") == "down"]
        others = [f for f in faults if f.get("kind") != "down"]
        (self.faults.replace if replace else self.faults.add)(others)
        for fault in down:
            self.go_down(fault.get("seconds"))

    def clear_faults(self) -> None:
        self.faults.clear()

    def go_down(self, seconds: float | None = None) -> None:
        """Refuse connections (stop listening); come back after *seconds* if given."""
        with self._lock:
            self.faults.fired["down"] = self.faults.fired.get("down", 0) + 1
        # Safe from a request handler too: ThreadingHTTPServer runs handlers off the serve loop.
        self.stop()
        if seconds is not None:
            timer = threading.Timer(float(seconds), LoopbackServer.start, args=(self,))
            timer.daemon = True
            timer.start()
            self._down_timer = timer

    def reset(self) -> None:
        """Forget deliveries, answers, faults and stats."""
        with self._lock:
            self._state = {"deliveries": [], "answers": {}}
            self._save()
            self._stats = dict.fromkeys(self._stats, 0)
        self.faults.clear()
        self.faults.fired.clear()

    # -- used by the handler -------------------------------------------------------

    def _count(self, name: str) -> None:
        with self._lock:
            self._stats[name] += 1

    def _record(self, path: str, headers: dict, body: Any, key: str | None) -> tuple[int, dict, bool]:
        """Record a delivery or find the earlier answer for *key*; return (status, answer, duplicate).

        A key seen before with another payload is a sender bug: 422, as in the IETF draft.
        """
        fingerprint = hashlib.sha256(json.dumps([path, body], sort_keys=True).encode()).hexdigest()
        with self._lock:
            if key is not None and key in self._state["answers"]:
                previous = self._state["answers"][key]
                if previous["fingerprint"] != fingerprint:
                    self._stats["conflicts"] += 1
                    return 422, {"error": "Idempotency-Key reused with a different payload",
                                 "idempotency_key": key}, False
                self._stats["duplicates"] += 1
                return previous["status"], previous["body"], True
            delivery = {"seq": len(self._state["deliveries"]) + 1, "path": path, "headers": headers,
                        "body": body, "idempotency_key": key,
                        "received_at": _dt.datetime.now(_dt.timezone.utc).isoformat()}
            answer = {"received": True, "seq": delivery["seq"], "idempotency_key": key}
            self._state["deliveries"].append(delivery)
            if key is not None:
                self._state["answers"][key] = {"status": 200, "body": answer, "fingerprint": fingerprint}
            self._stats["deliveries"] += 1
            self._save()
            return 200, answer, False


class _WebhookHandler(BaseHTTPRequestHandler):
    receiver: WebhookReceiver
    server_version = "FakeWebhook/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send_json(self, status: int, payload: Any, headers: dict | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, str(value))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        if path == "/_fake/deliveries":
            self._send_json(200, self.receiver.deliveries())
        elif path == "/_fake/stats":
            self._send_json(200, self.receiver.stats())
        else:
            self._send_json(404, {"error": f"no GET endpoint {path}"})

    def do_POST(self) -> None:
        body = self._body()
        path = self.path.partition("?")[0]
        if path.startswith("/_fake/"):
            self._control(path, body)
        else:
            self._deliver(path, body)

    def _deliver(self, path: str, raw: bytes) -> None:
        receiver = self.receiver
        receiver._count("requests")
        if receiver.token is not None and self.headers.get("Authorization") != f"Bearer {receiver.token}":
            receiver._count("rejected")
            self._send_json(401, {"error": "unauthorized"}, {"WWW-Authenticate": "Bearer"})
            return
        matches = lambda fault: fault.get("path") in (None, path)
        delay = receiver.faults.take("delay", matches)
        if delay:
            time.sleep(float(delay.get("seconds", 1.0)))
        error = receiver.faults.take("http_error", matches)
        if error:
            receiver._count("failed")
            status = int(error.get("status", 503))
            headers = {"Retry-After": error["retry_after"]} if error.get("retry_after") is not None else {}
            self._send_json(status, {"error": f"fake webhook: HTTP {status}"}, headers)
            return
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self._send_json(400, {"error": "body is not JSON"})
            return
        key = self.headers.get("Idempotency-Key")
        headers = {name: value for name, value in self.headers.items() if name.lower() != "authorization"}
        status, answer, duplicate = receiver._record(path, headers, body, key)
        if receiver.faults.take("drop_after_record", matches):
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self._send_json(status, answer, {"Idempotent-Replayed": "true"} if duplicate else None)

    def _control(self, path: str, raw: bytes) -> None:
        receiver = self.receiver
        try:
            data = json.loads(raw) if raw else None
            if path == "/_fake/faults":
                replace = True if data is None or isinstance(data, list) else data.get("replace", True)
                faults = data if isinstance(data, list) else (data or {}).get("faults", data)
                faults = [faults] if isinstance(faults, dict) else (faults or [])
                if any(f.get("kind") == "down" and f.get("seconds") is None for f in faults):
                    raise ValueError("over HTTP a 'down' fault needs 'seconds' (nobody could bring it back)")
                self._send_json(200, {"ok": True})  # answer before a 'down' stops the listener
                receiver.set_faults(faults, replace=replace)
            elif path == "/_fake/reset":
                receiver.reset()
                self._send_json(200, {"ok": True})
            else:
                self._send_json(404, {"error": f"no POST endpoint {path}"})
        except ValueError as exc:
            self._send_json(400, {"error": str(exc)})


class WebhookControl(FakeControl):
    """Steer a receiver running in another process through its ``/_fake/*`` endpoints."""

    def deliveries(self) -> list[dict]:
        return self._call("GET", "/_fake/deliveries")

    def stats(self) -> dict:
        return self._call("GET", "/_fake/stats")

    def set_faults(self, faults: Iterable[dict] | dict, replace: bool = True) -> None:
        faults = [faults] if isinstance(faults, dict) else list(faults)
        self._call("POST", "/_fake/faults", {"faults": faults, "replace": replace})

    def reset(self) -> None:
        self._call("POST", "/_fake/reset", {})


def main(argv: list[str] | None = None) -> int:
    """Run the receiver as a process until SIGTERM; print ``WEBHOOK_URL=...`` when ready."""
    parser = argparse.ArgumentParser(prog="python -m atomic_publish.testing.webhook_receiver",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--state", required=True, help="folder holding the recorded deliveries")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN'")
    parser.add_argument("--fault", action="append", type=json.loads, default=[],
                        help="a fault as JSON (repeatable); see docs/fakes.md")
    args = parser.parse_args(argv)
    if any(fault.get("kind") == "down" for fault in args.fault):
        parser.error("a 'down' fault makes no sense at start; set it at run time (POST /_fake/faults)")
    receiver = WebhookReceiver(args.state, port=args.port, token=args.token, faults=args.fault)
    return serve_until_signal(receiver, "WEBHOOK_URL")


if __name__ == "__main__":
    raise SystemExit(main())
