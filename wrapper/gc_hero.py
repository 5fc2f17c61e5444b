"""`atomic-publish gc`, hero versions: finish or remove what interrupted hero moves left.

Beside a hero folder an interrupted move leaves ``.{hero}.hero-swap-...`` (new content being
built, or the old content after the exchange), ``.{hero}.hero-aside-...`` (the old content
during the two-renames fallback) and ``.{hero}.hero-gone-...`` (content being removed). None
of them is ever a version's only copy: a hero holds hardlinks or copies of a published version
folder's files, which gc never touches. The hero folder itself is never removed (``leftovers``
never names it).

gc acts only on a product whose hero nobody holds (the store's ``heroes`` document, re-read just
before each change, as the records are for staging folders), and only after ``--older-than``:

* the hero path missing with a complete new content beside it (a crash between two renames):
  that content is put in place (one rename), so that readers find a hero again;
* every leftover then goes, and the previous hero's content that the last move kept for the
  readers that had resolved the hero just before it (``--older-than`` after that move nobody
  needs it). A COMMITTING publish whose move was interrupted redoes it from its version folder
  on its next attempt.
"""
from __future__ import annotations

import os
from typing import Any

from ..idempotency import clock
from ..idempotency.records import lease_is_live, utcnow
from .hero_swap import empty_content, finish_two_renames, leftovers, marker_version

__all__ = ["collect_heroes"]


def _idle(doc: dict[str, Any] | None, older_than: float) -> bool:
    return bool(doc) and not lease_is_live(doc.get("holder"), utcnow()) \
        and clock.age_seconds(doc.get("updated_at")) >= older_than


def collect_heroes(collector: Any) -> None:
    """Run over every hero of the store; counts go to ``collector.done["hero"]``."""
    heroes = getattr(collector.store, "heroes", None)
    if heroes is None:
        return
    collector.done.setdefault("hero", 0)
    for doc in heroes.scan():
        folder = doc.get("hero_dir") or ""
        # with the previous hero's content, which a move keeps for the readers that resolved the hero
        # just before it: --older-than after the last move, nobody needs it any more
        found = leftovers(folder, ("swap", "aside", "previous", "gone")) if folder else []
        if not found:
            continue
        ident = (doc.get("project"), doc.get("asset"), doc.get("subset"))
        if not _idle(doc, collector.older_than):
            for path in found:
                collector.leave(path, f"a publish moves the hero of {'/'.join(map(str, ident))} now, or did so less "
                                      "than --older-than ago")
            continue
        if not os.path.lexists(folder):
            if collector.dry_run:
                collector.say(f"would put the complete hero content beside {folder} in place (an interrupted move)")
            elif _idle(heroes.get(*ident), collector.older_than) and finish_two_renames(folder, found):
                collector.say(f"put the complete hero content beside {folder} in place (an interrupted move)")
                collector.done["hero"] += 1
                found = leftovers(folder, ("swap", "aside", "previous", "gone"))
        for path in found:
            if not _idle(heroes.get(*ident), collector.older_than):  # decided again right before it goes
                collector.leave(path, f"the hero of {'/'.join(map(str, ident))} is being moved; left for the next run")
                continue
            version = marker_version(path)
            why = (f"the previous content of the hero {folder} (v{version:0>3}), kept for its readers until "
                   "--older-than after the last move" if ".hero-previous-" in path
                   else f"left by an interrupted move of the hero {folder}")
            if collector.dry_run:
                collector.remove(path, why)
                continue
            # its hardlinks go first and are recorded before its marker (the version's files changed
            # time, which audit tells from a modification by the record): a gc killed in between
            # leaves the marker for the next run
            gone, version = empty_content(path)
            if version:
                heroes.touch(ident, {version: os.stat(gone).st_ctime_ns})
            collector.remove(gone, why)
