"""Why a store cannot be reached, in one line a farm admin can act on.

A refused port or an unknown host is found in milliseconds by one TCP connect, before the
driver waits its whole server-selection timeout for it. What the driver says in detail
(its topology description, hundreds of characters) goes to stderr, never into the result line.
"""
from __future__ import annotations

import os
import socket
import sys

from ..wrapper.errors import StoreConfigError, StoreUnavailable
from .redact import redact_uri

TIMEOUT_ENV = "ATOMIC_PUBLISH_STORE_TIMEOUT"
DEFAULT_TIMEOUT_S = 5.0
MAX_TIMEOUT_S = 600.0

WHERE = "--store, ATOMIC_PUBLISH_STORE or the plugin's StoreUri"
TODO = {
    "refused": f"check that the store server runs and listens on that address ({WHERE})",
    "dns": f"check the host name in the store URI ({WHERE}) and this machine's DNS",
    "timeout": "check the network and firewalls between this machine and the store; a slow store needs a "
               f"longer --store-timeout or {TIMEOUT_ENV}",
    "unreachable": "check the network between this machine and the store's host (routes, VPN, firewall)",
    "handshake": "check that the address is a MongoDB server, and whether it needs TLS (tls=true in the URI)",
    "tls": "check the URI's TLS options (tls, tlsCAFile, tlsAllowInvalidHostnames) and the server's certificate",
    "auth": "check the user name, password and authSource of the store URI",
    "other": f"check that the store is up and reachable from this machine ({WHERE})",
}


def timeout_seconds() -> float:
    """The store timeout: ``ATOMIC_PUBLISH_STORE_TIMEOUT`` (seconds; ``--store-timeout`` sets it), default 5."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= MAX_TIMEOUT_S:
        raise StoreConfigError(f"{TIMEOUT_ENV}={text!r} is not a number of seconds above 0 and at most "
                               f"{MAX_TIMEOUT_S:g}", f"set {TIMEOUT_ENV} (or --store-timeout) to e.g. 5")
    return value


def _hosts(uri: str) -> list[tuple[str, int]]:
    if uri.startswith("mongodb+srv://"):
        return []  # the hosts come from DNS SRV records: the driver resolves them
    try:
        import pymongo.uri_parser as up

        return list(up.parse_uri(uri, validate=False, warn=False)["nodelist"])
    except Exception:
        return []


def _try_host(host: str, port: int, timeout: float) -> str | None:
    """None when a TCP connection opens, else what failed: "refused", "dns", "timeout" or "unreachable"."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return "dns"
    failure = "refused"
    for family, kind, proto, _name, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.settimeout(timeout)
            try:
                sock.connect(address)
                return None
            except socket.timeout:
                failure = "timeout"
            except ConnectionRefusedError:
                pass
            except OSError:  # no route to the host, network unreachable
                failure = "timeout" if failure == "timeout" else "unreachable"
    return failure


def probe(uri: str, timeout: float) -> bool:
    """Raise StoreUnavailable at once when no host of ``uri`` accepts a TCP connection; True when one
    did, False when the hosts are not probed (mongodb+srv://, long seed lists)."""
    hosts = _hosts(uri)
    if not hosts or len(hosts) > 7:
        return False
    failures = []
    for host, port in hosts:
        failure = _try_host(host, port, timeout)
        if failure is None:
            return True
        failures.append((f"{host}:{port}", failure))
    kinds = {f for _, f in failures}
    kind = kinds.pop() if len(kinds) == 1 else "other"
    what = {"refused": "connection refused (nothing listens on that port)", "dns": "DNS lookup failed (unknown host)",
            "timeout": f"TCP connection timed out after {timeout:g} s",
            "unreachable": "no route to the host (network unreachable)"}
    said = what[failures[0][1]] if len(failures) == 1 else "; ".join(f"{a}: {what[f]}" for a, f in failures)
    raise StoreUnavailable(f"cannot reach the store {redact_uri(uri)}: {said}", TODO[kind])


def _kind(text: str) -> str:
    low = text.lower()
    if any(w in low for w in ("ssl", "tls", "certificate")):
        return "tls"
    if "refused" in low:
        return "refused"
    if any(w in low for w in ("name or service not known", "nodename nor servname", "getaddrinfo",
                              "no address associated", "temporary failure in name resolution")):
        return "dns"
    if "timed out" in low:
        return "handshake"
    return "other"


def explain(exc: BaseException, uri: str, timeout: float,
            accepted: bool = False) -> StoreConfigError | StoreUnavailable:
    """The one-line error for a driver failure while connecting; the driver's own text goes to stderr.
    ``accepted``: the probe's TCP connection was accepted, so a silent timeout is a server that does
    not speak MongoDB (or wants TLS)."""
    from pymongo import errors as perr

    where = redact_uri(uri)
    print(f"[atomic-publish] store error details ({where}): {redact_uri(str(exc))}", file=sys.stderr, flush=True)
    if isinstance(exc, perr.OperationFailure) and exc.code in (13, 18):
        return StoreConfigError(f"the store {where} refused the credentials (authentication failed)", TODO["auth"])
    if isinstance(exc, perr.ConfigurationError):
        return StoreConfigError(f"store URI {where} is misconfigured: {redact_uri(str(exc)).splitlines()[0][:200]}")
    if isinstance(exc, perr.OperationFailure):
        return StoreUnavailable(f"the store {where} answered the connection check with an error "
                                f"(code {exc.code})", TODO["other"])
    kind = _kind(str(exc))
    if kind == "other" and accepted and isinstance(exc, perr.ServerSelectionTimeoutError):
        kind = "handshake"
    what = {"tls": "the TLS handshake failed", "refused": "connection refused", "dns": "DNS lookup failed",
            "handshake": f"a server accepted the connection but did not answer as MongoDB within {timeout:g} s",
            "other": f"no server answered within {timeout:g} s"}[kind]
    return StoreUnavailable(f"cannot reach the store {where}: {what}", TODO[kind])
