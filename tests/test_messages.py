"""Every word of a result line true: what failed, what the attempt did (rolled back only when a
rollback ran), what a farm would do (never a deny-list claimed by a plain run), what to do."""
from __future__ import annotations

import json
import re

import pytest

from helpers import Render, run_cli


@pytest.fixture
def render(tmp_path) -> Render:
    return Render(tmp_path, frames=2)


def _run(render: Render, env: dict, manifest=None, job: str = "job1", *extra: str, extra_env: dict | None = None):
    manifest = manifest or render.write_manifest()
    proc = run_cli(["run", "--manifest", str(manifest), "--job-id", job, "--task-id", "0", "--worker", "w1",
                    "--json", *extra], dict(env, **(extra_env or {})))
    [line] = [l for l in proc.stdout.splitlines() if l.startswith("[atomic-publish] result ")]
    return proc, line


def test_fingerprint_mismatch_changes_nothing_and_says_so(render, env):
    proc, line = _run(render, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    before = render.tree()
    changed = render.write_manifest("changed.json", comment="another comment")
    proc, line = _run(render, env, changed)
    assert proc.returncode == 78, line
    assert "was first run with another manifest" in line and "nothing was changed" in line
    assert "rolled back" not in line, line
    assert "a farm fails the job without further retries" in line
    assert render.tree() == before  # the published version is untouched


def test_plain_run_says_what_a_farm_would_do_not_that_it_was_deny_listed(render, env):
    proc, line = _run(render, env, render.write_manifest(publish_root=str(render.root / "not-mounted")))
    assert proc.returncode == 77
    assert "a farm deny-lists this worker for the job and gives the task to another worker" in line
    assert "is deny-listed" not in line and "deny-listed for job" not in line


def test_rollback_is_said_only_when_it_ran_and_status_does_not_show_a_folder(render, env):
    # one failed attempt is the limit: the injected transient fault escalates to permanent, so the
    # attempt rolls back what it staged
    proc, line = _run(render, env, None, "job1", "--max-key-attempts", "1",
                      extra_env={"ATOMIC_PUBLISH_FAILPOINTS": "stage.file=raise@1"})
    assert proc.returncode == 78, proc.stdout + proc.stderr
    assert "rolled back (staging removed, version number released)" in line, line
    assert render.tree() == [], render.tree()

    status = run_cli(["status", "--job-id", "job1"], env)
    assert status.returncode == 0, status.stderr
    text = status.stdout
    assert re.search(r"version\s+v001 released \(rolled back, never published\)", text), text
    assert re.search(r"final\s+none \(was to be at \S+v001\)", text), text

    proc, line = _run(render, env)  # the same task again: the earlier rollback, nothing new rolled back
    assert proc.returncode == 78
    assert "was rolled back earlier" in line and "rolled back (staging removed" not in line, line


def test_argument_errors_name_the_argument(render, env):
    manifest = str(render.write_manifest())
    cases = [
        (["run", "--manifest", manifest, "--job-id", "job1"], "argument --task-id: is required with --job-id"),
        (["run", "--manifest", manifest, "--job-id", "job1", "--task-id", "x"], "argument --task-id: 'x' is not a task id"),
        (["run", "--manifest", manifest, "--job-id", "j", "--task-id", "0", "--threads", "many"],
         "argument --threads: invalid int value: 'many'"),
        (["run", "--job-id", "j", "--task-id", "0"], "command line: one of the arguments --manifest --metadata is required"),
        (["run", "--manifest", str(render.root / "nope.json"), "--job-id", "j", "--task-id", "0"],
         "argument --manifest: file"),
    ]
    for argv, expected in cases:
        proc = run_cli(argv, env)
        [line] = [l for l in proc.stdout.splitlines() if l.startswith("[atomic-publish] result ")]
        assert proc.returncode == 78, (argv, line)
        assert expected in line and "manifest field --" not in line and "manifest field arguments" not in line, line
        assert "nothing was written" in line


def test_manifest_errors_name_the_manifest_field(render, env):
    proc, line = _run(render, env, render.write_manifest(subset="../evil"))
    assert proc.returncode == 78
    assert "manifest field subset:" in line and "argument" not in line.split(";")[0]


@pytest.mark.parametrize("failures, attempts", [(2, 4), (5, 3)])
def test_retry_lines_count_the_same_tries(capsys, failures, attempts):
    from atomic_publish.wrapper import retry
    from atomic_publish.wrapper.errors import TransientError

    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise TransientError(f"blip {len(calls)}")
        return "ok"

    policy = retry.RetryPolicy(attempts=attempts, budget=10.0, initial=0.01, max_wait=0.02)
    if failures < attempts:
        assert retry.call("read the record", policy, flaky) == "ok"
    else:
        with pytest.raises(TransientError, match=f"blip {attempts}"):
            retry.call("read the record", policy, flaky)
    tries = re.findall(r"try (\d+) of (\d+) failed, try (\d+) in", capsys.readouterr().out)
    said = min(failures, attempts - 1)  # the last try's failure is the result, not a retry line
    assert tries == [(str(i), str(attempts), str(i + 1)) for i in range(1, said + 1)]
    assert len(calls) == min(failures + 1, attempts)


def test_audit_ftrack_without_settings_is_a_configuration_error(env):
    bare = {k: v for k, v in env.items() if not k.startswith("FTRACK_")}
    proc = run_cli(["audit", "--ftrack"], bare)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("atomic-publish audit: --ftrack needs FTRACK_SERVER, FTRACK_API_USER, FTRACK_API_KEY")
    assert "run the audit without --ftrack" in line and "invariant" not in proc.stdout + proc.stderr


def test_json_and_line_agree(render, env):
    proc, line = _run(render, env)
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data["message"] in line and data["exit_code"] == 0
