"""`atomic-publish submit`: job files with the policy in Deadline's keys, deadlinecommand handling."""
from __future__ import annotations

import argparse
import re
import stat
import sys
from pathlib import Path

import pytest

from atomic_publish.deadline_plugin import submit
from atomic_publish.deadline_plugin.farm.jobmodel import build_job_record, job_error_limit, task_error_limit
from atomic_publish.deadline_plugin.jobfiles import read_job_info, read_plugin_info

DOC = Path(__file__).resolve().parents[2] / "docs" / "deadline.md"


def fake_deadlinecommand(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "deadlinecommand"
    path.write_text(f"#!{sys.executable}\nimport sys\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_job_files_carry_the_policy_in_deadline_keys(tmp_path: Path, manifest: Path) -> None:
    files = submit.write_job_files(manifest, tmp_path / "out", name="shot010 publish", priority=70, pool="pub")
    job = read_job_info(files.job_info)
    plugin = read_plugin_info(files.plugin_info)
    assert job["Plugin"] == "AtomicPublish" and job["Name"] == "shot010 publish" and job["Pool"] == "pub"
    assert "Group" not in job and job["Blacklist"] == "" and job["OnTaskTimeout"] == "Error"
    assert Path(plugin["Manifest"]) == files.manifest and files.manifest.parent == (tmp_path / "out").resolve()
    assert files.manifest.read_bytes() == manifest.read_bytes() and Path(plugin["Manifest"]).is_absolute()
    assert plugin["OnPermanentError"] == "fail-job"
    record = build_job_record(job, plugin)
    assert len(record["tasks"]) == 1 and record["whitelist_flag"] is False and record["listed_workers"] == []
    assert task_error_limit(record) == submit.TASK_ERROR_LIMIT >= int(plugin["MaxKeyAttempts"])
    assert job_error_limit(record) == submit.JOB_ERROR_LIMIT
    documented = set(re.findall(r"^\| `(\w+)` \|", DOC.read_text(), re.MULTILINE))
    assert set(job) | set(plugin) <= documented, "every key submit writes must be in docs/deadline.md"


def test_priority_out_of_range_is_refused(tmp_path: Path, manifest: Path) -> None:
    with pytest.raises(submit.SubmitError, match="0..100"):
        submit.write_job_files(manifest, tmp_path / "out", priority=101)


def test_deadlinecommand_job_id_is_parsed(tmp_path: Path, manifest: Path) -> None:
    files = submit.write_job_files(manifest, tmp_path / "out")
    command = fake_deadlinecommand(tmp_path, "assert sys.argv[1].endswith('job_info.job') and "
                                   "sys.argv[2].endswith('plugin_info.job')\n"
                                   "print('Deadline Command\\nResult=Success\\nJobID=5f1e2d3c4b5a697887766554\\n')")
    assert submit.submit_with_deadlinecommand(str(command), files) == "5f1e2d3c4b5a697887766554"


@pytest.mark.parametrize("body, problem", [
    ("print('Error: could not connect to the repository'); sys.exit(1)", "exited with 1"),
    ("print('Result=Success')", "printed no JobID= line"),
])
def test_deadlinecommand_failures_are_clear(tmp_path: Path, manifest: Path, body: str, problem: str) -> None:
    files = submit.write_job_files(manifest, tmp_path / "out")
    with pytest.raises(submit.SubmitError, match=problem):
        submit.submit_with_deadlinecommand(str(fake_deadlinecommand(tmp_path, body)), files)


def test_missing_deadlinecommand(tmp_path: Path, manifest: Path) -> None:
    files = submit.write_job_files(manifest, tmp_path / "out")
    with pytest.raises(submit.SubmitError, match="deadlinecommand not found"):
        submit.submit_with_deadlinecommand(str(tmp_path / "nope"), files)


def test_main_refuses_an_invalid_manifest(tmp_path: Path, capsys) -> None:
    pytest.importorskip("atomic_publish.wrapper.manifest")
    pytest.importorskip("atomic_publish.wrapper.errors")
    bad = tmp_path / "bad.json"
    bad.write_text("this is not a manifest {")
    parser = argparse.ArgumentParser()
    submit.configure_parser(parser)
    assert submit.main(parser.parse_args([str(bad), "--out", str(tmp_path / "out")])) == 1
    assert "invalid manifest" in capsys.readouterr().err
    assert not (tmp_path / "out" / "job_info.job").exists()
