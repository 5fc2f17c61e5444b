"""Unit tests of the pure parts: keys, manifest normalisation, layout, classification, redaction."""
from __future__ import annotations

import errno
import sys

import pytest

from atomic_publish.idempotency.keys import KeyError_, deadline_key, fingerprint, object_id
from atomic_publish.idempotency.redact import redact_uri
from atomic_publish.wrapper import errors as E
from atomic_publish.wrapper.classify import classify, classify_oserror
from atomic_publish.wrapper.errors import ManifestError
from atomic_publish.wrapper.layout import plan_files, version_dir
from atomic_publish.wrapper.manifest import DEFAULT_TEMPLATE, parse_manifest

BASE = {"project": {"name": "demo", "code": "dm"}, "asset": "sh010", "subset": "renderMain", "family": "render",
        "publish_root": "/mnt/projects",
        "representations": [{"name": "exr", "files": ["/r/a.1001.exr", "/r/a.1002.exr"]},
                             {"name": "mov", "files": ["/r/a.mov"]}]}


def test_key_is_deterministic_and_validated():
    assert deadline_key("5f3a9c", 0) == deadline_key("5f3a9c", "0") == "deadline10:5f3a9c:0"
    assert deadline_key("5f3a9c", "007") == "deadline10:5f3a9c:7"
    for bad in ("", "a b", "../x", "x" * 200, "-x"):
        with pytest.raises(KeyError_):
            deadline_key(bad, 0)
    with pytest.raises(KeyError_):
        deadline_key("job", "-1")
    assert object_id("version", "k") == object_id("version", "k") != object_id("version", "k2")


def test_defaults_and_fingerprint():
    m = parse_manifest(BASE)
    assert m.template == DEFAULT_TEMPLATE and m.version is None and m.hierarchy == ""
    same = parse_manifest({**BASE, "template": DEFAULT_TEMPLATE, "version": None})
    assert m.normalised() == same.normalised()
    reordered = parse_manifest(dict(reversed(list(BASE.items()))))
    assert fingerprint(m.canonical()) == fingerprint(reordered.canonical())
    assert fingerprint(m.canonical()) != fingerprint(parse_manifest({**BASE, "comment": "x"}).canonical())


def test_names_follow_openpype_convention():
    m = parse_manifest({**BASE, "hierarchy": "shots/sq01"})
    assert version_dir(m, 7) == "/mnt/projects/demo/shots/sq01/sh010/publish/render/renderMain/v007"
    names = [p.name for p in plan_files(m, 7)]
    assert names == ["dm_sh010_renderMain_v007.1001.exr", "dm_sh010_renderMain_v007.1002.exr",
                     "dm_sh010_renderMain_v007.mov"]
    proxy = parse_manifest({**BASE, "representations": [{"name": "exr", "files": ["/r/a.exr"]},
                                                        {"name": "proxy", "files": ["/r/b.exr"]}]})
    assert [p.name for p in plan_files(proxy, 1)] == ["dm_sh010_renderMain_v001.exr", "dm_sh010_renderMain_v001_proxy.exr"]


@pytest.mark.parametrize("reps, problem", [
    ([{"name": "exr", "files": ["/r/a.exr", "/r/b.exr"]}], "has no frame number"),
    ([{"name": "exr", "files": ["/r/a.1001.exr", "/s/a.1001.exr"]}], "frame 1001 appears twice"),
    ([{"name": "exr", "files": ["/r/a.exr"]}, {"name": "EXR", "files": ["/r/b.exr"]}], "names are case-insensitive"),
    ([{"name": "mov", "files": ["/r/noext"]}], "has no file extension"),
    ([{"name": "mov", "files": ["relative.mov"]}], "is not an absolute path"),
    ([{"name": "mov", "files": ["/r/a\x00.mov"]}], "NUL or control character"),
    ([{"name": "aux", "files": ["/r/a.mov"]}], "reserved name on Windows"),
])
def test_representation_errors(reps, problem):
    with pytest.raises(ManifestError) as info:
        plan_files(parse_manifest({**BASE, "representations": reps}), 1)
    assert problem in str(info.value)
    assert str(info.value).startswith("manifest field representations[")


def test_template_must_stay_inside_root():
    for template in ("{publish_root}/../x/{version}", "/elsewhere/{version}", "{publish_root}"):
        with pytest.raises((E.DestinationError, ManifestError)):
            version_dir(parse_manifest({**BASE, "template": template}), 1)


from atomic_publish.wrapper.classify import EXCEPTION_TYPES, OS_ERRORS, TRANSIENT_ERRNOS  # noqa: E402


@pytest.mark.parametrize("where, code", sorted(OS_ERRORS), ids=[f"{w}-{errno.errorcode[c]}" for w, c in sorted(OS_ERRORS)])
def test_every_oserror_row(where, code):
    cls, _template = OS_ERRORS[(where, code)]
    err = classify_oserror(OSError(code, "x"), where, "/p", "w1")
    assert type(err) is cls and "/p" in err.cause and err.todo


@pytest.mark.parametrize("code", sorted(TRANSIENT_ERRNOS), ids=[errno.errorcode[c] for c in sorted(TRANSIENT_ERRNOS)])
def test_transient_errnos_anywhere(code):
    assert classify_oserror(OSError(code, "x"), "staging", "/p", "w1").failure_class == E.TRANSIENT


def test_unknown_errno_is_transient_once():
    err = classify_oserror(OSError(errno.EXDEV, "x"), "staging", "/p", "w1")
    assert err.failure_class == E.TRANSIENT and "errno" in err.cause


@pytest.mark.parametrize("name", sorted(EXCEPTION_TYPES))
def test_every_exception_row(name):
    cls, prefix = EXCEPTION_TYPES[name]
    exc = type(name, (Exception,), {})("boom")  # matched by class name through the MRO
    err = classify(exc)
    assert type(err) is cls and err.cause.startswith(prefix)


def test_http_statuses():
    import io
    import urllib.error

    from atomic_publish.wrapper.integrations import http

    def raising(status, headers=None):
        def opener(*a, **k):
            raise urllib.error.HTTPError("http://x", status, "e", headers or {}, io.BytesIO(b""))
        return opener

    import unittest.mock as um
    for status, cls in ((503, http.HttpTransient), (500, http.HttpTransient), (429, http.HttpTransient),
                        (400, http.HttpPermanent), (404, http.HttpPermanent), (422, http.HttpPermanent)):
        with um.patch("urllib.request.urlopen", raising(status, {"Retry-After": "7"})):
            with pytest.raises(cls) as info:
                http.post_json("http://x", {}, {}, 1)
        if cls is http.HttpTransient:
            assert info.value.retry_after == 7.0
    assert classify(http.HttpTransient("x")).failure_class == E.TRANSIENT


def test_lease_held_and_fingerprint_are_classified():
    assert E.LeaseHeld("x").failure_class == E.BUSY
    assert E.FingerprintMismatch("x").failure_class == E.PERMANENT
    assert E.VersionConflict("x").failure_class == E.PERMANENT
    assert E.ManifestError("f", "p").failure_class == E.PERMANENT


def test_library_exceptions():
    from pymongo import errors as perr

    assert classify(perr.AutoReconnect("x")).failure_class == E.TRANSIENT
    assert classify(perr.ServerSelectionTimeoutError("x")).failure_class == E.TRANSIENT
    assert classify(perr.NotPrimaryError("x")).failure_class == E.TRANSIENT
    assert classify(perr.OperationFailure("auth", code=18)).failure_class == E.PERMANENT
    assert classify(perr.ConfigurationError("x")).failure_class == E.PERMANENT
    assert classify(RuntimeError("?")).failure_class == E.TRANSIENT


def test_redaction():
    assert redact_uri("mongodb://ap:s3cret@db:27017/?authSource=admin") == "mongodb://ap:***@db:27017/?authSource=admin"
    assert redact_uri("mongodb://db:27017/") == "mongodb://db:27017/"


def test_the_mmap_threshold_is_fixed_on_glibc_unless_the_environment_sets_it(monkeypatch):
    import platform

    from atomic_publish.wrapper import memory

    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert memory.fix_mmap_threshold() is glibc
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")  # the user's own tuning wins
    assert memory.fix_mmap_threshold() is False
