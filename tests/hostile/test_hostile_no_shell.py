"""No shell: every process is started with an argument list, and no value from a manifest, job
file or plugin info can add an argument or a command.

* the code base has no `shell=True`, `os.system`, `os.popen`, `subprocess.getoutput`...;
* the plugin's argument string (QuoteArgument) splits back into exactly the intended arguments,
  under the local farm's split (shlex) and under Deadline's (Windows command-line rules);
* the real plugin, run by the farm's Simple-plugin lifecycle with a stand-in wrapper that records
  its argv, hands hostile job ids, manifest paths, job data folders and plugin-info values to
  the wrapper as exactly one argument each, and runs nothing else;
* the real wrapper's parser puts each of those values in the intended option;
* the real wrapper, as a process, publishes from a manifest whose path is hostile.
"""
from __future__ import annotations

import ast
import importlib.util
import itertools
import json
import os
import stat
import sys
import uuid
from pathlib import Path

import pytest

from atomic_publish.deadline_plugin.farm.cmdline import split_windows

from atomic_publish.deadline_plugin.resources import ensure_shim_on_path, plugin_dir

ensure_shim_on_path()

import Deadline.Scripting  # noqa: E402

from atomic_publish.deadline_plugin.farm.backend import FarmBackend  # noqa: E402
from atomic_publish.deadline_plugin.farm.jobmodel import build_job_record  # noqa: E402
from atomic_publish.deadline_plugin.farm.lifecycle import load_plugin_module, run_simple_task  # noqa: E402
from atomic_publish.deadline_plugin.farm.state import FarmState  # noqa: E402
from atomic_publish.deadline_plugin.jobfiles import parse_key_value_text  # noqa: E402
from atomic_publish.wrapper.cli import build_parser  # noqa: E402
from helpers import Render, publish  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PLUGIN = plugin_dir() / "AtomicPublish.py"
PWNED = f"/tmp/pwned-{uuid.uuid4().hex}"
_numbers = itertools.count()

# Values with quotes, spaces, ';', '$()', backquotes, newlines, leading dashes and more.
HOSTILE = [
    "a b", "it's", 'say "hi"', "a;b", f"$(touch {PWNED})", f"`touch {PWNED}`", f"x; touch {PWNED}",
    f"x && touch {PWNED} #", "line1\nline2", "tab\there", "$HOME", "| cat", "> out", '"', "'", "\\",
    'a\\"b', "trailing\\", "C:\\Program Files\\x", "", "ünïcødé", "*", "--store=mongodb://evil:1/", "-rf",
    "--json",
]
BACKSLASH_RUN = ["a\\\\b c", "\\\\server\\share dir"]  # runs of backslashes inside a quoted argument


# -- 1. no shell anywhere ---------------------------------------------------------------------------------
FORBIDDEN_CALLS = {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"), ("subprocess", "getstatusoutput"),
                   ("os", "spawnlp"), ("os", "spawnvp"), ("pty", "spawn")}


def product_files() -> list[Path]:
    files = []
    for folder in ("wrapper", "idempotency", "deadline_plugin"):
        files += sorted((REPO / folder).rglob("*.py"))
    assert len(files) > 20
    return files


def test_no_shell_in_the_code_base() -> None:
    found = []
    for path in product_files():
        text = path.read_text()
        for needle in ("shell=True", "os.system(", "os.popen(", "getoutput(", "getstatusoutput("):
            if needle in text:
                found.append(f"{path.relative_to(REPO)}: text {needle!r}")
        for node in ast.walk(ast.parse(text, str(path))):
            if not isinstance(node, ast.Call):
                continue
            for kw in node.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: shell={ast.unparse(kw.value)}")
            f = node.func
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and (f.value.id, f.attr) in FORBIDDEN_CALLS:
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {f.value.id}.{f.attr}()")
            if isinstance(f, ast.Attribute) and f.attr == "create_subprocess_shell":
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: create_subprocess_shell()")
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "subprocess" \
                    and f.attr in ("Popen", "run", "call", "check_call", "check_output") \
                    and node.args and isinstance(node.args[0], (ast.Constant, ast.JoinedStr, ast.BinOp)):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: a process started from a string")
    assert found == []


# -- 2. the argument string splits back exactly -------------------------------------------------------------
@pytest.fixture(scope="module")
def plugin_module():
    return load_plugin_module(PLUGIN)


@pytest.mark.parametrize("value", HOSTILE + BACKSLASH_RUN)
def test_quoted_argument_splits_back_like_deadline(plugin_module, value: str) -> None:
    line = " ".join(plugin_module.QuoteArgument(a) for a in ["run", "--job-id", value, "--task-id", "0"])
    assert split_windows(line) == ["run", "--job-id", value, "--task-id", "0"], line


@pytest.mark.parametrize("value", HOSTILE + BACKSLASH_RUN)
def test_quoted_argument_splits_back_like_the_farm(plugin_module, value: str) -> None:
    """The local farm splits with the product's split_windows, as Deadline does (not shlex)."""
    from atomic_publish.deadline_plugin.farm import lifecycle

    line = " ".join(plugin_module.QuoteArgument(a) for a in ["run", f"--job-id={value}", "--task-id=0"])
    assert lifecycle.split_windows(line) == ["run", f"--job-id={value}", "--task-id=0"], line


# -- 3. through the real plugin and the farm's process start ---------------------------------------------------
def _standin_source() -> str:
    spec = importlib.util.spec_from_file_location("_deadline_conftest", REPO / "tests" / "deadline" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.STANDIN.format(python=sys.executable)


@pytest.fixture
def plugin_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """plugin_run(job_id, manifest_entry, jobs_data, plugin_extra) -> (outcome, list of recorded argv)."""
    standin = tmp_path / "bin" / "atomic-publish"
    standin.parent.mkdir()
    standin.write_text(_standin_source())
    standin.chmod(standin.stat().st_mode | stat.S_IXUSR)
    record = tmp_path / "record"
    record.mkdir()
    for key in list(os.environ):
        if key.startswith(("STANDIN_", "ATOMIC_PUBLISH_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("STANDIN_RECORD", str(record))
    monkeypatch.setenv("STANDIN_EXIT", "0")

    def run(job_id: str, manifest_entry: str, jobs_data: Path, plugin_extra: str = ""):
        state = FarmState.create(tmp_path / f"farm{next(_numbers)}", {"bad_worker_errors": 3})
        job = build_job_record(parse_key_value_text("Plugin=AtomicPublish\nFrames=0\n"),
                               parse_key_value_text(f"Manifest={manifest_entry}\n" + plugin_extra), job_id=job_id)
        state.add_job(job)
        state.register_worker("worker-1", os.getpid())
        got_id, task = state.dequeue("worker-1")
        Deadline.Scripting.install_backend(FarmBackend(state, "worker-1", log=lambda line: None, environ={}))
        try:
            outcome = run_simple_task(PLUGIN, state.get_job(got_id), task, "worker-1", jobs_data,
                                      {"AtomicPublishExecutable": str(standin), "StoreUri": ""})
        finally:
            Deadline.Scripting.install_backend(None)
        calls = record / "calls.jsonl"
        return outcome, [json.loads(line)["argv"] for line in calls.read_text().splitlines()] if calls.exists() else []
    return run


def _hostile_folder(base: Path, value: str) -> Path:
    folder = base / ("d " + value.replace("/", "_").replace("\x00", "_"))
    folder.mkdir(parents=True)
    return folder


RUN_OPTIONS = {"--manifest", "--submitted-manifest", "--job-id", "--task-id", "--worker", "--retry-attempts",
               "--retry-budget", "--max-key-attempts", "--max-failing-workers", "--on-permanent-error"}


def options(argv: list[str]) -> dict[str, str]:
    """The plugin's intended {option: value}, for '--opt value' or '--opt=value'; nothing else allowed."""
    assert argv[0] == "run", argv
    out, i = {}, 1
    while i < len(argv):
        token = argv[i]
        name = token.split("=", 1)[0]
        assert name in RUN_OPTIONS and name not in out, f"unexpected argument {token!r} in {argv!r}"
        if "=" in token:
            out[name], i = token.split("=", 1)[1], i + 1
        else:
            out[name], i = argv[i + 1], i + 2
    return out


BASE_OPTIONS = {"--manifest", "--submitted-manifest", "--job-id", "--task-id", "--worker"}
JOB_IDS = [v for v in HOSTILE if v] + [f"$(touch {PWNED})"]


@pytest.mark.parametrize("value", JOB_IDS)
def test_hostile_job_id_is_one_argument(plugin_run, tmp_path: Path, value: str) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text("{}")
    outcome, calls = plugin_run(value, str(manifest), tmp_path / "jobsData")
    assert len(calls) == 1, outcome.log  # one process: the wrapper, nothing else
    opts = options(calls[0])
    assert set(opts) == BASE_OPTIONS and opts["--job-id"] == value and opts["--task-id"] == "0"
    assert not os.path.exists(PWNED)


@pytest.mark.parametrize("value", [v for v in HOSTILE if v not in ("", '"', "'", "\\")])
def test_hostile_manifest_path_and_jobs_folder_are_one_argument_each(plugin_run, tmp_path: Path, value: str) -> None:
    folder = _hostile_folder(tmp_path / "shared", value)
    manifest = folder / "manifest.json" if "\n" in value else folder / f"m {value.replace('/', '_')}.json"
    manifest.write_text("{}")
    jobs_data = _hostile_folder(tmp_path / "jobs", value)
    entry = str(manifest) if "\n" not in str(manifest) else None
    if entry is None:  # a plugin-info value cannot hold a newline: the job data folder carries it
        entry = str(tmp_path / "plain.json")
        Path(entry).write_text("{}")
    outcome, calls = plugin_run("job1", entry, jobs_data)
    assert len(calls) == 1, outcome.log
    opts = options(calls[0])
    assert set(opts) == BASE_OPTIONS
    assert opts["--submitted-manifest"] == entry
    assert opts["--manifest"] == str(jobs_data / "manifest.task0.mapped.json")
    assert not os.path.exists(PWNED)


POLICY = {"RetryAttempts": "--retry-attempts", "MaxKeyAttempts": "--max-key-attempts",
          "RetryBudgetSeconds": "--retry-budget", "MaxFailingWorkers": "--max-failing-workers"}


@pytest.mark.parametrize("key", sorted(POLICY))
@pytest.mark.parametrize("value", ["1 --store mongodb://evil:1/", f"3; touch {PWNED}", f"$(touch {PWNED})",
                                   "--store=mongodb://evil:1/", "-5", '2" --json "'])
def test_hostile_plugin_info_value_is_one_argument(plugin_run, tmp_path: Path, key: str, value: str) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text("{}")
    outcome, calls = plugin_run("job1", str(manifest), tmp_path / "jobsData", f"{key}={value}\n")
    assert len(calls) == 1, outcome.log
    opts = options(calls[0])
    assert set(opts) == BASE_OPTIONS | {POLICY[key]} and opts[POLICY[key]] == value
    assert not os.path.exists(PWNED)


@pytest.mark.parametrize("manifest_entry", ["-rf.json", "--store=mongodb:__evil.json"])
def test_leading_dash_manifest_entry_is_one_argument(plugin_run, tmp_path: Path, manifest_entry: str) -> None:
    outcome, calls = plugin_run("job1", manifest_entry, tmp_path / "jobsData")
    assert len(calls) == 1, outcome.log
    opts = options(calls[0])
    assert set(opts) == BASE_OPTIONS and opts["--submitted-manifest"] == manifest_entry


# -- 4. the wrapper's own parser reads each value as the plugin meant it -----------------------------------------
ARGPARSE_NEEDS = ("needs: the plugin passes values as --option=VALUE (RenderArgument); argparse takes a separate "
                  "value that starts with '-' for an option and exits 2")


@pytest.mark.parametrize("value", JOB_IDS)
def test_wrapper_parser_reads_the_plugin_argv(plugin_run, tmp_path: Path, value: str) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text("{}")
    _, calls = plugin_run(value, str(manifest), tmp_path / "jobsData", "MaxKeyAttempts=4\n")
    try:
        args = build_parser("run").parse_args(calls[0])
    except SystemExit as exc:
        pytest.fail(f"the wrapper's parser refused {calls[0]!r} (exit {exc.code})")
    assert (args.job_id, args.task_id, args.submitted_manifest) == (value, "0", str(manifest))
    assert args.max_key_attempts == 4 and args.store is None and args.json is False


# -- 5. the real wrapper reads a manifest from a hostile path ------------------------------------------------------
def test_real_wrapper_publishes_from_a_hostile_manifest_path(tmp_path: Path, env, store) -> None:
    render = Render(tmp_path / "r", frames=2, size=1024)
    rel = f"pwned-{uuid.uuid4().hex}"  # a relative target: a folder name cannot hold '/'
    folder = tmp_path / f"it's \"quoted\"; $(touch {rel}) `touch {rel}` & | > -- ünï\nline"
    folder.mkdir()
    manifest = folder / "-manifest $(id).json"
    manifest.write_text(json.dumps(render.manifest(comment=f"$(touch {PWNED}); `id`", author="-rf --json")))
    proc, out = publish(manifest, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out["outcome"] == "published"
    assert not os.path.exists(PWNED) and not os.path.exists(rel) and not (folder / rel).exists()
    version = store.catalog.db[("demo")].find_one({"type": "version"})
    assert version["data"]["comment"] == f"$(touch {PWNED}); `id`" and version["data"]["author"] == "-rf --json"
