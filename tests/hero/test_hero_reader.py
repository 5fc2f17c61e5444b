"""A reader scanning the hero folder while it is swapped again and again never sees files of two
versions, nor a half-built or missing hero (RENAME_EXCHANGE), or measures how long the hero path
is missing with the two-renames fallback (the window docs/hero.md states). Real files, real
renames, a real reader thread; the last test does the same through real publishes (issue 14)."""
from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

from atomic_publish.wrapper import hero_swap as hs
from hero_helpers import hero_env, hero_folder, publish_version

FILES = 24


def _build(parent: Path, hero: Path, version: int) -> str:
    new = hs.swap_name(str(hero), "0" * 12, version)
    src = parent / f"v{version:0>3}"
    src.mkdir()
    files = []
    for i in range(FILES):
        p = src / f"f_v{version:0>3}.{1001 + i}.exr"
        p.write_bytes(f"version {version}\n".encode() * 16)
        files.append(hs.HeroFile(str(p), f"f_hero.{1001 + i}.exr", p.stat().st_size))
    hs.build_content(new, files, {"version": version, "key": "k"}, link=True)
    return new


class Reader(threading.Thread):
    """Opens the hero folder, lists it and reads every file through that one open folder (as a
    scene that resolves the path once would), over and over; counts what it saw."""

    def __init__(self, hero: Path):
        super().__init__(daemon=True)
        self.hero, self.stop = str(hero), threading.Event()
        self.scans = self.mixed = self.short = self.missing = self.vanished = 0
        self.gaps: list[float] = []
        self.swap_seconds: list[float] = []  # each whole swap call (its renames and the fsync)
        self.versions: set[int] = set()

    def run(self) -> None:
        gap_start = None
        while not self.stop.is_set():
            try:
                fd = os.open(self.hero, os.O_RDONLY | os.O_DIRECTORY)
            except OSError as exc:
                assert exc.errno == errno.ENOENT
                self.missing += 1
                gap_start = gap_start or time.perf_counter()
                continue
            if gap_start is not None:
                self.gaps.append(time.perf_counter() - gap_start)
                gap_start = None
            try:
                names = [n for n in os.listdir(fd) if n != hs.HERO_MARKER]
                seen = set()
                for name in names:
                    try:
                        f = os.open(name, os.O_RDONLY, dir_fd=fd)
                    except FileNotFoundError:  # this scan began on the previous hero, removed since
                        self.vanished += 1
                        break
                    try:
                        seen.add(os.read(f, 64).split(b"\n")[0])
                    finally:
                        os.close(f)
            finally:
                os.close(fd)
            self.scans += 1
            if len(names) != FILES:
                self.short += 1
            if len(seen) > 1:
                self.mixed += 1
            for tag in seen:
                self.versions.add(int(tag.split()[1]))


def _swap_many(tmp_path: Path, swap, rounds: int) -> Reader:
    parent = tmp_path / "subset"
    parent.mkdir()
    hero = parent / "hero"
    first = _build(parent, hero, 1)
    hs.swap_into_place(first, str(hero), hs.aside_name(str(hero), "0" * 12, 1))
    reader = Reader(hero)
    reader.start()
    for version in range(2, rounds + 2):
        new = _build(parent, hero, version)
        began = time.perf_counter()
        swap(new, str(hero), hs.aside_name(str(hero), "0" * 12, version))
        reader.swap_seconds.append(time.perf_counter() - began)
        # as the hero step does: the previous content kept until the next move, the one before goes
        failed, emptied = hs.retire(str(hero), version, True, hs.previous_name(str(hero), "0" * 12, version))
        assert not failed
        for gone, _ in emptied:
            hs.drop_emptied(gone)
        time.sleep(0.002)
    time.sleep(0.05)
    reader.stop.set()
    reader.join(timeout=10)
    return reader


@pytest.mark.skipif(hs.choose_swap() is not hs.swap_exchange_linux, reason="renameat2 is Linux-only")
def test_exchange_never_shows_a_mix_nor_a_missing_hero(tmp_path):
    reader = _swap_many(tmp_path, hs.swap_exchange_linux, 150)
    print(f"\nexchange: {reader.scans} scans over 150 swaps, versions seen {len(reader.versions)}, "
          f"mixed {reader.mixed}, short {reader.short}, missing {reader.missing}, scans whose old hero was removed "
          f"under them {reader.vanished}")
    assert reader.scans > 150 and len(reader.versions) > 10
    assert (reader.mixed, reader.short, reader.missing) == (0, 0, 0)


def test_two_renames_never_shows_a_mix_and_the_window_is_measured(tmp_path):
    reader = _swap_many(tmp_path, hs.swap_two_renames, 150)
    window = max(reader.gaps, default=0.0)
    print(f"\ntwo renames: {reader.scans} scans over 150 swaps, mixed {reader.mixed}, short {reader.short}, "
          f"hero missing in {reader.missing} looks, {len(reader.gaps)} gaps, longest {window * 1e6:.0f} us; "
          f"whole swap calls: longest {max(reader.swap_seconds) * 1e3:.2f} ms")
    assert reader.scans > 150
    assert (reader.mixed, reader.short) == (0, 0)
    assert window < 0.05  # one rename system call on a local filesystem (a loaded shared machine: generous)


def test_a_reader_through_real_publishes_sees_one_complete_hero(env, store, render):
    env = hero_env(env)
    publish_version(render, env, "r1")
    hero = hero_folder(render)
    stop, problems, scans = threading.Event(), [], [0]

    def read() -> None:
        while not stop.is_set():
            try:
                fd = os.open(str(hero), os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                problems.append("missing")
                continue
            try:
                names = [n for n in os.listdir(fd) if n != hs.HERO_MARKER]
                tails = set()
                for name in names:
                    try:
                        f = os.open(name, os.O_RDONLY, dir_fd=fd)
                    except FileNotFoundError:  # began on the previous hero, removed since: no mix
                        break
                    try:
                        data = os.read(f, 1 << 16)
                    finally:
                        os.close(f)
                    if name.endswith(".exr"):
                        tails.add(data[4096:])  # publish_version ends each frame with its job's name
            finally:
                os.close(fd)
            scans[0] += 1
            if len(names) != len(render.frames) + 1 or len(tails) != 1:
                problems.append(f"{len(names)} files, {len(tails)} versions")

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    try:
        for job in ("r2", "r3", "r4", "r5"):
            publish_version(render, env, job)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert scans[0] > 10 and not problems, problems[:5]
