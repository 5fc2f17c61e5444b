"""The bad-input corpus: manifests, names, values, ids, sources and destinations.

One line per case: (id, setup, expected exit, exact expected error, [needs]). Each case runs
`atomic-publish run` as a real process against the real MongoDB-wire server and must end with
the permanent exit code, one result line carrying the error (naming the field or file and the
problem) and no trace at all: the case folder unchanged (no staging or final folder anywhere),
no record, no reservation, no catalog collection. Cases the product does not handle yet are
strict xfails whose reason says what is needed.
"""
from __future__ import annotations

import os
import socket
import tempfile
import uuid
from pathlib import Path

import pytest

from hostile_lib import C, check_result, drop, fn, m, params, put, raw, run_corpus, then

PWNED = f"/tmp/pwned-{uuid.uuid4().hex}"
FINAL = "demo/shots/sq01/sh010/publish/render/renderCompMain/v001"
NEEDS_SOURCE_ROOTS = ("allowed source roots (worker setting ATOMIC_PUBLISH_SOURCE_ROOTS / run --source-root; "
                      "every source, resolved, must lie under one)")
NEEDS_FULLMATCH = "name patterns anchored with \\Z (fullmatch): '$' lets a trailing newline through"
NEEDS_RESERVED_FIELD = "the Windows-reserved-name error names the exact field"
NEEDS_PORTABLE = "every folder of the version path checked for portable names (reserved, trailing dot/space, length)"
NEEDS_SPEC = "template format specs limited to fill/align/width (no 'c', precision, type)"
NEEDS_UNICODE = "manifest strings refused when not valid Unicode (lone surrogates)"
NEEDS_ARGPARSE = "`run` argument errors reported as a permanent result (exit 78), not argparse's exit 2"
ENV_ROOTS = "ATOMIC_PUBLISH_SOURCE_ROOTS"


# -- filesystem setups ---------------------------------------------------------------------------
def replace_frame(make):
    def setup(render, data):
        target = render.frames[0]
        target.unlink()
        make(render, target)
        return data
    return setup


def make_socket(render, target: Path) -> None:
    short = tempfile.mkdtemp(prefix="s", dir="/tmp")  # AF_UNIX paths are limited to 108 bytes
    path = os.path.join(short, "s")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(path)
    os.rename(path, target)
    os.rmdir(short)


def secret(render) -> Path:
    folder = render.root / "secret"
    folder.mkdir(exist_ok=True)
    path = folder / "comp.1001.exr"
    path.write_bytes(b"not yours")
    return path


def roots_env(render) -> dict:
    return {ENV_ROOTS: str(render.renders)}


def symlink_escape(render, data):
    render.frames[0].unlink()
    render.frames[0].symlink_to(secret(render))
    return data


def outside_path(render, data):
    data["representations"][0]["files"][0] = str(secret(render))
    return data


def dotdot_path(render, data):
    secret(render)
    data["representations"][0]["files"][0] = str(render.renders / ".." / "secret" / "comp.1001.exr")
    return data


def gap(render, data):
    render.frames[1].unlink()
    data["representations"][0]["files"] = [str(render.frames[0]), str(render.frames[2])]
    data["representations"][0]["frames"] = "1001-1003"
    return data


def root_is_symlink(render, data):
    elsewhere = render.root / "elsewhere"
    elsewhere.mkdir()
    os.rmdir(render.publish_root)
    render.publish_root.symlink_to(elsewhere)
    return data


def final_dir_of_nobody(render, data):
    (render.publish_root / FINAL).mkdir(parents=True)
    data["version"] = 1
    return data


def symlink_inside_root(render, data):
    (render.root / "elsewhere").mkdir()
    (render.publish_root / "demo").symlink_to(render.root / "elsewhere")
    return data


def template_to(rel: str):
    return lambda render, data: {**data, "template": str(render.root / rel)}


def file_path(value: str):
    return put("representations", 0, "files", 0, value=value)


def rep(**fields):
    def setup(render, data):
        data["representations"][0].update(fields)
        return data
    return setup


def second_rep(name: str):
    def setup(render, data):
        data["representations"].append({"name": name, "files": [str(render.movie)]})
        data["representations"][1]["name"] = "mov"
        return data
    return setup


LONG = "x" * 300
DEEP = "[" * 100_000 + "]" * 100_000

CASES = [
    # -- manifest files: not JSON, encodings, sizes ------------------------------------------------
    C("file-not-json", raw(b"{not json"), 78,
      "argument --manifest: is not valid JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
    C("file-empty", raw(b""), 78, "argument --manifest: is not valid JSON: Expecting value at line 1 column 1"),
    C("file-binary", raw(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), 78, "argument --manifest: is not UTF-8 (byte 0)"),
    C("file-latin1", raw('{"asset": "café"}'.encode("latin-1")), 78, "argument --manifest: is not UTF-8 (byte 14)"),
    C("file-utf16", raw('{"asset": "sh010"}'.encode("utf-16")), 78, "argument --manifest: is not UTF-8 (byte 0)"),
    C("file-too-large", raw(b" " * (16 * 1024 * 1024 + 1)), 78,
      "argument --manifest: file is larger than 16777216 bytes"),
    C("file-deep-nesting", raw(DEEP), 78, "argument --manifest: is nested deeper than"),
    C("file-duplicate-keys", fn(lambda r, d: '{"asset": "sh010", ' + __import__("json").dumps(d)[1:]), 78,
      "manifest field asset: appears twice"),
    # -- wrong types ---------------------------------------------------------------------------------
    C("type-top-array", raw(b"[]"), 78, "manifest field (top level): [] is not of type 'object'"),
    C("type-top-null", raw(b"null"), 78, "manifest field (top level): None is not of type 'object'"),
    C("type-project-string", m(project="demo"), 78, "manifest field project: 'demo' is not of type 'object'"),
    C("type-representations-object", m(representations={"name": "exr"}), 78,
      "manifest field representations: {'name': 'exr'} is not of type 'array'"),
    C("type-files-string", rep(files="/renders/a.exr"), 78,
      "manifest field representations[0].files: '/renders/a.exr' is not of type 'array'"),
    C("type-version-string", m(version="1"), 78, "manifest field version: '1' is not of type 'integer', 'null'"),
    C("type-version-bool", m(version=True), 78, "manifest field version: True is not of type 'integer', 'null'"),
    C("type-version-float", m(version=1.5), 78, "manifest field version: 1.5 is not of type 'integer', 'null'"),
    C("value-version-zero", m(version=0), 78, "manifest field version: 0 is less than the minimum of 1"),
    C("value-link-mode", m(link_mode="symlink"), 78, "manifest field link_mode: 'symlink' is not one of ['copy', 'hardlink']"),
    # -- missing and unknown fields --------------------------------------------------------------------
    C("missing-asset", drop("asset"), 78, "manifest field asset: is required"),
    C("missing-project-code", drop("project", "code"), 78, "manifest field project.code: is required"),
    C("missing-files", drop("representations", 0, "files"), 78, "manifest field representations[0].files: is required"),
    C("unknown-in-project", put("project", "id", value=1), 78, "manifest field project: unknown field(s) 'id'"),
    C("unknown-in-representation", rep(colorspace="ACEScg"), 78,
      "manifest field representations[0]: unknown field(s) 'colorspace'"),
    # -- representations -------------------------------------------------------------------------------
    C("reps-empty", m(representations=[]), 78, "manifest field representations: [] should be non-empty"),
    C("files-empty", rep(files=[]), 78, "manifest field representations[0].files: [] should be non-empty"),
    C("rep-name-empty", rep(name=""), 78, "manifest field representations[0].name: '' is not allowed"),
    C("rep-duplicate", then(second_rep("x"), put("representations", 1, "name", value="exr")), 78,
      "manifest field representations[1].name: 'exr' duplicates representation 'exr' (names are case-insensitive)"),
    C("rep-case-duplicate", then(second_rep("x"), put("representations", 1, "name", value="EXR")), 78,
      "manifest field representations[1].name: 'EXR' duplicates representation 'exr' (names are case-insensitive)"),
    C("frame-twice", fn(lambda r, d: {**d, "representations": [
        {"name": "exr", "files": [str(r.frames[0]), str(r.frames[0])]}]}), 78,
      "manifest field representations[0].files[1]: frame 1001 appears twice in representation 'exr'"),
    # -- names: separators, '..', NUL, control characters ----------------------------------------------
    C("name-slash", m(subset="a/b"), 78, "manifest field subset: 'a/b' is not allowed"),
    C("name-backslash", m(asset="a\\b"), 78, "manifest field asset: 'a\\\\b' is not allowed"),
    C("name-dotdot", m(subset=".."), 78, "manifest field subset: '..' is not allowed"),
    C("hierarchy-dotdot", m(hierarchy="shots/../.."), 78, "manifest field hierarchy: 'shots/../..' is not allowed"),
    C("rep-name-slash", rep(name="ex/r"), 78, "manifest field representations[0].name: 'ex/r' is not allowed"),
    C("name-nul", m(asset="sh\x00010"), 78, "manifest field asset: 'sh\\x00010' is not allowed"),
    C("path-nul", file_path("/renders/comp\x00.exr"), 78,
      "manifest field representations[0].files[0]: contains a NUL or control character"),
    C("root-nul", m(publish_root="/mnt/pro\x00jects"), 78, "manifest field publish_root: contains a NUL or control character"),
    C("name-escape-sequence", m(asset="sh\x1b[31m"), 78, "manifest field asset: 'sh\\x1b[31m' is not allowed"),
    C("name-trailing-newline", m(asset="sh010\n"), 78, "manifest field asset: 'sh010\\n' is not allowed"),
    C("subset-trailing-newline", m(subset="renderCompMain\n"), 78,
      "manifest field subset: 'renderCompMain\\n' is not allowed"),
    C("task-trailing-newline", m(task="comp\n"), 78, "manifest field task: 'comp\\n' is not allowed"),
    C("hierarchy-trailing-newline", m(hierarchy="shots/sq01\n"), 78,
      "manifest field hierarchy: 'shots/sq01\\n' is not allowed"),
    C("rep-name-trailing-newline", rep(name="exr\n"), 78,
      "manifest field representations[0].name: 'exr\\n' is not allowed"),
    # -- names: Windows reserved, trailing dots and spaces, length --------------------------------------
    C("reserved-rep-name", rep(name="nul"), 78, "manifest field representations[0].name: 'nul' is a reserved name on Windows"),
    C("reserved-aux-exr", m(subset="aux.exr"), 78, "manifest field subset: 'aux.exr' is not allowed"),
    C("reserved-asset", m(asset="CON"), 78, "manifest field asset: 'CON' is a reserved name on Windows"),
    C("reserved-subset", m(subset="aux"), 78, "manifest field subset: 'aux' is a reserved name on Windows"),
    C("reserved-project", m(project={"name": "aux", "code": "dm"}), 78,
      "manifest field project.name: 'aux' is a reserved name on Windows"),
    C("reserved-hierarchy", m(hierarchy="shots/CON"), 78,
      "manifest field hierarchy: 'CON' is a reserved name on Windows"),
    C("trailing-dot", m(asset="sh010."), 78, "manifest field asset: 'sh010.' is not allowed"),
    C("trailing-space", m(subset="main "), 78, "manifest field subset: 'main ' is not allowed"),
    C("template-trailing-dot", m(template="{publish_root}/{project[name]}/{asset}./v{version:0>3}"), 78,
      "template makes folder 'sh010.', which ends with a dot or a space"),
    C("template-long-folder", m(template="{publish_root}/" + LONG + "/v{version:0>3}"), 78,
      "template makes folder 'xxxxxxxxxx"),
    C("name-too-long", m(asset="a" * 65), 78, f"manifest field asset: {'a' * 65!r} is not allowed"),
    C("hierarchy-too-long", m(hierarchy="/".join(["ab"] * 200)), 78,
      f"manifest field hierarchy: {'/'.join(['ab'] * 200)!r} is too long"),
    C("path-too-long", file_path("/" + "a" * 4100), 78, "manifest field representations[0].files[0]: '/aaaa"),
    # -- non-UTF-8 bytes and broken Unicode ---------------------------------------------------------------
    C("non-utf8-in-name", raw(b'{"asset": "sh\xff010"}'), 78, "argument --manifest: is not UTF-8 (byte 13)"),
    C("lone-surrogate-comment", m(comment="take \ud800"), 78, "manifest field comment: is not valid Unicode"),
    C("lone-surrogate-path", fn(lambda r, d: (d["representations"][0]["files"].__setitem__(
        0, str(r.renders) + "/comp\udcff.1001.exr"), d)[1]), 78,
      "manifest field representations[0].files[0]: is not valid Unicode"),
    # -- values shaped like MongoDB operators ----------------------------------------------------------------
    C("op-ne-asset", m(asset={"$ne": None}), 78, "manifest field asset: {'$ne': None} is not of type 'string'"),
    C("op-gt-version", m(version={"$gt": 0}), 78, "manifest field version: {'$gt': 0} is not of type 'integer', 'null'"),
    C("op-where-subset", m(subset="$where"), 78, "manifest field subset: '$where' is not allowed"),
    C("op-where-project", m(project={"$where": "sleep(1000)"}), 78, "manifest field project: unknown field(s) '$where'"),
    C("op-where-top", m(**{"$where": "1"}), 78, "manifest field (top level): unknown field(s) '$where'"),
    C("op-in-files", rep(files=[{"$ne": None}]), 78,
      "manifest field representations[0].files[0]: {'$ne': None} is not of type 'string'"),
    C("op-author", m(author={"$gt": ""}), 78, "manifest field author: {'$gt': ''} is not of type 'string'"),
    # -- job and task ids --------------------------------------------------------------------------------------
    C("job-id-subshell", m(), 78, f"argument --job-id: '$(touch {PWNED})' is not a Deadline job id",
      job=f"$(touch {PWNED})"),
    C("job-id-spaces-quotes", m(), 78, "argument --job-id: 'a \"b\" ;c' is not a Deadline job id", job='a "b" ;c'),
    C("job-id-trailing-newline", m(), 78, "argument --job-id: 'job1\\n' is not a Deadline job id",
      job="job1\n"),
    C("job-id-leading-dash", m(), 78, "--job-id", job="-rf"),
    C("task-id-negative", m(), 78, "argument --task-id: '-1' is not a task id", task="-1"),
    C("task-id-non-ascii-digit", m(), 78, "argument --task-id: '٣' is not a task id", task="٣"),
    # -- sources -------------------------------------------------------------------------------------------------
    C("source-missing", fn(lambda r, d: (r.frames[1].unlink(), d)[1]), 78, "/renders/comp.1002.exr does not exist"),
    C("source-dangling-symlink", replace_frame(lambda r, t: t.symlink_to(r.root / "gone.exr")), 78,
      "/renders/comp.1001.exr does not exist"),
    C("source-directory", replace_frame(lambda r, t: t.mkdir()), 78, "/renders/comp.1001.exr is a directory"),
    C("source-fifo", replace_frame(lambda r, t: os.mkfifo(t)), 78,
      "/renders/comp.1001.exr is not a regular file (FIFO, socket or device)"),
    C("source-socket", replace_frame(make_socket), 78,
      "/renders/comp.1001.exr is not a regular file (FIFO, socket or device)"),
    C("source-device", replace_frame(lambda r, t: t.symlink_to("/dev/null")), 78,
      "/renders/comp.1001.exr is not a regular file (FIFO, socket or device)"),
    C("source-symlink-loop", replace_frame(lambda r, t: t.symlink_to(t)), 78, "/renders/comp.1001.exr is a symlink loop"),
    C("source-relative", file_path("renders/comp.1001.exr"), 78,
      "manifest field representations[0].files[0]: 'renders/comp.1001.exr' is not an absolute path"),
    C("source-under-a-file", fn(lambda r, d: (d["representations"][0]["files"].__setitem__(
        0, str(r.movie) + "/comp.1001.exr"), d)[1]), 78, "comp.mov/comp.1001.exr has a file where a folder is expected"),
    C("source-symlink-escapes-roots", fn(lambda r, d: symlink_escape(r, d)), 78,
      "is outside the allowed source roots", env={ENV_ROOTS: "@renders"}),
    C("source-outside-roots", fn(outside_path), 78, "is outside the allowed source roots",
      env={ENV_ROOTS: "@renders"}),
    C("source-dotdot-escape", fn(dotdot_path), 78, "manifest field representations[0].files[0]: '"),
    C("source-frame-gap", fn(gap), 78, "manifest field representations[0].frames: frame 1002 of 1001-1003 is missing"),
    # -- destinations ------------------------------------------------------------------------------------------------
    C("template-dotdot", m(template="{publish_root}/../escape/v{version}"), 78, "/../escape/v1', which contains '..' or '.'"),
    C("template-backslash-dotdot", m(template="{publish_root}\\..\\escape\\v{version}"), 78,
      "/../escape/v1', which contains '..' or '.'"),
    C("template-absolute-elsewhere", fn(lambda r, d: {**d, "template": str(r.root / "evil" / "v{version}")}), 78,
      "/evil/v1', outside the publish root"),
    C("template-root-prefix", m(template="{publish_root}x/v{version}"), 78, "projectsx/v1', outside the publish root"),
    C("template-truncated-root", m(template="{publish_root:.4}/v{version}"), 78, "has an unsupported format spec '.4'"),
    C("template-attribute", m(template="{publish_root}/{version.real}"), 78,
      "manifest field template: field {version.real} is not allowed"),
    C("template-conversion", m(template="{publish_root}/{asset!r}/v{version}"), 78,
      "manifest field template: field {asset} has an unsupported conversion or nested field"),
    C("template-no-version", m(template="{publish_root}/{asset}"), 78, "manifest field template: must contain {version}"),
    C("template-char-spec", m(template="{publish_root}/{project[name]}/v{version:c}"), 78,
      "manifest field template: field {version} has an unsupported format spec 'c'"),
    C("template-precision-spec", m(template="{publish_root}/{asset:.0}/v{version:0>3}"), 78,
      "manifest field template: field {asset} has an unsupported format spec '.0'"),
    C("root-dotdot", fn(lambda r, d: ((r.root / "elsewhere").mkdir(),
                                      {**d, "publish_root": str(r.publish_root) + "/../elsewhere"})[1]), 78,
      "manifest field publish_root: contains '..'"),
    C("root-symlink", fn(root_is_symlink), 78, "is a symlink to"),
    C("symlink-inside-root", fn(symlink_inside_root), 78, "(a symlink escapes it)"),
    C("final-dir-of-nobody", fn(final_dir_of_nobody), 78, f"{FINAL} belongs to nobody (no atomic-publish marker)"),
]


@pytest.fixture(scope="module")
def results(mongo_uri, tmp_path_factory):
    base = tmp_path_factory.mktemp("corpus")
    cases = []
    for c in CASES:
        if c.env.get(ENV_ROOTS) == "@renders":  # the case folder is only known here
            index = len(cases)
            folder = base / f"c{index:03d}" / "renders"
            c = type(c)(**{**c.__dict__, "env": {ENV_ROOTS: str(folder)}})
        cases.append(c)
    yield run_corpus(cases, base, mongo_uri)
    assert not os.path.exists(PWNED)


@pytest.mark.parametrize("case", params(CASES))
def test_bad_input(results, case):
    check_result(results[case.id])
