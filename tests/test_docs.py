"""The README is the front door (short, with its two commands) and the docs site builds strictly."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"

DEMO_COMMAND = ("python3 -m venv .venv && .venv/bin/pip install -e '.[demo]' && "
                ".venv/bin/atomic-publish demo")
TEST_COMMAND = ("python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && "
                ".venv/bin/pip install --no-deps 'ayon-python-api==1.2.25' && .venv/bin/python -m pytest")


def test_readme_is_short_and_has_the_two_commands():
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) < 300, f"README.md has {len(lines)} lines; move reference material into docs/"
    assert DEMO_COMMAND in lines, "the README's demo command changed or is gone"
    assert TEST_COMMAND in lines, "the README's test command changed or is gone"


def test_readme_links_into_docs_exist():
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\((docs/[^)#\s]+)(?:#[^)]*)?\)", text)
    assert targets, "the README links to no docs page"
    missing = sorted({t for t in targets if not (ROOT / t).is_file()})
    assert not missing, f"README.md links to missing pages: {missing}"


def test_every_docs_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    listed = set(re.findall(r":\s*([\w./-]+\.md)\s*$", nav, flags=re.M))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert not pages - listed, f"docs pages missing from the nav in mkdocs.yml: {sorted(pages - listed)}"
    assert not listed - pages, f"nav entries without a page: {sorted(listed - pages)}"


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None,
                    reason="mkdocs is not installed (pip install -e '.[docs]')")
def test_docs_build_strictly(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "design" / "index.html").is_file()
