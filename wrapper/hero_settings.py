"""Which products get a hero version, and where its folder is: worker settings, never the manifest's.

Off by default. Two places turn it on, the first that says anything wins (as for the catalogue):

1. ``ATOMIC_PUBLISH_HERO``: product types (families), comma-separated, ``*`` for all, ``none``
   for none (a plugin configuration entry or the job environment sets it);
2. the studio settings file's ``hero`` object (``ATOMIC_PUBLISH_SETTINGS``):
   ``{"product_types": ["render", "comp"], "template": "{root[work]}/.../{product[name]}/hero",
   "link_mode": "hardlink", "keep_previous": true}``.

The hero folder is the studio's hero template (AYON anatomy fields, as ``publish_template``) or,
by default, a folder ``hero`` beside the version folders (AYON's default anatomy). It is checked
like a version folder: inside the publish root, portable names, never a version folder itself.
The hero's files are the version's names with ``_v003`` replaced by ``_hero`` (AYON's hero file
template), so that a scene references one fixed path.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Mapping

from .errors import ManifestError
from .layout import PlannedFile, version_dir
from .manifest import Manifest

__all__ = ["HERO_ENV", "HeroSettings", "hero_dir", "hero_file_name", "hero_settings"]

HERO_ENV = "ATOMIC_PUBLISH_HERO"
DEFAULT_FOLDER = "hero"


@dataclass(frozen=True)
class HeroSettings:
    """The hero settings of this worker; ``product_types`` empty: no hero for anything."""

    product_types: frozenset[str] = frozenset()
    template: str | None = None      # mapped to wrapper/layout.py's fields, without a version
    link_mode: str = "hardlink"
    keep_previous: bool = True       # the previous hero's content stays until the next move
    source: str = "default (off)"    # where the setting came from, for messages

    def wants(self, manifest: Manifest) -> bool:
        return "*" in self.product_types or manifest.family in self.product_types


def hero_settings(environ: Mapping[str, str] | None = None) -> HeroSettings:
    """This worker's hero settings; raises SettingsError for an invalid settings file."""
    from .studio_settings import load_settings

    environ = os.environ if environ is None else environ
    settings = load_settings(environ=environ)
    hero = dict(settings.hero) if settings is not None else {}
    template = _mapped_template(hero["template"], settings.path) if hero.get("template") else None
    link_mode = hero.get("link_mode", "hardlink")
    keep = bool(hero.get("keep_previous", True))
    raw = (environ.get(HERO_ENV) or "").strip()
    if raw:
        types = frozenset() if raw.lower() == "none" else frozenset(t.strip() for t in raw.split(",") if t.strip())
        return HeroSettings(types, template, link_mode, keep, f"{HERO_ENV}={raw}")
    types = frozenset(hero.get("product_types") or ())
    return HeroSettings(types, template, link_mode, keep,
                        f"studio settings {settings.path} hero.product_types" if types and settings else "default (off)")


def _mapped_template(template: str, path: str | None) -> str:
    """The studio's hero template in wrapper/layout.py's fields (validated as publish_template is);
    a hero template names no version."""
    from .studio_settings import SettingsError, map_template

    if "{@version" in template or "{version" in template:
        raise SettingsError(path, "hero.template", "must not contain a version field: every version shares "
                            "the one hero folder")
    # map_template requires a version field: validate the template as the parent of one
    mapped = map_template(template.rstrip("/") + "/{@version}", "v{version}", "hero.template", path)
    return mapped[: -len("/v{version}")]


def hero_dir(manifest: Manifest, settings: HeroSettings) -> str:
    """The hero folder of the manifest's product on this worker, checked like a version folder."""
    if settings.template:
        probe = dataclasses.replace(manifest, template=settings.template + "/v{version}")
        folder = os.path.dirname(version_dir(probe, 1))
    else:
        folder = os.path.join(os.path.dirname(version_dir(manifest, 1)), DEFAULT_FOLDER)
    for number in (1, 2):  # a hero folder that is a version folder would be overwritten by the next one
        if os.path.normpath(folder) == os.path.normpath(version_dir(manifest, number)):
            raise ManifestError("hero.template", f"resolves to the version folder {folder}")
    return os.path.normpath(folder)


def hero_file_name(manifest: Manifest, planned: PlannedFile, version: int) -> str:
    """``proj_sh010_renderMain_v003.1001.exr`` -> ``proj_sh010_renderMain_hero.1001.exr``."""
    base = f"{manifest.project_code}_{manifest.asset}_{manifest.subset}_v{version:0>3}"
    if not planned.name.startswith(base):
        return planned.name
    return f"{manifest.project_code}_{manifest.asset}_{manifest.subset}_hero" + planned.name[len(base):]
