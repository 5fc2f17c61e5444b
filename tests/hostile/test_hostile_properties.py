"""Property-based tests: the job-file parser, manifest validation and the path template.

* no input makes them raise anything but their documented error (JobFileError; PublishError,
  i.e. ManifestError or DestinationError) - the whole pre-store pipeline of `run()` included;
* no accepted manifest resolves outside the publish root, for any version number.

The `*_known_crashers` / `*_portable` tests carry explicit examples the product gets wrong today
and are strict xfails; their random parts keep running in the passing twins.
"""
from __future__ import annotations

import json
import os
import string

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from atomic_publish.deadline_plugin.jobfiles import (JobFileError, parse_key_value_text, read_key_value_file,
                                                     write_key_value_file)
from atomic_publish.idempotency.keys import KeyError_, deadline_key, fingerprint
from atomic_publish.wrapper.errors import PublishError
from atomic_publish.wrapper.layout import ALLOWED_FIELDS, plan_files, version_dir
from atomic_publish.wrapper.manifest import WINDOWS_RESERVED, canonical_json, parse_manifest, read_json

SETTINGS = settings(max_examples=80, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
ROOT = "/mnt/projects"

# -- job files ---------------------------------------------------------------------------------------
line_text = st.text(st.characters(codec="utf-8"), max_size=40)
job_text = st.one_of(
    st.lists(st.one_of(line_text, st.builds(lambda k, v: f"{k}={v}", line_text, line_text)), max_size=8)
    .map("\n".join),
    st.text(max_size=200),
)


@SETTINGS
@given(job_text)
def test_job_text_parser_raises_only_job_file_error(text):
    try:
        parsed = parse_key_value_text(text, "hyp.job")
    except JobFileError as exc:
        assert str(exc).startswith("hyp.job")
        return
    for key in parsed:
        assert key and "=" not in key and key == key.strip()


@SETTINGS
@given(st.one_of(st.binary(max_size=300), job_text.map(lambda t: t.encode("utf-16")),
                 job_text.map(lambda t: t.encode("utf-8-sig")), job_text.map(lambda t: t.encode("latin-1", "replace"))))
def test_job_file_reader_raises_only_job_file_error(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("jf") / "x.job"
    path.write_bytes(blob)
    try:
        read_key_value_file(path)
    except JobFileError as exc:
        assert str(exc).startswith(str(path))


keys = st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Zs", "Zl", "Zp"]), min_size=1, max_size=12)\
    .filter(lambda k: "=" not in k and k == k.strip())
values = st.text(st.characters(codec="utf-8", exclude_categories=["Cc"]), max_size=30)


@SETTINGS
@given(st.dictionaries(keys, values, min_size=1, max_size=6))
def test_writer_output_reads_back_identically(tmp_path_factory, items):
    path = tmp_path_factory.mktemp("jw") / "x.job"
    try:
        write_key_value_file(path, items)
    except ValueError:  # documented: refuses what the reader would misread (case-insensitive duplicates)
        assert len({k.lower() for k in items}) < len(items)
        return
    back = read_key_value_file(path)
    assert {k: back[k] for k in items} == {k: v.strip() for k, v in items.items()}


# -- manifests -----------------------------------------------------------------------------------------
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                      st.text(max_size=20), st.sampled_from(["..", "/", "CON", "aux.exr", "a\n", "$where", "x" * 300]))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=8)

BASE = {"project": {"name": "demo", "code": "dm"}, "asset": "sh010", "hierarchy": "shots/sq01", "task": "comp",
        "subset": "renderCompMain", "family": "render", "version": None, "publish_root": ROOT,
        "representations": [{"name": "exr", "files": ["/r/comp.1001.exr", "/r/comp.1002.exr"]},
                            {"name": "mov", "files": ["/r/comp.mov"]}]}
PATHS = [("project",), ("project", "name"), ("project", "code"), ("asset",), ("hierarchy",), ("task",), ("subset",),
         ("family",), ("version",), ("publish_root",), ("template",), ("representations",),
         ("representations", 0), ("representations", 0, "name"), ("representations", 0, "files"),
         ("representations", 0, "files", 0), ("representations", 1, "name"), ("author",), ("comment",),
         ("integrations",), ("link_mode",), ("verify",), ("unknown",)]


@st.composite
def mutated_manifests(draw, value=json_value):
    data = json.loads(json.dumps(BASE))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        node = data
        try:
            for p in path[:-1]:
                node = node[p]
            if draw(st.booleans()) and isinstance(node, dict):
                node.pop(path[-1], None)
            else:
                node[path[-1]] = draw(value)
        except (KeyError, IndexError, TypeError):
            pass
    return data


def pre_store_pipeline(blob: bytes, tmp_path) -> None:
    """What `run()` does before it touches the store: read, validate, key, plan, template, fingerprint."""
    path = tmp_path / "m.json"
    path.write_bytes(blob)
    manifest = parse_manifest(read_json(path))
    deadline_key("job1", "0")
    plan_files(manifest, 1)
    version_dir(manifest, 1)
    fingerprint(canonical_json(manifest.raw))


def manifest_bytes(data) -> bytes:
    return json.dumps(data).encode()


@SETTINGS
@given(st.one_of(mutated_manifests().map(manifest_bytes), st.binary(max_size=200),
                 json_value.map(lambda v: json.dumps(v).encode())))
def test_pre_store_pipeline_raises_only_publish_errors(tmp_path_factory, blob):
    try:
        pre_store_pipeline(blob, tmp_path_factory.mktemp("m"))
    except PublishError:
        pass


@SETTINGS
@example(blob=b"[" * 100_000)
@example(blob=json.dumps({**BASE, "comment": "\ud800"}).encode())
@given(st.one_of(mutated_manifests(st.text(st.characters(categories=["Cs", "Ll"]), max_size=4)).map(manifest_bytes)))
def test_pre_store_pipeline_known_crashers(tmp_path_factory, blob):
    try:
        pre_store_pipeline(blob, tmp_path_factory.mktemp("m"))
    except PublishError:
        pass


# -- the path template ------------------------------------------------------------------------------------
spec = st.one_of(st.just(""), st.sampled_from([":0>3", ":>5", ":<4", ":^7", ":c", ":.0", ":.1", ":x", ":/>4",
                                               ":.>3", ":_<9", ":e", ":%", ":,"]))
field_ = st.builds(lambda f, s: "{" + f + s + "}", st.sampled_from(sorted(ALLOWED_FIELDS)), spec)
literal = st.one_of(st.sampled_from(["/", "//", "\\", "..", ".", "/../", "/./", "v", "x", " ", "-", "{{", "}}"]),
                    st.text(string.ascii_letters + "./\\ ", max_size=4))
templates = st.lists(st.one_of(field_, literal), min_size=1, max_size=10).map("".join)
names = st.one_of(st.sampled_from(["sh010", "a", "CON", "aux", "x" * 64]),
                  st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,10}", fullmatch=True))


@st.composite
def manifests_with_templates(draw):
    data = json.loads(json.dumps(BASE))
    data["template"] = draw(st.one_of(templates, templates.map(lambda t: "{publish_root}/" + t + "{version}")))
    data["publish_root"] = draw(st.sampled_from([ROOT, ROOT + "/", "/", "/mnt//projects/./x", ROOT + "/.."]))
    for key in ("asset", "subset", "family"):
        data[key] = draw(names)
    data["hierarchy"] = draw(st.lists(names, min_size=1, max_size=3).map("/".join))
    return data, draw(st.integers(1, 99999))


@SETTINGS
@given(manifests_with_templates())
def test_no_accepted_template_resolves_outside_the_root(case):
    data, version = case
    try:
        manifest = parse_manifest(data)
        path = version_dir(manifest, version)
    except PublishError:
        return
    root = os.path.normpath(manifest.publish_root)
    assert os.path.isabs(path) and path == os.path.normpath(path)
    assert os.path.commonpath([path, root]) == root and path != root
    assert ".." not in path.split("/")


def portable(segment: str) -> bool:
    return (segment not in ("", ".", "..") and not any(ord(c) < 32 for c in segment)
            and not segment.endswith((".", " ")) and not WINDOWS_RESERVED.match(segment)
            and len(segment.encode()) <= 255 and "\\" not in segment)


@SETTINGS
@example(case=({**BASE, "asset": "sh010\n"}, 1))
@example(case=({**BASE, "hierarchy": "shots/CON"}, 1))
@example(case=({**BASE, "template": "{publish_root}/{asset}./v{version}"}, 1))
@example(case=({**BASE, "template": "{publish_root}/v{version:c}"}, 1))
@given(manifests_with_templates())
def test_accepted_paths_are_portable(case):
    data, version = case
    try:
        manifest = parse_manifest(data)
        path = version_dir(manifest, version)
        planned = plan_files(manifest, version)
    except PublishError:
        return
    below = os.path.relpath(path, manifest.publish_root).split("/")
    assert all(portable(s) for s in below), below
    assert all(portable(p.name) and "/" not in p.name for p in planned)


# -- job and task ids ----------------------------------------------------------------------------------------
@SETTINGS
@given(st.text(max_size=20), st.one_of(st.integers(-5, 10**10), st.text(max_size=12)))
def test_deadline_key_raises_only_key_error(job, task):
    try:
        key = deadline_key(job, task)
    except KeyError_:
        return
    assert key.count(":") == 2


@SETTINGS
@example(job="job1\n", task="0")
@example(job="job1", task="٣")
@given(st.text(max_size=20), st.text(max_size=12))
def test_accepted_ids_are_plain_ascii(job, task):
    try:
        deadline_key(job, task)
    except KeyError_:
        return
    assert job.isascii() and job.isprintable() and " " not in job
    assert task.isascii() and task.isdigit()
