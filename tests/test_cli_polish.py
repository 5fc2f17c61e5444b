"""The command line of a well-kept tool: --version, help on every option with its default, one
sentence per command; read-only commands start nothing; submit's warnings and default job name."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest

from atomic_publish.wrapper.cli import build_parser
from atomic_publish.wrapper.cliutil import HelpFormatter
from helpers import CLI, Render, run_cli


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser(None)  # every command, the lazily imported ones too
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_version_comes_from_the_package_metadata():
    proc = subprocess.run([*CLI, "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"atomic-publish {version('atomic-publish')}"


def test_every_command_has_a_one_sentence_description():
    for name, sub in _subparsers().items():
        text = (sub.description or "").strip()
        assert text and text[0].isupper() and text.endswith("."), (name, text)
        assert ". " not in text[:-1], f"{name}: more than one sentence: {text}"


@pytest.mark.parametrize("name", sorted(_subparsers()))
def test_every_option_has_help_and_shows_its_default(name):
    sub = _subparsers()[name]
    proc = subprocess.run([*CLI, name, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    formatter = HelpFormatter(prog="x")
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        label = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip(), f"{name} {label} has no help text"
        shown = formatter._get_help_string(action)
        if action.required and action.option_strings:
            assert "required" in shown, f"{name} {label} is required but its help does not say so"
        elif action.option_strings and action.nargs != 0 and action.default not in (None, "", []):
            assert "default" in shown, f"{name} {label} does not show its default {action.default!r}"
        if action.option_strings:
            assert action.option_strings[0] in proc.stdout, f"{name} --help does not list {label}"


def _no_store_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATOMIC_PUBLISH_")}
    env["ATOMIC_PUBLISH_HOME"] = str(tmp_path / "home")
    return env


def _processes_naming(text: str) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if text in line]


@pytest.mark.parametrize("argv", [["status", "--job-id", "job1"], ["status", "--key", "deadline10:job1:0"],
                                  ["audit"], ["audit", "--root", "ROOT"], ["gc", "--dry-run"],
                                  ["gc", "--dry-run", "--root", "ROOT"]])
def test_read_only_commands_start_nothing(tmp_path, argv):
    env = _no_store_env(tmp_path)
    (tmp_path / "root").mkdir()
    argv = [str(tmp_path / "root") if a == "ROOT" else a for a in argv]
    proc = run_cli(argv, env, timeout=60)
    assert proc.returncode != 0
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"atomic-publish {argv[0]}: no store is running"), line
    assert "atomic-publish store start" in line and "--store" in line and "ATOMIC_PUBLISH_STORE" in line
    home = tmp_path / "home"
    assert not (home / "server.json").exists()
    assert not home.exists() or not any(home.iterdir()), sorted(home.iterdir())
    assert _processes_naming(str(home)) == []


def test_store_status_starts_nothing_either(tmp_path):
    env = _no_store_env(tmp_path)
    proc = run_cli(["store", "status"], env, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("not running")
    assert not (tmp_path / "home" / "server.json").exists()


def test_submit_warns_about_missing_sources_and_names_the_job(tmp_path):
    render = Render(tmp_path, frames=2)
    data = render.manifest(version=7)
    data["representations"][0]["files"].append(str(render.renders / "comp.1003.exr"))  # not rendered yet
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(data))
    proc = run_cli(["submit", str(manifest), "--out", str(tmp_path / "job")], dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    [warning] = proc.stderr.strip().splitlines()
    assert warning.startswith("atomic-publish submit: warning: 1 source file(s) do not exist on this machine yet")
    assert str(render.renders / "comp.1003.exr") in warning
    job = (tmp_path / "job" / "job_info.job").read_text()
    assert "Name=publish demo/sh010/renderCompMain v007\n" in job


def test_submit_without_missing_sources_is_quiet(tmp_path):
    render = Render(tmp_path, frames=2)
    proc = run_cli(["submit", str(render.write_manifest()), "--out", str(tmp_path / "job"), "--name", "mine"],
                   dict(os.environ))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "Name=mine\n" in (tmp_path / "job" / "job_info.job").read_text()


def test_demo_refuses_a_folder_in_use_before_any_work(tmp_path):
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "manifest.json").write_text("{}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATOMIC_PUBLISH_")}
    proc = run_cli(["demo", "--dir", str(folder)], env, timeout=60)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"atomic-publish demo: --dir {folder} is not empty") and "Traceback" not in proc.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json"]  # nothing was started or written
    assert proc.stdout == ""
