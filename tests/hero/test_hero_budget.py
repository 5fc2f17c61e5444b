"""What a hero move costs in MongoDB commands (issue 18's counting, issue 14's step): a fixed
number per product, whatever the number of files, so that it can be stated and kept."""
from __future__ import annotations

from atomic_publish.idempotency.command_log import ENV as COMMAND_LOG, read_counts
from helpers import Render, last_json, run_cli

MAX_HERO_COMMANDS = 12  # docs/hero.md, "What it costs"


def _count(tmp_path, env, manifest, job: str) -> list[str]:
    log = tmp_path / f"commands-{job}.log"
    proc = run_cli(["run", "--manifest", str(manifest), "--job-id", job, "--task-id", "0", "--worker", "w1",
                    "--json"], dict(env, **{COMMAND_LOG: str(log)}), timeout=300)
    assert proc.returncode == 0 and last_json(proc)["outcome"] == "published", proc.stdout + proc.stderr
    return read_counts(str(log))


def test_a_hero_move_costs_a_fixed_number_of_commands(tmp_path, env):
    render = Render(tmp_path, frames=3, size=1024, movie=False)
    manifest = render.write_manifest()
    hero = {**env, "ATOMIC_PUBLISH_HERO": "render"}
    _count(tmp_path, hero, manifest, "first")  # v001: the subset, the index, the first hero
    _count(tmp_path, hero, manifest, "second")
    without = _count(tmp_path, env, manifest, "plain")  # v003, no hero
    moved = _count(tmp_path, hero, manifest, "moved")  # v004 becomes the hero (exchange)
    extra = len(moved) - len(without)
    print(f"\nhero move: {extra} more commands ({len(without)} -> {len(moved)}): {sorted(moved)}")
    assert 0 < extra <= MAX_HERO_COMMANDS, (without, moved)
