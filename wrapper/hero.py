"""The hero step of a commit: version N becomes the product's hero, on disk and in the catalogue.

It runs inside COMMITTING, after the version's documents are visible and before the record says
PUBLISHED, so it only rolls forward and a crash anywhere in it is finished by the next attempt
of the key (a COMMITTING record always reaches PUBLISHED). Each step is idempotent:

1. claim the product's hero in the store (idempotency/heroes.py): only forward, one mover at a
   time, a busy hero waited for, a newer one left alone;          failpoint ``hero.claimed``
2. empty what crashed moves left beside the hero folder (each keeps its marker until step 5
   recorded whose hardlinks went); build N's files in a hidden sibling (hardlinks, copies
   where links are refused);                                        failpoint ``hero.staged``
3. swap it into place in one step (wrapper/hero_swap.py); the old content is kept as the one
   ``previous`` folder until the next move (readers that resolved it keep complete files), the
   one before it goes;                                              failpoint ``hero.swapped``
4. point the catalogue's hero entry at N (``Catalog.write_hero``); failpoint ``hero.catalog``
5. record N as the hero, and the versions whose hardlinks the move made or removed, and
   release the hold; then the emptied folders go.                  failpoint ``hero.done``

The hero folder's marker says which version it holds, so a retry skips the swap it already made.
Before each change of the folder or the entry the attempt proves it still holds both its record
epoch and the hero (two conditional writes): what a zombie frozen after that proof can still do
is one swap of complete content (never a mix), which the next move or ``audit`` finds.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

from ..idempotency import heroes as H
from ..idempotency.keys import short_hash
from ..idempotency.records import Identity, utcnow
from . import failpoints, progress
from .catalogs.base import HeroEntry, PublishedFile, VersionEntry
from .errors import BusyError, DestinationError, ManifestError, Superseded
from .hero_settings import HeroSettings, hero_dir, hero_file_name, hero_settings
from .hero_swap import (HeroFile, aside_name, build_content, drop_emptied, empty_content, finish_two_renames,
                        leftovers, marker_version, previous_name, read_hero_marker, retire, swap_into_place,
                        swap_name)
from .layout import PlannedFile, check_inside_root, rootless
from .manifest import Manifest

__all__ = ["HeroBusy", "HeroFolderTaken", "HeroStep", "check_heroes"]

POLL_SECONDS = 0.2


class HeroBusy(BusyError):
    """Another publish of the product moves its hero, for longer than this attempt waits."""

    default_todo = "nothing: the farm requeues the task and it finishes the hero when the other publish is done"


class HeroFolderTaken(DestinationError):
    """The hero path holds a folder atomic-publish did not make (AYON's own hero integrator's)."""

    default_todo = ("archive or remove that folder once (the migration from IntegrateHeroVersion, docs/hero.md), "
                    "then requeue the task: it rolls forward and makes the hero")


def check_heroes(products: Sequence[Manifest], catalog: Any, settings: HeroSettings | None = None) -> HeroSettings:
    """Pre-flight, nothing written: the hero template resolves for every product that has a hero,
    and the catalogue can hold heroes. Raises ManifestError / SettingsError / CatalogRefused."""
    settings = settings or hero_settings()
    wanted = [m for m in products if settings.wants(m)]
    if wanted and not getattr(catalog, "supports_hero", False):
        raise ManifestError("hero", f"is on for product type {wanted[0].family} ({settings.source}), but the "
                            f"{getattr(catalog, 'name', '?')} catalogue has no hero versions",
                            "turn the hero off for this product type, or publish into a catalogue that has them")
    for m in wanted:
        hero_dir(m, settings)
    return settings


@dataclass
class HeroContext:
    """What the step needs from the attempt (one object, not loose callables)."""

    store: Any
    key: str
    epoch: int
    who: Identity
    lease_seconds: float
    retried: Callable[..., Any]          # Attempt._r: one leaf operation under the retry policy
    check: Callable[[], None]            # the stop guard
    link_default: bool = True


class HeroStep:
    """Makes each product of a commit the hero where the settings want one."""

    def __init__(self, ctx: HeroContext, settings: HeroSettings | None = None):
        self.ctx = ctx
        self.settings = settings or hero_settings()

    def wanted(self, manifest: Manifest) -> bool:
        return self.settings.wants(manifest)

    # -- the store ---------------------------------------------------------------------------
    def _fence(self, ident: tuple[str, str, str]) -> None:
        """Still ours: the record's epoch, and the hold on the hero (renewed by the same write)."""
        c = self.ctx
        c.retried("prove the epoch", c.store.records.fenced, c.key, c.epoch, {"$set": {"fenced_at": utcnow()}})
        c.retried("renew the hold on the hero", c.store.heroes.confirm, ident, c.who, c.lease_seconds)

    def _claim(self, ident: tuple[str, str, str], number: int, folder: str) -> H.Claim:
        c = self.ctx
        deadline = time.monotonic() + c.lease_seconds + 5.0  # a dead holder's hold has expired by then
        while True:
            claim = c.retried("claim the hero", c.store.heroes.claim, ident, c.key, c.epoch, number, c.who,
                              c.lease_seconds, folder)
            if claim.state != H.BUSY:
                return claim
            if time.monotonic() > deadline:
                held = claim.doc.get("holder") or {}
                raise HeroBusy(f"the hero of {'/'.join(ident)} is being moved to v{held.get('target', 0):0>3} by "
                               f"{held.get('key')} (worker {held.get('worker')}) for longer than this attempt "
                               f"waits; v{number:0>3} is committed and its hero step runs again on the next attempt")
            c.check()
            time.sleep(POLL_SECONDS)

    def _touched(self, ident: tuple[str, str, str], number: int, folder: str) -> None:
        """Record that hero links of v``number`` came or went up to now (the storage's clock: the
        change times beside the hero ``folder``), for a move that ends without ``finish``;
        harmless to repeat (a maximum)."""
        self.ctx.retried("record the hero links", self.ctx.store.heroes.touch, ident,
                         {number: _storage_time(folder, beside=True)})

    def _sweep_emptied(self, ident: tuple[str, str, str], folder: str) -> None:
        """A move killed between recording the hero and dropping the folders it emptied: each
        one's unlinks are recorded again (a maximum, harmless if they were), then it goes."""
        gone = [(g, marker_version(g)) for g in leftovers(folder, ("gone",))]
        versions = {v for _, v in gone if v}
        if versions:  # one write for all of them: the gone folders' change times are beside the hero
            stamp = _storage_time(folder, beside=True)
            self.ctx.retried("record the hero links", self.ctx.store.heroes.touch, ident,
                             {v: stamp for v in versions})
        _drop(gone)

    # -- one product -------------------------------------------------------------------------
    def run(self, manifest: Manifest, entry: VersionEntry, plan: list[PlannedFile], final_dir: str) -> dict[str, Any]:
        """Make ``entry`` the hero of its product; returns the record's receipt of what happened."""
        c = self.ctx
        number = entry.number
        folder = hero_dir(manifest, self.settings)
        os.makedirs(os.path.dirname(folder), exist_ok=True)  # a studio's hero template may name new folders
        check_inside_root(folder, manifest.publish_root)  # no symlink on the way leads outside the root
        ident = (manifest.project_name, manifest.asset, manifest.subset)
        claim = self._claim(ident, number, folder)
        if claim.state == H.NEWER:
            newer = max(int(claim.doc.get("version") or 0), int(claim.doc.get("target") or 0))
            if c.epoch > 1:
                # an earlier attempt of this key may have linked N's files into a hero and crashed before
                # recording it, and a newer hero has moved in since (seeds 50009, 50023): those links
                # changed the files' change time, which audit must tell from a modification
                self._touched(ident, number, folder)
            progress.info(f"hero of {manifest.subset} stays with v{newer:0>3}, newer than v{number:0>3} (a hero only "
                          "moves forward)")
            return {"state": "newer", "version": number, "hero_version": newer, "hero_dir": folder}
        if claim.state == H.DONE:
            self._sweep_emptied(ident, folder)
            return {"state": "done", "version": number, "hero_dir": folder}
        failpoints.hit("hero.claimed")
        try:
            touched = {number} | _versions_beside(folder)  # whose inodes this move links or unlinks
            how, emptied = self._move_folder(manifest, entry, plan, final_dir, folder, ident)
            touched |= {v for _, v in emptied}
            stamp = _storage_time(folder, beside=True)  # after every link and unlink of the move
            self._fence(ident)
            hero = self._entry(manifest, entry, plan, folder)
            c.retried("write the hero version", c.store.catalog.write_hero, hero)
            failpoints.hit("hero.catalog")
            c.retried("record the hero", c.store.heroes.finish, ident, c.key, number, c.who,
                      {v: stamp for v in touched if v > 0})
            _drop(emptied)  # their unlinks are recorded: the markers may go
        except BaseException:
            try:
                # a move cut short after linking some of N's files (a zombie stopped while it built, then
                # superseded: seed 60561) changed their change time: say so for audit (a maximum)
                c.store.heroes.touch(ident, {number: _storage_time(folder, beside=True)})
                c.store.heroes.release(ident, c.who)  # another publish need not wait for the hold to expire
            except Exception:
                pass  # it expires on its own; the leftover's removal records its unlinks
            raise
        failpoints.hit("hero.done")
        progress.status(f"hero of {manifest.subset} is v{number:0>3} at {folder} ({how})")
        return {"state": "moved", "version": number, "hero_dir": folder, "how": how}

    def _move_folder(self, manifest: Manifest, entry: VersionEntry, plan: list[PlannedFile], final_dir: str,
                     folder: str, ident: tuple[str, str, str]) -> tuple[str, list[tuple[str, int]]]:
        """Steps 2 and 3: the hero folder holds N's files when this returns. Also returns the
        content folders it emptied, (gone folder, version), for ``finish`` to record first."""
        c = self.ctx
        number = entry.number
        found = leftovers(folder)
        if finish_two_renames(folder, found):  # a crash between two renames: the new content in place first
            found = leftovers(folder)
        emptied: list[tuple[str, int]] = []
        marker = read_hero_marker(folder) if os.path.lexists(folder) else None
        if os.path.lexists(folder) and marker is None:
            raise HeroFolderTaken(f"hero folder {folder} of {manifest.subset} exists without an atomic-publish hero "
                                  f"marker: another tool made it; v{number:0>3} is committed, nothing was replaced")
        if marker and marker.get("version") == number and marker.get("key") == c.key:
            how = "already-in-place"
        else:
            for old in found:  # what crashed moves left (this holder's earlier epochs' or a dead holder's)
                emptied.append(empty_content(old))
            key_hash = short_hash(c.key)
            new, aside = swap_name(folder, key_hash, c.epoch), aside_name(folder, key_hash, c.epoch)
            sizes = {f.name: f.size for rep in entry.representations for f in rep.files}
            files = [HeroFile(os.path.join(final_dir, p.name), hero_file_name(manifest, p, number), sizes[p.name])
                     for p in plan]
            link = self.settings.link_mode == "hardlink"
            renew = _every(c.lease_seconds / 3.0, lambda: self._fence(ident))  # the claim just proved the hold
            linked, copied = build_content(new, files, {"key": c.key, "version": number, "epoch": c.epoch,
                                                        "subset": manifest.subset},
                                           link, check=lambda: (c.check(), renew()))
            failpoints.hit("hero.staged")
            self._fence(ident)
            how = swap_into_place(new, folder, aside)
            displaced = read_hero_marker(new) if how != "renamed" else None
            if displaced and int(displaced.get("version") or 0) > number:
                # a zombie frozen between its fence and the swap, woken after a newer hero moved in:
                # it puts the newer content back at once (the same swap again) and changes nothing more
                swap_into_place(new, folder, aside)
                self._touched(ident, number, folder)  # its links, now in the swap folder beside the hero
                raise Superseded(f"hero v{displaced.get('version')} of {manifest.subset} moved in while this attempt "
                                 f"waited to swap v{number:0>3}; the newer hero was put back")
            failpoints.hit("hero.swapped")
            progress.info(f"hero of {manifest.subset}: v{number:0>3} put in place ({how}; {linked} linked, "
                          f"{copied} copied)")
        return how, emptied + self._retire(folder, number)

    def _retire(self, folder: str, number: int) -> list[tuple[str, int]]:
        """The previous hero's content becomes the one kept ``previous`` folder (hero_swap.retire);
        what cannot be removed yet (Windows: a reader still has a file open) is left for the next
        move or ``gc``: the hero itself is in place. Returns what it emptied."""
        c = self.ctx
        failed, emptied = retire(folder, number, self.settings.keep_previous,
                                 previous_name(folder, short_hash(c.key), c.epoch))
        for old, exc in failed:
            _left_beside(old, exc)
        return emptied

    def _entry(self, manifest: Manifest, entry: VersionEntry, plan: list[PlannedFile], folder: str) -> HeroEntry:
        """The version's representations with the hero folder's paths."""
        names = {p.name: hero_file_name(manifest, p, entry.number) for p in plan}
        reps = []
        for rep in entry.representations:
            files = []
            for f in rep.files:
                path = os.path.join(folder, names[f.name])
                files.append(PublishedFile(name=names[f.name], path=path, rootless=rootless(path, manifest),
                                           size=f.size, hash=f.hash, hash_type=f.hash_type, frame=f.frame))
            data_path = files[0].path if files else rep.data_path
            reps.append(replace(rep, files=tuple(files), data_path=data_path))
        return HeroEntry(version=entry, hero_dir=folder, representations=tuple(reps))


def _versions_beside(folder: str) -> set[int]:
    """The versions whose content lies beside the hero (a move may unlink their files)."""
    return {marker_version(p) for p in leftovers(folder, ("swap", "aside", "previous", "gone"))}


def _drop(emptied: list[tuple[str, int]]) -> None:
    """The emptied folders' markers and folders; one that resists is left for the next move or gc
    (its marker still names its version, whose unlinks are recorded)."""
    for gone, _ in emptied:
        try:
            drop_emptied(gone)
        except OSError as exc:
            _left_beside(gone, exc)


def _left_beside(path: str, exc: BaseException) -> None:
    progress.info(f"warning: {path} beside the hero could not be removed yet ({exc}); the hero is in place, "
                  "the next move of this hero or `atomic-publish gc` removes it")


def _storage_time(folder: str, beside: bool = False) -> int:
    """The storage's own clock now (ns): the change time of the hero's parent folder, which the
    move's last rename changed (the same clock the published files' change times come from).
    ``beside``: also the folders beside the hero, whose change time is that of the last link
    made or removed inside them (a content folder being built, or emptied after the rename)."""
    times = []
    for path in [os.path.dirname(folder), *(leftovers(folder) if beside else [])]:
        try:
            times.append(os.stat(path).st_ctime_ns)
        except OSError:
            continue
    return max(times, default=0)


def _every(seconds: float, fn: Callable[[], None]) -> Callable[[], None]:
    """``fn`` at most once per ``seconds`` (the hold's renewal during a long build)."""
    last = [time.monotonic()]

    def maybe() -> None:
        if time.monotonic() - last[0] >= seconds:
            last[0] = time.monotonic()
            fn()
    return maybe


def commit_heroes(attempt: Any) -> dict[str, Any]:
    """The hero step of ``publish.Attempt._commit`` for every product of the publish that has a
    hero: returns the record fields (``hero`` receipts) that go with the PUBLISHED write."""
    step = None
    fields: dict[str, Any] = {}
    entries = None
    for i, m in enumerate(attempt.products):
        if step is None:
            step = HeroStep(HeroContext(store=attempt.store, key=attempt.key, epoch=attempt.epoch, who=attempt.who,
                                        lease_seconds=attempt.req.policy.lease_seconds, retried=attempt._r,
                                        check=attempt.guard.check))
        if not step.wanted(m):
            continue
        entries = entries if entries is not None else attempt._entries()
        from .layout import plan_files

        view = attempt._view(i)
        receipt = step.run(m, entries[i], plan_files(m, int(view["version"])), attempt._local_final(i))
        fields[attempt._field(i, "hero")] = receipt
    return fields
