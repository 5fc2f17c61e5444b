"""What the commands share: opening the store with an error a person can act on, and the help format."""
from __future__ import annotations

import argparse
import sys

from ..idempotency.redact import scrub


def open_store_for(command: str, uri: str | None, ensure_indexes: bool = False, start_embedded: bool = False,
                   chosen_catalog: bool = False):
    """The Store, or None after printing in one line why it cannot be opened.

    Read-only commands create nothing: unless ``start_embedded``, a stopped embedded store stays stopped
    and the line says how to start one or point at one. ``chosen_catalog``: the store's catalogue is the
    one ``run`` would use (:func:`catalog_factory`), not OpenPype's by default."""
    from ..idempotency.store import open_store
    from .errors import PublishError

    try:
        catalog = catalog_factory() if chosen_catalog else None
        return open_store(uri, ensure_indexes=ensure_indexes, start_embedded=start_embedded, catalog=catalog)
    except PublishError as exc:
        print(f"atomic-publish {command}: {scrub(str(exc))}; {exc.todo}", file=sys.stderr)
        return None


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help says its default (when it has one worth saying) or that it is required."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or action.default is argparse.SUPPRESS:
            return text
        if action.required:
            return text if "required" in text else f"{text} (required)"
        if "default" not in text and action.nargs != 0 and action.default not in (None, "", []):
            return f"{text} (default: %(default)s)"
        return text


def positive_seconds(text: str) -> float:
    """An argparse type: a number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def add_store_options(p: argparse.ArgumentParser, what: str = "the store to use") -> None:
    """``--store`` and ``--store-timeout``, the same on every command that opens the store."""
    p.add_argument("--store", default=None, metavar="URI",
                   help=f"{what}: a mongodb:// URI (default: $ATOMIC_PUBLISH_STORE, else the embedded store); "
                        "a password here is visible to other users: prefer the environment variable")
    p.add_argument("--store-timeout", type=positive_seconds, default=None, metavar="SECONDS",
                   help="how long to wait for the store to answer before failing (default: "
                        "$ATOMIC_PUBLISH_STORE_TIMEOUT, else 5)")


def catalog_factory():
    """Build the catalogue as ``run`` builds it: the studio settings file's ``catalog``,
    ``ayon_server_url`` and ``version_status`` where the environment (the plugin configuration)
    sets none, then ``catalogs.registry.from_environment`` on the store's client. Raises
    PublishError (an invalid settings file, an unknown catalogue, no AYON URL)."""
    import os

    from .catalogs import registry
    from .studio_settings import export_catalog_settings, load_settings

    export_catalog_settings(load_settings())
    registry.chosen_name()  # an unknown name fails before the store is opened

    def build(client):
        return registry.from_environment(client=client, database=os.environ.get("ATOMIC_PUBLISH_DATABASE") or None)
    return build
