"""Unit tests of the pure parts: keys, manifest normalisation, layout, classification, redaction."""
from __future__ import annotations

import errno

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


@pytest.mark.parametrize("where, code, cls", [
    ("source", errno.ENOENT, E.SourceError),
    ("source", errno.EACCES, E.SourceUnreachable),
    ("source", errno.EISDIR, E.SourceError),
    ("publish-root", errno.ENOENT, E.PublishRootUnavailable),
    ("publish-root", errno.EACCES, E.PublishRootUnavailable),
    ("publish-root", errno.EROFS, E.PublishRootUnavailable),
    ("staging", errno.ENOSPC, E.TransientError),
    ("staging", errno.EIO, E.TransientError),
    ("staging", errno.ENAMETOOLONG, E.DestinationError),
])
def test_oserror_table(where, code, cls):
    err = classify_oserror(OSError(code, "x"), where, "/p", "w1")
    assert type(err) is cls
    assert "/p" in err.cause


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
